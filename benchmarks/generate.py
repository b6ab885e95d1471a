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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.measure import peak_rss_mb  # noqa: E402
from zoo.report import machine_info  # noqa: E402

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


def _prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(batch, length)).tolist()


class ZooWorker:
    def __init__(self, args, io_binding: bool):
        from runtime.generate import Generator

        self.gen = Generator(args.artifact, device=args.device, threads=args.threads, io_binding=io_binding)
        self.vocab = self.gen.vocab

    def run(self, batch: int, prompt: int, new: int) -> dict:
        from runtime.generate import GenerationConfig

        out = self.gen.generate(_prompts(batch, prompt, self.vocab), GenerationConfig(max_new_tokens=new, eos=()))
        return {"ttft": out.time_to_first_token_s, "steps": out.step_seconds, "first": out.tokens[0][:8], "provider": out.provider}


class TransformersWorker:
    def __init__(self, args):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(args.threads)
        self.torch = torch
        self.device = "cuda" if args.device == "cuda" else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32, attn_implementation="eager").to(self.device).eval()
        self.vocab = self.model.config.vocab_size

    def run(self, batch: int, prompt: int, new: int) -> dict:
        from transformers.generation.streamers import BaseStreamer

        torch = self.torch
        times: list[float] = []

        class Clock(BaseStreamer):
            def put(self, value):
                times.append(time.perf_counter())

            def end(self):
                pass

        ids = torch.tensor(_prompts(batch, prompt, self.vocab), device=self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                use_cache=True,
                streamer=Clock(),
                pad_token_id=0,
            )
        if self.device == "cuda":
            torch.cuda.synchronize()
        ticks = times[1:]  # the first put() is the prompt itself
        steps = [b - a for a, b in zip(ticks, ticks[1:])]
        return {"ttft": ticks[0] - t0, "steps": steps, "first": out[0, prompt : prompt + 8].tolist(), "provider": self.device}


class NoCacheWorker:
    """The zoo's torch module, greedy, a full forward over the whole sequence per token."""

    def __init__(self, args):
        import torch

        from compiler.builder import build
        from compiler.importers import import_folder

        torch.set_num_threads(args.threads)
        self.torch = torch
        imported = import_folder(args.hf)
        self.model = build(imported.spec)
        self.model.load_state_dict(imported.state)
        self.vocab = imported.spec.vocab_size

    def run(self, batch: int, prompt: int, new: int) -> dict:
        torch = self.torch
        ids = torch.tensor(_prompts(batch, prompt, self.vocab))
        marks = [time.perf_counter()]
        with torch.no_grad():
            for _ in range(new):
                logits = self.model(ids, torch.ones_like(ids))
                ids = torch.cat((ids, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
                marks.append(time.perf_counter())
        steps = [b - a for a, b in zip(marks[1:], marks[2:])]
        return {"ttft": marks[1] - marks[0], "steps": steps, "first": ids[0, prompt : prompt + 8].tolist(), "provider": "torch"}


class GenaiWorker:
    """onnxruntime-genai's generator on a model its builder made from the checkpoint."""

    def __init__(self, args):
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(args.genai)
        self.vocab = json.loads((Path(args.hf) / "config.json").read_text())["vocab_size"]

    def run(self, batch: int, prompt: int, new: int) -> dict:
        import numpy as np

        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=prompt + new, min_length=prompt + new, batch_size=batch)
        t0 = time.perf_counter()
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.array(_prompts(batch, prompt, self.vocab), dtype=np.int32))
        marks = []
        while not gen.is_done():
            gen.generate_next_token()
            marks.append(time.perf_counter())
        steps = [b - a for a, b in zip(marks, marks[1:])]
        first = [int(t) for t in gen.get_sequence(0)[prompt : prompt + 8]]
        return {"ttft": marks[0] - t0, "steps": steps, "first": first, "provider": "genai"}


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
    def __init__(self, method: str, argv: list[str]):
        self.method = method
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=argv[argv.index("--threads") + 1])
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", method, *argv],
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
    from compiler.artifact import build_artifact
    from compiler.importers import import_folder

    imported = import_folder(hf, name=name)
    art, manifest, _ = build_artifact(imported.spec, folder / "artifacts" / name, weights=imported.state)
    return art, manifest


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
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> float:
    """Half the distance between the 25th and 75th percentiles, relative to the median."""
    if len(xs) < 4:
        return float("nan")
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / 2 / statistics.median(xs)


def bench_model(name: str, work: Path, args) -> dict:
    t0 = time.perf_counter()
    hf = make_checkpoint(name, work)
    art, manifest = make_artifact(name, hf, work)
    params = manifest["parameters"]["total"]
    weight_bytes = sum(g["weight_bytes"] for g in manifest["graphs"].values())
    print(f"  {name}: checkpoint, import and build in {time.perf_counter() - t0:.0f} s; parity max abs {manifest['parity']['max_abs']:.2e}, cached {manifest['parity']['cache']['max_abs']:.2e}", flush=True)
    common = ["--artifact", str(art), "--hf", str(hf), "--threads", str(args.threads), "--device", args.device]
    methods = list(args.methods)
    genai_note = ""
    if name.startswith("llama") and "onnxruntime-genai" not in methods and not args.no_genai:
        genai, genai_note = make_genai(hf, work, args.threads)
        if genai is not None:
            methods.append("onnxruntime-genai")
            common += ["--genai", str(genai)]
    workers = {m: Worker(m, common) for m in methods}
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    try:
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
            limit = manifest["model"]["max_seq_len"]
            for ctx in (64, min(1024, limit)):
                r = workers["zoo"].run(batch=1, prompt=ctx - 17, new=17)
                r2 = workers["zoo"].run(batch=1, prompt=ctx - 17, new=17)
                context[str(ctx)] = median(r["steps"] + r2["steps"])
        rss = {m: max(r["rss_mb"] for r in runs[m]) for m in methods}
    finally:
        for w in workers.values():
            w.close()
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
