"""The query and key rows of a fused query_key_value projection (BLOOM, GPT-NeoX, Falcon),
whose rows are (groups, members, head_dim) with each group's key and value last: the
trained-like generator (compiler.trained_like) sharpens those rows."""

from __future__ import annotations

import torch
from torch import nn


def grouped_rows(attention: nn.Module, rows: int) -> torch.Tensor:
    """The query and key rows (N,) of a fused query_key_value of ``rows`` rows: per head
    [q, k, v] (BLOOM, GPT-NeoX, Falcon multi-head), per KV group [its queries, k, v]
    (Falcon's new architecture); Falcon's multi-query [all queries | k | v] is one group.
    Heads from the attention module (num_heads, or its config's num_attention_heads)."""
    heads = getattr(attention, "num_heads", None) or attention.config.num_attention_heads
    kv = getattr(attention, "num_kv_heads", heads)
    head_dim = rows // (heads + 2 * kv)
    if kv == 1 and heads > 1 and not getattr(attention, "new_decoder_architecture", False):
        return torch.arange(0, (heads + 1) * head_dim)  # multi-query: queries, then the key
    members = heads // kv + 2
    member = (torch.arange(rows) // head_dim) % members  # (rows,) member of each row within its group
    return torch.nonzero(member < members - 1).flatten()  # queries and the key, not the value
