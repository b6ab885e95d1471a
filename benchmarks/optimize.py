"""Optimized graphs against plain ones: ``zoo build`` and ``zoo build --optimize``
of the same spec and weights, timed in the same process, round-robin.

Per spec:

* builds the plain artifact and the optimized one (``BuildOptions(optimize=True,
  target=...)``: attention, rotary, norm + residual and GELU + bias lowered by
  passes.optimize, parity-checked by the build like the plain one), or reuses
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
  is faster), and in brackets the ratio of the fastest repetitions (the least
  disturbed by other processes on a shared machine);
* a control: a second session of the plain graph ("plain-again", unless
  ``--no-control``), timed like the others: its ratio to plain is the noise floor
  of the run; a ratio of the optimized graph inside that band is no gain;
* checks that each variant's logits agree with the plain graph's (max abs diff).

    python benchmarks/optimize.py                             # gpt2-tiny, quick
    python benchmarks/optimize.py --spec gpt2-small --reps 15
    python benchmarks/optimize.py --spec llama-small --ablate --threads 2
    python benchmarks/optimize.py --spec gpt2-small --spec llama-small --out /tmp/optimize.json
    python benchmarks/optimize.py --spec gpt2-small --kernels --out /tmp/kernels.json

``--kernels`` times, instead of whole graphs, each candidate op alone against the
subgraph the exporter writes for it (norm + residual, GELU + bias, rotary,
attention) at the spec's sizes: the evidence for the per-component CPU choices.

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
from zoo.app.build import BuildOptions, build_artifact, package_versions  # noqa: E402
from zoo.spec.inputs import random_ids  # noqa: E402
from runtime.manifest import Manifest  # noqa: E402
from runtime.session import session_options  # noqa: E402
from zoo.spec.families import Role, cache_layout, family, graphs_for  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "optimize.json"
PREFILL = ((1, 128), (8, 32))  # batch x prompt
DECODE = (64, 512)  # context (cached tokens + the new one), batch 1
PLAIN, OPTIMIZED, CONTROL = "plain", "optimized", "plain-again"
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
    fam = family(spec)
    past = {}
    if cache is not None:
        for n in cache.names(Role.PAST):
            past[n] = (rng.standard_normal((batch, cache.kv_heads, past_len, cache.head_dim)) * 0.5).astype(f32)
    src_ids = rng.integers(0, spec.vocab_size, (batch, min(64, spec.max_seq_len)), dtype=np.int64) if fam.crossed else None
    out = fam.feeds(ids, mask, src_ids=src_ids, src_mask=None if src_ids is None else np.ones_like(src_ids))
    if cache is not None:
        out[fam.step_graph].update(past)
        out[fam.step_graph].update({n: n for n in cache.names(Role.CROSS)} if cache.cross else {})
    return out


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
    manifest_plain, manifest_opt = Manifest.from_json(manifest_plain), Manifest.from_json(manifest_opt)
    folders = {PLAIN: plain, OPTIMIZED: opt}
    info = {
        "lowering": dict(manifest_opt.build.lowering),
        "parity_plain": manifest_plain.parity["max_abs"],
        "parity_optimized": manifest_opt.parity["max_abs"],
        "parity_optimized_cache": (manifest_opt.parity.get("cache") or {}).get("max_abs"),
        "nodes": {PLAIN: {g: v.nodes for g, v in manifest_plain.graphs.items()}, OPTIMIZED: {g: v.nodes for g, v in manifest_opt.graphs.items()}},
    }
    if args.ablate:
        from passes.optimize import optimize_graphs

        from passes.optimize import DECOMPOSED, LOWERING

        lowering, plan = info["lowering"], LOWERING[args.target]
        for comp in COMPONENTS:
            if plan[comp] == DECOMPOSED or not lowering[comp]["nodes"] or lowering[comp]["lowered_as"] == DECOMPOSED:
                continue  # not lowered for this target: the same graph as the optimized one
            name = f"no-{comp}"
            folder = root / f"{spec.name}-{name}-{args.target}"
            if not (folder / "done").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(plain, folder)
                graphs = {g: {} for g in manifest_plain.graphs}
                optimize_graphs(spec, folder, graphs, target=args.target, plan={comp: "decomposed", **({"attention_gqa": "decomposed"} if comp == "attention" else {})})
                (folder / "done").write_text("")
            folders[name] = folder
    return folders, info


def bench_spec(spec, args, root: Path) -> dict:
    if args.kernels:
        print(f"{spec.name}: one op against the exported subgraph, {args.reps * 10} round-robin repetitions")
        return {"spec": spec.name, "kernels": kernel_table(spec, args)}
    t0 = time.perf_counter()
    folders, info = build_variants(spec, args, root)
    build_s = time.perf_counter() - t0
    variants = [Variant(name, folder, spec, args.threads) for name, folder in folders.items()]
    if args.control:  # a second session of the plain graph: the run-to-run noise floor of this machine
        variants.append(Variant(CONTROL, folders[PLAIN], spec, args.threads))
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
        low = {name: min(ts) for name, ts in times.items()}
        row = {
            "case": kind,
            "batch": batch,
            ("prompt" if kind == "prefill" else "context"): length,
            "median_ms": {k: round(v, 3) for k, v in med.items()},
            "min_ms": {k: round(v, 3) for k, v in low.items()},
            "ratio": {k: round(v / med[PLAIN], 3) for k, v in med.items() if k != PLAIN},
            "ratio_of_min": {k: round(v / low[PLAIN], 3) for k, v in low.items() if k != PLAIN},
            "max_abs_vs_plain": agree,
            "reps": args.reps,
        }
        if kind == "decode":
            row["ms_per_token"] = row["median_ms"]
        results.append(row)
        print_row(spec.name, row, [v.name for v in variants])
    return {"spec": spec.name, "build_seconds": round(build_s, 1), **info, "results": results}


# --------------------------------------------------------------------------- --kernels


def _session(nodes, inputs: dict, outputs: list[str], inits: dict, threads):
    """A one-purpose graph: float32 inputs by name (shapes free), initialisers by name."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "k", [helper.make_tensor_value_info(n, TensorProto.FLOAT if v.dtype == np.float32 else TensorProto.BOOL, None) for n, v in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v, n) for n, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def kernel_table(spec, args) -> list[dict]:
    """Each lowering's op against the exporter's subgraph, alone, at the spec's sizes
    (ONNX Runtime's session optimizations on, as in a real session): the evidence for
    the per-component choices of passes.optimize.LOWERING on CPU."""
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    run = lambda *a: _time_pair(rows, args.reps, *a)  # noqa: E731
    _elementwise_rows(spec, args, rng, run)
    _attention_rows(spec, args, rng, run)
    return rows


