"""What the parity rule must allow, measured: the exported graphs against their torch
module, random-init and trained-like weights (compiler.trained_like), per family,
depth, dtype and precision. For each check it prints the smallest ``r`` such that
``|onnx - torch| <= r*|torch| + r*rms(torch vector)`` holds (the rule of zoo.spec.contract
with rtol = atol = r), next to the rule's own values, and writes the table as JSON.
docs/parity.md reads its results.

    python benchmarks/parity.py                       # the default cases (~5 min on 2 cores)
    python benchmarks/parity.py --cases llama-24 --precisions fp32 int8
    python benchmarks/parity.py --large               # adds the 30-layer, 576-wide, 135M decoder
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from compiler import build  # noqa: E402
from zoo.app.build import BuildOptions, build_artifact, package_versions  # noqa: E402
from compiler.trained_like import zoo_trained_like  # noqa: E402
from zoo.app.parity import PARITY_RUNS, parity  # noqa: E402
from zoo.app.layer_parity import layer_report  # noqa: E402
from zoo.spec.contract import ParityRule, parity_rule  # noqa: E402
from zoo.spec.families import family, graphs_for  # noqa: E402

MEASURE = ParityRule(rtol=1.0, atol=1.0)  # worst under it = the r each check needs
CASES = {
    "gpt2-tiny": ("gpt2-tiny", []),
    "llama-tiny": ("llama-tiny", []),
    "alibi-tiny": ("alibi-tiny", []),
    "bert-tiny": ("bert-tiny", []),
    "t5-tiny": ("t5-tiny", []),
    "transformer-tiny": ("transformer-tiny", []),
    "llama-24": ("llama-tiny", ["decoder.layers=24"]),
    "gpt2-24": ("gpt2-tiny", ["decoder.layers=24"]),
    "bert-24": ("bert-tiny", ["encoder.layers=24"]),
    "t5-24": ("t5-tiny", ["encoder.layers=24", "decoder.layers=24"]),
    "llama-fp16-24": ("llama-tiny", ["decoder.layers=24", "dtype=float16"]),
}
LARGE = {
    "llama-135m": ("llama-135m", []),
}


def measure_case(name: str, overrides: list[str], weights: str, precision: str, tmp: Path) -> dict:
    spec = zoo.load(name, overrides)
    model = build(spec, seed=0)
    stats = zoo_trained_like(model, spec) if weights == "trained-like" else None
    folder, _, _ = build_artifact(spec, tmp / f"{name}-{weights}-{precision}", weights=model.state_dict(), check_parity=False, options=BuildOptions(precision=precision))
    paths = {g.name: folder / g.file for g in graphs_for(spec)}
    report = parity(model, spec, paths, precision=precision, rule=MEASURE)
    import onnx

    batch, seq, src = PARITY_RUNS[1]
    inputs = family(spec).token_inputs(vocab=spec.vocab_size, batch=batch, seq=seq, src_seq=src, seed=1)
    layers = layer_report(model, spec, {k: onnx.load(str(p)) for k, p in paths.items()}, ["CPUExecutionProvider"], inputs, MEASURE)
    outputs = {}
    for run in report["runs"]:
        for out, o in run["outputs"].items():
            outputs[out] = max(outputs.get(out, 0.0), o["worst"])
    return {
        "outputs": outputs,
        "cache": report["cache"]["worst"] if report["cache"] else None,
        "layers": max((e["worst"] for e in layers), default=None),
        "max_abs": report["max_abs"],
        "top1": report["top1"],
        "logit_std": stats["logit_std"] if stats else None,
        "outlier_ratio": stats["residual_outlier_ratio"] if stats else None,
        "rule": parity_rule(spec.dtype, precision).to_json(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--precisions", nargs="*", default=["fp32"])
    ap.add_argument("--large", action="store_true", help="add the 135M, 30-layer decoder (about 3 min more)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/parity.json"))
    args = ap.parse_args(argv)
    cases = {k: (CASES | LARGE)[k] for k in args.cases} | (LARGE if args.large else {})
    header = f"{'case':<16} {'weights':<12} {'prec':<5} {'outputs r':>10} {'cache r':>9} {'layers r':>9} {'rule r':>8} {'max abs':>9} {'top-1':>6} {'logit std':>9} {'s':>5}"
    print(header + "\n" + "-" * len(header))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, (name, overrides) in cases.items():
            for precision in args.precisions:
                if precision != "fp32" and any(o.startswith("dtype=") for o in overrides):
                    continue
                for weights in ("random", "trained-like"):
                    t0 = time.perf_counter()
                    row = {"case": case, "spec": name, "overrides": overrides, "weights": weights, "precision": precision, **measure_case(name, overrides, weights, precision, Path(tmp))}
                    row["seconds"] = round(time.perf_counter() - t0, 1)
                    rows.append(row)
                    fmt = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
                    print(
                        f"{case:<16} {weights:<12} {precision:<5} {fmt(max(row['outputs'].values())):>10} {fmt(row['cache']):>9} {fmt(row['layers']):>9} "
                        f"{row['rule']['rtol']:>8.0e} {row['max_abs']:>9.2e} {'' if row['top1'] is None else format(row['top1'] * 100, '.1f'):>6} "
                        f"{'' if row['logit_std'] is None else format(row['logit_std'], '.1f'):>9} {row['seconds']:>5.0f}",
                        flush=True,
                    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"packages": package_versions(), "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
