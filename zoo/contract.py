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


# Tolerances of the parity check at build time, per dtype: max abs error on every output.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


# Tolerances of reduced-precision artifacts (zoo build --precision), against the float32
# torch module, on every output and on cached step-by-step decoding. An output is
# within when its max abs error is at most ``max_abs`` OR at most ``max_rel`` times
# its largest |value| (fp16 and int8 errors grow with the values' scale: a fixed
# absolute bound fits random-init models and not trained ones, whose logits reach the
# hundreds). The logits' top-1 agreement, pooled over every real position of the
# check, must be at least ``top1``: a floor against gross breakage, set for
# random-init models whose large vocabularies make near-ties common (a trained
# model's agreement is higher). Measured figures and margins: docs/precision.md.
PRECISION_TOLERANCE = {
    "fp16": {"max_abs": 2e-2, "max_rel": 1e-2, "top1": 0.90},
    "int8": {"max_abs": 1e-1, "max_rel": 1e-1, "top1": 0.75},
}


def tolerance_for(dtype: str, precision: str = "fp32") -> dict:
    """The parity tolerance of an artifact: per dtype for fp32 builds (max abs only),
    per precision for fp16 / int8 builds (max abs or max rel, and top-1 agreement)."""
    if precision in (None, "fp32"):
        return {"max_abs": TOLERANCE[dtype]}
    if precision not in PRECISION_TOLERANCE:
        raise ValueError(f"unknown precision {precision!r} (fp32, {', '.join(PRECISION_TOLERANCE)})")
    return dict(PRECISION_TOLERANCE[precision])


def within(errors: dict, tolerance: dict) -> bool:
    """Whether one output's error magnitude (max_abs, and max_rel where the tolerance
    has one) meets ``tolerance``; top-1 agreement is checked pooled, by the caller."""
    if errors["max_abs"] <= tolerance["max_abs"]:
        return True
    return "max_rel" in tolerance and errors.get("max_rel", float("inf")) <= tolerance["max_rel"]
