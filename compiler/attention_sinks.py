"""Attention sinks for the trained-like generator (compiler.trained_like): sharp
attention with large margins, as a trained model's is.

Scaling random queries and keys (``score_gain``) makes attention sharp, but each head's
top key then wins by a small random margin, and a rounding error moves it to another
key: the model becomes far more sensitive to weight error than a trained one
(docs/precision.md). Trained decoders put most of their attention on a few "sink"
tokens (BOS, delimiters: the tokens that carry the massive residual channels), by a
wide margin, because every query shares a component along the sinks' key direction
(Xiao et al. 2023, "Efficient streaming language models with attention sinks"; Sun et
al. 2024, "Massive activations"). This plants that mechanism:

- every normal token's embedding carries the massive channels with their sign at
  ``SHARED`` times the embedding's typical value (a shared component, dropped by the
  final norm as the massive values are), and each sink's output, the same for every
  query, adds more of it in later layers;
- in every dot-product self-attention, one dimension per head (the last: RoPE's lowest
  frequency in either pair layout, unrotated under partial rotary) of the query reads
  the mean direction of the normal tokens' inputs, and of the key reads the direction
  from the normal tokens' mean to the sinks' mean, scaled (measured in one forward
  pass, layer after layer) so that the sink's score beats a normal key's by
  ``margin`` times a per-head share spread over 0..2 (not every head is a sink head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from compiler.variants import variant_of

SHARED = 1.0  # the normal tokens' massive channels, in units of the embedding's typical value
HEAD_DIM_NAMES = ("head_dim", "attention_head_size", "key_value_proj_dim")
PAIRS = (("q", "k"), ("q_proj", "k_proj"), ("query", "key"), ("q_lin", "k_lin"))


@dataclass
class Target:
    """One self-attention: the query and key projections (out, in) and their sink rows."""

    q: nn.Module
    k: nn.Module
    q_rows: torch.Tensor
    k_rows: torch.Tensor
    scale: float  # what divides q·k in the score (sqrt(head_dim), or 1)
    shares: torch.Tensor  # per query sink row, its share of the margin


def _head_dim(module: nn.Module) -> Optional[int]:
    return next((int(getattr(module, n)) for n in HEAD_DIM_NAMES if isinstance(getattr(module, n, None), int)), None)


def _sink_rows(out: int, head_dim: int, offset: int = 0) -> torch.Tensor:
    return torch.arange(offset + head_dim - 1, offset + out, head_dim)


def targets(model: nn.Module, unscaled: list, gen: torch.Generator) -> list[Target]:
    """Every dot-product attention of ``model`` with its projections' sink rows (a fused
    [q | k | v] Conv1D, GPT-2's c_attn, gives both from its columns)."""
    found = []
    for m in model.modules():
        hd = _head_dim(m)
        score = getattr(m, "score", None)
        if hd is None or (score is not None and getattr(variant_of(score), "dot_product", None) is None):
            continue  # a zoo score that is not a plain q.k (additive, bilinear: zoo.spec.variants.SCORES)
        scale = 1.0 if m in unscaled else math.sqrt(hd)
        fused = getattr(m, "c_attn", None)
        if fused is not None and type(fused).__name__ == "Conv1D":
            third = fused.weight.shape[1] // 3
            q_rows, k_rows, q, k = _sink_rows(third, hd), _sink_rows(third, hd, third), fused, fused
        else:
            pair = next(((getattr(m, a), getattr(m, b)) for a, b in PAIRS if hasattr(m, a) and hasattr(m, b)), None)
            if pair is None or not all(isinstance(p, nn.Linear) for p in pair):
                continue
            q, k = pair
            q_rows, k_rows = _sink_rows(q.weight.shape[0], hd), _sink_rows(k.weight.shape[0], hd)
        shares = torch.linspace(0.0, 2.0, len(q_rows))[torch.randperm(len(q_rows), generator=gen)]
        found.append(Target(q, k, q_rows, k_rows, scale, shares))
    return found


