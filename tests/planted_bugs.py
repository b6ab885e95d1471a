"""Planted bugs for the parity gate (issue 13 point 2): each one changes what the
exported ONNX graph computes while the torch reference stays correct.

A bug is ``plant(model, spec) -> context manager``: it mutates ``model`` (a deep copy
of the build's module: a buffer, an attribute, a weight) and/or returns a context in
which a compiler function is replaced; the graph is exported from that copy inside
that context (``planted_export``), and the build's parity check then compares it with
the untouched module. ``run_build`` runs build_artifact that way and returns the
ParityError (or None) with the parity report the gate judged.
"""

from __future__ import annotations

import contextlib
import copy
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Optional
from unittest import mock

import torch

import zoo.app.build
import compiler.attention
import compiler.model
from compiler import positional
from zoo.app.export import export_all as real_export_all
from zoo.spec.errors import ParityError

Plant = Callable[[torch.nn.Module, object], ContextManager]


@dataclass(frozen=True)
class Bug:
    name: str  # the bug class, as in issue 13
    spec: str  # the catalog spec it is planted in (where the component exists)
    plant: Plant
    what: str  # how it is planted


def _stacks(model) -> list:
    return [s for s in (getattr(model, "encoder", None), getattr(model, "decoder", None)) if s is not None]


def _middle(model) -> int:
    return len(_stacks(model)[-1].layers) // 2


# --------------------------------------------------------------------------- the bugs


def no_bug(model, spec) -> ContextManager:
    return contextlib.nullcontext()


def rope_theta(model, spec) -> ContextManager:
    """inv_freq of theta * 10 (10000 -> 100000)."""
    for stack in _stacks(model):
        r = stack.rotary
        theta = spec.positional.theta * 10
        r.inv_freq = 1.0 / (theta ** (torch.arange(0, r.rotary_dim, 2, dtype=torch.float32) / r.rotary_dim))
    return contextlib.nullcontext()


