"""Positional encodings, one small class each.

Three ways a position enters the model, and each scheme uses one:
- absolute (``Sinusoidal``, ``Learned``): added to the token embeddings;
- rotary (``Rotary``): rotates queries and keys inside self-attention;
- score bias (``Alibi``, ``RelativeBias``): added to the attention scores.

Positions are per sequence, counted over real tokens only (``positions_from_mask``),
so left- and right-padded batches see the same positions for the same tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compiler.variants import implement
from zoo.spec import variants


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """attention mask (B, T) of 1/0 -> position of each token (B, T), 0 at padding."""
    return (torch.cumsum(mask, dim=-1) - 1).clamp(min=0)


class Sinusoidal(nn.Module):
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)) (interleaved);
    ``halves``: PE[p, i] = sin(...), PE[p, d/2 + i] = cos(...) (Marian)."""

    def __init__(self, d_model: int, *, halves: bool = False):
        super().__init__()
        self.halves = halves
        inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (d/2,)

    @classmethod
    def from_spec(cls, spec, part: str) -> "Sinusoidal":
        return cls(spec.d_model, halves=spec.positional.layout == "halves")

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.float()[..., None] * self.inv_freq  # (B, T, d/2)
        if self.halves:
            return torch.cat((angles.sin(), angles.cos()), dim=-1)  # (B, T, d) sin half, cos half
        pe = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (B, T, d/2, 2)
        return pe.flatten(-2)  # (B, T, d) interleaved sin, cos


class Learned(nn.Module):
    """A learned table of ``max_seq_len + offset`` rows; position p reads row p + offset."""

    def __init__(self, max_seq_len: int, d_model: int, *, offset: int = 0):
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.zeros(max_seq_len + offset, d_model))

    @classmethod
    def from_spec(cls, spec, part: str) -> "Learned":
        return cls(spec.max_seq_len, spec.d_model, offset=spec.positional.offset)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(positions + self.offset if self.offset else positions, self.weight)  # (B, T, d)


def _rotate_half(rot: torch.Tensor) -> torch.Tensor:
    """(..., rot) -> (-x2, x1) where x1, x2 are the halves (GPT-NeoX, Llama)."""
    half = rot.shape[-1] // 2
    return torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)


def _rotate_every_two(rot: torch.Tensor) -> torch.Tensor:
    """(..., rot) -> (-x1, x0, -x3, x2, ...): pairs (2i, 2i+1) (GPT-J)."""
    pairs = torch.stack((-rot[..., 1::2], rot[..., 0::2]), dim=-1)  # (..., rot/2, 2)
    return pairs.flatten(-2)  # (..., rot)


def _halves(angles: torch.Tensor) -> torch.Tensor:
    return torch.cat((angles, angles), dim=-1)  # (..., rot): a0..a(r/2-1), a0..a(r/2-1)


