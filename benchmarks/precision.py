"""Precisions side by side: fp32, fp16 and int8 artifacts of one spec, same weights.

    python benchmarks/precision.py                      # gpt2-tiny, a quick look (~1 min)
    python benchmarks/precision.py --spec gpt2-small    # the real figures (~5 min on 2 cores)
    python benchmarks/precision.py --device cuda        # on a GPU: fp16's own speed

Each precision is built with ``zoo build --precision`` (compiler.precision: fp16 keeps
norms, softmax and position math in fp32, cache in fp16; int8 is dynamic quantization of
the MatMul weights and the token embedding, tied projection included), with the parity
check against torch at the precision's tolerance (zoo.contract.PRECISION_TOLERANCE).
Then, in this one process, round-robin over the precisions so that drift hits all alike:

- size: MB of the ONNX files;
- forward: ms of one uncached pass over a batch of 4 x 32 tokens (median);
- decode: ms per token of greedy generation, batch 1, a 32-token prompt (median step);
- against fp32 on the same inputs: max and mean |logit error| and top-1 agreement over
  the real positions of that batch, and how many greedy tokens equal fp32's before the
  first difference (after it the prefixes differ; random-init models with large
  vocabularies have near-ties, so they part early);
- ratios to fp32: speed = fp32 ms / ms (> 1 is faster), size = MB / fp32 MB.

fp16 on the CPU provider runs through casts ONNX Runtime inserts (it has few fp16
kernels there): its CPU speed is not its CUDA speed, and the table says which provider
ran. Prints a table and writes JSON (default benchmarks/results/precision.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.report import machine_info, markdown_table  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")


def build(spec_name: str, precisions, root: Path) -> dict[str, Path]:
    import zoo
    from compiler.artifact import BuildOptions, build_artifact
    from zoo.progress import step

    spec = zoo.load(spec_name)
    folders = {}
    for p in precisions:
        options = BuildOptions(precision=p)
        folder, _, _ = build_artifact(spec, None if root is None else _folder(root, spec_name, p), step=step, options=options)
        folders[p] = folder
    return folders


def _folder(root: Path, name: str, precision: str) -> Path:
    return root / f"{name}-{precision}"


def measure(folders: dict[str, Path], *, device: str, threads: int | None, reps: int, warmup: int, new_tokens: int,
            batch: int = 4, seq: int = 32, prompt: int = 32) -> dict:
    import numpy as np

    from runtime.generate import GenerationConfig, Generator
    from runtime.inputs import graph_inputs
    from runtime.session import Session

    sessions = {p: Session(f, device=device, threads=threads) for p, f in folders.items()}
    first = next(iter(sessions.values()))
    model = first.artifact.model
    family = first.family
    seq = min(seq, model["max_seq_len"])
    prompt = min(prompt, model["max_seq_len"] // 2)
    inputs = graph_inputs(family, vocab=model["vocab_size"], batch=batch, seq=seq, src_seq=seq, seed=7)
    mask = (inputs["decoder"]["decoder_attention_mask"] if family == "encoder-decoder" else inputs["model"]["attention_mask"]).astype(bool)
    gens = {p: Generator(s) for p, s in sessions.items()} if family != "encoder-only" else {}
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, model["vocab_size"], size=(1, prompt)).tolist()
    config = GenerationConfig(max_new_tokens=new_tokens, eos=())

    forward_ms = {p: [] for p in sessions}
    decode_ms = {p: [] for p in sessions}
    tokens = {}
    logits = {}
    for i in range(warmup + reps):
        for p, s in sessions.items():
            t0 = time.perf_counter()
            out = s.forward(inputs, check=False)
            dt = (time.perf_counter() - t0) * 1e3
            if i == 0:
                logits[p] = out["logits"].astype(np.float64)
            if i >= warmup:
                forward_ms[p].append(dt)
            if gens:
                res = gens[p].generate(prompts, config)
                tokens.setdefault(p, res.tokens[0])
                if i >= warmup:
                    decode_ms[p].append(statistics.median(res.step_seconds) * 1e3)
    ref = logits.get("fp32")
    out = {"settings": {"batch": batch, "seq": seq, "prompt": prompt, "new_tokens": new_tokens, "reps": reps, "warmup": warmup,
                        "device": device, "threads": threads or int(os.environ.get("ZOO_THREADS", "0") or 0) or os.cpu_count()},
           "precisions": {}}
    for p, s in sessions.items():
        manifest = s.artifact.manifest
        files = {f for g in manifest["graphs"].values() for f in g["files"]}
        entry = {
            "artifact": str(folders[p]),
            "provider": s.provider,
            "size_mb": sum(manifest["files"][f]["bytes"] for f in files) / 1e6,
            "forward_ms": statistics.median(forward_ms[p]),
            "decode_ms_per_token": statistics.median(decode_ms[p]) if decode_ms[p] else None,
            "parity": {k: manifest["parity"].get(k) for k in ("max_abs", "max_rel", "top1", "tolerance", "passed")} if manifest.get("parity") else None,
            "build_record": (manifest.get("build") or {}).get("precision"),
        }
        if ref is not None:
            diff = np.abs(logits[p] - ref)[mask]
            entry["max_abs_logit_vs_fp32"] = float(diff.max())
            entry["mean_abs_logit_vs_fp32"] = float(diff.mean())
            entry["top1_agreement_vs_fp32"] = float((logits[p].argmax(-1) == ref.argmax(-1))[mask].mean())
            if "fp32" in tokens and p in tokens:  # once one token differs the prefixes differ: count up to there
                same = np.array(tokens[p]) == np.array(tokens["fp32"])
                entry["greedy_tokens_before_first_difference"] = int(np.argmin(same)) if not same.all() else len(same)
        out["precisions"][p] = entry
    base = out["precisions"].get("fp32")
    if base:
        for e in out["precisions"].values():
            e["size_vs_fp32"] = e["size_mb"] / base["size_mb"]
            e["forward_speed_vs_fp32"] = base["forward_ms"] / e["forward_ms"]
            if e["decode_ms_per_token"] and base["decode_ms_per_token"]:
                e["decode_speed_vs_fp32"] = base["decode_ms_per_token"] / e["decode_ms_per_token"]
    return out


def table(result: dict) -> str:
    def f(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) else "n/a"

    header = ["precision", "provider", "size MB", "forward ms", "decode ms/token", "size vs fp32", "forward speed vs fp32",
              "decode speed vs fp32", "max logit err", "mean logit err", "top-1 vs fp32", "greedy = fp32 for"]
    rows = []
    for p, e in result["precisions"].items():
        rows.append([
            p,
            e["provider"].replace("ExecutionProvider", ""),
            f(e["size_mb"], ".1f"),
            f(e["forward_ms"], ".2f"),
            f(e["decode_ms_per_token"], ".2f"),
            f(e.get("size_vs_fp32"), ".2f") + "x",
            f(e.get("forward_speed_vs_fp32"), ".2f") + "x",
            f(e.get("decode_speed_vs_fp32"), ".2f") + "x",
            f(e.get("max_abs_logit_vs_fp32"), ".2e"),
            f(e.get("mean_abs_logit_vs_fp32"), ".2e"),
            f(e.get("top1_agreement_vs_fp32", float("nan")) * 100, ".1f") + "%",
            f"{e['greedy_tokens_before_first_difference']}/{result['settings']['new_tokens']} tokens" if "greedy_tokens_before_first_difference" in e else "n/a",
        ])
    return markdown_table(header, rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="gpt2-tiny", help="catalog name or spec file (default gpt2-tiny)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated (default fp32,fp16,int8)")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--artifacts", type=Path, default=None, help="folder for the artifacts (default: artifacts/NAME-ID, reused when up to date)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "precision.json")
    args = ap.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # the reference of every ratio
    t0 = time.perf_counter()
    folders = build(args.spec, precisions, args.artifacts)
    build_s = time.perf_counter() - t0
    result = measure(folders, device=args.device, threads=args.threads or None, reps=args.reps, warmup=args.warmup, new_tokens=args.new_tokens)
    result = {"spec": args.spec, "machine": machine_info(), "build_seconds": build_s, **result}
    print(f"{args.spec}: precisions against fp32 ({result['settings']['reps']} reps, medians; speed > 1x is faster)")
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
