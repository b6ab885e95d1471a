"""Transformer Zoo: the spec language (no torch, no onnxruntime here)."""

from zoo.errors import ArtifactError, ExportError, InputError, ParityError, SpecError, ZooError
from zoo.spec import ModelSpec

__version__ = "0.1.0"


def load(source, overrides=()):
    """Load a spec: a catalog name or a YAML path, with ``--set``-style overrides."""
    from zoo.loader import load_spec

    return load_spec(source, overrides)


__all__ = ["ModelSpec", "load", "SpecError", "ZooError", "ArtifactError", "ExportError", "ParityError", "InputError"]
