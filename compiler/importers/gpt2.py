"""GPT-2 (``model_type: gpt2``): learned positions, pre-LayerNorm, fused qkv in
Conv1D layout (in, out), tied output."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W, split

MODEL_TYPES = ("gpt2",)

CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c["n_positions"]),
    ("d_model", lambda c: c["n_embd"]),
    ("positional", lambda c: {"kind": "learned"}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", True)),
    ("decoder.layers", lambda c: c["n_layer"]),
    ("decoder.attention.heads", lambda c: c["n_head"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: True),
    ("decoder.ffn.hidden", lambda c: c.get("n_inner") or 4 * c["n_embd"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("activation_function", "gelu_new"))),
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("layer_norm_epsilon", 1e-5)),
    ("dropout", lambda c: c.get("resid_pdrop", 0.1)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "activation_function": ("gelu_new", "gelu", "relu", "silu", "gelu_pytorch_tanh"),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "add_cross_attention": (False,),
}

T = lambda t: t.t().contiguous()  # noqa: E731  Conv1D (in, out) -> Linear (out, in)
WEIGHTS = [
    W("embed.weight", "transformer.wte.weight"),
    W("decoder.absolute.weight", "transformer.wpe.weight"),
    W("lm_head.weight", "lm_head.weight"),
    W("decoder.layers.{i}.norm_attn.norm.weight", "transformer.h.{i}.ln_1.weight", stack="decoder"),
    W("decoder.layers.{i}.norm_attn.norm.bias", "transformer.h.{i}.ln_1.bias", stack="decoder"),
    W("decoder.layers.{i}.self_attn.q.weight", "transformer.h.{i}.attn.c_attn.weight", lambda t: T(split(3, 0, 1)(t)), "decoder"),
    W("decoder.layers.{i}.self_attn.k.weight", "transformer.h.{i}.attn.c_attn.weight", lambda t: T(split(3, 1, 1)(t)), "decoder"),
    W("decoder.layers.{i}.self_attn.v.weight", "transformer.h.{i}.attn.c_attn.weight", lambda t: T(split(3, 2, 1)(t)), "decoder"),
    W("decoder.layers.{i}.self_attn.q.bias", "transformer.h.{i}.attn.c_attn.bias", split(3, 0), "decoder"),
    W("decoder.layers.{i}.self_attn.k.bias", "transformer.h.{i}.attn.c_attn.bias", split(3, 1), "decoder"),
    W("decoder.layers.{i}.self_attn.v.bias", "transformer.h.{i}.attn.c_attn.bias", split(3, 2), "decoder"),
    W("decoder.layers.{i}.self_attn.o.weight", "transformer.h.{i}.attn.c_proj.weight", T, "decoder"),
    W("decoder.layers.{i}.self_attn.o.bias", "transformer.h.{i}.attn.c_proj.bias", stack="decoder"),
    W("decoder.layers.{i}.norm_ffn.norm.weight", "transformer.h.{i}.ln_2.weight", stack="decoder"),
    W("decoder.layers.{i}.norm_ffn.norm.bias", "transformer.h.{i}.ln_2.bias", stack="decoder"),
    W("decoder.layers.{i}.ffn.up.weight", "transformer.h.{i}.mlp.c_fc.weight", T, "decoder"),
    W("decoder.layers.{i}.ffn.up.bias", "transformer.h.{i}.mlp.c_fc.bias", stack="decoder"),
    W("decoder.layers.{i}.ffn.down.weight", "transformer.h.{i}.mlp.c_proj.weight", T, "decoder"),
    W("decoder.layers.{i}.ffn.down.bias", "transformer.h.{i}.mlp.c_proj.bias", stack="decoder"),
    W("decoder.final_norm.weight", "transformer.ln_f.weight"),
    W("decoder.final_norm.bias", "transformer.ln_f.bias"),
]

# causal-mask buffers of older checkpoints, and the tied output copy: recomputed or shared
DERIVED = (r"transformer\.h\.\d+\.attn\.(masked_)?bias", r"lm_head\.weight")
BASE_PREFIX = "transformer."  # a checkpoint of the bare GPT2Model has its keys without it


def weights(config: dict) -> list[W]:
    return WEIGHTS


def unsupported_extra(config: dict) -> list[str]:
    return []
