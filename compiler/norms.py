"""Norms: the implementations of zoo.spec.variants.NORMS (``norm.kind``)."""

from __future__ import annotations

import torch
from torch import nn

from compiler.variants import implement
from zoo.spec import variants


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, the variance accumulated in fp32 (T5, Llama)."""

    def __init__(self, dim: int, *, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm, computed in fp32 for half-precision inputs."""

    def __init__(self, dim: int, *, eps: float):
        super().__init__(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return nn.functional.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        ).to(x.dtype)


class PlusOneRMSNorm(RMSNorm):
    """x / sqrt(mean(x^2) + eps) * (1 + weight), all in fp32 (Gemma's RMSNorm): the
    weight is stored as gain - 1, so it starts at 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).to(x.dtype)


NORMS: dict[str, type[nn.Module]] = implement(
    variants.NORMS, {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "rmsnorm-plus-one": PlusOneRMSNorm}
)
