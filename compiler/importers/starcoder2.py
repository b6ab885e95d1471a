"""StarCoder2 (``model_type: starcoder2``): RoPE (GPT-NeoX halves layout, every dimension
of the head: transformers ignores partial_rotary_factor here), pre-LayerNorm with bias
(norm_epsilon), a plain FFN c_fc / c_proj (gelu_pytorch_tanh), ``use_bias`` on every
projection, GQA, an optional sliding window in every layer, a tied output."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W, partial_rotary, rope_scaling, rope_theta, rope_type, unsupported_rope

MODEL_TYPES = ("starcoder2",)

CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 4096)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "rope", "theta": rope_theta(c), "fraction": 1.0, "scaling": rope_scaling(c)}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", True)),
    ("decoder.layers", lambda c: c["num_hidden_layers"]),
    ("decoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("decoder.attention.kv_heads", lambda c: c.get("num_key_value_heads") or c["num_attention_heads"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: bool(c.get("use_bias", True))),
    ("decoder.attention.window", lambda c: c.get("sliding_window")),
    ("decoder.ffn.hidden", lambda c: c["intermediate_size"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("hidden_act", "gelu_pytorch_tanh"))),
    ("decoder.ffn.gated", lambda c: False),
    ("decoder.ffn.bias", lambda c: bool(c.get("use_bias", True))),
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("norm_epsilon", 1e-5)),
    ("dropout", lambda c: c.get("residual_dropout", 0.0)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "hidden_act": ("gelu_pytorch_tanh", "gelu", "gelu_new", "relu", "silu"),
}


def unsupported_extra(c: dict) -> list[str]:
    problems = unsupported_rope(c)
    if partial_rotary(c) != 1.0 and rope_type(c) is not None:  # as in llama.py: transformers cannot run it
        problems.append(f"partial_rotary_factor={partial_rotary(c)} with rope_type={rope_type(c)!r} (supported: 1.0 with a scaled rope)")
    return problems


L = "model.layers.{i}."
WEIGHTS = [
    W("embed.weight", "model.embed_tokens.weight"),
    W("lm_head.weight", "lm_head.weight"),
    *(W(f"decoder.layers.{{i}}.{z}.norm.{k}", L + f"{h}.{k}", stack="decoder")
      for z, h in (("norm_attn", "input_layernorm"), ("norm_ffn", "post_attention_layernorm")) for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.self_attn.{p}.{k}", L + f"self_attn.{p}_proj.{k}", stack="decoder") for p in "qkvo" for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.ffn.{z}.{k}", L + f"mlp.{h}.{k}", stack="decoder") for z, h in (("up", "c_fc"), ("down", "c_proj")) for k in ("weight", "bias")),
    W("decoder.final_norm.weight", "model.norm.weight"),
    W("decoder.final_norm.bias", "model.norm.bias"),
]

# rotary frequency buffers of older checkpoints, and the tied output copy
DERIVED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"lm_head\.weight")
BASE_PREFIX = "model."


def weights(config: dict) -> list[W]:
    return WEIGHTS
