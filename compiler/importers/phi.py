"""Phi-1, Phi-1.5, Phi-2 (``model_type: phi``): partial RoPE (partial_rotary_factor,
halves layout), a parallel attention + FFN residual reading one shared input_layernorm,
biases on every projection, gelu_new, final_layernorm, an lm_head with a bias
(embedding.output_bias), optional per-head LayerNorm on q and k (qk_layernorm)."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W, rope_scaling, rope_theta, unsupported_rope
from compiler.importers.gpt_neox import rotary_fraction

MODEL_TYPES = ("phi",)


def _qk_norm(c: dict):
    return {"kind": "layernorm", "over": "head", "eps": c.get("layer_norm_eps", 1e-5)} if c.get("qk_layernorm") else None


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 2048)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "rope", "theta": rope_theta(c), "fraction": rotary_fraction(c, "partial_rotary_factor", 0.5),
                              "scaling": rope_scaling(c)}),
    ("embedding.tie_output", lambda c: bool(c.get("tie_word_embeddings", False))),
    ("embedding.output_bias", lambda c: True),
    ("decoder.layers", lambda c: c["num_hidden_layers"]),
    ("decoder.residual", lambda c: "parallel"),
    ("decoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("decoder.attention.kv_heads", lambda c: c.get("num_key_value_heads") or c["num_attention_heads"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: True),
    ("decoder.attention.qk_norm", _qk_norm),
    ("decoder.ffn.hidden", lambda c: c["intermediate_size"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("hidden_act", "gelu_new"))),
    ("decoder.ffn.gated", lambda c: False),
    ("decoder.ffn.bias", lambda c: True),
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("layer_norm_eps", 1e-5)),
    ("dropout", lambda c: c.get("attention_dropout") or 0.0),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "hidden_act": tuple(ACTIVATIONS),
}


def unsupported_extra(c: dict) -> list[str]:
    problems = unsupported_rope(c)
    head_dim = c.get("head_dim")
    if head_dim is not None and head_dim * c["num_attention_heads"] != c["hidden_size"]:
        problems.append(f"head_dim={head_dim} (supported: hidden_size / num_attention_heads, which qk_layernorm's width assumes)")
    return problems


L = "model.layers.{i}."
WEIGHTS = [
    W("embed.weight", "model.embed_tokens.weight"),
    W("lm_head.weight", "lm_head.weight"),
    W("output_bias", "lm_head.bias"),
    *(W(f"decoder.layers.{{i}}.norm_attn.{k}", L + f"input_layernorm.{k}", stack="decoder") for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.self_attn.{p}.{k}", L + f"self_attn.{p}_proj.{k}", stack="decoder") for p in "qkv" for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.self_attn.o.{k}", L + f"self_attn.dense.{k}", stack="decoder") for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.self_attn.{p}_norm.{k}", L + f"self_attn.{p}_layernorm.{k}", stack="decoder") for p in "qk" for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.ffn.{z}.{k}", L + f"mlp.{h}.{k}", stack="decoder") for z, h in (("up", "fc1"), ("down", "fc2")) for k in ("weight", "bias")),
    *(W(f"decoder.final_norm.{k}", f"model.final_layernorm.{k}") for k in ("weight", "bias")),
]

# rotary buffers of older checkpoints, and the tied output copy
DERIVED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"lm_head\.weight")
BASE_PREFIX = "model."


def weights(config: dict) -> list[W]:
    return WEIGHTS
