"""ONNX Runtime sessions over an artifact: provider choice and forward passes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.artifact import Artifact, load_artifact
from zoo.errors import InputError

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def empty_past(cache, batch: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """A cache of length 0 for each past.{i}.key/value of ``cache`` (a CacheLayout): prefill."""
    empty = np.zeros((batch, cache.kv_heads, 0, cache.head_dim), dtype=dtype)
    return {n: empty for n in cache.names("past")}


def choose_providers(device: str = "auto") -> list[str]:
    """``auto``: CUDA where this onnxruntime has it, else CPU. ``cuda`` insists."""
    available = ort.get_available_providers()
    if device == "auto":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]] if PROVIDERS["cuda"] in available else [PROVIDERS["cpu"]]
    if device not in PROVIDERS:
        raise InputError(f"device must be auto, cpu or cuda, got {device!r}")
    if PROVIDERS[device] not in available:
        raise InputError(f"device {device}: this onnxruntime has no {PROVIDERS[device]} (available: {', '.join(available)})")
    return [PROVIDERS[device]] + ([PROVIDERS["cpu"]] if device != "cpu" else [])


def session_options(threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = threads or int(os.environ.get("ZOO_THREADS", "0") or 0)
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class Session:
    """One InferenceSession per graph of an artifact.

    ``run(graph, **inputs)`` returns the graph's outputs by name; ``forward`` runs
    the whole model (encoder then decoder for an encoder-decoder)."""

    def __init__(self, artifact: Artifact | str | Path, *, device: str = "auto", threads: int | None = None, verify: bool = True):
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact, verify=verify)
        providers = choose_providers(device)
        opts = session_options(threads)
        self.sessions = {
            g.name: ort.InferenceSession(str(self.artifact.path(g.name)), sess_options=opts, providers=providers)
            for g in self.artifact.graphs
        }
        self.provider = next(iter(self.sessions.values())).get_providers()[0]

    @property
    def family(self) -> str:
        return self.artifact.family

    def run(self, graph: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        sess = self.sessions[graph]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, inputs)))

    def forward(self, inputs: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One pass without a cache. Inputs by graph name (runtime.inputs.graph_inputs's
        layout: ids and masks) -> every output by name. The decoder gets an empty past
        and, in an encoder-decoder, the encoder's cross-attention keys/values."""
        if self.family == "encoder-only":
            return self.run("model", **inputs["model"])
        if self.family == "decoder-only":
            feed = inputs["model"]
            return self.run("model", **feed, **self.empty_past(len(feed["input_ids"])))
        enc = self.run("encoder", **inputs["encoder"])
        feed = dict(inputs["decoder"], **{k: v for k, v in enc.items() if k.startswith("cross.")})
        return {**enc, **self.run("decoder", **feed, **self.empty_past(len(feed["decoder_input_ids"])))}

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """A cache of length 0 for each past.{i}.key/value (prefill)."""
        return empty_past(self.artifact.cache, batch, self.float_dtype)

    @property
    def float_dtype(self) -> type:
        return np.float16 if self.artifact.manifest.get("dtype") == "float16" else np.float32
