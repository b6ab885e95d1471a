"""Beam search speed: the zoo runtime against transformers' ``generate(num_beams=4)``,
same weights, same thread count, one run.

    python benchmarks/beam.py              # t5-small-sized and gpt2-small; ~10 min on 2 cores
    python benchmarks/beam.py --quick      # a short look: fewer reps and tokens

Each model is created once with random weights as a Hugging Face checkpoint (a
T5 of t5-small's size: d_model 512, 6 + 6 layers, 8 heads, d_ff 2048, vocab 32128; and
GPT-2 small: 12 layers, 768 wide), imported into the zoo and built (fp32), so both
methods run the same weights. Each method lives in its own worker process at the same
thread count (benchmarks/generate.py's pattern); repetitions go round-robin and the
figures are medians. A run: a batch of prompts of ``--prompt`` tokens (T5: the source),
4 beams, ``--new-tokens`` new tokens (no eos, so both run every step), length_penalty 1,
early_stopping False. The figure is wall time per generated sequence (the whole
generate call over the batch size); the target is zoo <= 0.5x transformers.

Both methods run at 1 thread by default: on a shared, loaded 2-core machine torch's
OpenMP pool at 2 threads collapses (a GPT-2 small forward of 8 tokens took 0.12 s at 1
thread and 0.3-1.5 s at 2; transformers' beam search 20-50x slower than at 1 thread),
which would flatter the zoo; ``--threads 2`` measures it anyway
(benchmarks/results/beam-2threads.json).

Prints a table and writes JSON (default benchmarks/results/beam.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generate import Worker, machine, median, spread  # noqa: E402
from runtime.measure import peak_rss_mb  # noqa: E402

MODELS = {
    "t5-small": ("T5Config", dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, vocab_size=32128,
                                  feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
    "gpt2-small": ("GPT2Config", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)),
}
METHODS = ("zoo", "transformers")
TARGET = 0.5  # zoo time per sequence over transformers'
BEAMS = 4


def _prompts(batch: int, length: int, vocab: int) -> list[list[int]]:
    import numpy as np

    return np.random.default_rng(0).integers(2, vocab, size=(batch, length)).tolist()


class ZooBeams:
    def __init__(self, args):
        from runtime.generate import Generator

        self.gen = Generator(args.artifact, threads=args.threads, io_binding=False)

    def run(self, batch: int, prompt: int, new: int) -> dict:
        from runtime.generate import GenerationConfig

        config = GenerationConfig(max_new_tokens=new, eos=(), num_beams=BEAMS)
        t0 = time.perf_counter()
        out = self.gen.generate(_prompts(batch, prompt, self.gen.vocab), config)
        return {"seconds": time.perf_counter() - t0, "tokens": out.tokens}


class HFBeams:
    def __init__(self, args):
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        self.torch = torch
        auto = transformers.AutoModelForSeq2SeqLM if "t5" in args.model else transformers.AutoModelForCausalLM
        self.model = auto.from_pretrained(args.hf, dtype=torch.float32).eval()  # transformers' default attention (sdpa)
        self.model.generation_config.eos_token_id = None
        self.crossed = self.model.config.is_encoder_decoder

    def run(self, batch: int, prompt: int, new: int) -> dict:
        torch = self.torch
        ids = torch.tensor(_prompts(batch, prompt, self.model.config.vocab_size))
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, num_beams=BEAMS, do_sample=False,
                                      eos_token_id=None, pad_token_id=0, length_penalty=1.0, early_stopping=False)
        seconds = time.perf_counter() - t0
        start = 1 if self.crossed else prompt
        return {"seconds": seconds, "tokens": out[:, start:].tolist()}


def worker_main(args) -> int:
    worker = ZooBeams(args) if args.worker == "zoo" else HFBeams(args)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        out = worker.run(req["batch"], req["prompt"], req["new"])
        out["rss_mb"] = peak_rss_mb()
        print(json.dumps(out), flush=True)
    return 0


def make(name: str, folder: Path) -> tuple[Path, Path]:
    """The checkpoint (random weights, seed 0) and its zoo artifact."""
    import torch
    import transformers

    from compiler.importers import import_folder
    from zoo.app.build import build_artifact

    cls, kw = MODELS[name]
    torch.manual_seed(0)
    config = getattr(transformers, cls)(**kw)
    auto = transformers.AutoModelForSeq2SeqLM if name.startswith("t5") else transformers.AutoModelForCausalLM
    hf = folder / "hf" / name
    auto.from_config(config).save_pretrained(hf)
    imported = import_folder(hf, name=name)
    art, manifest, _ = build_artifact(imported.spec, folder / "art" / name, weights=imported.state)
    assert manifest["parity"]["passed"], manifest["parity"]
    return hf, art


def bench_model(name: str, work: Path, args) -> dict:
    t0 = time.perf_counter()
    hf, art = make(name, work)
    print(f"  {name}: checkpoint, import and build in {time.perf_counter() - t0:.0f} s", flush=True)
    argv = ["--artifact", str(art), "--hf", str(hf), "--threads", str(args.threads), "--model", name]
    workers = {m: Worker(m, argv, script=__file__) for m in METHODS}
    req = dict(batch=args.batch, prompt=args.prompt, new=args.new_tokens)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    try:
        for m in METHODS:
            workers[m].run(**dict(req, new=2))  # warm-up
        for rep in range(args.reps):
            for m in METHODS:
                runs[m].append(workers[m].run(**req))
            print(f"    rep {rep + 1}/{args.reps}: " + ", ".join(f"{m} {runs[m][-1]['seconds'] / args.batch * 1e3:.0f} ms/sequence" for m in METHODS), flush=True)
    finally:
        for w in workers.values():
            w.close()
    per_seq = {m: [r["seconds"] / args.batch for r in runs[m]] for m in METHODS}
    out = {"methods": {}, "tokens_agree": runs["zoo"][0]["tokens"] == runs["transformers"][0]["tokens"]}
    for m in METHODS:
        out["methods"][m] = {"ms_per_sequence": median(per_seq[m]) * 1e3, "spread": spread(per_seq[m]), "reps": len(per_seq[m]),
                             "peak_rss_mb": max(r["rss_mb"] for r in runs[m])}
    out["ratio"] = out["methods"]["zoo"]["ms_per_sequence"] / out["methods"]["transformers"]["ms_per_sequence"]
    return out


def table(results: dict, info: dict, args) -> str:
    lines = [
        f"machine: {info['cpu']}, {info['cores']} cores, {args.threads} threads; onnxruntime {info['onnxruntime']}, torch {info['torch']}, "
        f"transformers {info['transformers']}",
        f"{BEAMS} beams, batch {args.batch}, prompt {args.prompt}, {args.new_tokens} new tokens (no eos), fp32, CPU",
        "",
        "| model | zoo ms/sequence | transformers ms/sequence | zoo / transformers | target | tokens equal |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, r in results.items():
        z, t = r["methods"]["zoo"], r["methods"]["transformers"]
        verdict = "met" if r["ratio"] <= TARGET else "MISSED"
        lines.append(f"| {name} | {z['ms_per_sequence']:.0f} ± {z['spread'] * 100:.0f}% | {t['ms_per_sequence']:.0f} ± {t['spread'] * 100:.0f}% | "
                     f"{r['ratio']:.2f} | <= {TARGET} ({verdict}) | {'yes' if r['tokens_agree'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2, help="prompts per generate call (default 2)")
    ap.add_argument("--prompt", type=int, default=32, help="prompt (T5: source) tokens (default 32)")
    ap.add_argument("--new-tokens", type=int, default=64, help="new tokens per sequence (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="threads for both methods (default 1: see the docstring)")
    ap.add_argument("--quick", action="store_true", help="a short look: 2 reps, 16 new tokens")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/beam.json")
    for hidden in ("--worker", "--artifact", "--hf", "--model"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.quick:
        args.reps, args.new_tokens = 2, 16
    args.device = "cpu"
    info = machine(args)
    results = {}
    with tempfile.TemporaryDirectory(prefix="zoo-beam-") as tmp:
        for name in args.models.split(","):
            results[name] = bench_model(name, Path(tmp), args)
    text = table(results, info, args)
    print("\n" + text)
    settings = {k: getattr(args, k) for k in ("reps", "batch", "prompt", "new_tokens", "threads")} | {"num_beams": BEAMS, "dtype": "float32"}
    out = {"machine": info, "settings": settings, "results": results, "table": text}
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
