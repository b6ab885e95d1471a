"""Optimized graphs against plain ones: ``zoo build`` and ``zoo build --optimize``
of the same spec and weights, timed in the same process, round-robin.

Per spec:

* builds the plain artifact and the optimized one (``BuildOptions(optimize=True,
  target=...)``: attention, rotary, norm + residual and GELU + bias lowered by
  compiler.optimize, parity-checked by the build like the plain one), or reuses
  them from ``--artifacts`` when already built;
* optionally (``--ablate``) one more graph per component with only that component
  left decomposed, to see what each lowering contributes (these graphs skip the
  build's parity check; they are measurement only);
* opens every variant in an ONNX Runtime session with the same options and times:
  prefill (one pass over a prompt from an empty cache, logits and presents) at
  batch x prompt ``1x128`` and ``8x32``; and decode (one new token over a cache of
  ``context - 1`` tokens) at context 64 and 512, batch 1, in ms per token;
* repetitions run round-robin: each repetition times every variant once on the
  same inputs, in an order that rotates, so drifting machine load hits all
  variants alike; the table gives medians and the ratio optimized / plain (below 1
  is faster);
* checks that each variant's logits agree with the plain graph's (max abs diff).

    python benchmarks/optimize.py                             # gpt2-tiny, quick
    python benchmarks/optimize.py --spec gpt2-small --reps 15
    python benchmarks/optimize.py --spec llama-small --ablate --threads 2
    python benchmarks/optimize.py --spec gpt2-small --spec llama-small --out /tmp/optimize.json

Writes JSON (machine, package versions, per spec the lowering record, sizes,
agreement and timings) to ``benchmarks/results/optimize.json`` unless ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402

import zoo  # noqa: E402
from compiler.artifact import BuildOptions, build_artifact, package_versions  # noqa: E402
from runtime.inputs import random_ids  # noqa: E402
from runtime.session import session_options  # noqa: E402
from zoo.contract import cache_layout, graphs_for  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "optimize.json"
PREFILL = ((1, 128), (8, 32))  # batch x prompt
DECODE = (64, 512)  # context (cached tokens + the new one), batch 1
PLAIN, OPTIMIZED = "plain", "optimized"
COMPONENTS = ("attention", "rotary", "norm", "gelu")


def machine() -> dict:
    import platform

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}


class Variant:
    """One set of graphs (an artifact folder) with its sessions."""

    def __init__(self, name: str, folder: Path, spec, threads: int):
        self.name, self.folder, self.spec = name, folder, spec
        opts = session_options(threads)
        self.sessions = {
            g.name: ort.InferenceSession(str(folder / g.file), sess_options=opts, providers=["CPUExecutionProvider"])
            for g in graphs_for(spec)
        }
        self.outputs = {n: [o.name for o in s.get_outputs()] for n, s in self.sessions.items()}

    def run(self, feeds: dict) -> dict:
        out = {}
        for graph, feed in feeds.items():
            feed = {k: (out[v] if isinstance(v, str) else v) for k, v in feed.items()}
            out.update(zip(self.outputs[graph], self.sessions[graph].run(self.outputs[graph], feed)))
        return out


def feeds(spec, kind: str, batch: int, length: int, seed: int = 0) -> dict:
    """Inputs by graph for a prefill (``length`` prompt tokens, empty cache) or a decode
    step (one token over a cache of ``length - 1``). String values name an output of
    an earlier graph (the encoder's cross.* for the decoder)."""
    rng = np.random.default_rng(seed)
    cache = cache_layout(spec)
    f32 = np.float16 if spec.dtype == "float16" else np.float32
    past_len = 0 if kind == "prefill" else length - 1
    new = length if kind == "prefill" else 1
    ids = random_ids(batch, new, spec.vocab_size, rng)
    mask = np.ones((batch, past_len + new), dtype=np.int64)
    past = {}
    if cache is not None:
        for n in cache.names("past"):
            past[n] = (rng.standard_normal((batch, cache.kv_heads, past_len, cache.head_dim)) * 0.5).astype(f32)
    if spec.family == "encoder-only":
        return {"model": {"input_ids": ids, "attention_mask": mask}}
    if spec.family == "decoder-only":
        return {"model": {"input_ids": ids, "attention_mask": mask, **past}}
    src = min(64, spec.max_seq_len)
    src_ids = rng.integers(0, spec.vocab_size, (batch, src), dtype=np.int64)
    enc = {"input_ids": src_ids, "attention_mask": np.ones_like(src_ids)}
    dec = {"decoder_input_ids": ids, "decoder_attention_mask": mask, "encoder_attention_mask": enc["attention_mask"], **past}
    dec.update({n: n for n in cache.names("cross")})
    return {"encoder": enc, "decoder": dec}


def time_round_robin(variants: list[Variant], feed: dict, reps: int, warmup: int = 2) -> dict[str, list[float]]:
    for v in variants:
        for _ in range(warmup):
            v.run(feed)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(reps):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            t = time.perf_counter()
            v.run(feed)
            times[v.name].append((time.perf_counter() - t) * 1e3)
    return times


def build_variants(spec, args, root: Path) -> tuple[dict[str, Path], dict]:
    plain, manifest_plain, _ = build_artifact(spec, root / f"{spec.name}-plain", seed=0)
    opt_options = BuildOptions(target=args.target, optimize=True)
    opt, manifest_opt, _ = build_artifact(spec, root / f"{spec.name}-optimized-{args.target}", seed=0, options=opt_options)
    folders = {PLAIN: plain, OPTIMIZED: opt}
    info = {
        "lowering": manifest_opt["build"]["lowering"],
        "parity_plain": manifest_plain["parity"]["max_abs"],
        "parity_optimized": manifest_opt["parity"]["max_abs"],
        "parity_optimized_cache": (manifest_opt["parity"].get("cache") or {}).get("max_abs"),
        "nodes": {PLAIN: {g: v["nodes"] for g, v in manifest_plain["graphs"].items()}, OPTIMIZED: {g: v["nodes"] for g, v in manifest_opt["graphs"].items()}},
    }
    if args.ablate:
        from compiler.optimize import optimize_graphs

        lowering = info["lowering"]
        for comp in COMPONENTS:
            if not lowering[comp]["nodes"]:
                continue  # nothing lowered: the same graph as the optimized one
            name = f"no-{comp}"
            folder = root / f"{spec.name}-{name}-{args.target}"
            if not (folder / "done").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(plain, folder)
                graphs = {g: {} for g in manifest_plain["graphs"]}
                optimize_graphs(spec, folder, graphs, target=args.target, plan={comp: "decomposed", **({"attention_gqa": "decomposed"} if comp == "attention" else {})})
                (folder / "done").write_text("")
            folders[name] = folder
    return folders, info


def bench_spec(spec, args, root: Path) -> dict:
    t0 = time.perf_counter()
    folders, info = build_variants(spec, args, root)
    build_s = time.perf_counter() - t0
    variants = [Variant(name, folder, spec, args.threads) for name, folder in folders.items()]
    cases = [("prefill", b, n) for b, n in PREFILL if n <= spec.max_seq_len]
    if cache_layout(spec) is not None:
        cases += [("decode", 1, c) for c in DECODE if c <= spec.max_seq_len]
    results = []
    for kind, batch, length in cases:
        feed = feeds(spec, kind, batch, length)
        ref = variants[0].run(feed)
        agree = {v.name: float(np.abs(v.run(feed)["logits"].astype(np.float64) - ref["logits"]).max()) for v in variants[1:]}
        times = time_round_robin(variants, feed, args.reps)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        row = {
            "case": kind,
            "batch": batch,
            ("prompt" if kind == "prefill" else "context"): length,
            "median_ms": {k: round(v, 3) for k, v in med.items()},
            "ratio": {k: round(v / med[PLAIN], 3) for k, v in med.items() if k != PLAIN},
            "max_abs_vs_plain": agree,
            "reps": args.reps,
        }
        if kind == "decode":
            row["ms_per_token"] = row["median_ms"]
        results.append(row)
        print_row(spec.name, row, [v.name for v in variants])
    return {"spec": spec.name, "build_seconds": round(build_s, 1), **info, "results": results}


def print_row(name: str, row: dict, names: list[str]) -> None:
    shape = f"{row['batch']}x{row['prompt']}" if row["case"] == "prefill" else f"ctx {row['context']}"
    ms = "  ".join(f"{n} {row['median_ms'][n]:8.2f}" for n in names)
    ratios = "  ".join(f"{n} {row['ratio'][n]:.3f}" for n in names if n != PLAIN)
    print(f"{name:14s} {row['case']:8s} {shape:9s} ms: {ms}   ratio: {ratios}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", action="append", help="catalog name or YAML path (repeatable; default gpt2-tiny)")
    p.add_argument("--set", action="append", default=[], help="spec override, as in zoo build --set")
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"), help="lowering target of the optimized graphs (timed on CPU)")
    p.add_argument("--reps", type=int, default=10, help="round-robin repetitions per case (default 10)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("ZOO_THREADS", "0") or 0) or None, help="intra-op threads (default: ONNX Runtime's)")
    p.add_argument("--ablate", action="store_true", help="also time one variant per component left decomposed")
    p.add_argument("--artifacts", type=Path, default=None, help="where to build / reuse the artifacts (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    specs = args.spec or ["gpt2-tiny"]
    tmp = None
    root = args.artifacts
    if root is None:
        tmp = tempfile.mkdtemp(prefix="zoo-optimize-")
        root = Path(tmp)
    try:
        out = {
            "benchmark": "optimized graphs (zoo build --optimize) against plain ones, same process, round-robin",
            "machine": machine(),
            "packages": package_versions(),
            "threads": args.threads,
            "target": args.target,
            "providers": ["CPUExecutionProvider"],
            "specs": [bench_spec(zoo.load(s, args.set), args, root) for s in specs],
        }
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
