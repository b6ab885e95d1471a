"""``zoo compare``: models side by side on the figures the field uses, or
``--parity``: one artifact's ONNX graphs against its torch module, layer by layer."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from zoo.app.cli.render import Block, Table, field, render
from zoo.spec.errors import InputError, ZooError

ROOT = Path(__file__).resolve().parents[3]
_OWN_SET = re.compile(r"^(?P<base>.+?)\[(?P<sets>[^\[\]]*)\]$")


def register(sub) -> None:
    c = sub.add_parser(
        "compare",
        help="compare models: parameters, size, memory, time to first token, decode speed, latency vs context",
        description="Build (if needed) and measure each model on ONNX Runtime, one process per model, then write "
        "a table, compare.md, compare.json and PNG plots. A MODEL is a catalog name, a spec file or an artifact "
        "folder; NAME[path=value,path=value] overrides fields of that model only (quote it in the shell). "
        "With --parity ARTIFACT: compare the artifact's ONNX graphs with its torch module instead.",
    )
    c.add_argument("models", nargs="*", metavar="MODEL", help="catalog name, spec file or artifact folder, optionally NAME[k=v,...]")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE", help="override a field of every spec")
    c.add_argument("-o", "--out", type=Path, default=Path("compare"), help="folder for compare.md, compare.json and the plots (default: compare/)")
    c.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="execution provider (default: CUDA if available)")
    c.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: every core)")
    c.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (default 5)")
    c.add_argument("--warmup", type=int, default=1, help="untimed runs before each figure (default 1)")
    c.add_argument("--rounds", type=int, default=1, help="measure the models round-robin this many times, fresh processes (default 1)")
    c.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per run (default 32)")
    c.add_argument("--contexts", default="64,128,256,512,1024,2048", help="context lengths of the latency curve (those below max_seq_len)")
    c.add_argument("--batches", default="1,2,4,8", help="batch sizes of the throughput curve (default 1,2,4,8)")
    c.add_argument("--quick", action="store_true", help="2 repetitions, 8 new tokens, contexts 64,128, batches 1,8: a smoke run")
    c.add_argument(
        "--precision", default="fp32", metavar="LIST",
        help="precisions to build each spec at, comma-separated: fp32, fp16, int8, int4 (default fp32); each is measured as "
        "a model of its own, labelled NAME (PRECISION); artifact folders are measured as built",
    )
    c.add_argument("--parity", type=Path, metavar="ARTIFACT", help="compare this artifact's ONNX graphs against torch instead")
    c.add_argument("--weights", type=Path, help="with --parity: the safetensors the artifact was built from (default: its seeded init)")
    c.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.parity is not None:
        if args.models:
            raise InputError("--parity takes one artifact; give no other models")
        return _parity(args)
    if len(args.models) < 1:
        raise InputError("give at least one model to measure (catalog name, spec file or artifact folder)")
    if args.quick:
        args.reps, args.new_tokens, args.contexts, args.batches = 2, 8, "64,128", "1,8"
    for name, value in (("--reps", args.reps), ("--new-tokens", args.new_tokens), ("--rounds", args.rounds)):
        if value < 1:
            raise InputError(f"{name} must be at least 1")
    if args.warmup < 0 or args.threads < 0:
        raise InputError("--warmup and --threads must be >= 0")
    contexts, batches = _ints(args.contexts, "--contexts"), _ints(args.batches, "--batches")
    precisions = _precisions(args.precision)
    runs = []  # (label, model argument, precision)
    for a in args.models:
        if (Path(a) / "manifest.json").is_file():
            runs.append((Path(a).name, a, None))
        else:
            runs += [(a if precisions == ["fp32"] else f"{a} ({p})", a, p) for p in precisions]
    labels = [label for label, _, _ in runs]
    if len(set(labels)) != len(labels):
        raise InputError("a model is named twice; give each once")
    folders = [artifact_for(arg, args.overrides, precision=p or "fp32") for _, arg, p in runs]
    from zoo.app.report import write_report

    result = measure_models(
        labels,
        folders,
        device=args.device,
        threads=args.threads or os.cpu_count(),
        reps=args.reps,
        warmup=args.warmup,
        new_tokens=args.new_tokens,
        contexts=contexts,
        batches=batches,
        rounds=args.rounds,
    )
    files = write_report(result, args.out)
    render(result, as_json=args.json, view=lambda r: _summary_view(r, files))
    return 0


def _summary_view(result: dict, files: dict) -> list[Block]:
    """The models side by side (zoo.app.report.summary_rows), then the files written."""
    from zoo.app.report import summary_rows

    header, rows = summary_rows(result["models"])
    return [Table(header, rows, align="l" + "r" * (len(header) - 1), rule=True), "", "wrote " + ", ".join(str(p) for p in files.values())]


def measure_models(labels, folders, *, device, threads, reps, warmup, new_tokens, contexts, batches, rounds: int = 1) -> dict:
    """Measure each artifact in a process of its own, one after the other; with
    ``rounds`` > 1 the models are measured round-robin that many times (a fresh
    process each time) and each timed figure is the median of the rounds' medians,
    its spread taken across rounds: drift of the machine then hits every model alike.
    The result holds the machine, the settings and every model's figures."""
    from zoo.app.report import machine_info

    settings = {
        "device": device,
        "threads": threads,
        "reps": reps,
        "warmup": warmup,
        "new_tokens": new_tokens,
        "prompt": 32,
        "contexts": list(contexts),
        "batches": list(batches),
        "rounds": rounds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    per_model: list[list[dict]] = [[] for _ in labels]
    for r in range(rounds):
        for i, (label, folder) in enumerate(zip(labels, folders)):
            tag = f"{label} (round {r + 1}/{rounds})" if rounds > 1 else label
            per_model[i].append(_measure(tag, folder, settings))
    models = []
    for label, runs in zip(labels, per_model):
        figures = _combine(runs)
        figures["label"] = label
        models.append(figures)
    return {"machine": machine_info(), "settings": settings, "models": models}


def _combine(runs: list[dict]) -> dict:
    """One model's figures from several rounds: timed figures ({median, spread, n})
    become the median over rounds; peak RSS the largest; the rest from round 1."""
    import statistics

    def merge(values):
        first = values[0]
        if isinstance(first, dict) and "median" in first:
            meds = [v["median"] for v in values]
            med = statistics.median(meds)
            spread = (max(meds) - min(meds)) / 2 / med if len(meds) > 1 and med else first["spread"]
            return {"median": med, "spread": spread, "n": sum(v["n"] for v in values)}
        if isinstance(first, dict):
            return {k: merge([v[k] for v in values]) for k in first}
        return first

    out = merge(runs)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return out


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise InputError(f"{what}: give positive integers, got {text!r}")
    return values


def _precisions(text: str) -> list[str]:
    values = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in values if p not in ("fp32", "fp16", "int8", "int4")]
    if not values or bad:
        raise InputError(f"--precision: {bad[0] if bad else text!r} is not a precision; give fp32, fp16, int8 or int4, comma-separated")
    return list(dict.fromkeys(values))


