"""One cached decoder graph, or a dedicated prefill graph beside it? Measure both.

A decoder-only artifact ships ONE graph, ``model.onnx``, for prefill and decode:
inputs ``input_ids (batch, seq)``, ``attention_mask (batch, past_seq + seq)`` and
``past.{i}.key/value (batch, kv_heads, past_seq, head_dim)``; prefill feeds a past of
length 0. The alternative is TWO graphs: a prefill graph without past inputs
(``input_ids``, ``attention_mask (batch, seq)`` -> ``logits`` + ``present.*``) plus
the same decode graph. Decode cost is identical in both designs (same graph), so
this benchmark only compares prefill:

* exports, per spec (torch model built with seed 0), (a) the contract's single
  graph (``CachedDecoderGraph``) and (b) a prefill-only graph, both with
  ``compiler.export.export_graph`` and saved with ``save_graph``;
* opens both in ONNX Runtime CPU sessions with the same thread count and times
  prefill (one ``run`` returning logits and every present) per batch x prompt
  shape, the two variants interleaved round-robin (order alternating every
  repetition) after warm-up, and reports medians;
* checks that both give the same logits and presents (max abs diff), and reports
  each graph's size on disk: the two-graph design stores the weights twice (and
  holds them twice in memory, one copy per session) unless external data were
  shared.

It decides whether a dedicated prefill graph is worth its bytes: keep the single
graph unless the prefill graph is clearly faster (ratio two-graph/single well
below 1 beyond the run-to-run noise).

    python benchmarks/cache_graphs.py                          # gpt2-small
    python benchmarks/cache_graphs.py gpt2-small llama-small --threads 2 --reps 20
    python benchmarks/cache_graphs.py gpt2-tiny --set decoder.layers=4 --shapes 1x32,1x256,8x32
    python benchmarks/cache_graphs.py --out /tmp/cache_graphs.json

Writes JSON (machine, package versions, per spec sizes, agreement and timings) to
``benchmarks/results/cache_graphs.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import zoo  # noqa: E402
from zoo.app.build import package_versions  # noqa: E402
from compiler.builder import build  # noqa: E402
from compiler.export import export_graph  # noqa: E402
from passes.files import save_graph  # noqa: E402
from compiler.model import CachedDecoderGraph, _flat  # noqa: E402
from runtime.session import empty_past, session_options  # noqa: E402
from zoo.spec.contract import GraphSpec, TensorSpec  # noqa: E402
from zoo.spec.families import Role, cache_layout, family, graphs_for  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cache_graphs.json"
DEFAULT_SHAPES = "1x32,1x256,8x32"
NP_DTYPES = {"float32": np.float32, "float16": np.float16}
SINGLE, PREFILL = "single", "two-graph"  # variant names in the table and the JSON


class PrefillGraph(nn.Module):
    """(input_ids, attention_mask) -> (logits, present...): prefill without past inputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        logits, presents = self.model.step(input_ids, attention_mask)
        return (logits, *_flat(presents))


def prefill_graph_spec(spec) -> GraphSpec:
    """The contract's decoder-only graph without its past inputs; the mask and the
    presents span only the prompt ("seq")."""
    single = graphs_for(spec)[0]
    cache = cache_layout(spec)
    return GraphSpec(
        "prefill",
        "prefill.onnx",
        (TensorSpec("input_ids", "int64", ("batch", "seq")), TensorSpec("attention_mask", "int64", ("batch", "seq"))),
        (single.outputs[0], *cache.tensors(Role.PRESENT, "seq")),
    )


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in text.split(","):
        b, _, t = part.strip().lower().partition("x")
        shapes.append((int(b), int(t)))
    return shapes


def export_both(spec, folder: Path) -> dict[str, dict]:
    """Export and save the single cached graph and the prefill-only graph; per variant
    its path, bytes on disk, node count and export seconds."""
    model = build(spec, seed=0)
    out = {}
    for variant, module, graph in (
        (SINGLE, CachedDecoderGraph(model), graphs_for(spec)[0]),
        (PREFILL, PrefillGraph(model), prefill_graph_spec(spec)),
    ):
        t0 = time.perf_counter()
        proto = export_graph(module, spec, graph)
        path = folder / graph.file
        files = save_graph(proto, path)
        out[variant] = {
            "path": path,
            "files": files,
            "bytes": sum((folder / f).stat().st_size for f in files),
            "nodes": len(proto.graph.node),
            "export_s": round(time.perf_counter() - t0, 2),
        }
        del proto
        gc.collect()
    del model
    gc.collect()
    return out


def feeds(spec, batch: int, seq: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The same prompt for both variants; the single graph also gets an empty past."""
    fam = family(spec)
    prompt = fam.token_inputs(vocab=spec.vocab_size, batch=batch, seq=seq, seed=seed)[fam.step_graph]
    empty = empty_past(cache_layout(spec), batch, NP_DTYPES[spec.dtype])
    return {SINGLE: {**prompt, **empty}, PREFILL: prompt}


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    """(logits, presents) max abs difference between two runs' outputs."""
    logits = float(np.max(np.abs(a[0].astype(np.float64) - b[0].astype(np.float64))))
    presents = max((float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a[1:], b[1:])), default=0.0)
    return logits, presents


