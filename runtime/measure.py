"""Efficiency figures of one artifact on ONNX Runtime (no torch): what ``zoo compare``
reports per model. Run it in a process of its own so that its peak RSS is the
model's (``python -m runtime.measure ARTIFACT``, which prints JSON).

Every timed figure is the median of ``reps`` repetitions after ``warmup`` untimed
ones, with its spread (half the interquartile range, relative to the median), and a
unit in its name: ``_ms``, ``_tokens_per_s``, ``_bytes``, ``_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from runtime.generate import GenerationConfig, Generator
from runtime.graphs import past_dtype
from runtime.manifest import Manifest, Parameters
from runtime.session import Session
from zoo.spec.families import family

CONTEXTS = (64, 128, 256, 512, 1024, 2048)  # decode-latency points, those below max_seq_len
BATCHES = (1, 2, 4, 8)
PROMPT = 32  # tokens of the prompt for time to first token and decode rates
LONG_PROMPT = 1024  # prefill throughput (or max_seq_len - 1 when that is shorter)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_memory_mb() -> Optional[float]:
    """GPU memory this process holds now (nvidia-smi), MiB; None without a GPU.
    ONNX Runtime's CUDA arena keeps what it took, so after the runs this is its peak."""
    import subprocess

    try:
        r = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in r.stdout.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def stats(values: list[float]) -> dict:
    """median and spread (half the interquartile range / median) of timings."""
    med = statistics.median(values)
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        spread = (q[2] - q[0]) / 2 / med if med else 0.0
    else:
        spread = (max(values) - min(values)) / 2 / med if med else 0.0
    return {"median": med, "spread": spread, "n": len(values)}


