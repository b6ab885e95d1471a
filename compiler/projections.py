"""What the trained-like generator (compiler.trained_like) treats as a projection: an
nn.Linear, GPT-2's Conv1D (weight (in, out)), a transformers MoE router (a bare
(experts, d) weight: MixtralTopKRouter, Qwen2MoeTopKRouter, ...) and each expert of
transformers' stacked MoE weights (experts.gate_up_proj (E, 2h, d), experts.down_proj
(E, d, h)), seen through a view with a Linear's ``weight``."""

from __future__ import annotations

import torch
from torch import nn


def is_linear(module: nn.Module) -> bool:
    name = type(module).__name__
    router = name.endswith("Router") and isinstance(w := getattr(module, "weight", None), torch.Tensor) and w.dim() == 2
    return isinstance(module, nn.Linear) or name == "Conv1D" or router


class Expert:
    """One expert's (out, in) matrix of a stacked (experts, out, in) parameter: a view,
    so that writing ``weight`` writes the parameter."""

    bias = None

    def __init__(self, weight: torch.Tensor):
        self.weight = weight


def stacked_experts(model: nn.Module) -> list[tuple[str, Expert]]:
    """(name.param.e, Expert) for every expert of every stacked-experts module of ``model``."""
    return [
        (f"{name}.{p_name}.{e}", Expert(p[e]))
        for name, m in model.named_modules()
        if "Experts" in type(m).__name__
        for p_name, p in m.named_parameters(recurse=False)
        if p.dim() == 3
        for e in range(p.shape[0])
    ]
