"""The ONNX contract: the shape of a graph's description (its input and output names,
dtypes and symbolic axes; which graphs each family has is zoo.spec.families), the
format version and opset, and the parity rule. The exporter (compiler) writes graphs
that follow it and the runtime feeds them by it. No torch, no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT_VERSION = 2  # of the artifact folder and its manifest.json (2: graphs with a KV cache)
OPSET = 23


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int64" or "float" (the spec's dtype)
    axes: tuple[str, ...]  # batch/seq/src_seq/past_seq/total_seq are dynamic; d_model, vocab, kv_heads, head_dim fixed by the spec


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


# --------------------------------------------------------------------------- the parity rule


@dataclass(frozen=True)
class ParityRule:
    """How far an ONNX output may be from the torch module's, elementwise over the
    real positions (zoo.app.tolerance.judge):

        |onnx - torch| <= rtol * |torch| + atol * rms(torch's vector)

    The numpy.allclose form, with the absolute term in units of the RMS of the
    vector the element belongs to (the last axis: a token's hidden state or logits),
    so that the bound follows the values it judges: logits in the tens and residual
    channels in the thousands get a bound of their size, and a vector of order 1
    keeps a tight one. ``top1``: the floor on the logits' top-1 agreement,
    pooled over every real position checked. The same rule judges the outputs,
    cached decoding and the per-layer hidden states of ``zoo compare --parity``.
    Values chosen by measurement on random-init and trained-like weights:
    docs/parity.md."""

    rtol: float
    atol: float
    top1: float | None = None

    def describe(self) -> str:
        text = f"|onnx - torch| <= {self.rtol:g}*|torch| + {self.atol:g}*rms(torch vector)"
        return text + (f", top-1 at least {self.top1 * 100:.0f}%" if self.top1 is not None else "")

    def to_json(self) -> dict:
        return {"rtol": self.rtol, "atol": self.atol, "top1": self.top1, "rule": self.describe()}


# (spec dtype, build precision) -> rule. fp32 builds are judged by their dtype;
# --precision fp16 / int8 builds (of a float32 spec) by their precision.
PARITY_RULES = {
    ("float32", "fp32"): ParityRule(rtol=5e-4, atol=5e-4),
    ("float16", "fp32"): ParityRule(rtol=2e-2, atol=2e-2),
    ("bfloat16", "fp32"): ParityRule(rtol=1e-1, atol=1e-1),
    ("float32", "fp16"): ParityRule(rtol=5e-2, atol=5e-2, top1=0.90),
    ("float32", "int8"): ParityRule(rtol=5e-1, atol=5e-1, top1=0.85),
    # int4, measured (worst |onnx - torch| / (|torch| + rms), top-1 on parity's batch): trained-like
    # llama-135m 0.87-1.10 and 74-77 %; tiny catalog specs, random 0.5-0.9 and 71-93 %,
    # trained-like 0.7-3.4 (llama-tiny) and 70-93 %; a planted packing bug: top-1 near chance.
    ("float32", "int4"): ParityRule(rtol=5.0, atol=5.0, top1=0.60),
}
PRECISIONS = ("fp32", "fp16", "int8", "int4")


def parity_rule(dtype: str, precision: str | None = "fp32") -> ParityRule:
    """The rule an artifact's graphs are judged by (see ParityRule)."""
    key = (dtype, precision or "fp32")
    if key not in PARITY_RULES:
        raise ValueError(f"no parity rule for dtype {dtype!r} at precision {precision!r} ({', '.join(PRECISIONS)})")
    return PARITY_RULES[key]
