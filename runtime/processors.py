"""Logits processors and stop strings with transformers' meaning (numpy only).

Applied to a step's scores (N, V) in transformers' order (``_get_logits_processor``):
repetition penalty, no-repeat n-grams, min_new_tokens; sampling's temperature, top-k and
top-p come after (runtime.sampling.next_tokens). Greedy and sampling apply them to the
logits, beam search to the log-softmax, as transformers does.

``history`` (N, T) int64 is every decoder token so far, left padding included:
for a decoder-only model the padded prompt and the generated tokens, for an
encoder-decoder the padded decoder prompt (the start token) and the generated ones.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from runtime.sampling import GenerationConfig


def active(config: GenerationConfig) -> bool:
    """Whether any processor changes the scores under ``config``."""
    return config.repetition_penalty != 1.0 or config.no_repeat_ngram_size > 0 or config.min_new_tokens > 0


def process(scores: np.ndarray, history: np.ndarray, config: GenerationConfig, *, pads: np.ndarray, prompt_width: int, eos: Sequence[int]) -> np.ndarray:
    """scores (N, V) float, history (N, T) int64, pads (N,): the left padding of each row
    (not penalised) -> processed scores (N, V), a new array when anything applies."""
    if config.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, history, config.repetition_penalty, pads)
    if config.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(scores, history, config.no_repeat_ngram_size)
    if config.min_new_tokens > 0 and eos and history.shape[1] - prompt_width < config.min_new_tokens:
        scores = scores.copy()
        scores[:, list(eos)] = -np.inf
    return scores


def repetition_penalty(scores: np.ndarray, history: np.ndarray, penalty: float, pads: np.ndarray) -> np.ndarray:
    """Each token id seen in a row (its padding excepted): a score < 0 times ``penalty``,
    else divided by it (RepetitionPenaltyLogitsProcessor)."""
    n, vocab = scores.shape
    seen = np.zeros((n, vocab + 1), dtype=bool)  # column ``vocab``: padding and ids past the vocabulary
    ids = np.minimum(history, vocab)
    ids = np.where(np.arange(history.shape[1])[None, :] < pads[:, None], vocab, ids)
    np.put_along_axis(seen, ids, True, axis=1)
    seen = seen[:, :vocab]
    penalised = np.where(scores < 0, scores * penalty, scores / penalty).astype(scores.dtype)
    return np.where(seen, penalised, scores)


def no_repeat_ngram(scores: np.ndarray, history: np.ndarray, size: int) -> np.ndarray:
    """Ban every token that would complete an n-gram of ``size`` already in the row
    (NoRepeatNGramLogitsProcessor: over the whole history, padding included)."""
    n, t = history.shape
    if t < size:
        return scores
    if size == 1:
        banned = [(r, history[r]) for r in range(n)]
    else:
        windows = np.lib.stride_tricks.sliding_window_view(history, size, axis=1)  # (N, t - size + 1, size)
        prefix = history[:, t + 1 - size :]  # (N, size - 1)
        match = (windows[:, :, :-1] == prefix[:, None, :]).all(axis=-1)  # (N, t - size + 1)
        banned = [(r, windows[r, match[r], -1]) for r in range(n) if match[r].any()]
    if not banned:
        return scores
    scores = scores.copy()
    for r, tokens in banned:
        scores[r, tokens] = -np.inf
    return scores


class StopStrings:
    """Stop strings over decoded text (StopStringCriteria's meaning): a row stops when a
    stop string ends inside its last token's text; the string may begin in earlier
    tokens, the prompt's included. ``decode(ids) -> str`` is the tokenizer's."""

    def __init__(self, stops: Sequence[str], decode):
        self.stops = tuple(stops)
        self.decode = decode
        self.longest = max(len(s) for s in self.stops)

    def hit(self, ids: Sequence[int]) -> bool:
        """ids: a row's tokens so far, prompt included (the last is the newest)."""
        if not self.stops or not len(ids):
            return False
        tail = [int(t) for t in ids[-(self.longest + 1) :]]  # every token gives at least one character, or none
        before = self.decode(tail[:-1])
        text = self.decode(tail)
        common = len(before) if text.startswith(before) else 0  # where the last token's text begins
        return any(text.rfind(s) >= 0 and text.rfind(s) + len(s) > common for s in self.stops)


def stop_strings(config: GenerationConfig, generator) -> Optional[StopStrings]:
    """A StopStrings for ``config.stop`` with the tokenizer of runtime.generate.Generator
    ``generator`` (loaded once, kept on it), or None; InputError when the artifact has none."""
    if not config.stop:
        return None
    artifact = generator.session.artifact
    if generator._tokenizer is None:
        if not artifact.info.tokenizer:
            from zoo.spec.errors import InputError

            raise InputError("stop strings need the artifact's tokenizer (tokenizer.json); this artifact carries none")
        from runtime.tokenizer import Tokenizer

        generator._tokenizer = Tokenizer(artifact)
    tokenizer = generator._tokenizer
    return StopStrings(config.stop, lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
