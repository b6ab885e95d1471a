"""Does a decode step cost more at a longer context? The built artifacts, concat vs shared cache.

For each catalog spec (default gpt2-small and llama-small; seed 0), two real builds:
``zoo build --optimize`` (the cache concatenated anew at every step: ``concat``) and
``zoo build --kv-cache shared`` (GroupQueryAttention writing in place into one
preallocated buffer bound as past and present: ``shared``), both through the build's
parity gate; the folders under ``--artifacts`` are reused when up to date.

A step at each context (64 .. 2048, up to the spec's max_seq_len) runs through the
runtime's own step runners, as generation runs them: ``runtime.generate._Runner``
(plain ``run``, the past fed back through numpy) for concat, and
``runtime.shared_cache.SharedRunner`` (buffers of max_seq_len slots, IO binding) for
shared; context - 1 random cached tokens, batch 1, round-robin over layouts and
contexts, 1 thread, medians of ``--reps``. Each time is divided by the same layout's
step at the first context (target, issue 17: <= 1.15 at the last context) and by
concat's. Then greedy generation from both builds (a left-padded batch of 2) must give
the same tokens.

    python benchmarks/kv_cache.py                          # gpt2-small, llama-small
    python benchmarks/kv_cache.py llama-small --reps 30 --contexts 64,512,2048

Writes JSON to ``benchmarks/results/kv_cache.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "kv_cache.json"
LAYOUTS = ("concat", "shared")


def build_pair(name: str, root: Path) -> dict[str, Path]:
    """The spec's --optimize build and its --kv-cache shared build (parity checked), by layout."""
    import zoo
    from zoo.app.build import BuildOptions, build_artifact

    spec = zoo.load(name)
    options = {"concat": BuildOptions(optimize=True), "shared": BuildOptions(optimize=True, kv_cache="shared")}
    return {layout: build_artifact(spec, root / f"{name}-{layout}", options=opt)[0] for layout, opt in options.items()}


class Stepper:
    """One layout's own runner holding context - 1 random cached tokens; ``step()`` times one decode step."""

    def __init__(self, gen, ctx: int, rng):
        import onnxruntime as ort

        from runtime.session import empty_past

        self.runner, cache = gen._runner(), gen.session.artifact.cache
        self.feeds = {gen.ids_name: rng.integers(0, gen.vocab, (1, 1)), gen.mask_name: np.ones((1, ctx), np.int64)}
        slots = gen.max_len if cache.shared else ctx - 1  # shared: a buffer of max_seq_len slots, the first ctx - 1 filled
        self.keep = {}
        for n in empty_past(cache, 1):
            a = np.zeros((1, cache.kv_heads, slots, cache.head_dim), np.float32)
            a[:, :, : ctx - 1] = rng.standard_normal((1, cache.kv_heads, ctx - 1, cache.head_dim))
            self.keep[n] = a
        self.past = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self.keep.items()} if cache.shared else self.keep
        if cache.shared:
            self.runner.start(1, {}, np.float32, capacity=gen.max_len)

    def step(self) -> float:
        """Seconds of one step at this context (the new token is written at slot ctx - 1 each time)."""
        self.runner.past = self.past  # concat: the same past again; shared: the same buffers (bound once)
        t = time.perf_counter()
        self.runner.step(self.feeds)
        return time.perf_counter() - t


def measure(folders: dict[str, Path], contexts: list[int], reps: int, threads: int) -> dict:
    """Median step ms per layout x context (round-robin), ratios to the first context and to concat."""
    from runtime.generate import Generator

    rng = np.random.default_rng(0)
    gens = {layout: Generator(f, device="cpu", threads=threads) for layout, f in folders.items()}
    contexts = [c for c in contexts if c <= gens["concat"].max_len]
    steppers = {(layout, c): Stepper(gens[layout], c, rng) for layout in LAYOUTS for c in contexts}
    times = {k: [] for k in steppers}
    for r in range(reps + 2):
        for k in list(steppers) if r % 2 == 0 else list(steppers)[::-1]:
            dt = steppers[k].step()
            if r >= 2:  # two warm-up rounds
                times[k].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {layout: {str(c): {"ms": round(1e3 * med[layout, c], 3), "ratio": round(med[layout, c] / med[layout, contexts[0]], 3),
                              "vs_concat": round(med[layout, c] / med["concat", c], 3)} for c in contexts} for layout in LAYOUTS}


