"""Picking the next tokens from logits, with the settings that decide it
(onnxruntime-free: numpy only).

Per step, on the last position's logits: the logits processors (runtime.processors:
repetition penalty, no-repeat n-grams, min_new_tokens), then for sampling (float64)
temperature, top-k, top-p (nucleus) and one draw from a seeded numpy Generator; greedy
takes the arg-max. ``num_beams > 1`` is beam search (runtime.beam).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from zoo.spec.errors import InputError


def _integer(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


@dataclass(frozen=True)
class GenerationConfig:
    """``sample=False`` (or temperature 0) is greedy. ``top_k=0`` and ``top_p=1``
    switch those filters off. ``eos=None`` takes the artifact's tokens.eos; an empty
    tuple never stops early; any of several ids ends a row.

    Beam search (``num_beams > 1``) has transformers' meaning: a finished hypothesis
    scores sum(log p) / generated_length ** length_penalty; ``early_stopping`` True stops
    a row once num_beams hypotheses are finished, False when the best running beam
    (scored at the current length) cannot beat the worst finished one, "never" when it
    cannot at the longest length it could reach. ``repetition_penalty`` divides the
    positive (multiplies the negative) scores of tokens already in the sequence;
    ``no_repeat_ngram_size`` bans a token that would repeat an n-gram; ``min_new_tokens``
    masks the eos ids until that many tokens are out; ``stop`` strings end a row whose
    text reaches one (finish reason "stop"; needs the artifact's tokenizer).
    """

    max_new_tokens: int = 32
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    eos: Optional[tuple[int, ...]] = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        integer, real = _integer, _real
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
        self._check_controls()

    def _check_controls(self) -> None:
        """The beam and logits-processor fields (one-line InputError naming the field and value)."""
        if not _integer(self.num_beams) or self.num_beams < 1:
            raise InputError(f"num_beams must be an integer >= 1, got {self.num_beams!r}")
        if not _real(self.length_penalty) or not np.isfinite(self.length_penalty):
            raise InputError(f"length_penalty must be a finite number, got {self.length_penalty!r}")
        if not (isinstance(self.early_stopping, (bool, np.bool_)) or self.early_stopping == "never"):
            raise InputError(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        if not _real(self.repetition_penalty) or not (0 < self.repetition_penalty < np.inf):
            raise InputError(f"repetition_penalty must be a finite number > 0 (1: off), got {self.repetition_penalty!r}")
        if not _integer(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0:
            raise InputError(f"no_repeat_ngram_size must be an integer >= 0 (0: off), got {self.no_repeat_ngram_size!r}")
        if not _integer(self.min_new_tokens) or self.min_new_tokens < 0:
            raise InputError(f"min_new_tokens must be an integer >= 0, got {self.min_new_tokens!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if isinstance(stop, bytes) or not all(isinstance(s, str) for s in as_list(stop)):
            raise InputError(f"stop must be strings, got {self.stop!r}")
        if any(s == "" for s in stop):
            raise InputError(f"stop strings must not be empty, got {tuple(stop)!r}")
        object.__setattr__(self, "stop", tuple(stop))
        object.__setattr__(self, "early_stopping", self.early_stopping if self.early_stopping == "never" else bool(self.early_stopping))

    @classmethod
    def from_hf(cls, generation_config: Optional[dict] = None, **overrides) -> "GenerationConfig":
        """A Hugging Face generation_config.json (parsed, untrusted) -> GenerationConfig;
        ``overrides`` that are not None win. See runtime.hf_config for the mapping."""
        from runtime.hf_config import hf_fields

        fields = hf_fields(generation_config)
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)

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