def _repeat(fn: Callable[[], float], reps: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    return stats([fn() for _ in range(reps)])


def cache_bytes_per_token(manifest: Manifest) -> int:
    """Bytes the KV cache grows by per token of one sequence (self-attention only)."""
    kv = manifest.kv_cache
    if kv is None:
        return 0
    # the declared past dtype (an fp16 build of a float32 spec: float16); the spec's size where
    # numpy has no name for it (bfloat16: 2 bytes, as float16)
    spec = np.float16 if manifest.dtype in ("float16", "bfloat16") else np.float32
    itemsize = np.dtype(past_dtype(manifest, spec)).itemsize
    return kv.layers * 2 * kv.kv_heads * kv.head_dim * itemsize


def precision_figures(manifest: Manifest) -> dict:
    """The build's precision (fp32, fp16, int8) and, for a reduced precision, its
    measured cost against the fp32 graphs (zoo.app.convert): logits error, top-1
    agreement, speed and size relative to fp32, and where they were measured."""
    record = manifest.build.precision_record  # the conversion's open-ended record (zoo.app.convert)
    if record is None:
        return {"precision": manifest.precision, "precision_cost": None}
    acc = record.get("accuracy") or {}
    return {
        "precision": manifest.precision,
        "precision_cost": {
            "max_abs_logit": acc.get("max_abs_logit"),
            "mean_abs_logit": acc.get("mean_abs_logit"),
            "top1_agreement": acc.get("top1_agreement"),
            "speed_vs_fp32": record.get("speed_vs_fp32"),
            "decode_speed_vs_fp32": record.get("decode_speed_vs_fp32"),
            "size_vs_fp32": record.get("size_vs_fp32"),
            "provider": record.get("provider"),
            "io": record.get("io"),
        },
    }


def static_figures(folder: Path, manifest: Manifest | dict) -> dict:
    """Figures that need no run: parameters, file sizes, cache growth. ``manifest``:
    the artifact's typed manifest (or its JSON object, typed here)."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_json(manifest, Path(folder) / "manifest.json")
    params = manifest.parameters or Parameters(total=0)
    return {
        "name": manifest.name,
        "family": manifest.family,
        "dtype": manifest.dtype,
        "artifact": str(folder),
        "spec_sha256": manifest.spec_sha256,
        "parameters": params.total,
        "parameters_embeddings": params.embeddings,
        "parameters_per_layer": dict(params.per_layer),
        "onnx_bytes": manifest.graph_bytes(),
        "kv_cache_bytes_per_token": cache_bytes_per_token(manifest),
        "max_seq_len": manifest.model.max_seq_len,
        **precision_figures(manifest),
    }


def _ids(rng: np.random.Generator, vocab: int, batch: int, length: int) -> list[list[int]]:
    return rng.integers(0, vocab, size=(batch, length)).tolist()


def measure(
    folder: str | Path,
    *,
    device: str = "auto",
    threads: Optional[int] = None,
    reps: int = 5,
    warmup: int = 1,
    new_tokens: int = 32,
    contexts: tuple[int, ...] = CONTEXTS,
    batches: tuple[int, ...] = BATCHES,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Every figure of one artifact (see the module docstring)."""
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    session = Session(folder, device=device, threads=threads)
    out = static_figures(Path(folder), session.artifact.info)
    out["session_load_ms"] = (time.perf_counter() - t0) * 1e3
    out["provider"] = session.provider
    out["threads"] = threads or int(os.environ.get("ZOO_THREADS", "0") or 0) or os.cpu_count()
    vocab, max_len = session.artifact.info.model.vocab_size, session.artifact.info.model.max_seq_len
    rng = np.random.default_rng(0)
    prompt = min(PROMPT, max_len // 2)
    long_prompt = min(LONG_PROMPT, max_len - 1)
    if not family(session).generates:
        return _encoder_only(session, out, rng, vocab, prompt, long_prompt, reps, warmup, batches, say)

    one = _generation_runner(session, rng, vocab, prompt)
    _latencies(out, one, prompt, new_tokens, reps, warmup, batches, say)
    _prefill_and_context(out, one, long_prompt, max_len, contexts, reps, warmup, say)
    out["peak_rss_mb"] = peak_rss_mb()
    out["device_memory_mb"] = device_memory_mb() if session.provider == "CUDAExecutionProvider" else None
    return out


def _after_warmup(warmup: int, reps: int, run: Callable) -> list:
    """``run()`` ``warmup + reps`` times; the figures of the last ``reps``."""
    figures = [run() for _ in range(warmup + reps)]
    return figures[warmup:]


def _generation_runner(session: Session, rng, vocab: int, prompt: int) -> Callable:
    """one(batch, length, config) -> the Generation of random prompts of ``length``
    tokens (an encoder-decoder: a decoder context of ``length``, a source of ``prompt``)."""
    gen = Generator(session)

    def one(batch: int, length: int, config: GenerationConfig):
        prompts = _ids(rng, vocab, batch, length)
        if family(session).crossed:
            start = gen.tokens.decoder_start or 0
            return gen.generate(_ids(rng, vocab, batch, prompt), config, decoder_prompts=[[start] + p[1:] for p in prompts])
        return gen.generate(prompts, config)

    return one


def _latencies(out: dict, one: Callable, prompt: int, new_tokens: int, reps: int, warmup: int, batches, say) -> None:
    """Time to first token and the decode step at batch 1, decode throughput per batch."""
    fixed = GenerationConfig(max_new_tokens=new_tokens, eos=())
    say("time to first token and decode, batch 1")
    runs = _after_warmup(warmup, reps, lambda: one(1, prompt, fixed))
    out["time_to_first_token_ms"] = stats([r.time_to_first_token_s * 1e3 for r in runs])
    out["decode_ms_per_token"] = stats([statistics.median(r.step_seconds) * 1e3 for r in runs])
    out["decode_tokens_per_s"] = {}
    for b in batches:
        say(f"decode throughput, batch {b}")
        runs = _after_warmup(warmup, max(2, reps // 2), lambda: one(b, prompt, fixed))
        out["decode_tokens_per_s"][str(b)] = stats([b / statistics.median(r.step_seconds) for r in runs])


def _prefill_and_context(out: dict, one: Callable, long_prompt: int, max_len: int, contexts, reps: int, warmup: int, say) -> None:
    """Prefill speed over ``long_prompt`` tokens; the decode step at each context length."""
    say(f"prefill, {long_prompt} tokens")
    runs = _after_warmup(warmup, max(2, reps // 2), lambda: one(1, long_prompt, GenerationConfig(max_new_tokens=1, eos=())))
    out["prefill_tokens"] = long_prompt
    out["prefill_tokens_per_s"] = stats([long_prompt / r.time_to_first_token_s for r in runs])
    out["decode_ms_by_context"] = {}
    steps = 9
    for ctx in contexts:  # the steps fill the context up to ctx tokens
        if ctx > max_len or ctx <= steps:
            continue
        say(f"decode latency at context {ctx}")
        config = GenerationConfig(max_new_tokens=steps, eos=())
        runs = _after_warmup(warmup, max(2, reps // 2), lambda: one(1, ctx - steps, config))
        out["decode_ms_by_context"][str(ctx)] = stats([statistics.median(r.step_seconds) * 1e3 for r in runs])


def _encoder_only(session: Session, out: dict, rng, vocab, prompt, long_prompt, reps, warmup, batches, say) -> dict:
    """Encoder-only models have no decoding: forward latency and throughput instead."""

    def forward(batch: int, length: int) -> float:
        ids = np.array(_ids(rng, vocab, batch, length), dtype=np.int64)
        t0 = time.perf_counter()
        session.forward(family(session).feeds(ids, np.ones_like(ids)), check=False)
        return (time.perf_counter() - t0) * 1e3

    say("forward latency")
    out["forward_ms"] = _repeat(lambda: forward(1, prompt), reps, warmup)
    out["forward_tokens_per_s"] = {}
    for b in batches:
        s = _repeat(lambda: forward(b, prompt), max(2, reps // 2), warmup)
        out["forward_tokens_per_s"][str(b)] = {"median": b * prompt / (s["median"] / 1e3), "spread": s["spread"], "n": s["n"]}
    s = _repeat(lambda: forward(1, long_prompt), max(2, reps // 2), warmup)
    out["prefill_tokens"] = long_prompt
    out["prefill_tokens_per_s"] = {"median": long_prompt / (s["median"] / 1e3), "spread": s["spread"], "n": s["n"]}
    out["peak_rss_mb"] = peak_rss_mb()
    out["device_memory_mb"] = device_memory_mb() if session.provider == "CUDAExecutionProvider" else None
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Measure one artifact; print the figures as JSON (used by zoo compare).")
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    args = ap.parse_args(argv)
    figures = measure(
        args.artifact,
        device=args.device,
        threads=args.threads or None,
        reps=args.reps,
        warmup=args.warmup,
        new_tokens=args.new_tokens,
        contexts=tuple(int(c) for c in args.contexts.split(",") if c),
        batches=tuple(int(b) for b in args.batches.split(",") if b),
        progress=lambda msg: print(f"progress: {msg}", file=sys.stderr, flush=True),
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