def time_shape(sessions, feed, reps: int, warmup: int) -> dict[str, list[float]]:
    """Run each variant ``warmup`` times, then ``reps`` rounds, one run of each per
    round, the order alternating (A B, B A, ...) so drift hits both alike. -> ms per run."""
    order = [SINGLE, PREFILL]
    for _ in range(warmup):
        for v in order:
            sessions[v].run(None, feed[v])
    times = {v: [] for v in order}
    for r in range(reps):
        for v in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            sessions[v].run(None, feed[v])
            times[v].append((time.perf_counter() - t0) * 1e3)
    return times


def bench_spec(spec, shapes, threads: int, reps: int, warmup: int) -> dict:
    if not spec.is_causal_lm:
        raise SystemExit(f"{spec.name}: a {spec.family} spec; this benchmark compares decoder-only graphs")
    if spec.dtype not in NP_DTYPES:
        raise SystemExit(f"{spec.name}: dtype {spec.dtype} has no numpy type to feed ONNX Runtime")
    with tempfile.TemporaryDirectory(prefix="cache_graphs-") as tmp:
        print(f"{spec.name}: exporting both graphs ...", flush=True)
        graphs = export_both(spec, Path(tmp))
        sessions, load_s = {}, {}
        for v, g in graphs.items():
            t0 = time.perf_counter()
            sessions[v] = ort.InferenceSession(str(g["path"]), sess_options=session_options(threads), providers=["CPUExecutionProvider"])
            load_s[v] = round(time.perf_counter() - t0, 2)
        results = []
        for batch, seq in shapes:
            seq = min(seq, spec.max_seq_len)
            feed = feeds(spec, batch, seq)
            outs = {v: sessions[v].run(None, feed[v]) for v in sessions}
            d_logits, d_presents = max_abs_diff(outs[SINGLE], outs[PREFILL])
            load = os.getloadavg()[0]
            times = time_shape(sessions, feed, reps, warmup)
            med = {v: statistics.median(t) for v, t in times.items()}
            results.append(
                {
                    "batch": batch,
                    "seq": seq,
                    "median_ms": {v: round(m, 3) for v, m in med.items()},
                    "min_ms": {v: round(min(t), 3) for v, t in times.items()},
                    "max_ms": {v: round(max(t), 3) for v, t in times.items()},
                    "times_ms": {v: [round(x, 3) for x in t] for v, t in times.items()},
                    "ratio_two_graph_over_single": round(med[PREFILL] / med[SINGLE], 4),
                    "max_abs_diff_logits": d_logits,
                    "max_abs_diff_presents": d_presents,
                    "loadavg_1m_before": round(load, 2),
                }
            )
        del sessions
        gc.collect()
    single_b, prefill_b = graphs[SINGLE]["bytes"], graphs[PREFILL]["bytes"]
    return {
        "spec": spec.name,
        "parameters": spec.parameter_count(),
        "graphs": {v: {k: x for k, x in g.items() if k != "path"} | {"session_load_s": load_s[v]} for v, g in graphs.items()},
        "bytes": {"single_design": single_b, "two_graph_design": single_b + prefill_b, "extra": prefill_b},
        "shapes": results,
    }


def print_table(row: dict) -> None:
    header = f"{'variant':<10} {'shape':>8} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'two/single':>11} {'|d logits|':>11} {'load':>5}"
    print(f"\n{row['spec']} ({row['parameters']:,} parameters)")
    print(header)
    print("-" * len(header))
    for r in row["shapes"]:
        shape = f"{r['batch']}x{r['seq']}"
        for v in (SINGLE, PREFILL):
            ratio = f"{r['ratio_two_graph_over_single']:>11.3f}" if v == PREFILL else f"{'':>11}"
            diff = f"{r['max_abs_diff_logits']:>11.1e}" if v == PREFILL else f"{'':>11}"
            load = f"{r['loadavg_1m_before']:>5.2f}" if v == SINGLE else f"{'':>5}"
            print(f"{v:<10} {shape:>8} {r['median_ms'][v]:>10.2f} {r['min_ms'][v]:>9.2f} {r['max_ms'][v]:>9.2f} {ratio} {diff} {load}")
    b = row["bytes"]
    g = row["graphs"]
    print(
        f"on disk: single model.onnx {b['single_design'] / 1e6:,.1f} MB ({g[SINGLE]['nodes']} nodes); "
        f"two-graph design {b['two_graph_design'] / 1e6:,.1f} MB (prefill.onnx {b['extra'] / 1e6:,.1f} MB, "
        f"{g[PREFILL]['nodes']} nodes, + model.onnx)"
    )
    worst = max(max(r["max_abs_diff_logits"], r["max_abs_diff_presents"]) for r in row["shapes"])
    print(f"agreement: max abs diff over logits and presents {worst:.1e}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", default=["gpt2-small"], help="decoder-only catalog names (default: gpt2-small)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec override, for every spec (repeatable)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads of both sessions (default: all cores)")
    ap.add_argument("--reps", type=int, default=10, help="timed runs per variant and shape (default: 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per variant and shape first (default: 2)")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"batch x prompt length, comma separated (default: {DEFAULT_SHAPES})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))  # the export's tracing, not the measured sessions
    shapes = parse_shapes(args.shapes)
    rows = []
    for name in args.specs:
        spec = zoo.load(name, args.set) if args.set else zoo.load(name)
        row = bench_spec(spec, shapes, args.threads, args.reps, args.warmup)
        rows.append(row)
        print_table(row)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    settings = {"reps": args.reps, "warmup": args.warmup, "shapes": [list(s) for s in shapes], "overrides": args.set, "provider": "CPUExecutionProvider"}
    versions = package_versions() | {"onnxruntime_module": ort.__version__, "torch_module": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "packages": versions, "settings": settings, "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
