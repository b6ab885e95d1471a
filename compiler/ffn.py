"""Feed-forward blocks (zoo.spec.variants.FFN_KINDS): plain (down(act(up x))) and gated
(down(act(gate x) * up x)); the activations of zoo.spec.variants.ACTIVATIONS."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from compiler.variants import implement
from zoo.spec import variants

ACTIVATIONS = implement(
    variants.ACTIVATIONS,
    {
        "relu": F.relu,
        "gelu": F.gelu,
        "gelu-tanh": lambda x: F.gelu(x, approximate="tanh"),
        "silu": F.silu,
    },
)


class FeedForward(nn.Module):
    """x (B, T, d) -> (B, T, d). Gated: SwiGLU with silu, GeGLU with gelu."""

    def __init__(self, d_model: int, hidden: int, *, activation: str, gated: bool, bias: bool, dropout: float):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.gate = nn.Linear(d_model, hidden, bias=bias) if gated else None
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            h = self.act(self.up(x))
        else:
            h = self.act(self.gate(x)) * self.up(x)
        return self.down(self.drop(h))


# the feed-forward kinds of zoo.spec.variants.FFN_KINDS: (d_model, hidden, activation, bias, dropout) -> module
FFN_KINDS = implement(
    variants.FFN_KINDS,
    {
        "plain": lambda d, hidden, **kw: FeedForward(d, hidden, gated=False, **kw),
        "gated": lambda d, hidden, **kw: FeedForward(d, hidden, gated=True, **kw),
    },
)