def _apply_interleaved(self, x, cos, sin):
    """GPT-J layout: pairs (x0, x1), (x2, x3)... rotated, where the model uses halves."""
    rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
    half = self.rotary_dim // 2
    cos = cos[..., :half].repeat_interleave(2, dim=-1)
    sin = sin[..., :half].repeat_interleave(2, dim=-1)
    pairs = rot.unflatten(-1, (half, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    out = rot.float() * cos + rotated.float() * sin
    return torch.cat((out.to(x.dtype), rest), dim=-1)


def rope_layout(model, spec) -> ContextManager:
    for stack in _stacks(model):
        stack.rotary.apply = types.MethodType(_apply_interleaved, stack.rotary)
    return contextlib.nullcontext()


def _positions_from_one(mask: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(mask, dim=-1).clamp(min=0)  # the "- 1" forgotten: positions start at 1


def positions_plus_one(model, spec) -> ContextManager:
    return mock.patch.object(compiler.model, "positions_from_mask", _positions_from_one)


def positions_decode_off_by_one(model, spec) -> ContextManager:
    """With a cache, the new tokens sit one position further than they are (their
    position counted as past length + 1): invisible without a cache."""
    state: dict = {}
    real_forward = compiler.model.Stack.forward

    def forward(self, x, mask, *args, **kw):
        state["past"] = mask.shape[1] - x.shape[1]
        return real_forward(self, x, mask, *args, **kw)

    def shifted(mask):
        pos = (torch.cumsum(mask, dim=-1) - 1).clamp(min=0)
        past = state["past"]
        flag = torch.ones(past, dtype=pos.dtype).sum().clamp(max=1)  # 1 with a cache, 0 without
        return torch.cat((pos[:, :past], pos[:, past:] + flag), dim=1)

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(compiler.model.Stack, "forward", forward))
    stack.enter_context(mock.patch.object(compiler.model, "positions_from_mask", shifted))
    return stack


@torch.no_grad()
def swap_q_k(model, spec) -> ContextManager:
    """q and k weights of the middle layer's self-attention swapped (heads == kv_heads)."""
    att = _stacks(model)[-1].layers[_middle(model)].self_attn
    q, k = att.q.weight.clone(), att.k.weight.clone()
    att.q.weight.copy_(k)
    att.k.weight.copy_(q)
    return contextlib.nullcontext()


@torch.no_grad()
def transpose_o(model, spec) -> ContextManager:
    """The middle layer's attention output projection (square) transposed."""
    o = _stacks(model)[-1].layers[_middle(model)].self_attn.o
    o.weight.copy_(o.weight.t().clone())
    return contextlib.nullcontext()


def missing_bias(model, spec) -> ContextManager:
    """The middle layer's value projection loses its bias."""
    _stacks(model)[-1].layers[_middle(model)].self_attn.v.bias = None
    return contextlib.nullcontext()


def norm_eps_10x(model, spec) -> ContextManager:
    """Every norm's eps 10x its spec value (1e-5 -> 1e-4)."""
    for m in model.modules():
        if m.__class__.__name__ in ("RMSNorm", "LayerNorm"):
            m.eps = m.eps * 10
    return contextlib.nullcontext()


def _leaky_mask(mask, positions, q_len, *, causal, window):
    """self_attention_mask with the causal test off by one: each query also sees the next token."""
    total = mask.shape[1]
    allowed = mask.bool()[:, None, None, :]
    if causal:
        k_idx = torch.arange(total, device=mask.device)
        q_idx = k_idx[total - q_len :]
        allowed = allowed & (q_idx[:, None] + 1 >= k_idx[None, :])
    return allowed


def mask_leak(model, spec) -> ContextManager:
    return mock.patch.object(compiler.model, "self_attention_mask", _leaky_mask)


def _tiled_qk(q, k):
    """Query head h reads kv head h % KV (k.repeat) where the model uses h // (H/KV)."""
    return q @ k.repeat(1, q.shape[1] // k.shape[1], 1, 1).transpose(-1, -2)


def _tiled_pv(p, v):
    return p @ v.repeat(1, p.shape[1] // v.shape[1], 1, 1)


def gqa_mapping(model, spec) -> ContextManager:
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(compiler.attention, "grouped_qk", _tiled_qk))
    stack.enter_context(mock.patch.object(compiler.attention, "grouped_pv", _tiled_pv))
    return stack


def alibi_slope(model, spec) -> ContextManager:
    """Slopes start^i instead of start^(i+1) (an off-by-one in the slope index)."""
    for stack in _stacks(model):
        heads = stack.score_bias.slopes.shape[0]
        start = 2.0 ** (-8.0 / heads)
        stack.score_bias.slopes = torch.tensor([start**i for i in range(heads)], dtype=torch.float32)[:, None, None]
    return contextlib.nullcontext()


def relative_buckets(model, spec) -> ContextManager:
    """Every bucket id one higher (clamped to the table)."""
    for stack in _stacks(model):
        bias = stack.score_bias
        real = bias.bucket
        bias.bucket = lambda rel, real=real, top=bias.buckets - 1: (real(rel) + 1).clamp(max=top)
    return contextlib.nullcontext()


BUGS = {
    "none (control)": Bug("none (control)", "llama-tiny", no_bug, "nothing changed"),
    "rope theta": Bug("rope theta", "llama-tiny", rope_theta, "theta 10000 -> 100000"),
    "rope layout": Bug("rope layout", "llama-tiny", rope_layout, "interleaved pairs instead of halves"),
    "positions +1": Bug("positions +1", "gpt2-tiny", positions_plus_one, "learned positions start at 1"),
    "decode position +1": Bug("decode position +1", "llama-tiny", positions_decode_off_by_one, "RoPE: cached steps one position late"),
    "q/k swapped": Bug("q/k swapped", "gpt2-tiny", swap_q_k, "middle layer's q and k weights"),
    "weight transposed": Bug("weight transposed", "llama-tiny", transpose_o, "middle layer's attention output (square)"),
    "missing bias": Bug("missing bias", "gpt2-tiny", missing_bias, "middle layer's v bias dropped"),
    "rmsnorm eps 10x": Bug("rmsnorm eps 10x", "llama-tiny", norm_eps_10x, "every RMSNorm eps 1e-5 -> 1e-4"),
    "layernorm eps 10x": Bug("layernorm eps 10x", "gpt2-tiny", norm_eps_10x, "every LayerNorm eps 1e-5 -> 1e-4"),
    "mask leaks +1": Bug("mask leaks +1", "llama-tiny", mask_leak, "causal mask lets each query see one future token"),
    "gqa mapping": Bug("gqa mapping", "llama-tiny", gqa_mapping, "kv heads tiled (repeat), not interleaved"),
    "alibi slope": Bug("alibi slope", "alibi-tiny", alibi_slope, "slopes start^i, not start^(i+1)"),
    "t5 buckets +1": Bug("t5 buckets +1", "t5-tiny", relative_buckets, "every relative-bias bucket id + 1"),
}


# --------------------------------------------------------------------------- running a build with a bug


def planted_export(bug: Bug) -> Callable:
    """An export_all that exports a mutated deep copy of the model, inside the bug's context."""

    def export(model, spec, folder, *args, **kw):
        twin = copy.deepcopy(model)
        with bug.plant(twin, spec):
            return real_export_all(twin, spec, folder, *args, **kw)

    return export


def spec_of(name: str, layers: int = 0):
    import zoo

    base = zoo.load(name)
    if not layers:
        return base
    overrides = [f"{part}.layers={layers}" for part in ("encoder", "decoder") if getattr(base, part, None) is not None]
    return zoo.load(name, overrides)


def trained_state(spec) -> dict:
    from compiler.builder import build
    from compiler.trained_like import zoo_trained_like

    model = build(spec, seed=0)
    zoo_trained_like(model, spec)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_build(bug: Bug, spec, weights: Optional[dict], folder: Path) -> tuple[Optional[ParityError], dict]:
    """build_artifact with ``bug`` planted in the export; (the ParityError or None, the
    parity report the gate judged)."""
    from zoo.app.build import build_artifact

    reports: list[dict] = []
    real_parity = zoo.app.build.parity

    def recording_parity(*args, **kw):
        reports.append(real_parity(*args, **kw))
        return reports[-1]

    with mock.patch.object(zoo.app.build, "export_all", planted_export(bug)), mock.patch.object(
        zoo.app.build, "parity", recording_parity
    ):
        try:
            build_artifact(spec, folder, weights=weights)
        except ParityError as e:
            return e, reports[-1]
    return None, reports[-1]


def worst_check(report: dict) -> tuple[float, str]:
    """The report's worst figure (error / bound) and the check it is in."""
    best, where = 0.0, ""
    for run in report["runs"]:
        for name, o in run["outputs"].items():
            if o["worst"] > best:
                best, where = o["worst"], f"{name} b{run['batch']}xs{run['seq']}"
    c = report.get("cache")
    if c is not None and c["worst"] > best:
        best, where = c["worst"], "cached decoding"
    return best, where


def fmt_ratio(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"
