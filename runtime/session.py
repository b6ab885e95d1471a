"""ONNX Runtime sessions over an artifact: provider choice and forward passes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.artifact import Artifact, load_artifact
from zoo.errors import InputError

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


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
        """Inputs by graph name (runtime.inputs.graph_inputs's layout) -> every output
        by name. For an encoder-decoder the decoder gets the encoder's output."""
        if self.family != "encoder-decoder":
            return self.run("model", **inputs["model"])
        enc = self.run("encoder", **inputs["encoder"])
        dec_in = dict(inputs["decoder"], encoder_hidden_states=enc["encoder_hidden_states"])
        return {**enc, **self.run("decoder", **dec_in)}