def _time_pair(rows: list, reps: int, name: str, shape: str, variants: dict, feed: dict) -> None:
    """Time two sessions interleaved (the order swapped every run) and add their row to ``rows``."""
    times = {k: [] for k in variants}
    for _ in range(3):
        for s_ in variants.values():
            s_.run(None, feed)
    for r in range(reps * 10):
        for k, s_ in (list(variants.items())[r % 2:] + list(variants.items())[: r % 2]):
            t = time.perf_counter()
            s_.run(None, feed)
            times[k].append((time.perf_counter() - t) * 1e6)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = next(iter(med))
    row = {"component": name, "shape": shape, "median_us": {k: round(v, 1) for k, v in med.items()},
           "ratio": {k: round(v / med[base], 3) for k, v in med.items() if k != base}}
    rows.append(row)
    (other, ratio), = row["ratio"].items()
    print(f"  {name:9s} {shape:21s} {base:>22s} {med[base]:7.1f} us   {other:>32s} {med[other]:7.1f} us   ratio {ratio:.2f}", flush=True)


def _sizes(spec):
    stack = spec.stack(family(spec).output_stack())
    heads, kv = stack.attention.heads, stack.attention.n_kv_heads
    return spec.d_model, stack.ffn.hidden, heads, kv, spec.d_model // heads


