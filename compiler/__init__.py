"""Transformer Zoo compiler: spec -> torch module -> ONNX artifact (imports torch and onnx)."""

from compiler.builder import build
from compiler.weights import load_weights, save_weights

__all__ = ["build", "load_weights", "save_weights"]
