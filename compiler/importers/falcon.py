"""Falcon (``model_type: falcon``): RoPE (halves), LayerNorm, GELU, biases or none
(``bias``), the output tied by default. Three layers: Falcon-7B's parallel attention +
FFN on one shared input_layernorm with multi-query attention (``multi_query``), the new
decoder architecture (Falcon-40B/180B: ``ln_attn`` and ``ln_mlp`` in parallel, GQA with
``num_kv_heads``), and a sequential layer (``parallel_attn`` false). The fused
query_key_value rows are laid out per variant: per KV group [queries of the group, key,
value] (new architecture), [all queries | key | value] (multi-query), or per head
[q, k, v] (otherwise)."""

from __future__ import annotations

import torch

from compiler.importers.common import ACTIVATIONS, W, rope_scaling, rope_theta, unsupported_rope

MODEL_TYPES = ("falcon",)


def _new(c: dict) -> bool:
    return bool(c.get("new_decoder_architecture", False))


def _kv_heads(c: dict) -> int:
    if _new(c):
        return c.get("num_kv_heads") or c["num_attention_heads"]
    return 1 if c.get("multi_query", True) else c["num_attention_heads"]


def _residual(c: dict) -> str:
    if _new(c):
        return "parallel-two-norms" if (c.get("num_ln_in_parallel_attn") or 2) == 2 else "parallel"
    return "parallel" if c.get("parallel_attn", True) else "sequential"


def fused_part(c: dict, index: int):
    """query_key_value rows -> q (index 0), k (1) or v (2), rows (heads or kv_heads * head_dim, ...).
    The rows are (groups, members, head_dim): per KV group its queries then its key and value
    (new architecture: groups = kv_heads), or per head q, k, v (groups = heads); multi-query:
    all queries, then one key, then one value."""
    heads, kv = c["num_attention_heads"], _kv_heads(c)
    hd = c["hidden_size"] // heads
    if not _new(c) and kv == 1:  # multi-query: rows [heads * hd | hd | hd]
        bounds = (0, heads * hd, heads * hd + hd, heads * hd + 2 * hd)
        return lambda t: t[bounds[index] : bounds[index + 1]].contiguous()
    groups, queries = (kv, heads // kv) if _new(c) else (heads, 1)
    take = slice(0, queries) if index == 0 else slice(queries + index - 1, queries + index)

    def part(t: torch.Tensor) -> torch.Tensor:
        grouped = t.reshape(groups, queries + 2, hd, *t.shape[1:])  # (groups, members, hd, [D])
        return grouped[:, take].reshape(-1, *t.shape[1:]).contiguous()  # (heads or kv_heads * hd, [D])

    return part


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 2048)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "rope", "theta": rope_theta(c), "scaling": rope_scaling(c)}),
    ("embedding.tie_output", lambda c: bool(c.get("tie_word_embeddings", True))),
    ("decoder.layers", lambda c: c["num_hidden_layers"]),
    ("decoder.residual", _residual),
    ("decoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("decoder.attention.kv_heads", _kv_heads),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: bool(c.get("bias", False))),
    ("decoder.ffn.hidden", lambda c: c.get("ffn_hidden_size") or 4 * c["hidden_size"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("activation", "gelu"))),
    ("decoder.ffn.gated", lambda c: False),
    ("decoder.ffn.bias", lambda c: bool(c.get("bias", False))),
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("layer_norm_epsilon") or 1e-5),
    ("dropout", lambda c: c.get("attention_dropout") or 0.0),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "activation": tuple(ACTIVATIONS),
    # Falcon's ALiBi rounds its slopes to bfloat16 and divides them by sqrt(head_dim): not the zoo's positional alibi
    "alibi": (False,),
}


def unsupported_extra(c: dict) -> list[str]:
    problems = unsupported_rope(c)
    if _new(c) and not c.get("parallel_attn", True):
        problems.append("new_decoder_architecture=True with parallel_attn=False (transformers' layer has no norm for that)")
    if not _new(c) and c.get("num_ln_in_parallel_attn") == 2:
        problems.append("num_ln_in_parallel_attn=2 without new_decoder_architecture (transformers' layer reads a norm it lacks)")
    return problems


def _norms(c: dict) -> list[W]:
    """(zoo norm module, HF norm) by the layer kind the residual selects."""
    L = "transformer.h.{i}."
    pairs = {
        "parallel-two-norms": (("norm_attn", "ln_attn"), ("norm_ffn", "ln_mlp")),
        "parallel": (("norm_attn", "input_layernorm"),),
        "sequential": (("norm_attn.norm", "input_layernorm"), ("norm_ffn.norm", "post_attention_layernorm")),
    }[_residual(c)]
    return [W(f"decoder.layers.{{i}}.{z}.{k}", L + f"{h}.{k}", stack="decoder") for z, h in pairs for k in ("weight", "bias")]


def weights(c: dict) -> list[W]:
    L = "transformer.h.{i}."
    return [
        W("embed.weight", "transformer.word_embeddings.weight"),
        W("lm_head.weight", "lm_head.weight"),
        *_norms(c),
        *(W(f"decoder.layers.{{i}}.self_attn.{p}.{k}", L + f"self_attention.query_key_value.{k}", fused_part(c, j), "decoder")
          for j, p in enumerate("qkv") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.self_attn.o.{k}", L + f"self_attention.dense.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.ffn.{z}.{k}", L + f"mlp.{h}.{k}", stack="decoder")
          for z, h in (("up", "dense_h_to_4h"), ("down", "dense_4h_to_h")) for k in ("weight", "bias")),
        *(W(f"decoder.final_norm.{k}", f"transformer.ln_f.{k}") for k in ("weight", "bias")),
    ]


# rotary buffers of older checkpoints, and the tied output copy
DERIVED = (r"transformer\.h\.\d+\.self_attention\.rotary_emb\.inv_freq", r"lm_head\.weight")
BASE_PREFIX = "transformer."
