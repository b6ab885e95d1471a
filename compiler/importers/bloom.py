"""BLOOM (``model_type: bloom``): decoder-only, ALiBi, a LayerNorm on the token
embeddings (word_embeddings_layernorm -> embedding.norm), pre-LayerNorm, biases
everywhere, BLOOM's tanh-approximated GELU (gelu-tanh), the output tied to the token
embedding, no position table.

ALiBi: transformers adds +slope_h * k_pos to each score, with k_pos counted over the real
tokens (mask cumsum - 1); for a query at real position i that is -slope_h * (i - k_pos)
plus slope_h * i, a constant over its keys, which the softmax removes: the zoo's
-slope_h * |q_pos - k_pos| (causal keys only, positions from the mask) gives the same
weights, left padding included. The slopes are the paper's (2^(-8/n) powers, interleaved
for head counts that are not powers of two) in both.

The fused query_key_value projection is laid out per head: its 3 * hidden output rows
are (heads, 3, head_dim), q, k and v of head h at rows h*3*head_dim + (0, 1, 2)*head_dim.
Refused: apply_residual_connection_post_layernorm (the residual taken after the norm)."""

from __future__ import annotations

from typing import Callable

import torch

from compiler.importers.common import W

MODEL_TYPES = ("bloom",)

CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("seq_length") or 2048),  # ALiBi has no table; BLOOM trained at 2048
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "alibi"}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", True)),
    ("embedding.norm", lambda c: True),  # word_embeddings_layernorm
    ("decoder.layers", lambda c: c["n_layer"]),
    ("decoder.attention.heads", lambda c: c["n_head"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: True),
    ("decoder.ffn.hidden", lambda c: 4 * c["hidden_size"]),
    ("decoder.ffn.activation", lambda c: "gelu-tanh"),  # bloom_gelu_forward: x/2 (1 + tanh(0.79788456 x (1 + 0.044715 x^2)))
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("layer_norm_epsilon", 1e-5)),
    ("dropout", lambda c: c.get("hidden_dropout", 0.0)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "apply_residual_connection_post_layernorm": (False,),
}


def unsupported_extra(c: dict) -> list[str]:
    return []


def _per_head(heads: int, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Part ``index`` (q 0, k 1, v 2) of a fused (heads * 3 * head_dim, ...) weight or bias."""

    def take(t: torch.Tensor) -> torch.Tensor:
        fused = t.reshape(heads, 3, t.shape[0] // (3 * heads), *t.shape[1:])  # (heads, 3, head_dim[, in])
        return fused[:, index].reshape(-1, *t.shape[1:]).contiguous()  # (heads * head_dim[, in])

    return take


def weights(config: dict) -> list[W]:
    heads, L = config["n_head"], "transformer.h.{i}."
    return [
        W("embed.weight", "transformer.word_embeddings.weight"),
        W("lm_head.weight", "lm_head.weight"),
        *(W(f"decoder.embed_norm.{k}", f"transformer.word_embeddings_layernorm.{k}") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.self_attn.{p}.{k}", L + f"self_attention.query_key_value.{k}", _per_head(heads, n), "decoder")
          for n, p in enumerate("qkv") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.self_attn.o.{k}", L + f"self_attention.dense.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.norm_attn.norm.{k}", L + f"input_layernorm.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.ffn.up.{k}", L + f"mlp.dense_h_to_4h.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.ffn.down.{k}", L + f"mlp.dense_4h_to_h.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.norm_ffn.norm.{k}", L + f"post_attention_layernorm.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.final_norm.{k}", f"transformer.ln_f.{k}") for k in ("weight", "bias")),
    ]


DERIVED = (r"lm_head\.weight",)  # the tied output copy
BASE_PREFIX = "transformer."  # a checkpoint of the bare BloomModel has its keys without it
