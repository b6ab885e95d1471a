"""Phi-3, Phi-3.5 and Phi-4-mini (``model_type: phi3``): the Llama layout with fused
projections, split here: ``qkv_proj`` rows [q (heads x head_dim) | k (kv_heads x head_dim) |
v (kv_heads x head_dim)] and ``gate_up_proj`` rows [gate | up]; RoPE on
int(head_dim x partial_rotary_factor) dimensions (Phi-4-mini: 0.75), plain or LongRoPE
(rope_type longrope, or the older 'su' / 'yarn' that transformers reads as longrope),
an optional sliding window in every layer, an optional tied output."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W, rope_params, partial_rotary, rope_theta, unsupported_partial_rotary

MODEL_TYPES = ("phi3",)
LONGROPE_TYPES = ("longrope", "su", "yarn")  # configuration_phi3: 'su' and 'yarn' are read as longrope


def _kind(c: dict):
    params = rope_params(c)
    return params.get("rope_type", params.get("type", "default")) or "default"


def _head_dim(c: dict) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def _scaling(c: dict):
    """positional.scaling for LongRoPE: factor as transformers takes it (the given one,
    else max_position_embeddings / original_max_position_embeddings)."""
    if _kind(c) not in LONGROPE_TYPES:
        return None
    p = rope_params(c)
    original = p.get("original_max_position_embeddings") or c["original_max_position_embeddings"]
    out = {"kind": "longrope", "short_factor": p["short_factor"], "long_factor": p["long_factor"], "original_max_seq_len": original,
           "factor": p.get("factor") or c["max_position_embeddings"] / original}
    if p.get("attention_factor") is not None:
        out["attention_factor"] = p["attention_factor"]
    return out


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 4096)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "rope", "theta": rope_theta(c), "fraction": partial_rotary(c), "scaling": _scaling(c)}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", False)),
    ("decoder.layers", lambda c: c["num_hidden_layers"]),
    ("decoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("decoder.attention.kv_heads", lambda c: c.get("num_key_value_heads") or c["num_attention_heads"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: False),
    ("decoder.attention.window", lambda c: c.get("sliding_window")),
    ("decoder.attention.head_dim", lambda c: _head_dim(c) if _head_dim(c) * c["num_attention_heads"] != c["hidden_size"] else None),
    ("decoder.ffn.hidden", lambda c: c["intermediate_size"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("hidden_act", "silu"))),
    ("decoder.ffn.gated", lambda c: True),
    ("decoder.ffn.bias", lambda c: False),
    ("decoder.norm.kind", lambda c: "rmsnorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("rms_norm_eps", 1e-5)),
    ("dropout", lambda c: c.get("resid_pdrop", 0.0)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "hidden_act": ("silu", "gelu", "gelu_pytorch_tanh", "relu"),
}


def unsupported_extra(c: dict) -> list[str]:
    problems = unsupported_partial_rotary(c)
    kind = _kind(c)
    if kind != "default" and kind not in LONGROPE_TYPES:
        problems.append(f"rope_type={kind!r} (supported: 'default', 'longrope', 'su')")
    elif kind in LONGROPE_TYPES:
        p = rope_params(c)
        lacking = [k for k in ("short_factor", "long_factor") if not isinstance(p.get(k), list)]
        if not (p.get("original_max_position_embeddings") or c.get("original_max_position_embeddings")):
            lacking.append("original_max_position_embeddings")
        problems += [f"rope_parameters.{k} missing (longrope needs it)" for k in lacking]
    return problems


def _rows(c: dict, part: int):
    """Rows of part ``part`` (0 q, 1 k, 2 v) of qkv_proj (out, in)."""
    q, kv = c["num_attention_heads"] * _head_dim(c), (c.get("num_key_value_heads") or c["num_attention_heads"]) * _head_dim(c)
    start, stop = ((0, q), (q, q + kv), (q + kv, q + 2 * kv))[part]
    return lambda t: t[start:stop].contiguous()


def _half(index: int):
    return lambda t: t.chunk(2, dim=0)[index].contiguous()  # gate_up_proj (2 x hidden, d): [gate | up]


L = "model.layers.{i}."


def weights(c: dict) -> list[W]:
    return [
        W("embed.weight", "model.embed_tokens.weight"),
        W("lm_head.weight", "lm_head.weight"),
        W("decoder.layers.{i}.norm_attn.norm.weight", L + "input_layernorm.weight", stack="decoder"),
        *(W(f"decoder.layers.{{i}}.self_attn.{p}.weight", L + "self_attn.qkv_proj.weight", _rows(c, n), "decoder") for n, p in enumerate("qkv")),
        W("decoder.layers.{i}.self_attn.o.weight", L + "self_attn.o_proj.weight", stack="decoder"),
        W("decoder.layers.{i}.norm_ffn.norm.weight", L + "post_attention_layernorm.weight", stack="decoder"),
        W("decoder.layers.{i}.ffn.gate.weight", L + "mlp.gate_up_proj.weight", _half(0), "decoder"),
        W("decoder.layers.{i}.ffn.up.weight", L + "mlp.gate_up_proj.weight", _half(1), "decoder"),
        W("decoder.layers.{i}.ffn.down.weight", L + "mlp.down_proj.weight", stack="decoder"),
        W("decoder.final_norm.weight", "model.norm.weight"),
    ]


# rotary frequency buffers of older checkpoints, and the tied output copy
DERIVED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.(long_|short_)?inv_freq", r"lm_head\.weight")
BASE_PREFIX = "model."