def _set_rows(linear: nn.Module, rows: torch.Tensor, direction: torch.Tensor, gains: torch.Tensor) -> None:
    """Rows (output units) of ``linear`` read ``direction`` at ``gains``; their bias is 0."""
    values = gains[:, None] * direction[None, :]  # (rows, in)
    if type(linear).__name__ == "Conv1D":  # (in, out)
        linear.weight[:, rows] = values.T.to(linear.weight.dtype)
    else:
        linear.weight[rows] = values.to(linear.weight.dtype)
    if getattr(linear, "bias", None) is not None:
        linear.bias[rows] = 0.0


def _means(x: torch.Tensor, channels: torch.Tensor, normal_mask: Callable):
    flat = x.detach().reshape(-1, x.shape[-1]).float()
    normal = normal_mask(flat, channels)
    if normal.all() or not normal.any():
        return None
    return flat[normal].mean(0), flat[~normal].mean(0)


def _hooks(t: Target, channels, margin: float, normal_mask: Callable):
    """Pre-hooks on the query and key projections that set their sink rows from the
    inputs they are about to read (the layers before are already set)."""
    seen: dict = {}

    def on_query(module, args):
        means = _means(args[0], channels, normal_mask)
        if means is None:
            return
        mu = means[0]
        seen["x"], seen["mu"] = args[0], mu
        # q_n = a * |mu| on a normal token; the key side brings the rest of the margin
        a = t.shares * math.sqrt(margin * t.scale) / float(mu.norm())
        _set_rows(t.q, t.q_rows, mu / mu.norm(), a)

    def on_key(module, args):
        x = args[0]
        if "x" not in seen or seen["x"].shape != x.shape or not torch.equal(seen["x"], x):
            return  # cross-attention: the keys read another stream
        means = _means(x, channels, normal_mask)
        if means is None:
            return
        nu = means[1] - means[0]
        b = math.sqrt(margin * t.scale) / float(nu.norm())
        _set_rows(t.k, t.k_rows, nu / nu.norm(), torch.full((len(t.k_rows),), b))

    def on_both(module, args):  # fused [q | k | v]: one input for both
        on_query(module, args)
        on_key(module, args)

    return [(t.q, on_both)] if t.q is t.k else [(t.q, on_query), (t.k, on_key)]


@torch.no_grad()
def plant_shared_channels(embedding: nn.Embedding, tokens: torch.Tensor, channels: torch.Tensor, signs: torch.Tensor) -> None:
    """The normal tokens (all but the massive ``tokens``) carry ``channels`` at
    ``SHARED`` times the embedding's typical value, with the massive values' signs."""
    w = embedding.weight
    normal = torch.ones(w.shape[0], dtype=torch.bool)
    normal[tokens] = False
    typical = float(w[normal].abs().median())
    rows = w[normal]
    rows[:, channels] = (signs * SHARED * typical).to(w.dtype)
    w[normal] = rows


@torch.no_grad()
def plant_sinks(model: nn.Module, unscaled: list, channels: torch.Tensor, margin: float, run: Callable, normal_mask: Callable,
                gen: torch.Generator) -> int:
    """Set every dot-product self-attention's sink rows in one forward pass (``run(hooks)``);
    returns how many attentions were set up."""
    found = targets(model, unscaled, gen)
    hooks = [h for t in found for h in _hooks(t, channels, margin, normal_mask)]
    run(hooks)
    return len(found)


@torch.no_grad()
def sharpen_scales(model: nn.Module, factor: float) -> int:
    """Scores that are a parameter times a bounded similarity (a score entry's
    ``sharpened_by`` in zoo.spec.variants: cosine's temperature) are not sharpened by
    scaling q and k: multiply that parameter by ``factor``. Returns how many."""
    found = [getattr(m, v.sharpened_by) for m in model.modules() if (v := variant_of(m)) is not None and getattr(v, "sharpened_by", "")]
    for p in found:
        p.mul_(factor)
    return len(found)
