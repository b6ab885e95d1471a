"""Gemma 2 and Gemma 3 (``gemma2``, ``gemma3_text``): the Gemma layout of compiler.importers.llama
(RMSNorm with (1 + w) in fp32, embeddings times sqrt(hidden_size), GeGLU, explicit head_dim,
tied output) with a norm before and after each sublayer (the ``sandwich`` placement:
input_layernorm / post_attention_layernorm around attention, pre_feedforward_layernorm /
post_feedforward_layernorm around the FFN), q.k scaled by query_pre_attn_scalar ** -0.5, and
layers alternating between sliding-window and full attention (config.layer_types).

Gemma 2 softcaps the attention scores (attn_logit_softcapping, before the mask) and the logits
(final_logit_softcapping); one RoPE everywhere. Gemma 3 adds a (1 + w) RMSNorm per head on q and
k (QK-norm) and a RoPE per layer type: rope_parameters keyed by sliding_attention (base 10000,
unscaled) and full_attention (rope_theta, with its scaling), or in older configs rope_theta /
rope_scaling for the full layers and rope_local_base_freq for the sliding ones."""

from __future__ import annotations

from compiler.importers import llama
from compiler.importers.common import ACTIVATIONS, ROPE_SCALING_FIELDS, W, rope_scaling, rope_theta, rope_type

MODEL_TYPES = ("gemma2", "gemma3_text")
KINDS = {"sliding_attention": "sliding", "full_attention": "full"}  # HF layer type -> zoo layer_types attention


def _types(c: dict) -> list[str]:
    """HF layer types, one per layer (the config's defaults where it has none)."""
    n = c["num_hidden_layers"]
    if c.get("layer_types"):
        return list(c["layer_types"])
    every = 2 if c["model_type"] == "gemma2" else c.get("sliding_window_pattern", 6)
    return ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(n)]


def _rope_of(c: dict, kind: str) -> dict:
    """The RoPE parameters of HF layer type ``kind`` in the flat form common.rope_* read."""
    params = c.get("rope_parameters") or {}
    if kind in params:  # transformers 5: keyed by layer type (Gemma 3)
        return {"rope_parameters": params[kind] or {}}
    if c["model_type"] == "gemma3_text" and kind == "sliding_attention":  # older Gemma 3 configs
        return {"rope_parameters": {"rope_type": "default", "rope_theta": c.get("rope_local_base_freq", 10000.0)}}
    return c


def _rope(c: dict, kind: str) -> dict:
    flat = _rope_of(c, kind)
    return {"theta": rope_theta(flat), "scaling": rope_scaling(flat)}


def _period(entries: list[dict]) -> list[dict]:
    """The shortest prefix that, repeated (entry i % len), gives every layer's entry."""
    for p in range(1, len(entries) + 1):
        if all(e == entries[i % p] for i, e in enumerate(entries)):
            return entries[:p]
    return entries


def _layer_types(c: dict) -> list[dict]:
    """One zoo entry per HF layer type: attention sliding / full; Gemma 3 its own RoPE per type."""
    per_type = c["model_type"] == "gemma3_text"
    return _period([{"attention": KINDS[t], "positions": "model", **({"rope": _rope(c, t)} if per_type else {})} for t in _types(c)])


def _window(c: dict):
    return c.get("sliding_window") if "sliding_attention" in _types(c) else None


def _scale(c: dict):
    """q.k times query_pre_attn_scalar ** -0.5 (none where that is 1/sqrt(head_dim), the default)."""
    scalar = c.get("query_pre_attn_scalar", 256)
    return None if scalar == _head_dim(c) else float(scalar) ** -0.5


def _head_dim(c: dict) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def _positional(c: dict) -> dict:
    """The model's RoPE: the full layers' (Gemma 3 layers carry their own in layer_types)."""
    return {"kind": "rope", "fraction": 1.0, **_rope(c, "full_attention")}


