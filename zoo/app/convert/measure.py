"""The converted graphs against the fp32 ones in ONNX Runtime, same process, same
inputs: logits error and top-1 agreement, forward and decode-step time."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from zoo.spec.families import Role, cache_layout, family, graphs_for

ACCURACY_BATCH, ACCURACY_SEQ, ACCURACY_SEED = 4, 32, 1234
TIMING_REPS, TIMING_WARMUP = 10, 2


def measure(spec, fp32_paths: dict[str, Path], new_paths: dict[str, Path], *, device: str = "auto",
            batch: int = ACCURACY_BATCH, seq: int = ACCURACY_SEQ, seed: int = ACCURACY_SEED,
            reps: int = TIMING_REPS, warmup: int = TIMING_WARMUP) -> dict:
    """The converted graphs against the fp32 ones in ONNX Runtime, same process, same
    inputs (seeded, padded): logits error and top-1 agreement over real positions,
    median forward time of each (interleaved runs) and, for graphs with a cache, the
    median time of one decode step after a ``seq``-token prefill."""
    import onnxruntime as ort

    from runtime.graphs import run_graphs
    from runtime.session import choose_providers, session_options

    providers = choose_providers(device)
    graphs = graphs_for(spec)
    cache = cache_layout(spec)
    seq = min(seq, spec.max_seq_len)
    inputs = family(spec).token_inputs(vocab=spec.vocab_size, batch=batch, seq=seq, src_seq=seq, seed=seed)
    opts = session_options()
    s32 = {g.name: ort.InferenceSession(str(fp32_paths[g.name]), sess_options=opts, providers=providers) for g in graphs}
    s_new = {g.name: ort.InferenceSession(str(new_paths[g.name]), sess_options=opts, providers=providers) for g in graphs}
    a = run_graphs(s32, graphs, inputs, cache, batch)["logits"].astype(np.float64)
    b = run_graphs(s_new, graphs, inputs, cache, batch)["logits"].astype(np.float64)
    mask = family(spec).output_masks(inputs)["logits"].astype(bool)
    diff = np.abs(a - b)[mask]
    finite = bool(np.isfinite(b).all())
    accuracy = {
        "max_abs_logit": float(diff.max()) if finite else float("inf"),
        "mean_abs_logit": float(diff.mean()) if finite else float("inf"),
        "max_rel_logit": (float(diff.max()) / (float(np.abs(a[mask]).max()) or 1.0)) if finite else float("inf"),
        "top1_agreement": float((a.argmax(-1) == b.argmax(-1))[mask].mean()),
        "logit_scale": float(np.abs(a[mask]).max()),
        "finite": finite,
        "batch": batch,
        "seq": seq,
        "positions": int(mask.sum()),
        "seed": seed,
        "reference": "the fp32 graphs in ONNX Runtime",
    }
    forward = _interleaved({"fp32": lambda: run_graphs(s32, graphs, inputs, cache, batch),
                            "converted": lambda: run_graphs(s_new, graphs, inputs, cache, batch)}, reps, warmup)
    out = {"accuracy": accuracy, "forward_ms": {**forward, "batch": batch, "seq": seq, "reps": reps}}
    if cache is not None:
        out["decode_ms"] = {**_interleaved({"fp32": _decode_step(s32, spec, graphs, cache, seq, seed),
                                            "converted": _decode_step(s_new, spec, graphs, cache, seq, seed)}, reps, warmup),
                            "batch": 1, "context": seq, "reps": reps}
    out["provider"] = next(iter(s_new.values())).get_providers()[0]
    return out


def _interleaved(fns: dict, reps: int, warmup: int) -> dict[str, float]:
    """Median ms of each function, runs alternating so that drift hits both alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _decode_step(sessions: dict, spec, graphs, cache, context: int, seed: int):
    """A function that runs one decode step (batch 1) on a ``context``-token cache."""
    from runtime.graphs import run_graphs

    fam = family(spec)
    context = max(1, min(context, spec.max_seq_len - 1))
    inputs = fam.token_inputs(vocab=spec.vocab_size, batch=1, seq=context, src_seq=context, seed=seed)
    for part in inputs.values():
        for k in part:
            if k.endswith("attention_mask"):
                part[k][:] = 1
    got = run_graphs(sessions, graphs, inputs, cache, 1)
    sess = sessions[fam.step_graph]
    feed = fam.feeds(np.array([[1]], dtype=np.int64), np.ones((1, context + 1), dtype=np.int64),
                     src_mask=fam.masks(inputs).get("encoder"))[fam.step_graph]
    feed.update(Role.CROSS.pick(got))
    feed.update(Role.carried(got))
    names = ["logits"]
    return lambda: sess.run(names, feed)


# --------------------------------------------------------------------------- natural-looking text


def natural_text(logits_fn, vocab_size: int, *, prompts: int = 3, length: int = 128, prompt_len: int = 8, seed: int = 0,
                 temperature: float = 1.0, exclude=None, bos: int | None = None) -> np.ndarray:
    """``prompts`` rows of ``length`` tokens: ``prompt_len`` seeded random ids (the first
    one ``bos`` when given), then the model's own continuation, sampled at
    ``temperature`` (0: greedy), one token at a time from ``logits_fn(ids (B, T)) ->
    logits (B, T, V)`` (the fp32 model, without a cache); ids in ``exclude`` are never
    drawn. What teacher-forced agreement is measured on: random ids are not text, and
    a model's own continuations are the most natural text it knows."""
    rng = np.random.default_rng(seed)
    allowed = np.ones(vocab_size, dtype=bool)
    if exclude is not None:
        allowed[np.asarray(exclude, dtype=np.int64)] = False
    ids = rng.choice(np.flatnonzero(allowed), size=(prompts, prompt_len)).astype(np.int64)
    if bos is not None:
        ids[:, 0] = bos
    while ids.shape[1] < length:
        z = np.where(allowed, np.asarray(logits_fn(ids), dtype=np.float64)[:, -1], -np.inf)
        if temperature == 0:
            nxt = z.argmax(-1)
        else:
            p = np.exp((z - z.max(-1, keepdims=True)) / temperature)
            p /= p.sum(-1, keepdims=True)
            nxt = np.array([rng.choice(p.shape[-1], p=row) for row in p])
        ids = np.concatenate([ids, nxt[:, None].astype(np.int64)], axis=1)
    return ids


def top1_agreement(reference: np.ndarray, other: np.ndarray, start: int = 0) -> float:
    """Share of positions (from ``start`` on) where the two logits (B, T, V) pick the same token."""
    a, b = np.asarray(reference)[:, start:], np.asarray(other)[:, start:]
    return float((a.argmax(-1) == b.argmax(-1)).mean())
