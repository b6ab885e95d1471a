"""Sentence-embedding pooling over an encoder's last_hidden_state, as sentence-transformers'
Pooling and Normalize modules compute it (numpy only).

``Pooling`` is the artifact's pooling file (written by the import from the checkpoint's
1_Pooling/config.json, modules.json and sentence_bert_config.json;
compiler.importers.sentence.read_pooling) read back and checked: untrusted, each refusal
one ArtifactError line naming the file and the field. ``POOLERS`` holds one function per
mode, all with one signature: ``(hidden (B, T, D) float64, mask (B, T) 0/1) -> (B, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from zoo.spec.errors import ArtifactError, InputError
from zoo.spec.pooling import MAX_DIMENSION, MAX_SEQ_LENGTH

MIN_COUNT = 1e-9  # sentence-transformers clamps the token count (a row of padding only) at this


def _mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[:, :, None]  # (B, T, 1)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), MIN_COUNT)


def _mean_sqrt_len(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[:, :, None]  # (B, T, 1)
    return (hidden * m).sum(1) / np.sqrt(np.maximum(m.sum(1), MIN_COUNT))


def _max(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[:, :, None] > 0, hidden, -np.inf).max(1)


def _first_real(mask: np.ndarray) -> np.ndarray:
    return mask.argmax(1)  # (B,) the first position the mask keeps (0 when right-padded)


def _cls(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[np.arange(len(hidden)), _first_real(mask)]


def _last_token(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    seq = mask.shape[1]
    last = seq - 1 - mask[:, ::-1].argmax(1)  # (B,) the last position the mask keeps
    return hidden[np.arange(len(hidden)), last] * mask[np.arange(len(hidden)), last][:, None]


def _weighted_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Position weights 1, 2, ... from the first real token on."""
    pos = np.arange(1, mask.shape[1] + 1)[None, :] - _first_real(mask)[:, None]  # (B, T)
    w = (mask * pos)[:, :, None]  # (B, T, 1)
    return (hidden * w).sum(1) / np.maximum(w.sum(1), MIN_COUNT)


POOLERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cls": _cls,
    "max": _max,
    "mean": _mean,
    "mean_sqrt_len_tokens": _mean_sqrt_len,
    "weightedmean": _weighted_mean,
    "lasttoken": _last_token,
}


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector: ``modes`` (several: concatenated in
    this order), L2 ``normalize``, the pooled width per mode ``dimension`` (None: the
    graph's), truncation at ``max_seq_length`` tokens and ``lowercase`` texts first."""

    modes: tuple[str, ...]
    normalize: bool = False
    dimension: Optional[int] = None
    max_seq_length: Optional[int] = None
    lowercase: bool = False

    def __post_init__(self):
        bad = [m for m in self.modes if m not in POOLERS]
        if not self.modes or bad:
            raise InputError(f"pooling {bad[0] if bad else 'none'!r}: choose one of {', '.join(POOLERS)}")

    @classmethod
    def from_json(cls, raw, path: str | Path) -> Pooling:
        """The pooling dict of an artifact (read_pooling's form), checked field by field."""
        if not isinstance(raw, dict):
            raise ArtifactError(f"{path}: pooling is a {type(raw).__name__}, not an object")
        mode = raw.get("mode")
        modes = [mode] if isinstance(mode, str) else mode
        if not isinstance(modes, list) or not 1 <= len(modes) <= len(POOLERS) or not all(isinstance(m, str) and m in POOLERS for m in modes):
            raise ArtifactError(f"{path}: pooling 'mode' is {mode!r}, not one of {', '.join(POOLERS)} or a list of them")
        for key in ("normalize", "lowercase"):
            if not isinstance(raw.get(key, False), bool):
                raise ArtifactError(f"{path}: pooling {key!r} is {raw[key]!r}, not true or false")
        sizes = {}
        for key, top in (("dimension", MAX_DIMENSION), ("max_seq_length", MAX_SEQ_LENGTH)):
            v = raw.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top):
                raise ArtifactError(f"{path}: pooling {key!r} is {v!r}, not an integer in [1, {top:,}]")
            sizes[key] = v
        return cls(tuple(modes), raw.get("normalize", False), lowercase=raw.get("lowercase", False), **sizes)

    def to_json(self) -> dict:
        return {
            "mode": self.modes[0] if len(self.modes) == 1 else list(self.modes),
            "normalize": self.normalize, "dimension": self.dimension,
            "max_seq_length": self.max_seq_length, "lowercase": self.lowercase,
        }

    def pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """hidden (B, T, D), mask (B, T) -> (B, len(modes) * D) float32, L2-normalised when asked."""
        h, m = hidden.astype(np.float64), (np.asarray(mask) > 0).astype(np.float64)
        out = np.concatenate([POOLERS[mode](h, m) for mode in self.modes], axis=-1)  # (B, len(modes) * D)
        if self.normalize:  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out.astype(np.float32)
