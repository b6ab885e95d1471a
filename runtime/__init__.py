"""Transformer Zoo runtime: runs artifacts on ONNX Runtime (imports onnxruntime and
numpy, never torch; only zoo.app.parity reaches the compiler, lazily).

``Session`` (onnxruntime) loads on first use, so reading artifacts and writing a
Triton repository (runtime.artifact, zoo.app.triton) need neither."""

from runtime.artifact import Artifact, load_artifact


def __getattr__(name: str):
    if name == "Session":
        from runtime.session import Session

        return Session
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


def load(folder, **kw):
    """Open an artifact folder as a Session (hashes verified)."""
    from runtime.session import Session

    return Session(folder, **kw)


__all__ = ["Artifact", "Session", "load", "load_artifact"]
