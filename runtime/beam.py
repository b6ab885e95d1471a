"""Beam search on ONNX Runtime (numpy only), with the semantics of transformers 5's
``GenerationMixin._beam_search``.

Each batch row keeps ``num_beams`` running hypotheses; the decoder graph runs them as
one batch of B * num_beams rows (the prompt, the encoder's cross K/V and mask repeated
per beam; the prefill runs each prompt once and its cache is then repeated). Per step,
on the log-softmax of the last position (float32):

- the logits processors (runtime.processors) run over each beam's tokens so far;
- each beam's running score is added and the best 2 * num_beams (more with several
  eos ids: max(2, 1 + n_eos) * num_beams) continuations over all beams and tokens kept;
- the best num_beams that did not just end (eos id, stop string, the last step) run on,
  and the cache rows are reordered to follow them (the rows that change are copied);
- a candidate among the first num_beams that ended joins the finished hypotheses,
  scored sum(log p) / new_length ** length_penalty (new_length counts the eos), and
  the best num_beams finished ones are kept;
- a row is done (early_stopping) as transformers decides: True once num_beams are
  finished; False when the best running score at the current length cannot beat the
  worst finished one; "never" the same at the longest reachable length when
  length_penalty > 0. The loop ends when no row can improve (or all finished and
  early_stopping is True, or every candidate ended).

The result per row is the best finished hypothesis and its score (sequence_scores).
"""

from __future__ import annotations

import time
from typing import Iterator, Optional

import numpy as np
import onnxruntime as ort

from runtime import processors
from runtime.sampling import GenerationConfig
from runtime.validate import check_logits
from zoo.spec.families import Role

