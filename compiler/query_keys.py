"""Which output units of an attention projection are queries or keys, found by the
projection's name (Hugging Face's and the zoo's): the trained-like generator
(compiler.trained_like) sharpens those. Separate q and k projections, GPT-2's fused
[q | k | v] Conv1D, Phi-3's qkv_proj, and the grouped query_key_value of GPT-NeoX, Falcon and BLOOM."""

from __future__ import annotations

import torch
from torch import nn

QUERY_NAMES = ("q", "q_proj", "query", "q_lin")
KEY_NAMES = ("k", "k_proj", "key", "k_lin")
FUSED_QKV_NAMES = ("c_attn",)  # GPT-2's Conv1D: out columns [q | k | v]
STACKED_QKV_NAMES = ("qkv_proj",)  # Phi-3's Linear: out rows [q | k | v], GQA (k and v of kv heads)
GROUPED_QKV_NAMES = ("query_key_value",)  # GPT-NeoX, Falcon: rows (groups, members, head_dim), see _grouped_rows


def _grouped_rows(attention: nn.Module, rows: int) -> torch.Tensor:
    """The query and key rows of a fused query_key_value laid out (groups, members, head_dim)
    with each group's key and value last: per head [q, k, v] (GPT-NeoX, Falcon multi-head),
    per KV group [its queries, k, v] (Falcon's new architecture); Falcon's multi-query
    [all queries | k | v] is one group."""
    heads = getattr(attention, "num_heads", None) or attention.config.num_attention_heads
    kv = getattr(attention, "num_kv_heads", heads)
    head_dim = rows // (heads + 2 * kv)
    if kv == 1 and not getattr(attention, "new_decoder_architecture", False):
        return torch.arange(0, (heads + 1) * head_dim)  # multi-query: queries, then the key
    members = heads // kv + 2
    member = (torch.arange(rows) // head_dim) % members  # (rows,) member of each row within its group
    return torch.nonzero(member < members - 1).flatten()  # queries and the key, not the value


def query_key_columns(name: str, module: nn.Module, model: nn.Module):
    """The output columns (a slice, or row indices) of ``module`` that are queries or keys, or None."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in QUERY_NAMES or leaf in KEY_NAMES:
        return slice(None)
    if leaf in FUSED_QKV_NAMES:
        return slice(0, 2 * (module.weight.shape[1] // 3))
    if leaf in STACKED_QKV_NAMES and "." in name:  # all rows but the values' (kv heads x head_dim)
        attention = model.get_submodule(name.rsplit(".", 1)[0])
        return slice(0, module.weight.shape[0] - attention.num_key_value_heads * attention.head_dim)
    if leaf in GROUPED_QKV_NAMES and "." in name:
        return _grouped_rows(model.get_submodule(name.rsplit(".", 1)[0]), module.weight.shape[0])
    return None
