"""Transformer layers. Each takes its sub-modules already built (see builder.py)
and never sees the spec. The norm placements (zoo.spec.variants.PLACEMENTS): ``pre``
x + f(norm(x)); ``post`` norm(x + f(x)); ``sandwich`` x + post_norm(f(norm(x)));
``branch-post`` x + post_norm(f(x))."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from compiler.attention import KV, CrossAttention, Rotate, SelfAttention
from compiler.variants import implement
from zoo.spec import variants


class Residual(nn.Module):
    """One residual sub-layer around ``fn`` with its norms: ``norm`` on the input (``pre``)
    or on the sum (not ``pre``), or None; ``post_norm`` on ``fn``'s output inside the
    residual, or None. x and the result: (B, T, d_model)."""

    def __init__(self, norm: Optional[nn.Module], *, pre: bool, dropout: float, multiplier: float = 1.0,
                 post_norm: Optional[nn.Module] = None):
        super().__init__()
        self.norm, self.pre, self.drop, self.multiplier = norm, pre, nn.Dropout(dropout), multiplier
        self.post_norm = post_norm

    def _branch(self, y: torch.Tensor) -> torch.Tensor:
        y = self.drop(y)
        return y * self.multiplier if self.multiplier != 1.0 else y  # Granite's residual_multiplier

    def forward(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if not self.pre:
            return self.norm(x + self._branch(fn(x)))
        y = fn(self.norm(x) if self.norm is not None else x)
        return x + self._branch(self.post_norm(y) if self.post_norm is not None else y)


def _keep(result: tuple[torch.Tensor, KV], into: list[KV]) -> torch.Tensor:
    """Self-attention returns (output, cache); the residual wants the output alone."""
    into.append(result[1])
    return result[0]


class EncoderLayer(nn.Module):
    """Bidirectional self-attention (padding mask only) and feed-forward.
    Returns the output and the self-attention cache (used by decoders)."""

    def __init__(self, *, self_attn: SelfAttention, ffn: nn.Module, norm_attn: Residual, norm_ffn: Residual):
        super().__init__()
        self.self_attn, self.ffn = self_attn, ffn
        self.norm_attn, self.norm_ffn = norm_attn, norm_ffn

    def forward(
        self,
        x: torch.Tensor,
        *,
        allowed: torch.Tensor,
        bias: Optional[torch.Tensor],
        rotate: Optional[Rotate],
        past: Optional[KV] = None,
    ) -> tuple[torch.Tensor, KV]:
        present: list[KV] = []
        x = self.norm_attn(x, lambda h: _keep(self.self_attn(h, allowed=allowed, bias=bias, rotate=rotate, past=past), present))
        return self.norm_ffn(x, self.ffn), present[0]


class DecoderLayer(EncoderLayer):
    """Causal self-attention and feed-forward (decoder-only models). The causal
    mask arrives in ``allowed``; the layer itself is the encoder layer's shape."""


class CrossDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the encoder output, feed-forward."""

    def __init__(
        self,
        *,
        self_attn: SelfAttention,
        cross_attn: CrossAttention,
        ffn: nn.Module,
        norm_attn: Residual,
        norm_cross: Residual,
        norm_ffn: Residual,
    ):
        super().__init__()
        self.self_attn, self.cross_attn, self.ffn = self_attn, cross_attn, ffn
        self.norm_attn, self.norm_cross, self.norm_ffn = norm_attn, norm_cross, norm_ffn

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: KV,
        *,
        allowed: torch.Tensor,
        cross_allowed: torch.Tensor,
        bias: Optional[torch.Tensor],
        rotate: Optional[Rotate],
        past: Optional[KV] = None,
    ) -> tuple[torch.Tensor, KV]:
        present: list[KV] = []
        x = self.norm_attn(x, lambda h: _keep(self.self_attn(h, allowed=allowed, bias=bias, rotate=rotate, past=past), present))
        x = self.norm_cross(x, lambda h: self.cross_attn(h, memory_kv, allowed=cross_allowed))
        return self.norm_ffn(x, self.ffn), present[0]


class ParallelLayer(nn.Module):
    """y = x + m (attn(n1(x)) + ffn(n2(x))): both sub-layers read the layer's input
    (GPT-J, GPT-NeoX, Falcon, Phi). ``norm_ffn`` None: n2 = n1, one shared norm.
    Pre-norm only, no cross-attention (the spec's rules). Returns (output (B, T, d), cache)."""

    def __init__(self, *, self_attn: SelfAttention, ffn: nn.Module, norm_attn: nn.Module, norm_ffn: Optional[nn.Module],
                 dropout: float, multiplier: float = 1.0):
        super().__init__()
        self.self_attn, self.ffn, self.norm_attn, self.norm_ffn = self_attn, ffn, norm_attn, norm_ffn
        self.drop, self.multiplier = nn.Dropout(dropout), multiplier

    def forward(
        self,
        x: torch.Tensor,
        *,
        allowed: torch.Tensor,
        bias: Optional[torch.Tensor],
        rotate: Optional[Rotate],
        past: Optional[KV] = None,
    ) -> tuple[torch.Tensor, KV]:
        h = self.norm_attn(x)
        attn, present = self.self_attn(h, allowed=allowed, bias=bias, rotate=rotate, past=past)
        ffn = self.ffn(self.norm_ffn(x) if self.norm_ffn is not None else h)
        branch = self.drop(attn) + self.drop(ffn)
        return x + (branch * self.multiplier if self.multiplier != 1.0 else branch), present


# zoo.spec.variants.RESIDUALS: the layer class of each (the builder gives each its norms)
RESIDUALS = implement(
    variants.RESIDUALS, {"sequential": EncoderLayer, "parallel": ParallelLayer, "parallel-two-norms": ParallelLayer}
)