_OWN = {  # zoo spec path <- HF config, where Gemma 2 / 3 differ from llama's table
    "positional": _positional,
    "embedding.tie_output": lambda c: c.get("tie_word_embeddings", True),
    "embedding.scale_by_sqrt_d": lambda c: True,
    "embedding.logit_softcap": lambda c: c.get("final_logit_softcapping"),
    "decoder.attention.bias": lambda c: bool(c.get("attention_bias", False)),
    "decoder.attention.window": _window,
    "decoder.layer_types": _layer_types,
    "decoder.attention.head_dim": llama._head_dim,
    "decoder.attention.qk_norm": lambda c: {"kind": "rmsnorm-plus-one", "over": "head"} if c["model_type"] == "gemma3_text" else None,
    "decoder.attention.scale": _scale,
    "decoder.attention.softcap": lambda c: c.get("attn_logit_softcapping"),
    "decoder.ffn.activation": lambda c: ACTIVATIONS.get(c.get("hidden_activation", "gelu_pytorch_tanh")),
    "decoder.ffn.bias": lambda c: False,
    "decoder.norm.kind": lambda c: "rmsnorm-plus-one",
    "decoder.norm.placement": lambda c: "sandwich",
}
_DROP = {"decoder.residual_multiplier", "embedding.multiplier", "embedding.logit_multiplier"}  # Granite's
CONFIG = [(path, _OWN.get(path, fn)) for path, fn in llama.CONFIG if path not in _DROP]
CONFIG += [(path, fn) for path, fn in _OWN.items() if path not in dict(CONFIG)]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "hidden_activation": ("gelu_pytorch_tanh", "gelu", "gelu_new", "relu", "silu"),
    "use_bidirectional_attention": (None, False),
}


def _positive(c: dict, field: str) -> list[str]:
    value = c.get(field)
    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)
    return [] if ok else [f"{field}={value!r} (supported: a positive number, or null for none)"]


def unsupported_extra(c: dict) -> list[str]:
    """Rules that need more than one field (or a per-layer-type reading)."""
    problems = [p for f in ("attn_logit_softcapping", "final_logit_softcapping") for p in _positive(c, f)]
    if c.get("query_pre_attn_scalar", 256) is None:
        problems.append("query_pre_attn_scalar=null (supported: a positive number)")
    problems += _positive(c, "query_pre_attn_scalar")
    types = _types(c) if isinstance(c.get("num_hidden_layers"), int) else []
    odd = sorted(set(types) - set(KINDS))
    if odd:
        problems.append(f"layer_types with {odd} (supported: {', '.join(KINDS)})")
    if "sliding_attention" in types and c.get("sliding_window") is None:
        problems.append("sliding_window=null with sliding_attention layers (supported: a window in tokens)")
    for kind in sorted(set(types) & set(KINDS)):
        rope = rope_type(_rope_of(c, kind))
        if rope is not None and rope not in ROPE_SCALING_FIELDS:
            problems.append(f"rope_type={rope!r} for {kind} (supported: 'default', {', '.join(repr(k) for k in ROPE_SCALING_FIELDS)})")
    return problems


L = "model.layers.{i}."
_NORMS = {  # llama's two layer norms -> Gemma's four (before and after each sublayer)
    "decoder.layers.{i}.norm_ffn.norm.weight": W("decoder.layers.{i}.norm_ffn.norm.weight", L + "pre_feedforward_layernorm.weight",
                                                 stack="decoder"),
}
WEIGHTS = [_NORMS.get(row.zoo, row) for row in llama.WEIGHTS] + [
    W("decoder.layers.{i}.norm_attn.post_norm.weight", L + "post_attention_layernorm.weight", stack="decoder"),
    W("decoder.layers.{i}.norm_ffn.post_norm.weight", L + "post_feedforward_layernorm.weight", stack="decoder"),
]
DERIVED = llama.DERIVED
BASE_PREFIX = llama.BASE_PREFIX


def weights(config: dict) -> list[W]:
    return WEIGHTS
