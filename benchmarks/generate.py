"""Generation speed: the zoo runtime against Hugging Face transformers, same weights, one run.

    python benchmarks/generate.py                       # gpt2-small, gpt2-tiny, llama-small; ~10 min on 2 cores
    python benchmarks/generate.py --models gpt2-tiny --reps 3 --new-tokens 32   # a quick look
    python benchmarks/generate.py --device cuda         # the same on a GPU (CUDA provider, IO binding)

Each model is created once with random weights as a Hugging Face checkpoint (GPT-2
small: 12 layers, 768 wide; a 4-layer, 256-wide GPT-2; a Llama of GPT-2 small's
size with grouped-query attention), imported into the zoo (``zoo import``) and built
into an artifact, so every method runs the same weights. Methods:

- ``zoo``: runtime.generate on ONNX Runtime (plain ``run``; cache through numpy);
- ``zoo-iobinding``: the same with IO binding (the cache stays in ORT's memory);
- ``transformers``: ``model.generate`` in eager torch with its KV cache;
- ``zoo-torch-nocache``: the zoo's torch module, a full forward per token.

Each method lives in its own worker process (its peak RSS is its own) and all run
at the same thread count. Repetitions go round-robin over the methods, so drift in
the machine's speed hits all alike; figures are medians. Greedy, fp32, batch 1,
a 32-token prompt, 128 new tokens (never stopping early); then batch 8 throughput,
and the decode step time at context 64 and at 1024 (the cache must keep a step
cheap). onnxruntime-genai is measured where it imports (its builder takes the
Llama checkpoint); elsewhere the table says it was not available.

Prints a table and writes JSON (default benchmarks/results/generate.json).
"""

from __future__ import annotations

import argparse
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

from generate_workers import GenaiWorker, NoCacheWorker, TransformersWorker, ZooWorker  # noqa: E402
from runtime.manifest import Manifest  # noqa: E402
from runtime.measure import peak_rss_mb, stats  # noqa: E402
from zoo.app.report import machine_info  # noqa: E402

MODELS = {
    # name: (transformers config class, its arguments)
    "gpt2-small": ("GPT2Config", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)),
    "gpt2-tiny": ("GPT2Config", dict(n_layer=4, n_embd=256, n_head=4, vocab_size=50257, n_positions=1024)),
    "llama-small": (
        "LlamaConfig",
        dict(
            num_hidden_layers=12,
            hidden_size=768,
            num_attention_heads=12,
            num_key_value_heads=4,
            intermediate_size=2048,
            vocab_size=32000,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
        ),
    ),
}
METHODS = ("zoo", "zoo-iobinding", "transformers", "zoo-torch-nocache")
TARGETS = {"gpt2-small": 1.8, "gpt2-tiny": 3.5}  # decode tokens/s over transformers


# --------------------------------------------------------------------------- workers


def worker_main(args) -> int:
    """Serve run requests (JSON lines on stdin) until stdin closes."""
    kinds = {
        "zoo": lambda: ZooWorker(args, io_binding=False),
        "zoo-iobinding": lambda: ZooWorker(args, io_binding=True),
        "transformers": lambda: TransformersWorker(args),
        "zoo-torch-nocache": lambda: NoCacheWorker(args),
        "onnxruntime-genai": lambda: GenaiWorker(args),
    }
    worker = kinds[args.worker]()
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


# --------------------------------------------------------------------------- set-up


def make_checkpoint(name: str, folder: Path) -> Path:
    import torch
    import transformers

    cls, kw = MODELS[name]
    config = getattr(transformers, cls)(**kw)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    out = folder / "hf" / name
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out, config.vocab_size)
    return out