def _interleaved(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack((angles, angles), dim=-1).flatten(-2)  # (..., rot): a0, a0, a1, a1, ...


# zoo.spec.variants.ROPE_LAYOUTS: (angles (..., rot/2) -> per dimension (..., rot), rotation of x)
ROPE_LAYOUTS = implement(variants.ROPE_LAYOUTS, {"halves": (_halves, _rotate_half), "interleaved": (_interleaved, _rotate_every_two)})


class Rotary(nn.Module):
    """RoPE on the first ``rotary_dim`` dimensions of each head: x * cos + rotate(x) * sin,
    pairs in halves (GPT-NeoX / Llama: rotate_half) or interleaved (GPT-J: rotate_every_two).

    A scaling with a second frequency set (LongRoPE) keeps both: each forward takes the
    long set when its longest position + 1 exceeds ``switch_at``, the short one otherwise
    (transformers' selection; keys already in a cache keep the set they were rotated with)."""

    def __init__(self, rotary_dim: int, *, theta: float, scaling=None, layout: str = "halves"):
        super().__init__()
        self.rotary_dim = rotary_dim
        self.spread, self.rotate = ROPE_LAYOUTS[layout]
        # on the CPU even inside a meta-device build (the importers' skeleton): the values are needed here
        plain = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device="cpu") / rotary_dim))
        inv_freq, long_freq, self.switch_at, self.attention_factor = plain, None, None, 1.0
        if scaling is not None:  # zoo.spec.variants.ROPE_SCALINGS: the frequencies and the factor on the rotated part
            entry = variants.ROPE_SCALINGS[scaling.kind]
            scaled, self.attention_factor = entry.frequencies(plain.tolist(), scaling, rotary_dim, theta)
            inv_freq = torch.tensor(scaled, dtype=torch.float32, device="cpu")
            if entry.long_frequencies is not None:
                long_freq = torch.tensor(entry.long_frequencies(plain.tolist(), scaling, rotary_dim, theta)[0], dtype=torch.float32, device="cpu")
                self.switch_at = entry.switch_at(scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (rot/2,)
        self.register_buffer("long_inv_freq", long_freq, persistent=False)  # (rot/2,) or None

    @classmethod
    def from_spec(cls, spec, part: str) -> "Rotary":
        p = spec.positional
        return cls(spec.rotary_dim(part), theta=p.theta, scaling=p.scaling, layout=p.layout)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin, each (B, 1, T, rotary_dim)."""
        inv_freq = self.inv_freq
        if self.long_inv_freq is not None:  # one set for the whole batch, by its longest position
            inv_freq = torch.where(positions.max() + 1 > self.switch_at, self.long_inv_freq, self.inv_freq)  # (rot/2,)
        angles = positions.float()[..., None] * inv_freq  # (B, T, rot/2)
        angles = self.spread(angles)[:, None]  # (B, 1, T, rot)
        return angles.cos(), angles.sin()

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, H, T, hd) -> x with its first rotary_dim dims rotated."""
        rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        out = rot.float() * cos + self.rotate(rot).float() * sin
        if self.attention_factor != 1.0:
            out = out * self.attention_factor  # YaRN, LongRoPE: on the rotated dimensions only, as cos and sin are scaled
        return torch.cat((out.to(x.dtype), rest), dim=-1)


def alibi_slopes(heads: int) -> torch.Tensor:
    """Geometric slopes of ALiBi, with the paper's interleave for non-powers of two."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(heads))
    slopes = power_of_two(closest)
    if closest < heads:
        slopes += power_of_two(2 * closest)[0::2][: heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class Alibi(nn.Module):
    """bias[b, h, i, j] = -slope_h * |pos_i - pos_j| (no parameters)."""

    def __init__(self, heads: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(heads)[:, None, None], persistent=False)  # (H, 1, 1)

    @classmethod
    def from_spec(cls, spec, part: str) -> "Alibi":
        return cls(spec.stack(part).attention.heads)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        distance = (q_pos[:, :, None] - k_pos[:, None, :]).abs().float()  # (B, Tq, Tk)
        return -self.slopes * distance[:, None]  # (B, H, Tq, Tk)


class RelativeBias(nn.Module):
    """T5's bias: a learned scalar per head for each log-spaced bucket of key - query
    distance; ``bidirectional`` (encoders) spends half the buckets on each direction."""

    def __init__(self, heads: int, *, buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.buckets, self.max_distance, self.bidirectional = buckets, max_distance, bidirectional
        self.weight = nn.Parameter(torch.zeros(buckets, heads))

    @classmethod
    def from_spec(cls, spec, part: str) -> "RelativeBias":
        p = spec.positional
        return cls(spec.stack(part).attention.heads, buckets=p.buckets, max_distance=p.max_distance, bidirectional=part != "decoder")

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """relative (key - query) distances -> bucket ids, same shape."""
        buckets = self.buckets
        out = torch.zeros_like(relative)
        if self.bidirectional:
            buckets //= 2
            out = out + (relative > 0).long() * buckets
            distance = relative.abs()
        else:
            distance = (-relative).clamp(min=0)
        exact = buckets // 2
        scaled = torch.log(distance.clamp(min=1).float() / exact) / math.log(self.max_distance / exact)
        large = (exact + (scaled * (buckets - exact)).long()).clamp(max=buckets - 1)
        return out + torch.where(distance < exact, distance, large)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        relative = k_pos[:, None, :] - q_pos[:, :, None]  # (B, Tq, Tk)
        bias = nn.functional.embedding(self.bucket(relative), self.weight)  # (B, Tq, Tk, H)
        return bias.permute(0, 3, 1, 2)  # (B, H, Tq, Tk)



class NoPositional:
    """``positional: none``: no module."""

    @classmethod
    def from_spec(cls, spec, part: str) -> None:
        return None


# zoo.spec.variants.POSITIONAL's implementations; each class's from_spec(spec, stack name)
# makes the module its entry's hook takes (absolute, rotary or score-bias)
POSITIONAL = implement(
    variants.POSITIONAL,
    {
        "sinusoidal": Sinusoidal,
        "learned": Learned,
        "rope": Rotary,
        "alibi": Alibi,
        "relative-bias": RelativeBias,
        "none": NoPositional,
    },
)
