"""Fixed cost of a decode step on a tiny decoder: ONNX Runtime session options, node counts.

Round-robin in one process over session-option variants (each a patch of
runtime.session.session_options), medians of ``--reps`` greedy generations;
per-step ms = decode seconds / steps. Prints a table and writes
benchmarks/results/step_cost.json.

    PYTHONPATH=$PWD python benchmarks/step_cost.py ARTIFACT_FOLDER --threads 1

``--compare A [B ...]`` adds the decode step of each artifact before (the generation
loop of git ``--ref``) and after (this tree), round-robin in one process
(benchmarks/step_compare.py); ``--batch-artifact`` adds batch 8 over batch 1 throughput.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path

import onnx
import onnxruntime as ort

import runtime.session as rs
from runtime.generate import GenerationConfig, Generator

BASE = rs.session_options
VARIANTS = {
    "main": {},
    "no_spin": {"session.intra_op.allow_spinning": "0"},
    "spin": {"session.intra_op.allow_spinning": "1"},
}


def _options(entries: dict):
    def make(threads=None):
        opts = BASE(threads)
        for k, v in entries.items():
            opts.add_session_config_entry(k, v)
        return opts
    return make


def node_counts(path: Path) -> dict:
    """Op type -> node count of the ONNX graph at ``path`` (weights not loaded)."""
    model = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def step_ms(folder: Path, threads: int, reps: int, new: int) -> dict:
    gens = {}
    for name, entries in VARIANTS.items():
        rs.session_options = _options(entries)
        gens[name] = Generator(folder, device="cpu", threads=threads)
    rs.session_options = BASE
    cfg = GenerationConfig(max_new_tokens=new)
    times = {n: [] for n in gens}
    for _ in range(reps):
        for name, g in gens.items():
            out = g.generate([[1, 2, 3, 4]], cfg)
            times[name].append(out.decode_seconds / max(out.steps - 1, 1) * 1e3)
    return {n: statistics.median(t) for n, t in times.items()}


def profile_top(folder: Path, threads: int, new: int, top: int = 8) -> dict:
    """ONNX Runtime profiler over one generation: op type -> mean us per run (kernel time)."""
    def make(t=None):
        opts = BASE(t)
        opts.enable_profiling = True
        opts.profile_file_prefix = "/tmp/step_cost_prof"
        return opts
    rs.session_options = make
    try:
        g = Generator(folder, device="cpu", threads=threads)
    finally:
        rs.session_options = BASE
    g.generate([[1, 2, 3, 4]], GenerationConfig(max_new_tokens=new))
    events = json.loads(Path(g.session.sessions[g.family.step_graph].end_profiling()).read_text())
    by, runs = collections.Counter(), 0
    for e in events:
        runs += e.get("name") == "model_run"
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by[e["args"]["op_name"]] += e["dur"]
    return {op: round(us / max(runs, 1), 1) for op, us in by.most_common(top)}


def compare(a) -> dict:
    """Before/after step ms per ``--compare`` artifact and the batch ratio; prints the tables."""
    from benchmarks.step_compare import batch_ratio, before_after, load_ref_generate

    out = {}
    if a.compare:
        ref = load_ref_generate(a.ref)
        rows = {str(f): before_after(f, ref, threads=a.threads, reps=a.reps, new=a.new) for f in a.compare}
        print(f"| artifact | before ms ({a.ref}) | after ms | after / before |\n| --- | ---: | ---: | ---: |")
        for f, r in rows.items():
            print(f"| {Path(f).name} | {r['before']:.4f} | {r['after']:.4f} | {r['ratio']:.3f} |")
        out["before_after"] = {"ref": a.ref, "rows": rows}
    if a.batch_artifact:
        out["batch"] = batch_ratio(a.batch_artifact, threads=a.threads, reps=max(a.reps // 2, 2), new=16)
        print("batch 8 vs 1 on", a.batch_artifact.name, out["batch"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--compare", type=Path, nargs="*", default=[], help="artifacts to time before (--ref) and after")
    p.add_argument("--ref", default="fc0bbf9", help="git ref whose runtime/generate.py is the 'before'")
    p.add_argument("--batch-artifact", type=Path, help="artifact for batch 8 vs batch 1 throughput (gpt2-small)")
    a = p.parse_args(argv)
    extra = compare(a)
    ms = step_ms(a.artifact, a.threads, a.reps, a.new)
    counts = node_counts(next(a.artifact.glob("*.onnx")))
    print("| variant | step ms | x main |\n| --- | ---: | ---: |")
    for n, v in ms.items():
        print(f"| {n} | {v:.3f} | {v / ms['main']:.2f} |")
    print("nodes:", sum(counts.values()), counts)
    prof = profile_top(a.artifact, a.threads, a.new)
    print("profiler, us per run:", prof)
    out = {**extra, "profile_us_per_run": prof, "artifact": str(a.artifact), "threads": a.threads, "step_ms": ms, "nodes": counts, "ort": ort.__version__}
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/step_cost.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
