"""RoPE scalings (pure Python): each takes the plain inverse frequencies of the rotated
dimensions (computed by compiler.positional.Rotary) and returns the scaled ones and the
factor the rotated part is multiplied by (1 but for YaRN and LongRoPE). LongRoPE has a
second set (``longrope_long``) that the graph selects past ``original_max_seq_len``. The formulas are Hugging
Face's (modeling_rope_utils), so imported checkpoints rotate alike; the fused lowering
reads the resulting constants from the graph."""

from __future__ import annotations

import math
from typing import Any


def linear(inv_freq: list[float], opts: Any, rotary_dim: int, theta: float) -> tuple[list[float], float]:
    return [f / opts.factor for f in inv_freq], 1.0


def llama3(inv_freq: list[float], opts: Any, rotary_dim: int, theta: float) -> tuple[list[float], float]:
    low_wavelen = opts.original_max_seq_len / opts.low_freq_factor
    high_wavelen = opts.original_max_seq_len / opts.high_freq_factor
    out = []
    for f in inv_freq:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(f)
        elif wavelen > low_wavelen:
            out.append(f / opts.factor)
        else:  # between: a smooth ramp from f / factor to f
            smooth = (opts.original_max_seq_len / wavelen - opts.low_freq_factor) / (opts.high_freq_factor - opts.low_freq_factor)
            out.append((1 - smooth) * f / opts.factor + smooth * f)
    return out, 1.0


def _mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn(inv_freq: list[float], opts: Any, rotary_dim: int, theta: float) -> tuple[list[float], float]:
    factor = opts.attention_factor
    if factor is None:
        factor = _mscale(opts.factor, opts.mscale) / _mscale(opts.factor, opts.mscale_all_dim) if opts.mscale and opts.mscale_all_dim else _mscale(opts.factor)

    def correction_dim(rotations: float) -> float:
        return rotary_dim * math.log(opts.original_max_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(opts.beta_fast), correction_dim(opts.beta_slow)
    if opts.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001  # no division by zero
    out = []
    for i, f in enumerate(inv_freq):
        extrapolation = 1 - min(max((i - low) / (high - low), 0.0), 1.0)  # 1: keep f, 0: f / factor
        out.append(f / opts.factor * (1 - extrapolation) + f * extrapolation)
    return out, float(factor)


def _longrope_attention_factor(opts: Any) -> float:
    if opts.attention_factor is not None:
        return float(opts.attention_factor)
    if opts.factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(opts.factor) / math.log(opts.original_max_seq_len))


def longrope(inv_freq: list[float], opts: Any, rotary_dim: int, theta: float) -> tuple[list[float], float]:
    """The short set (a batch within original_max_seq_len); ``longrope_long`` the other."""
    return [f / s for f, s in zip(inv_freq, opts.short_factor)], _longrope_attention_factor(opts)


def longrope_long(inv_freq: list[float], opts: Any, rotary_dim: int, theta: float) -> tuple[list[float], float]:
    return [f / s for f, s in zip(inv_freq, opts.long_factor)], _longrope_attention_factor(opts)
