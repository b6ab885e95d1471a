"""Generation speed: the zoo runtime against Hugging Face transformers and
onnxruntime-genai, same weights, one run.

    python benchmarks/generate.py                       # llama-135m, gpt2-small, gpt2-tiny, llama-small; ~25 min on 2 cores
    python benchmarks/generate.py --models gpt2-tiny --reps 3 --new-tokens 32   # a quick look
    python benchmarks/generate.py --device cuda         # the same on a GPU: fp16 and int4, IO binding

Each model is made once as a Hugging Face checkpoint from a transformers config
(benchmarks/generate_setup.py): ``llama-135m`` is SmolLM2-135M's shape (30 layers, 576
wide, 9 heads over 3 KV heads, tied embedding) with trained-like weights
(compiler.trained_like: logits of std ~7, residual channels at 100-1000x the others,
outlier features into every matmul: what quantization has to survive); the others are
random-init GPT-2 small, a 4-layer GPT-2 and a Llama of GPT-2 small's size with
grouped-query attention. The zoo imports the folder (``zoo import``) and builds one
artifact per precision, each through the build's parity check; onnxruntime-genai's
builder makes its models from the same folder (fp32 and int4 on the CPU, fp16 and int4
on CUDA), where the package is installed. Methods (CPU):

- ``zoo`` / ``zoo-int8`` / ``zoo-int4``: runtime.generate on ONNX Runtime at each precision;
- ``zoo-iobinding``: fp32 with IO binding (the cache stays in ORT's memory);
- ``transformers``: ``model.generate`` in eager torch with its KV cache;
- ``zoo-torch-nocache``: the zoo's torch module, a full forward per token;
- ``onnxruntime-genai`` / ``onnxruntime-genai-int4``: its generator on its builder's models.

On CUDA: ``zoo-fp16`` and ``zoo-int4`` (IO binding), ``transformers`` (eager, fp16) and
``onnxruntime-genai-fp16`` / ``-int4`` (the onnxruntime-genai-cuda package).

Each method lives in its own worker process (its peak RSS is its own) and all run at
the same thread count. Repetitions go round-robin over the methods, so drift in the
machine's speed hits all alike; figures are medians. Greedy, batch 1, a 21-token
prompt, 128 new tokens (never stopping early); then batch 8 throughput, the decode step
time at contexts 64 up to 2048 (where max_seq_len allows: the cache must keep a step
cheap), the fp32 GEMV bandwidth of this machine (benchmarks/bandwidth.py) with each
method's share of its own bound (bandwidth / the bytes of weights a step reads), and
the teacher-forced top-1 agreement of every reduced precision with the zoo's fp32
(benchmarks/generate_quality.py).

Prints a table and writes JSON (default benchmarks/results/generate.json).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generate_quality import agreement, genai_logits, reference_text, zoo_logits  # noqa: E402
from generate_report import table, verdicts  # noqa: E402
from generate_setup import GENAI_PRECISIONS, MODELS, make_artifacts, make_checkpoint, make_genai, step_weight_bytes  # noqa: E402
from generate_workers import GemvWorker, GenaiWorker, NoCacheWorker, TransformersWorker, ZooWorker  # noqa: E402
from runtime.manifest import Manifest  # noqa: E402
from runtime.measure import peak_rss_mb, stats  # noqa: E402
from zoo.app.report import machine_info  # noqa: E402

# --------------------------------------------------------------------------- workers


def worker_main(args) -> int:
    """Serve run requests (JSON lines on stdin) until stdin closes."""
    m = args.worker
    if m == "gemv-bound":
        worker = GemvWorker(args)
    elif m.startswith("zoo-torch"):
        worker = NoCacheWorker(args)
    elif m.startswith("zoo"):  # IO binding where asked, and always on CUDA (the Generator's default there)
        worker = ZooWorker(args, io_binding=True if "iobinding" in m else None)
    elif m == "transformers":
        worker = TransformersWorker(args)
    else:
        worker = GenaiWorker(args)
    print(json.dumps({"ready": True, "rss_mb": peak_rss_mb()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        out = worker.run(req["batch"], req["prompt"], req["new"])
        out["rss_mb"] = peak_rss_mb()
        print(json.dumps(out), flush=True)
    return 0


class Worker:
    """A method in its own process (``script --worker METHOD ARGV``), asked for runs over
    stdin and answering JSON lines; benchmarks/beam.py uses it with its own script."""

    def __init__(self, method: str, argv: list[str], script: str = __file__):
        self.method = method
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=argv[argv.index("--threads") + 1])
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", method, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.method} died (see its stderr above)")
        return json.loads(line)

    def run(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# --------------------------------------------------------------------------- the run


def median(xs: list[float]) -> float:
    return stats(xs)["median"] if xs else float("nan")


def spread(xs: list[float]) -> float:
    """Half the interquartile range relative to the median (runtime.measure.stats), NaN under 4 values."""
    return stats(xs)["spread"] if len(xs) >= 4 else float("nan")


def prepare(name: str, work: Path, args) -> dict:
    """Checkpoint, zoo artifacts and onnxruntime-genai models of ``name`` -> {"paths":
    method -> model folder, "bytes": method -> weight bytes a step reads, "manifest": the
    first artifact's, "hf", "notes", "build_s", "weights"}."""
    spec = MODELS[name]
    t0 = time.perf_counter()
    hf, weight_stats = make_checkpoint(name, work)
    cuda = args.device == "cuda"
    precisions = spec.cuda_precisions if cuda else spec.cpu_precisions
    if args.precisions:
        precisions = tuple(p for p in args.precisions.split(",") if p)
    built = make_artifacts(name, hf, work, precisions, target=args.device, optimize=args.optimize or cuda,
                           kv_cache=args.kv_cache)
    paths, nbytes, notes = {}, {}, []
    for p, (art, _, _) in built.items():
        method = "zoo" if p == "fp32" and not cuda else f"zoo-{p}"
        paths[method] = art
        nbytes[method] = step_weight_bytes(art)
    first = next(iter(built.values()))
    fp32_bytes = nbytes.get("zoo") or nbytes.get("zoo-fp16", 0) * 2  # the fp32 weights' bytes: what the bound is taken at
    paths["gemv-bound"], nbytes["gemv-bound"] = str(fp32_bytes), fp32_bytes
    if not cuda:
        paths["transformers"] = hf
        if spec.iobinding:
            paths["zoo-iobinding"], nbytes["zoo-iobinding"] = paths["zoo"], nbytes["zoo"]
        if spec.nocache:
            paths["zoo-torch-nocache"] = hf
    else:
        paths["transformers"] = hf
    if spec.genai and not args.no_genai:
        for p in GENAI_PRECISIONS[args.device]:
            folder, note = make_genai(hf, work, p, args.device)
            method = "onnxruntime-genai" if p == "fp32" else f"onnxruntime-genai-{p}"
            if folder is None:
                notes.append(note)
                continue
            paths[method], nbytes[method] = folder, step_weight_bytes(folder)
    parity = first[1].parity or {}
    print(f"  {name}: checkpoint ({spec.weights}), import, {len(built)} builds and onnxruntime-genai in {time.perf_counter() - t0:.0f} s; "
          + ", ".join(f"{p} built in {b[2]:.0f} s" for p, b in built.items())
          + (f"; fp32 parity worst {parity.get('worst', float('nan')):.2f} of the rule" if "worst" in parity else ""), flush=True)
    return {"paths": paths, "bytes": nbytes, "manifest": first[1], "hf": hf, "notes": notes,
            "build_s": {p: b[2] for p, b in built.items()}, "weights": dict(kind=spec.weights, **weight_stats)}


def bench_model(name: str, work: Path, args) -> dict:
    ready = prepare(name, work, args)
    methods = [m for m in ready["paths"] if not args.methods or m in args.methods]
    common = ["--hf", str(ready["hf"]), "--threads", str(args.threads), "--device", args.device]
    workers = {}
    try:
        for m in methods:
            flag = "--genai" if m.startswith("onnxruntime-genai") else "--artifact"  # gemv-bound: its weight bytes
            workers[m] = Worker(m, common + [flag, str(ready["paths"][m])])
        runs, batch8, context, rss = _timed_runs(workers, methods, args, ready["manifest"].model.max_seq_len)
    finally:
        for w in workers.values():
            w.close()
    out = _summary(ready["manifest"], methods, runs, batch8, context, rss, "; ".join(ready["notes"]))
    out.update(weights=ready["weights"], build_seconds=ready["build_s"])
    _bound(out, ready["bytes"])
    if len([m for m in ready["paths"] if m.startswith(("zoo-int", "zoo-fp16", "onnxruntime-genai"))]) and args.device == "cpu":
        out["top1_vs_fp32"] = _agreements(ready, args)
    return out


def _bound(out: dict, nbytes: dict) -> None:
    """The GEMV bandwidth (the ``gemv-bound`` method: GEMVs/s times its weight bytes),
    each method's tok/s bound (bandwidth / the weight bytes its step reads) and its share of it."""
    gemv = out["methods"].get("gemv-bound")
    if gemv is None:  # --methods left the bound out: no shares to give
        return
    gb_per_s = gemv["decode_tokens_per_s"] * nbytes["gemv-bound"] / 1e9
    out["gemv_bandwidth"] = {"gb_per_s": gb_per_s, "weight_bytes": nbytes["gemv-bound"], "spread": gemv["decode_spread"]}
    for m, e in out["methods"].items():
        if m in nbytes and m != "gemv-bound":
            e["weight_bytes_read"] = nbytes[m]
            e["bound_tokens_per_s"] = gb_per_s * 1e9 / nbytes[m]
            e["share_of_bound"] = e["decode_tokens_per_s"] / e["bound_tokens_per_s"]


def _agreements(ready: dict, args) -> dict:
    """Teacher-forced top-1 agreement with the zoo's fp32 of every other precision (zoo and onnxruntime-genai)."""
    paths = ready["paths"]
    vocab = ready["manifest"].model.vocab_size
    text = reference_text(paths["zoo"], prompts=3, prompt_len=args.prompt, new_tokens=args.new_tokens, vocab=vocab, threads=args.threads)
    ref = zoo_logits(paths["zoo"], text, args.threads)
    out = {}
    for m, folder in paths.items():
        if m.startswith("zoo-int") or m.startswith("zoo-fp16"):
            out[m] = agreement(ref, zoo_logits(folder, text, args.threads), args.prompt)
        elif m.startswith("onnxruntime-genai"):
            out[m] = agreement(ref, genai_logits(folder, text, args.threads), args.prompt)
    return out


def _timed_runs(workers: dict, methods: list, args, limit: int):
    """Round-robin over the methods: decode at batch 1 (reps), batch 8, the fp32 zoo's step
    at contexts 64 to 2048 (where ``limit`` allows), and each method's peak RSS."""
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    req = dict(batch=1, prompt=args.prompt, new=args.new_tokens)
    for m in methods:  # warm-up
        workers[m].run(**dict(req, new=4))
    for rep in range(args.reps):
        for m in methods:
            if m == "zoo-torch-nocache" and rep >= max(1, args.reps // 2):
                continue  # the slowest method; fewer repetitions suffice
            runs[m].append(workers[m].run(**req))
        print(f"    rep {rep + 1}/{args.reps}: " + ", ".join(f"{m} {1 / median(runs[m][-1]['steps']):.1f} tok/s" for m in methods if runs[m]), flush=True)
    zoo = "zoo" if "zoo" in methods else next((m for m in methods if m.startswith("zoo")), None)
    batch8: dict[str, list[dict]] = {m: [] for m in (zoo, "transformers") if m in methods}
    for _ in range(max(1, args.reps // 2)):
        for m in batch8:
            batch8[m].append(workers[m].run(batch=8, prompt=args.prompt, new=args.new_tokens))
    context = {}
    if zoo is not None:
        for ctx in sorted({c for c in (64, 256, 1024, 2048) if c <= limit} | {min(2048, limit)}):
            r = [workers[zoo].run(batch=1, prompt=ctx - 17, new=17) for _ in range(2)]
            context[str(ctx)] = median(r[0]["steps"] + r[1]["steps"])
    rss = {m: max(r["rss_mb"] for r in runs[m]) for m in methods}
    return runs, batch8, context, rss


def _summary(manifest: Manifest, methods: list, runs: dict, batch8: dict, context: dict, rss: dict, genai_note: str) -> dict:
    """Per method: time to first token, decode speed and its ratio to transformers, batch-8
    throughput, peak RSS, greedy agreement; the zoo's context ratio."""
    params = manifest.parameters.total
    weight_bytes = sum(g.weight_bytes for g in manifest.graphs.values())
    agree = {m: runs[m][0]["first"] == runs["transformers"][0]["first"] for m in methods if "transformers" in runs and runs[m][0]["first"]}
    out = {"parameters": params, "weight_bytes": weight_bytes, "parameter_bytes": params * 4, "methods": {}, "genai_note": genai_note}
    ref = median([1 / median(r["steps"]) for r in runs["transformers"]]) if "transformers" in runs else None
    for m in methods:
        tps = [1 / median(r["steps"]) for r in runs[m]]
        entry = {
            "ttft_ms": median([r["ttft"] * 1e3 for r in runs[m]]),
            "decode_tokens_per_s": median(tps),
            "decode_spread": spread(tps),
            "repetitions": len(runs[m]),
            "peak_rss_mb": rss[m],
            "greedy_tokens_agree_with_transformers": agree.get(m),
            "provider": runs[m][0]["provider"],
        }
        if ref:
            entry["decode_ratio_to_transformers"] = entry["decode_tokens_per_s"] / ref
        if m in batch8:
            entry["batch8_tokens_per_s"] = median([8 / median(r["steps"]) for r in batch8[m]])
            entry["batch8_over_batch1"] = entry["batch8_tokens_per_s"] / entry["decode_tokens_per_s"]
        out["methods"][m] = entry
    if context:
        out["decode_step_ms_by_context"] = {k: v * 1e3 for k, v in context.items()}
        ks = sorted(context, key=int)
        out["context_ratio"] = context[ks[-1]] / context[ks[0]]
        out["context_longest"] = int(ks[-1])
    return out


def machine(args) -> dict:
    info = dict(machine_info(), threads=args.threads, device=args.device)
    for pkg in ("onnxruntime", "onnxruntime-genai", "torch", "transformers"):
        try:
            info[pkg] = info["packages"].get(pkg) or importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama-135m,gpt2-small,gpt2-tiny,llama-small", help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--methods", default="", help="comma-separated subset of the methods (default: every method of each model)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per method (default 5)")
    ap.add_argument("--prompt", type=int, default=21, help="prompt tokens (default 21)")
    ap.add_argument("--new-tokens", type=int, default=128, help="new tokens per run (default 128)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every method (default: all cores)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precisions", default="", help="the zoo precisions to build, comma-separated (default: per model, fp32,int8,int4 for llama-135m)")
    ap.add_argument("--optimize", action="store_true", help="build the zoo's artifacts with --optimize (always on CUDA)")
    ap.add_argument("--kv-cache", default="concat", choices=("concat", "shared"),
                    help="the zoo's CPU cache (fp32, int8, int4 builds): shared = one preallocated buffer (needs --optimize)")
    ap.add_argument("--no-genai", action="store_true", help="skip onnxruntime-genai even where it is installed")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/generate.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--artifact", help=argparse.SUPPRESS)
    ap.add_argument("--hf", help=argparse.SUPPRESS)
    ap.add_argument("--genai", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [n for n in args.models.split(",") if n not in MODELS]
    if unknown:
        ap.error(f"unknown model: {', '.join(unknown)}; give some of {', '.join(MODELS)}")
    if args.device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print("--device cuda: ONNX Runtime has no CUDA provider here (make install-gpu on a machine with an NVIDIA GPU)", file=sys.stderr)
            return 2
    info = machine(args)
    print(f"benchmarking generation: {args.models}; {args.reps} reps, prompt {args.prompt}, {args.new_tokens} new tokens, {args.threads} threads, {args.device}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        for name in args.models.split(","):
            results[name] = bench_model(name, Path(tmp), args)
    text = table(results, info)
    checks = verdicts(results)
    print()
    print(text)
    print()
    print("\n".join(checks))
    settings = {"reps": args.reps, "prompt": args.prompt, "new_tokens": args.new_tokens, "greedy": True, "optimize": args.optimize, "kv_cache": args.kv_cache}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "settings": settings, "results": results, "targets": checks, "table": text}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
