"""The ONNX contract: which graphs an artifact has, their input and output names,
dtypes and symbolic axes. Defined once here; the exporter (compiler) writes graphs
that follow it and the runtime feeds them by it. No torch, no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def _ids(name: str, seq: str) -> TensorSpec:
    return TensorSpec(name, "int64", ("batch", seq))


@dataclass(frozen=True)
class CacheLayout:
    """The key/value cache of a decoder graph.

    Per layer i the graph takes ``past.{i}.key`` / ``past.{i}.value`` of shape
    (batch, kv_heads, past_seq, head_dim) and returns ``present.{i}.key`` /
    ``present.{i}.value`` of shape (batch, kv_heads, total_seq, head_dim), total_seq =
    past_seq + seq: the past with the new tokens' keys/values appended (keys after
    RoPE). The attention mask covers all total_seq slots. Prefill passes a past of
    length 0. An encoder-decoder's encoder graph also returns ``cross.{i}.key`` /
    ``cross.{i}.value`` (batch, kv_heads, src_seq, head_dim), which the decoder takes
    at every step unchanged."""

    layers: int
    kv_heads: int
    head_dim: int
    cross: bool

    def names(self, prefix: str) -> list[str]:
        return [f"{prefix}.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    def tensors(self, prefix: str, seq: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(n, "float", ("batch", "kv_heads", seq, "head_dim")) for n in self.names(prefix))

    def to_json(self) -> dict:
        return {
            "layers": self.layers,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "layout": "batch, kv_heads, seq, head_dim",
            "past": "past.{i}.key / past.{i}.value",
            "present": "present.{i}.key / present.{i}.value (past + new tokens)",
            "cross": "cross.{i}.key / cross.{i}.value, from the encoder graph" if self.cross else None,
            "prefill": "past of length 0",
        }


def cache_layout(spec: Any) -> CacheLayout | None:
    """The cache of a ModelSpec's decoder graph; None for encoder-only."""
    if spec.family == "encoder-only":
        return None
    dec = spec.stack("decoder")
    return CacheLayout(
        layers=dec.layers,
        kv_heads=dec.attention.n_kv_heads,
        head_dim=spec.head_dim("decoder"),
        cross=spec.family == "encoder-decoder",
    )


def graphs_for(family: Any, *, pooler: bool = False) -> tuple[GraphSpec, ...]:
    """The graphs of an artifact (attention masks: 1 = token, 0 = padding).
    ``family`` is a ModelSpec (its family, cache and ``embedding.pooler`` decide), or
    the string "encoder-only" (``pooler`` adds pooler_output (batch, d_model))."""
    if isinstance(family, str):
        if family != "encoder-only":
            raise ValueError(f"the graphs of a {family} model depend on its cache; pass the ModelSpec")
        cache = None
    else:
        spec = family
        family, pooler, cache = spec.family, bool(spec.embedding.pooler), cache_layout(spec)
    hidden = lambda name, seq: TensorSpec(name, "float", ("batch", seq, "d_model"))  # noqa: E731
    logits = lambda seq: TensorSpec("logits", "float", ("batch", seq, "vocab"))  # noqa: E731
    if family == "encoder-only":
        outputs = (hidden("last_hidden_state", "seq"), logits("seq"))
        if pooler:
            outputs += (TensorSpec("pooler_output", "float", ("batch", "d_model")),)
        return (GraphSpec("model", "model.onnx", (_ids("input_ids", "seq"), _ids("attention_mask", "seq")), outputs),)
    if family == "decoder-only":
        return (
            GraphSpec(
                "model",
                "model.onnx",
                (_ids("input_ids", "seq"), _ids("attention_mask", "total_seq"), *cache.tensors("past", "past_seq")),
                (logits("seq"), *cache.tensors("present", "total_seq")),
            ),
        )
    if family == "encoder-decoder":
        return (
            GraphSpec(
                "encoder",
                "encoder.onnx",
                (_ids("input_ids", "src_seq"), _ids("attention_mask", "src_seq")),
                (hidden("encoder_hidden_states", "src_seq"), *cache.tensors("cross", "src_seq")),
            ),
            GraphSpec(
                "decoder",
                "decoder.onnx",
                (
                    _ids("decoder_input_ids", "seq"),
                    _ids("decoder_attention_mask", "total_seq"),
                    _ids("encoder_attention_mask", "src_seq"),
                    *cache.tensors("cross", "src_seq"),
                    *cache.tensors("past", "past_seq"),
                ),
                (logits("seq"), *cache.tensors("present", "total_seq")),
            ),
        )
    raise ValueError(f"unknown family {family!r}")


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
}
PRECISIONS = ("fp32", "fp16", "int8")


def parity_rule(dtype: str, precision: str | None = "fp32") -> ParityRule:
    """The rule an artifact's graphs are judged by (see ParityRule)."""
    key = (dtype, precision or "fp32")
    if key not in PARITY_RULES:
        raise ValueError(f"no parity rule for dtype {dtype!r} at precision {precision!r} ({', '.join(PRECISIONS)})")
    return PARITY_RULES[key]
