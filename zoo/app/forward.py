"""One forward pass of an artifact in ONNX Runtime, as data (what ``zoo run`` shows):
the feeds and outputs, the timings and the most likely tokens at the last real
position of each sequence. Imports onnxruntime only when a session is opened."""

from __future__ import annotations

import time
from typing import Optional

from zoo.spec.families import Role


def open_session(folder, *, device: str = "auto", threads: Optional[int] = None, strict: bool = False):
    """(runtime.session.Session of ``folder``, seconds the load took)."""
    from runtime.session import Session

    t0 = time.perf_counter()
    session = Session(folder, device=device, threads=threads, strict=strict)
    return session, time.perf_counter() - t0


def forward(session, inputs: dict, *, last_mask, tokenizer=None, repeat: int = 10, top: int = 5,
            load_seconds: float = 0.0) -> dict:
    """Run ``inputs`` once (checked), then ``repeat`` more times (timed alone); the result:
    artifact, provider, feeds per graph, outputs, timing (ms) and the ``top`` tokens per
    sequence at the last position where ``last_mask`` is 1."""
    import numpy as np

    t0 = time.perf_counter()
    outputs = session.forward(inputs)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):  # the same inputs, checked by the first call: time the forward alone
        t0 = time.perf_counter()
        session.forward(inputs, check=False)
        times.append(time.perf_counter() - t0)
    artifact = session.artifact
    cached = [k for k in outputs if Role.of(k) is not None]
    return {
        "artifact": str(artifact.folder),
        "name": artifact.info.name,
        "family": artifact.info.family,
        "provider": session.provider,
        "inputs": [
            {"graph": g.name, "shapes": {k: list(v.shape) for k, v in inputs[g.name].items()},
             "empty_cache": g.name != "encoder" and artifact.cache is not None}
            for g in artifact.graphs
        ],
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items() if k not in cached},
        "cache_tensors": len(cached),
        "timing": {"load_ms": load_seconds * 1e3, "first_ms": first_s * 1e3, "runs": len(times),
                   "median_ms": float(np.median(times)) * 1e3 if times else None},
        "top_n": top,
        "top": _top_tokens(outputs["logits"], last_mask, tokenizer, top),
    }


def _top_tokens(logits, last_mask, tokenizer, top_n: int) -> list[list[dict]]:
    """Per sequence: the ``top_n`` most likely tokens at its last real position, {id, token, p}."""
    import numpy as np

    logits = logits.astype(np.float64)
    rows = []
    for row in range(logits.shape[0]):
        last = int(np.nonzero(last_mask[row])[0][-1])
        z = logits[row, last]
        p = np.exp(z - z.max())
        p /= p.sum()
        best = np.argsort(-p)[:top_n]
        rows.append([{"id": int(t), "token": tokenizer.token(int(t)) if tokenizer else None, "p": float(p[t])} for t in best])
    return rows
