"""How sensitive a trained-like model is to small weight errors: the bound on what any
8-bit format can agree with fp32 (docs/precision.md, "Before the calibration").

Each matmul weight of the torch module (2-D parameters, the embeddings excepted) is
multiplied by ``1 + eps * N(0, 1)`` (int8 blocks of 32 perturb a weight by about
eps 5e-3, bfloat16 rounding by about 1e-3), and the perturbed model is teacher-forced
on the unperturbed model's own text: greedy or sampled continuations of random 8-token
prompts, the massive-activation tokens excluded but a first one as BOS, as real text
has them. Printed: top-1 agreement with the unperturbed model, counted from token 8,
and the RMS logit error, per generator setting (compiler.trained_like.TrainedLike
fields, ``--configs`` as JSON).

    python benchmarks/sensitivity.py              # llama-135m, the earlier generator at score gain 4 / 2 / 1 (~8 min)
    python benchmarks/sensitivity.py --spec llama-tiny --configs '[{}]'
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.app.report import machine_info, markdown_table  # noqa: E402

PROMPT = 8


def trained_like(spec, config: dict):
    """The seed-0 module with trained-like weights and its massive-activation token ids."""
    from compiler.builder import build
    from compiler.trained_like import TrainedLike, zoo_trained_like

    model = build(spec, seed=0)
    stats = zoo_trained_like(model, spec, config=TrainedLike(**config))
    return model, stats, np.array(stats["outlier_token_ids"], dtype=np.int64)


def logits_of(model, ids: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(ids)
    with torch.no_grad():
        return model(t, torch.ones_like(t)).float().numpy()


def perturbed(model, eps: float, seed: int = 1):
    """A copy of ``model`` with every 2-D non-embedding weight times 1 + eps * N(0, 1)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(1 + eps * torch.randn(p.shape, generator=gen))
    return other


def measure(spec, config: dict, eps_list, *, prompts: int, length: int, temperature: float) -> dict:
    from zoo.app.convert.measure import natural_text, top1_agreement

    model, stats, massive = trained_like(spec, config)
    text = natural_text(lambda ids: logits_of(model, ids), spec.vocab_size, prompts=prompts, length=length, prompt_len=PROMPT,
                        temperature=temperature, exclude=massive if len(massive) else None,
                        bos=int(massive[0]) if len(massive) else None)
    ref = logits_of(model, text)
    top = np.sort(ref[:, PROMPT:], -1)
    row = {"config": config, "attention_peak": stats.get("attention_peak"), "logit_std": stats.get("logit_std"),
           "top1_gap_median": float(np.median(top[..., -1] - top[..., -2])), "eps": {}}
    for eps in eps_list:
        got = logits_of(perturbed(model, eps), text)
        row["eps"][str(eps)] = {"top1": top1_agreement(ref, got, start=PROMPT),
                                "rms_logit_error": float(np.sqrt(((got - ref)[:, PROMPT:] ** 2).mean()))}
    return row


def main(argv=None) -> int:
    import zoo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="llama-135m")
    earlier = {"input_outlier_ratio": 20.0, "residual_rank": 1.0, "sink_margin": 0.0}  # the generator before benchmarks/anchors.py
    configs = [{**earlier, "score_gain": g} for g in (4.0, 2.0, 1.0)]
    ap.add_argument("--configs", default=json.dumps(configs), help="TrainedLike fields, a JSON list")
    ap.add_argument("--eps", default="1e-3,4e-3")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0, help="0: greedy continuations")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sensitivity.json")
    args = ap.parse_args(argv)
    spec = zoo.load(args.spec)
    eps_list = [float(e) for e in args.eps.split(",")]
    rows, t0 = [], time.perf_counter()
    for config in json.loads(args.configs):
        rows.append(measure(spec, config, eps_list, prompts=args.prompts, length=args.length, temperature=args.temperature))
        print(f"  {config or 'default'}: {rows[-1]['eps']}", flush=True)
    header = ["generator", "attention peak", "top-1 gap (median)", *[f"top-1 at eps {e:g}" for e in eps_list], *[f"RMS logit error at eps {e:g}" for e in eps_list]]
    table = [[json.dumps(r["config"]) if r["config"] else "default", f"{r['attention_peak']:.2f}" if r["attention_peak"] else "n/a",
              f"{r['top1_gap_median']:.2f}", *[f"{r['eps'][str(e)]['top1'] * 100:.1f}%" for e in eps_list],
              *[f"{r['eps'][str(e)]['rms_logit_error']:.3g}" for e in eps_list]] for r in rows]
    print(f"{args.spec}: teacher-forced top-1 of the weight-perturbed model against the unperturbed one")
    print(markdown_table(header, table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"spec": args.spec, "machine": machine_info(), "seconds": time.perf_counter() - t0, "settings": vars(args) | {"out": str(args.out)}, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