def write_tokenizer(folder: Path, vocab: int) -> None:
    """A word-level tokenizer over the ids (token i is "t<i>"): onnxruntime-genai's
    builder insists on loading one; nothing else here reads it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "t0", "bos_token": "t1", "eos_token": "t2"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def make_artifact(name: str, hf: Path, folder: Path) -> tuple[Path, dict]:
    from zoo.app.build import build_artifact
    from compiler.importers import import_folder

    imported = import_folder(hf, name=name)
    art, manifest, _ = build_artifact(imported.spec, folder / "artifacts" / name, weights=imported.state)
    return art, Manifest.from_json(manifest, art / "manifest.json")


def make_genai(hf: Path, folder: Path, threads: int) -> tuple[Path | None, str]:
    """Build an onnxruntime-genai model from the checkpoint, if the package is here."""
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return None, "onnxruntime-genai is not installed here (pip install onnxruntime-genai to include it)"
    out = folder / "genai"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(folder / "genai-cache")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"onnxruntime-genai's builder failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    return out, ""


# --------------------------------------------------------------------------- the run


def median(xs: list[float]) -> float:
    return stats(xs)["median"] if xs else float("nan")


def spread(xs: list[float]) -> float:
    """Half the interquartile range relative to the median (runtime.measure.stats), NaN under 4 values."""
    return stats(xs)["spread"] if len(xs) >= 4 else float("nan")


def bench_model(name: str, work: Path, args) -> dict:
    t0 = time.perf_counter()
    hf = make_checkpoint(name, work)
    art, manifest = make_artifact(name, hf, work)
    print(f"  {name}: checkpoint, import and build in {time.perf_counter() - t0:.0f} s; parity max abs {manifest.parity['max_abs']:.2e}, cached {manifest.parity['cache']['max_abs']:.2e}", flush=True)
    common = ["--artifact", str(art), "--hf", str(hf), "--threads", str(args.threads), "--device", args.device]
    methods = list(args.methods)
    genai_note = ""
    if name.startswith("llama") and "onnxruntime-genai" not in methods and not args.no_genai:
        genai, genai_note = make_genai(hf, work, args.threads)
        if genai is not None:
            methods.append("onnxruntime-genai")
            common += ["--genai", str(genai)]
    workers = {m: Worker(m, common) for m in methods}
    try:
        runs, batch8, context, rss = _timed_runs(workers, methods, args, manifest.model.max_seq_len)
    finally:
        for w in workers.values():
            w.close()
    return _summary(manifest, methods, runs, batch8, context, rss, genai_note)


def _timed_runs(workers: dict, methods: list, args, limit: int):
    """Round-robin over the methods: decode at batch 1 (reps), batch 8, the zoo's step at
    two context lengths, and each method's peak RSS."""
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
    batch8: dict[str, list[dict]] = {m: [] for m in ("zoo", "transformers") if m in methods}
    for _ in range(max(1, args.reps // 2)):
        for m in batch8:
            batch8[m].append(workers[m].run(batch=8, prompt=args.prompt, new=args.new_tokens))
    context = {}
    if "zoo" in methods:
        for ctx in (64, min(1024, limit)):
            r = workers["zoo"].run(batch=1, prompt=ctx - 17, new=17)
            r2 = workers["zoo"].run(batch=1, prompt=ctx - 17, new=17)
            context[str(ctx)] = median(r["steps"] + r2["steps"])
    rss = {m: max(r["rss_mb"] for r in runs[m]) for m in methods}
    return runs, batch8, context, rss


def _summary(manifest: Manifest, methods: list, runs: dict, batch8: dict, context: dict, rss: dict, genai_note: str) -> dict:
    """Per method: time to first token, decode speed and its ratio to transformers, batch-8
    throughput, peak RSS, greedy agreement; the zoo's context ratio."""
    params = manifest.parameters.total
    weight_bytes = sum(g.weight_bytes for g in manifest.graphs.values())
    agree = {m: runs[m][0]["first"] == runs["transformers"][0]["first"] for m in methods if "transformers" in runs}
    out = {"parameters": params, "weight_bytes": weight_bytes, "parameter_bytes": params * 4, "methods": {}, "genai_note": genai_note}
    ref = None
    if "transformers" in runs:
        ref = median([1 / median(r["steps"]) for r in runs["transformers"]])
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
        out["methods"][m] = entry
    if context:
        out["decode_step_ms_by_context"] = {k: v * 1e3 for k, v in context.items()}
        ks = sorted(context, key=int)
        out["context_ratio"] = context[ks[-1]] / context[ks[0]]
    return out


def machine(args) -> dict:
    info = dict(machine_info(), threads=args.threads, device=args.device)
    for pkg in ("onnxruntime", "torch", "transformers"):
        info[pkg] = info["packages"].get(pkg, "not installed")
    return info


def table(results: dict, info: dict) -> str:
    lines = [
        f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, {info['device']}; "
        f"onnxruntime {info['onnxruntime']}, torch {info['torch']}, transformers {info['transformers']}",
        "",
        "| model | method | TTFT ms | decode tok/s | x transformers | batch 8 tok/s | peak RSS MB | greedy = HF |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        for m, e in r["methods"].items():
            ratio = f"{e['decode_ratio_to_transformers']:.2f}" if "decode_ratio_to_transformers" in e else ""
            b8 = f"{e['batch8_tokens_per_s']:.1f}" if "batch8_tokens_per_s" in e else ""
            agree = {True: "yes", False: "no", None: ""}[e["greedy_tokens_agree_with_transformers"]]
            lines.append(
                f"| {name} | {m} | {e['ttft_ms']:.1f} | {e['decode_tokens_per_s']:.1f} ± {e['decode_spread'] * 100:.0f}% | {ratio} | {b8} | {e['peak_rss_mb']:.0f} | {agree} |"
            )
    lines.append("")
    for name, r in results.items():
        bits = [f"weights {r['weight_bytes'] / r['parameter_bytes']:.4f} of parameter bytes"]
        if "context_ratio" in r:
            c = r["decode_step_ms_by_context"]
            ks = sorted(c, key=int)
            bits.append(f"decode step {c[ks[0]]:.1f} ms at context {ks[0]}, {c[ks[-1]]:.1f} ms at {ks[-1]} (x{r['context_ratio']:.2f})")
        if r.get("genai_note"):
            bits.append(r["genai_note"])
        lines.append(f"- {name}: " + "; ".join(bits))
    return "\n".join(lines)


def verdicts(results: dict) -> list[str]:
    out = []
    for name, want in TARGETS.items():
        e = results.get(name, {}).get("methods", {}).get("zoo")
        if e and "decode_ratio_to_transformers" in e:
            got = e["decode_ratio_to_transformers"]
            out.append(f"{name}: zoo decode {got:.2f}x transformers (target {want}x): {'met' if got >= want else 'MISSED'}")
    for name, r in results.items():
        if "context_ratio" in r:
            out.append(f"{name}: step at longest context {r['context_ratio']:.2f}x the step at 64 (target <= 1.5): {'met' if r['context_ratio'] <= 1.5 else 'MISSED'}")
        ratio = r["weight_bytes"] / r["parameter_bytes"]
        out.append(f"{name}: weight bytes {ratio:.4f} of parameter bytes (target within 5%): {'met' if abs(ratio - 1) <= 0.05 else 'MISSED'}")
        genai = r["methods"].get("onnxruntime-genai")
        if genai and "zoo" in r["methods"]:
            rel = r["methods"]["zoo"]["decode_tokens_per_s"] / genai["decode_tokens_per_s"]
            out.append(f"{name}: zoo decode {rel:.2f}x onnxruntime-genai (target >= 1): {'met' if rel >= 1 else 'MISSED'}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="gpt2-small,gpt2-tiny,llama-small", help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per method (default 5)")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens (default 32)")
    ap.add_argument("--new-tokens", type=int, default=128, help="new tokens per run (default 128)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every method (default: all cores)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
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
    unknown = [m for m in args.methods if m not in METHODS] + [n for n in args.models.split(",") if n not in MODELS]
    if unknown:
        ap.error(f"unknown model or method: {', '.join(unknown)}")
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
    settings = {"reps": args.reps, "prompt": args.prompt, "new_tokens": args.new_tokens, "greedy": True, "dtype": "float32"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "settings": settings, "results": results, "targets": checks, "table": text}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
