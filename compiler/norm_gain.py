"""A norm's gain, whatever its parametrisation: ``weight`` (LayerNorm, RMSNorm) or
``1 + weight`` (Gemma's RMSNorm, the zoo's ``rmsnorm-plus-one``). The trained-like
generator sets gains through these, so it treats both kinds alike."""

from __future__ import annotations

import torch
from torch import nn

from compiler.variants import variant_of


def offset(norm: nn.Module) -> float:
    """What the norm adds to its weight: the registry entry's ``offset`` for a zoo norm,
    1 for Hugging Face's Gemma RMSNorms (weights stored as gain - 1), else 0."""
    variant = variant_of(norm)
    if variant is not None:
        return float(getattr(variant, "offset", 0.0))
    name = type(norm).__name__
    return 1.0 if name.startswith("Gemma") and name.endswith("RMSNorm") else 0.0


@torch.no_grad()
def set_gain(norm: nn.Module, gain: torch.Tensor | float) -> None:
    w = norm.weight
    w.copy_((torch.as_tensor(gain, dtype=torch.float32) - offset(norm)).expand(w.shape).to(w.dtype))


@torch.no_grad()
def scale_gain(norm: nn.Module, factor: float) -> None:
    o = offset(norm)
    norm.weight.copy_(((norm.weight.float() + o) * factor - o).to(norm.weight.dtype))
