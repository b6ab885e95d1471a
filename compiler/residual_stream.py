"""Where the trained-like generator (compiler.trained_like) reads the residual stream:
as the norm placement's entry (zoo.spec.variants.PLACEMENTS, ``stream_at``) says."""

from __future__ import annotations

import torch
from torch import nn

from zoo.spec.variants import PLACEMENTS


def normal_mask(x: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """(N,) True for the tokens (rows of x (N, d)) not dominated by the outlier channels."""
    energy = x.pow(2)
    return energy[:, channels].sum(-1) < 0.5 * energy.sum(-1)  # all True without channels


def layers(model: nn.Module, roles) -> list[nn.Module]:
    """The transformer layers: the members of a ModuleList that hold norms (zoo and HF alike)."""
    norms = {id(m) for _, m in roles.norms}
    return [layer for lst in model.modules() if isinstance(lst, nn.ModuleList) for layer in lst
            if any(id(m) in norms for m in layer.modules())]


def stream_hooks(model, roles, placement: str, record) -> list:
    """Hooks that ``record`` the residual stream (B, T, d) where the placement's entry
    says it is seen: the norms' inputs (pre), their outputs (post) or the layers' outputs
    (sandwich, branch-post: some norms sit on the branch, not on the stream)."""
    at = PLACEMENTS[placement].stream_at
    if at == "layer-outputs":
        return [m.register_forward_hook(lambda mod, args, out: record(out[0] if isinstance(out, tuple) else out))
                for m in layers(model, roles)]
    if at == "norm-inputs":
        return [m.register_forward_pre_hook(lambda mod, args: record(args[0])) for _, m in roles.norms]
    return [m.register_forward_hook(lambda mod, args, out: record(out)) for _, m in roles.norms]


def residual(model, roles, logits_fn, ids, mask, channels, placement: str):
    """Median over the stack's middle (see stream_hooks) of (normal-token median |x|
    of the normal channels, max |x| of the outlier channels): the residual stream."""
    d = roles.d_model
    others = torch.ones(d, dtype=torch.bool).index_fill_(0, channels, False)
    seen: list[tuple[float, float]] = []

    def record(x):
        flat = x.detach().reshape(-1, d).float()
        rows = flat[normal_mask(flat, channels)]
        typical = float(rows[:, others].abs().median()) if rows.numel() else float(flat.abs().median())
        peak = float(flat[:, channels].abs().max()) if channels.numel() else 0.0
        seen.append((typical, peak))

    handles = stream_hooks(model, roles, placement, record)
    try:
        with torch.no_grad():
            logits_fn(model, ids, mask)
    finally:
        for h in handles:
            h.remove()
    middle = seen[len(seen) // 4 : max(len(seen) // 4 + 1, 3 * len(seen) // 4)]
    typical = sorted(t for t, _ in middle)[len(middle) // 2]
    peak = sorted(p for _, p in middle)[len(middle) // 2]
    return typical, peak
