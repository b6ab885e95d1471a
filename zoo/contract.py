"""The ONNX contract: which graphs an artifact has, their input and output names,
dtypes and symbolic axes. Defined once here; the exporter (compiler) writes graphs
that follow it and the runtime feeds them by it. No torch, no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1  # of the artifact folder and its manifest.json
OPSET = 23


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int64" or "float" (the spec's dtype)
    axes: tuple[str, ...]  # batch/seq/src_seq/tgt_seq are dynamic; d_model and vocab are fixed by the spec


@dataclass(frozen=True)
class GraphSpec:
    name: str  # "model", "encoder", "decoder"
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def _ids(name: str, seq: str) -> TensorSpec:
    return TensorSpec(name, "int64", ("batch", seq))


def graphs_for(family: Any, *, pooler: bool = False) -> tuple[GraphSpec, ...]:
    """The graphs of an artifact of ``family`` (attention masks: 1 = token, 0 = padding).
    ``family`` may be a ModelSpec, whose family and ``embedding.pooler`` then decide;
    ``pooler`` adds the encoder-only output pooler_output (batch, d_model)."""
    if not isinstance(family, str):
        spec = family
        family, pooler = spec.family, bool(spec.embedding.pooler)
    hidden = lambda name, seq: TensorSpec(name, "float", ("batch", seq, "d_model"))  # noqa: E731
    logits = lambda seq: TensorSpec("logits", "float", ("batch", seq, "vocab"))  # noqa: E731
    if family in ("decoder-only", "encoder-only"):
        outputs = (logits("seq"),) if family == "decoder-only" else (hidden("last_hidden_state", "seq"), logits("seq"))
        if pooler and family == "encoder-only":
            outputs += (TensorSpec("pooler_output", "float", ("batch", "d_model")),)
        return (GraphSpec("model", "model.onnx", (_ids("input_ids", "seq"), _ids("attention_mask", "seq")), outputs),)
    if family == "encoder-decoder":
        return (
            GraphSpec(
                "encoder",
                "encoder.onnx",
                (_ids("input_ids", "src_seq"), _ids("attention_mask", "src_seq")),
                (hidden("encoder_hidden_states", "src_seq"),),
            ),
            GraphSpec(
                "decoder",
                "decoder.onnx",
                (
                    _ids("decoder_input_ids", "tgt_seq"),
                    _ids("decoder_attention_mask", "tgt_seq"),
                    hidden("encoder_hidden_states", "src_seq"),
                    _ids("encoder_attention_mask", "src_seq"),
                ),
                (logits("tgt_seq"),),
            ),
        )
    raise ValueError(f"unknown family {family!r}")


# Tolerances of the parity check at build time, per dtype: max abs error on every output.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}
