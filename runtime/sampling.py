"""Picking the next tokens from logits, with the settings that decide it
(onnxruntime-free: numpy only).

Per step, on the last position's logits (float64): temperature, then top-k, then top-p
(nucleus), then one draw from a seeded numpy Generator; greedy takes the arg-max.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from zoo.spec.errors import InputError


@dataclass(frozen=True)
class GenerationConfig:
    """``sample=False`` (or temperature 0) is greedy. ``top_k=0`` and ``top_p=1``
    switch those filters off. ``eos=None`` takes the artifact's tokens.eos; an empty
    tuple never stops early."""

    max_new_tokens: int = 32
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    eos: Optional[tuple[int, ...]] = None

    def __post_init__(self):
        def integer(x) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))

        def real(x) -> bool:
            return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))

        if not integer(self.max_new_tokens) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not real(self.temperature) or not (self.temperature >= 0) or not np.isfinite(self.temperature):
            raise InputError(f"temperature must be a finite number >= 0 (0 means greedy), got {self.temperature!r}")
        if not integer(self.top_k) or self.top_k < 0:
            raise InputError(f"top_k must be an integer >= 0 (0: off), got {self.top_k!r}")
        if not real(self.top_p) or not (0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (not integer(self.seed) or self.seed < 0):
            raise InputError(f"seed must be an integer >= 0 or None, got {self.seed!r}")
        if self.eos is not None:
            eos = (self.eos,) if integer(self.eos) else self.eos
            if isinstance(eos, (str, bytes)) or not all(integer(e) for e in as_list(eos)):
                raise InputError(f"eos must be token ids (or None for the artifact's), got {self.eos!r}")
            object.__setattr__(self, "eos", tuple(int(e) for e in eos))

    @property
    def greedy(self) -> bool:
        return not self.sample or self.temperature == 0


def as_list(x) -> list:
    """``x`` as a list, or [None] when it is not iterable (a scalar that validation refuses)."""
    try:
        return list(x)
    except TypeError:
        return [None]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def next_tokens(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> np.ndarray:
    """logits (B, V) -> token ids (B,) int64."""
    if config.greedy:
        return logits.argmax(axis=-1).astype(np.int64)
    z = logits.astype(np.float64) / config.temperature
    vocab = z.shape[-1]
    if 0 < config.top_k < vocab:
        kth = np.partition(z, vocab - config.top_k, axis=-1)[:, vocab - config.top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    if config.top_p < 1.0:
        order = np.argsort(-z, axis=-1, kind="stable")
        sorted_p = _softmax(np.take_along_axis(z, order, axis=-1))
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the tokens ranked above each
        drop_sorted = before >= config.top_p  # the top token is always kept (before = 0)
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        z = np.where(drop, -np.inf, z)
    p = _softmax(z)
    u = rng.random(len(p))[:, None]
    picked = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(picked, vocab - 1).astype(np.int64)
