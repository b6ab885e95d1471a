"""Transformer Zoo runtime: runs artifacts on ONNX Runtime (imports onnxruntime and
numpy, never torch; only runtime.compare reaches the compiler, lazily)."""

from runtime.artifact import Artifact, load_artifact
from runtime.session import Session


def load(folder, **kw) -> Session:
    """Open an artifact folder as a Session (hashes verified)."""
    return Session(folder, **kw)


__all__ = ["Artifact", "Session", "load", "load_artifact"]