def _elementwise_rows(spec, args, rng, run) -> None:
    """Norm + residual, GELU + bias and rotary, fused against decomposed, at three shapes."""
    from onnx import helper as h

    d, hidden, heads, kv, hd = _sizes(spec)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    g1 = {"g": np.ones(d, np.float32), "b": np.zeros(d, np.float32)}
    for shape in ((1, 128), (8, 32), (1, 1)):
        x, y = f32(*shape, d), f32(*shape, d)
        feed = {"x": x, "y": y}
        run("layernorm", f"{shape[0]}x{shape[1]}x{d}", {
            "Add+LayerNormalization": _session([h.make_node("Add", ["x", "y"], ["s"]), h.make_node("LayerNormalization", ["s", "g", "b"], ["o"], axis=-1)], feed, ["o", "s"], g1, args.threads),
            "SkipLayerNormalization": _session([h.make_node("SkipLayerNormalization", ["x", "y", "g", "b"], ["o", "", "", "s"], domain="com.microsoft")], feed, ["o", "s"], g1, args.threads),
        }, feed)
        run("rmsnorm", f"{shape[0]}x{shape[1]}x{d}", {
            "Add+RMSNormalization": _session([h.make_node("Add", ["x", "y"], ["s"]), h.make_node("RMSNormalization", ["s", "g"], ["o"], axis=-1)], feed, ["o", "s"], g1, args.threads),
            "SkipSimplifiedLayerNormalization": _session([h.make_node("SkipSimplifiedLayerNormalization", ["x", "y", "g"], ["o", "", "", "s"], domain="com.microsoft")], feed, ["o", "s"], g1, args.threads),
        }, feed)
        xb = f32(*shape, hidden)
        bias = {"b": f32(hidden)}
        run("gelu-tanh", f"{shape[0]}x{shape[1]}x{hidden}", {
            "Add+Gelu(tanh)": _session([h.make_node("Add", ["x", "b"], ["s"]), h.make_node("Gelu", ["s"], ["o"], approximate="tanh")], {"x": xb}, ["o"], bias, args.threads),
            "FastGelu": _session([h.make_node("FastGelu", ["x", "b"], ["o"], domain="com.microsoft")], {"x": xb}, ["o"], bias, args.threads),
        }, {"x": xb})
        run("gelu", f"{shape[0]}x{shape[1]}x{hidden}", {
            "Add+Gelu": _session([h.make_node("Add", ["x", "b"], ["s"]), h.make_node("Gelu", ["s"], ["o"])], {"x": xb}, ["o"], bias, args.threads),
            "BiasGelu": _session([h.make_node("BiasGelu", ["x", "b"], ["o"], domain="com.microsoft")], {"x": xb}, ["o"], bias, args.threads),
        }, {"x": xb})
        b, t = shape
        xr, ang = f32(b, heads, t, hd), f32(b, t, hd // 2)
        cos, sin = np.cos(np.concatenate([ang, ang], -1))[:, None], np.sin(np.concatenate([ang, ang], -1))[:, None]
        ints = {"h0": np.array([hd // 2]), "big": np.array([1 << 62]), "z": np.array([0]), "ax": np.array([3])}
        decomposed = _session([
            h.make_node("Slice", ["x", "h0", "big", "ax"], ["a"]), h.make_node("Neg", ["a"], ["na"]), h.make_node("Slice", ["x", "z", "h0", "ax"], ["b"]),
            h.make_node("Concat", ["na", "b"], ["r"], axis=-1), h.make_node("Mul", ["x", "cos"], ["m1"]), h.make_node("Mul", ["r", "sin"], ["m2"]),
            h.make_node("Add", ["m1", "m2"], ["o"])], {"x": xr, "cos": cos, "sin": sin}, ["o"], ints, args.threads)
        fused = _session([h.make_node("RotaryEmbedding", ["x", "c", "s"], ["o"])], {"x": xr, "c": np.cos(ang), "s": np.sin(ang)}, ["o"], {}, args.threads)
        run("rotary", f"{b}x{heads}x{t}x{hd}", {"decomposed": _Pair(decomposed, {"x": xr, "cos": cos, "sin": sin}),
                                               "RotaryEmbedding": _Pair(fused, {"x": xr, "c": np.cos(ang), "s": np.sin(ang)})}, {})


def _attention_rows(spec, args, rng, run) -> None:
    """Attention (scores, mask, softmax, PV; grouped for GQA) against the Attention op,
    for prefill and for decode at two cache lengths."""
    from onnx import helper as h

    d, hidden, heads, kv, hd = _sizes(spec)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    low = np.float32(np.finfo(np.float32).min)
    for b, t, past in ((1, 128, 0), (8, 32, 0), (1, 1, 63), (1, 1, 511)):
        q, k, v = f32(b, heads, t, hd), f32(b, kv, t + past, hd), f32(b, kv, t + past, hd)
        allowed = np.tril(np.ones((t, t + past), bool), k=past)[None, None].repeat(b, 0)
        mask = np.where(allowed, np.float32(0), low).astype(np.float32)
        g = heads // kv
        consts = {"scale": np.array(hd ** -0.5, np.float32), "low": np.array(low), "shq": np.array([0, kv, -1, hd]), "shs": np.array([0, heads, -1, 0]),
                  "shp": np.array([0, kv, -1, 0]), "shy": np.array([0, heads, -1, hd])}
        nodes = [h.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])]
        if g > 1:  # compiler.attention.grouped_qk / grouped_pv, as exported
            nodes += [h.make_node("Reshape", ["q", "shq"], ["qg"]), h.make_node("MatMul", ["qg", "kt"], ["s0"]), h.make_node("Reshape", ["s0", "shs"], ["s"])]
        else:
            nodes += [h.make_node("MatMul", ["q", "kt"], ["s"])]
        nodes += [h.make_node("Mul", ["s", "scale"], ["ss"]), h.make_node("Where", ["allowed", "ss", "low"], ["sw"]), h.make_node("Softmax", ["sw"], ["p"], axis=-1)]
        if g > 1:
            nodes += [h.make_node("Reshape", ["p", "shp"], ["pg"]), h.make_node("MatMul", ["pg", "v"], ["y0"]), h.make_node("Reshape", ["y0", "shy"], ["y"])]
        else:
            nodes += [h.make_node("MatMul", ["p", "v"], ["y"])]
        dec = _session(nodes, {"q": q, "k": k, "v": v, "allowed": allowed}, ["y"], consts, args.threads)
        att = _session([h.make_node("Attention", ["q", "k", "v", "mask"], ["y"], scale=float(hd ** -0.5))], {"q": q, "k": k, "v": v, "mask": mask}, ["y"], {}, args.threads)
        run("attention", f"{b}x{t} past {past} {heads}/{kv}h", {"decomposed": _Pair(dec, {"q": q, "k": k, "v": v, "allowed": allowed}),
                                                             "Attention": _Pair(att, {"q": q, "k": k, "v": v, "mask": mask})}, {})


class _Pair:
    """A session with its own feed, timed like the others (``run(None, ignored)``)."""

    def __init__(self, sess, feed):
        self.sess, self.feed = sess, feed

    def run(self, names, _feed):
        return self.sess.run(names, self.feed)


def print_row(name: str, row: dict, names: list[str]) -> None:
    shape = f"{row['batch']}x{row['prompt']}" if row["case"] == "prefill" else f"ctx {row['context']}"
    ms = "  ".join(f"{n} {row['median_ms'][n]:8.2f}" for n in names)
    ratios = "  ".join(f"{n} {row['ratio'][n]:.3f} ({row['ratio_of_min'][n]:.3f})" for n in names if n != PLAIN)
    print(f"{name:12s} {row['case']:7s} {shape:7s} median ms: {ms}  | ratio to plain, median (min): {ratios}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", action="append", help="catalog name or YAML path (repeatable; default gpt2-tiny)")
    p.add_argument("--set", action="append", default=[], help="spec override, as in zoo build --set")
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"), help="lowering target of the optimized graphs (timed on CPU)")
    p.add_argument("--reps", type=int, default=10, help="round-robin repetitions per case (default 10)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("ZOO_THREADS", "0") or 0) or None, help="intra-op threads (default: ONNX Runtime's)")
    p.add_argument("--ablate", action="store_true", help="also time one variant per lowered component left decomposed")
    p.add_argument("--kernels", action="store_true", help="time each lowering's op alone against the exported subgraph (no builds)")
    p.add_argument("--no-control", dest="control", action="store_false", help="skip the second session of the plain graph (the noise floor)")
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