def same_greedy(folders: dict[str, Path], new_tokens: int, threads: int) -> dict:
    """Greedy tokens of both builds on a left-padded batch of 2: equal? and the logits' max difference."""
    from runtime.generate import GenerationConfig, Generator

    rng = np.random.default_rng(1)
    out = {}
    for layout, folder in folders.items():
        gen = Generator(folder, device="cpu", threads=threads)
        prompts = [rng.integers(0, gen.vocab, 24).tolist(), rng.integers(0, gen.vocab, 9).tolist()] if not out else prompts
        out[layout] = gen.generate(prompts, GenerationConfig(max_new_tokens=new_tokens, eos=()), keep_logits=True)
    a, b = out["concat"], out["shared"]
    return {"equal": a.tokens == b.tokens, "new_tokens": new_tokens, "batch": 2, "padding": "row 1 left-padded by 15",
            "logits_max_abs_diff": float(np.abs(a.logits - b.logits).max()), "logits_max_abs": float(np.abs(a.logits).max())}


def op_times(folder: Path, contexts: list[int], reps: int, threads: int) -> dict:
    """Per op type, median ms per step of the build at the first and last context (ONNX
    Runtime's profiler): which ops grow with the context."""
    import onnxruntime as ort

    from runtime.generate import Generator
    from runtime.session import Session, session_options

    out = {}
    for ctx in (contexts[0], contexts[-1]):
        opts = session_options(threads)
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tempfile.gettempdir()) / "zoo_kv_cache_profile")
        session = Session(folder, device="cpu", threads=threads)
        session.sessions["model"] = ort.InferenceSession(str(session.artifact.path("model")), opts, providers=["CPUExecutionProvider"])
        stepper = Stepper(Generator(session), ctx, np.random.default_rng(0))
        for _ in range(reps):
            stepper.step()
        trace = Path(session.sessions["model"].end_profiling())
        events = json.loads(trace.read_text())
        trace.unlink()
        per_op: dict[str, float] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0.0) + e["dur"] / 1e3 / reps
        out[str(ctx)] = {k: round(v, 3) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}
    return out


def _parity(folder: Path) -> dict:
    """The shared build's parity figures from its manifest (cached decoding through the buffer included)."""
    report = json.loads((folder / "manifest.json").read_text())["parity"] or {}
    cache = report.get("cache") or {}
    return {"passed": report.get("passed"), "worst_of_bound": report.get("worst"), "max_abs": report.get("max_abs"),
            "cache_worst_of_bound": cache.get("worst"), "cache_max_abs": cache.get("max_abs")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=["gpt2-small", "llama-small"])
    ap.add_argument("--contexts", default="64,256,1024,2048")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32, help="greedy tokens compared between the builds")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts" / "bench-kv", help="where the builds go (reused)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--profile", action="store_true", help="also the shared build's ms per op type at the first and last context")
    a = ap.parse_args(argv)
    import onnxruntime as ort

    contexts = [int(c) for c in a.contexts.split(",")]
    result = {"machine": platform.processor() or platform.machine(), "threads": a.threads, "reps": a.reps,
              "onnxruntime": ort.__version__, "specs": {}}
    for name in a.specs:
        folders = build_pair(name, a.artifacts)
        layouts = measure(folders, contexts, a.reps, a.threads)
        greedy = same_greedy(folders, a.new_tokens, a.threads)
        result["specs"][name] = {"layouts": layouts, "greedy": greedy, "parity_shared": _parity(folders["shared"])}
        print(f"{name}: decode step ms, batch 1 (x the layout's context {contexts[0]} step; x concat at the same context)")
        for layout, row in layouts.items():
            print(f"  {layout:7s} " + "  ".join(f"{c}: {v['ms']:6.2f} ({v['ratio']:.2f}x; {v['vs_concat']:.2f}x)" for c, v in row.items()))
        print(f"  greedy tokens equal: {greedy['equal']} (logits max diff {greedy['logits_max_abs_diff']:.2e} of max {greedy['logits_max_abs']:.3g})")
        if a.profile:
            result["specs"][name]["shared_ms_per_op"] = ops = op_times(folders["shared"], [int(c) for c in layouts["shared"]], a.reps, a.threads)
            print("  shared, ms per op type: " + "; ".join(f"{c}: " + ", ".join(f"{k} {v}" for k, v in list(r.items())[:4]) for c, r in ops.items()))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