NEG = np.float32(-1.0e9)  # transformers' "excluded" score


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """(N, V) -> log-softmax in float32, as transformers computes the beam scores."""
    z = z.astype(np.float32, copy=False)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of each row of (B, N), best first (ties: lower index first)."""
    part = np.argpartition(-scores, k - 1, axis=-1)[:, :k] if k < scores.shape[1] else np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    vals = np.take_along_axis(scores, part, axis=-1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def _gather(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """x (B, N, ...) gathered on axis 1 by index (B, M) -> (B, M, ...)."""
    return np.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class _Search:
    """The search state of B rows x K beams (transformers' names), with ``width`` the
    padded decoder prompt and ``max_length`` = width + the token budget."""

    def __init__(self, ids: np.ndarray, config: GenerationConfig, eos: tuple, fill: int, max_length: int):
        batch, width = ids.shape[0], ids.shape[1]
        k = config.num_beams
        self.b, self.k, self.width, self.max_length, self.config, self.eos = batch, k, width, max_length, config, np.array(eos, dtype=np.int64)
        self.keep = max(2, 1 + len(eos)) * k
        self.running = np.full((batch, k, max_length), fill, dtype=np.int64)
        self.running[:, :, :width] = ids[:, None, :]
        self.sequences = self.running.copy()
        self.running_scores = np.zeros((batch, k), dtype=np.float32)
        self.running_scores[:, 1:] = NEG
        self.scores = np.full((batch, k), NEG, dtype=np.float32)
        self.finished = np.zeros((batch, k), dtype=bool)
        self.lengths = np.zeros((batch, k), dtype=np.int64)  # new tokens of each finished hypothesis
        self.stop_hit = np.zeros((batch, k), dtype=bool)
        self.improvable = np.ones((batch, 1), dtype=bool)

    def step(self, logp: np.ndarray, cur_len: int, stopper, prompts) -> tuple[np.ndarray, bool]:
        """logp (B*K, V) processed log-probs at length cur_len -> (the source beam of each
        new running beam, flat (B*K,) over the batch; whether the search goes on)."""
        b, k, vocab = self.b, self.k, logp.shape[-1]
        total = (logp.reshape(b, k, vocab) + self.running_scores[:, :, None]).reshape(b, k * vocab)
        index = _top(total, self.keep)  # (B, 2K)
        top_scores = np.take_along_axis(total, index, axis=1)
        beam, token = index // vocab, index % vocab
        top_seqs = _gather(self.running, beam)
        top_seqs[:, :, cur_len] = token
        hits = np.isin(token, self.eos) | (cur_len + 1 >= self.max_length)
        stops = np.zeros_like(hits)
        if stopper is not None:
            for r, j in zip(*np.nonzero(~hits)):
                stops[r, j] = stopper.hit(list(prompts[r]) + top_seqs[r, j, self.width : cur_len + 1].tolist())
            hits |= stops
        # the running beams: the best K that did not end
        go_on = _top(top_scores + hits.astype(np.float32) * NEG, k)
        self.running = _gather(top_seqs, go_on)
        self.running_scores = np.take_along_axis(top_scores + hits.astype(np.float32) * NEG, go_on, axis=1)
        source = np.take_along_axis(beam, go_on, axis=1) + (np.arange(b) * k)[:, None]
        self._finish(top_seqs, top_scores, hits, stops, cur_len)
        cur_len += 1
        self._check_improvable(cur_len)
        more = self.improvable.any() and not (self.finished.all() and self.config.early_stopping is True) and not hits.all()
        return source.reshape(-1), bool(more)

    def _finish(self, top_seqs, top_scores, hits, stops, cur_len) -> None:
        """Candidates among the first K that ended join the finished hypotheses (the best K kept)."""
        k, cfg = self.k, self.config
        just = hits & (np.arange(self.keep) < k)[None, :]
        scored = top_scores / np.float32((cur_len + 1 - self.width) ** cfg.length_penalty)
        full = self.finished.all(axis=-1, keepdims=True) & (cfg.early_stopping is True)
        scored = scored + full * NEG + (~self.improvable) * NEG + (~just) * NEG
        merged = np.concatenate((self.scores, scored.astype(np.float32)), axis=1)
        best = _top(merged, k)
        new_len = np.full(top_scores.shape, cur_len + 1 - self.width, dtype=np.int64)
        self.sequences = _gather(np.concatenate((self.sequences, top_seqs), axis=1), best)
        self.scores = np.take_along_axis(merged, best, axis=1)
        self.lengths = np.take_along_axis(np.concatenate((self.lengths, new_len), axis=1), best, axis=1)
        self.stop_hit = np.take_along_axis(np.concatenate((self.stop_hit, stops), axis=1), best, axis=1)
        self.finished = np.take_along_axis(np.concatenate((self.finished, just), axis=1), best, axis=1)

    def _check_improvable(self, cur_len: int) -> None:
        """Transformers' early-stop heuristic per row (see the module docstring)."""
        cfg = self.config
        if cfg.early_stopping == "never" and cfg.length_penalty > 0.0:
            best_len = self.max_length - self.width
        else:
            best_len = cur_len - self.width
        best_possible = self.running_scores[:, :1] / np.float32(best_len ** cfg.length_penalty)
        worst = np.where(self.finished, self.scores.min(axis=1, keepdims=True), NEG)
        self.improvable &= (best_possible > worst).any(axis=-1, keepdims=True)


def reorder(runner, index: np.ndarray) -> None:
    """Cache row i of runtime.generate._Runner ``runner`` becomes row index[i] (index (B*K,)
    int); only the rows that change are copied. With IO binding the tensors go through
    the host (correct, not fast: CUDA beams pay a copy a step)."""
    if runner.io_binding:
        runner.past = {n: runner._value(np.take(v.numpy(), index, axis=0)) for n, v in runner.past.items()}
        return
    moved = np.nonzero(index != np.arange(len(index)))[0]
    for v in runner.past.values():
        v[moved] = v[index[moved]]  # the right side is gathered first: safe when rows swap


def expand(runner, k: int) -> None:
    """After the prefill of B rows: the runner's cache and fixed inputs with each row
    repeated k times (row i -> rows i*k .. i*k + k-1)."""

    def repeat(tensors: dict) -> dict:
        out = {n: np.repeat(v.numpy() if isinstance(v, ort.OrtValue) else v, k, axis=0) for n, v in tensors.items()}
        return {n: runner._value(v) for n, v in out.items()} if runner.io_binding else out

    runner.past, runner.fixed = repeat(runner.past), repeat(runner.fixed)


def beam_steps(gen, prompts, decoder_prompts, config: GenerationConfig, eos: tuple, pad: int, stopper) -> Iterator:
    """Run the search for Generator ``gen``; yields the final tokens as Steps at the end
    (the best beam is only known then) and sets ``gen.last`` (a Generation with
    sequence_scores)."""
    from runtime.generate import Generation, left_pad

    t_start = time.perf_counter()
    k, batch = config.num_beams, len(prompts)
    fixed = {}
    if gen.family.crossed:
        src_ids, src_mask = left_pad(prompts, pad)
        enc = gen.session.run(gen.family.encoder_graph, check=False, input_ids=src_ids, attention_mask=src_mask)
        fixed = {**Role.CROSS.pick(enc), "encoder_attention_mask": src_mask}
        rows = decoder_prompts
    else:
        rows = prompts
    feed_ids, mask = left_pad(rows, pad)
    width = feed_ids.shape[1]
    budget = min(config.max_new_tokens, gen.max_len - width + 1)
    search = _Search(feed_ids, config, eos, pad, width + budget)
    pads = np.repeat(width - np.array([len(r) for r in rows]), k)
    gen.runner.start(batch, fixed, gen.session.float_dtype)  # the prefill runs each prompt once; then K copies
    step_seconds, ttft, t_step = [], 0.0, t_start
    cur_len, more = width, True
    while more:
        logits = gen.runner.step({gen.ids_name: feed_ids, gen.mask_name: mask})
        check_logits(logits, cur_len - width)
        if cur_len == width:
            expand(gen.runner, k)
            logits, mask = np.repeat(logits, k, axis=0), np.repeat(mask, k, axis=0)
        logp = _log_softmax(logits)
        if processors.active(config):
            history = search.running[:, :, :cur_len].reshape(batch * k, cur_len)
            logp = processors.process(logp, history, config, pads=pads, prompt_width=width, eos=eos)
        source, more = search.step(logp, cur_len, stopper, rows)
        now = time.perf_counter()
        if cur_len == width:
            ttft = now - t_start
        else:
            step_seconds.append(now - t_step)
        t_step = now
        cur_len += 1
        if not more:
            break
        reorder(gen.runner, source)
        feed_ids = search.running[:, :, cur_len - 1].reshape(-1, 1)
        mask = np.concatenate((mask, np.ones((batch * k, 1), dtype=np.int64)), axis=1)
        if mask.shape[1] == gen.refill_at + 1:  # LongRoPE: the cache again from every token
            gen.runner.start(batch * k, {n: np.repeat(v, k, axis=0) for n, v in fixed.items()}, gen.session.float_dtype)
            feed_ids = search.running[:, :, :cur_len].reshape(batch * k, cur_len)
    tokens, reasons = _results(search, eos, budget == config.max_new_tokens)
    gen.last = Generation(
        tokens=tokens, finish_reasons=reasons, provider=gen.provider, prompt_tokens=int(sum(len(p) for p in prompts)),
        time_to_first_token_s=ttft, step_seconds=step_seconds, sequence_scores=[float(s) for s in search.scores[:, 0]],
    )
    yield from _final_steps(tokens, pad, t_start)


def _final_steps(tokens: list[list[int]], pad: int, t_start: float) -> Iterator:
    """The best hypotheses as Steps, one per position (a row past its end: the pad filler)."""
    from runtime.generate import Step

    for i in range(max(len(t) for t in tokens)):
        column = np.array([t[i] if i < len(t) else pad for t in tokens], dtype=np.int64)
        done = np.array([i >= len(t) - 1 for t in tokens])
        yield Step(i, column, done, time.perf_counter() - t_start)


def _results(search: _Search, eos: tuple, by_length: bool) -> tuple[list[list[int]], list[str]]:
    """The best finished hypothesis of each row and why it ended."""
    tokens, reasons = [], []
    for r in range(search.b):
        n = int(search.lengths[r, 0])
        row = search.sequences[r, 0, search.width : search.width + n].tolist()
        tokens.append(row)
        if row and row[-1] in eos:
            reasons.append("eos")
        elif search.stop_hit[r, 0]:
            reasons.append("stop")
        else:
            reasons.append("length" if by_length else "max_seq_len")
    return tokens, reasons


def check_beam_config(config: GenerationConfig, keep_logits: bool) -> Optional[str]:
    """What beam search cannot do under ``config`` (a message), or None."""
    if config.sample and not config.greedy:
        return "num_beams > 1 with sampling (beam sampling) is not supported; drop --sample/--temperature/--top-k/--top-p or use --num-beams 1"
    if keep_logits:
        return "keep_logits is for greedy and sampled generation, not beam search"
    return None
