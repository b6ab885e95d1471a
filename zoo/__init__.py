"""Transformer Zoo: the spec language (no torch, no onnxruntime here)."""

from zoo.spec.errors import ArtifactError, ExportError, InputError, ParityError, SpecError, ZooError

__version__ = "0.1.0"


def __getattr__(name: str):
    # ModelSpec (pydantic) loads on first use: the runtime imports zoo.spec.contract and
    # zoo.spec.errors only, and must run with nothing but onnxruntime and numpy
    if name == "ModelSpec":
        from zoo.spec.model import ModelSpec

        return ModelSpec
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def load(source, overrides=()):
    """Load a spec: a catalog name or a YAML path, with ``--set``-style overrides."""
    from zoo.spec.loader import load_spec

    return load_spec(source, overrides)


__all__ = ["ModelSpec", "load", "SpecError", "ZooError", "ArtifactError", "ExportError", "ParityError", "InputError"]
