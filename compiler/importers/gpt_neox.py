"""GPT-NeoX / Pythia (``model_type: gpt_neox``): partial RoPE (rotary_pct, halves
layout), pre-LayerNorm, a parallel attention + FFN residual with two input norms
(use_parallel_residual; sequential otherwise), biases, GELU, an untied output
(``embed_out`` in older checkpoints, ``lm_head`` in transformers 5). The fused
query_key_value is laid out per head: rows (heads, 3, head_dim)."""

from __future__ import annotations

import torch

from compiler.importers.common import ACTIVATIONS, W, rope_scaling, rope_theta, unsupported_rope

MODEL_TYPES = ("gpt_neox",)


def rotary_fraction(c: dict, key: str, default: float) -> float:
    """partial_rotary_factor from rope_parameters (transformers 5), else the old ``key``."""
    params = c.get("rope_parameters") or {}
    return float(params.get("partial_rotary_factor", c.get(key, default)))


def per_head(heads: int, parts: int, index: int):
    """Rows (heads, parts, head_dim, ...) of a fused projection -> part ``index``: (heads * head_dim, ...)."""

    def take(t: torch.Tensor) -> torch.Tensor:
        grouped = t.reshape(heads, parts, -1, *t.shape[1:])  # (H, parts, hd, [D])
        return grouped[:, index].reshape(-1, *t.shape[1:]).contiguous()  # (H * hd, [D])

    return take


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 2048)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "rope", "theta": rope_theta({"rope_theta": c.get("rotary_emb_base", 10000.0), **c}),
                              "fraction": rotary_fraction(c, "rotary_pct", 0.25), "scaling": rope_scaling(c)}),
    ("embedding.tie_output", lambda c: bool(c.get("tie_word_embeddings", False))),
    ("decoder.layers", lambda c: c["num_hidden_layers"]),
    ("decoder.residual", lambda c: "parallel-two-norms" if c.get("use_parallel_residual", True) else "sequential"),
    ("decoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: bool(c.get("attention_bias", True))),
    ("decoder.ffn.hidden", lambda c: c["intermediate_size"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("hidden_act", "gelu"))),
    ("decoder.ffn.gated", lambda c: False),
    ("decoder.ffn.bias", lambda c: True),
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("layer_norm_eps", 1e-5)),
    ("dropout", lambda c: c.get("attention_dropout", 0.0)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "hidden_act": tuple(ACTIVATIONS),
    "add_cross_attention": (False,),
}


def unsupported_extra(c: dict) -> list[str]:
    return unsupported_rope(c)


def norm_rows(zoo: str, hf: str, *, parallel_name: str) -> list[W]:
    """A pre-norm's weight and bias under both layer classes' names (the spec's residual
    picks one: ``norm_attn.norm`` in a sequential layer, ``parallel_name`` in a parallel one)."""
    return [W(f"decoder.layers.{{i}}.{n}.{k}", f"{hf}.{k}", stack="decoder")
            for n in (f"{zoo}.norm", parallel_name) for k in ("weight", "bias")]


def weights(c: dict) -> list[W]:
    L, H = "gpt_neox.layers.{i}.", c["num_attention_heads"]
    qkv = [W(f"decoder.layers.{{i}}.self_attn.{p}.{k}", L + f"attention.query_key_value.{k}", per_head(H, 3, j), "decoder")
           for j, p in enumerate("qkv") for k in ("weight", "bias")]
    return [
        W("embed.weight", "gpt_neox.embed_in.weight"),
        W("lm_head.weight", "lm_head.weight"),
        *norm_rows("norm_attn", L + "input_layernorm", parallel_name="norm_attn"),
        *norm_rows("norm_ffn", L + "post_attention_layernorm", parallel_name="norm_ffn"),
        *qkv,
        *(W(f"decoder.layers.{{i}}.self_attn.o.{k}", L + f"attention.dense.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.ffn.{z}.{k}", L + f"mlp.{h}.{k}", stack="decoder")
          for z, h in (("up", "dense_h_to_4h"), ("down", "dense_4h_to_h")) for k in ("weight", "bias")),
        *(W(f"decoder.final_norm.{k}", f"gpt_neox.final_layer_norm.{k}") for k in ("weight", "bias")),
    ]


def from_tensors(data: dict, state: dict) -> None:
    """Older checkpoints (Pythia on the hub) name the output ``embed_out``."""
    if "embed_out.weight" in state:
        state["lm_head.weight"] = state.pop("embed_out.weight")
    if "gpt_neox.embed_out.weight" in state:  # given the base prefix with the other keys
        state["lm_head.weight"] = state.pop("gpt_neox.embed_out.weight")


# causal-mask and rotary buffers of older checkpoints, and the tied output copy
DERIVED = (r"gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)", r"lm_head\.weight")
BASE_PREFIX = "gpt_neox."