def artifact_for(arg: str, overrides: list[str], precision: str = "fp32") -> Path:
    """A model argument -> an artifact folder (built at ``precision``, or found up to date)."""
    own: list[str] = []
    m = _OWN_SET.match(arg)
    base = arg
    if m and not Path(arg).exists():
        base, own = m["base"], [s.strip() for s in m["sets"].split(",") if s.strip()]
    path = Path(base)
    if path.is_dir() and (path / "manifest.json").is_file():
        if own or overrides:
            raise InputError(f"{arg}: overrides apply to specs, not to a built artifact")
        from runtime.artifact import load_artifact

        load_artifact(path)  # verify now: a broken artifact fails before any measuring
        return path
    import zoo
    from zoo.app.build import build_artifact
    from zoo.app.progress import step

    spec = zoo.load(base, [*overrides, *own])
    options = None
    if precision != "fp32":
        from zoo.app.build import BuildOptions

        options = BuildOptions(precision=precision)
    folder, _, _ = build_artifact(spec, None, step=step, options=options)
    return folder


def _measure(label: str, folder: Path, settings: dict) -> dict:
    """runtime.measure in a process of its own (its peak RSS is this model's)."""
    from zoo.app.progress import step

    cmd = [
        sys.executable,
        "-m",
        "runtime.measure",
        str(folder),
        "--device",
        settings["device"],
        "--threads",
        str(settings["threads"]),
        "--reps",
        str(settings["reps"]),
        "--warmup",
        str(settings["warmup"]),
        "--new-tokens",
        str(settings["new_tokens"]),
        "--contexts",
        ",".join(map(str, settings["contexts"])),
        "--batches",
        ",".join(map(str, settings["batches"])),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with step(f"measuring {label}"):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        errors = []
        for line in proc.stderr:
            if not line.startswith("progress: "):
                errors.append(line.rstrip())
        out = proc.stdout.read()
        proc.wait()
    if proc.returncode != 0:
        last = next((e for e in reversed(errors) if e.strip()), f"exit code {proc.returncode}")
        raise ZooError(f"measuring {label} failed: {last}")
    return json.loads(out)


def _parity(args) -> int:
    from zoo.app.parity import artifact_parity

    report = artifact_parity(args.parity, weights=args.weights, device=args.device)
    render(report, as_json=args.json, view=lambda r: _parity_view(r, args.parity))
    return 0 if report["passed"] else 1


def _parity_view(report: dict, artifact: Path) -> list[Block]:
    """``zoo compare --parity``: every output per padding, every layer, the verdict."""
    precision = f" ({report['precision']} build)" if report.get("precision", "fp32") != "fp32" else ""
    outputs = []
    for run in report["runs"]:
        for name, e in run["outputs"].items():
            top1 = f"{e['top1'] * 100:.1f}%" if "top1" in e else ""
            outputs.append([run["padding"], name, f"{e['max_abs']:.2e}", f"{e['max_rel']:.2e}", f"{e['worst']:.2g}", top1,
                            "yes" if e["within"] else "NO"])
    layers = [[layer["layer"], f"{layer['max_abs']:.2e}", f"{layer['scale']:.3g}", f"{layer['worst']:.2g}", "yes" if layer["within"] else "NO"]
              for layer in report["layers"]]
    blocks: list[Block] = [
        field("artifact", f"{artifact}  ({report['name']}, {report['dtype']}, provider {report['provider']})"),
        field("rule", report["tolerance"]["rule"] + precision),
        Table(["padding", "output", "max abs", "max rel", "of bound", "top-1", "within"], outputs, align="llrrrrl", indent=2),
        "layers (hidden state after each layer, real positions, the same rule):",
        Table(["layer", "max abs", "median |torch|", "of bound", "within"], layers, align="lrrrl", indent=2),
    ]
    if report["passed"]:
        return blocks + ["passed: every output and every layer within the rule"]
    first = report.get("first_divergent_layer")
    where = f"; first layer beyond the rule: {first}" if first else "; every layer within the rule, so the divergence is after the last layer"
    rule = report["tolerance"]
    if report["top1"] is not None and rule.get("top1") is not None and report["top1"] < rule["top1"]:
        blocks.append(f"FAILED: top-1 agreement {report['top1'] * 100:.1f}% < {rule['top1'] * 100:.0f}%")
    return blocks + [f"FAILED: largest error {report['worst']:.3g}x its bound{where}"]
