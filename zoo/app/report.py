"""The comparison report: a terminal table, a markdown file, JSON with every raw
figure, and PNG plots (zoo.app.charts, drawn with matplotlib where it is installed;
without it the report skips them with a note). The figures come from
runtime.measure (one dict per model, see there for names and units)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

from zoo.app import charts
from zoo.spec.files import write_atomic

PACKAGES = ("onnxruntime", "onnxruntime-gpu", "numpy", "onnx", "torch", "pydantic", "transformers")


def machine_info() -> dict:
    """What two runs need to be compared: CPU, cores, GPU, package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    info["packages"] = versions
    info["gpu"] = None
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            info["gpu"] = r.stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# --------------------------------------------------------------------------- formatting


def _num(value: Optional[float], digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _med(entry) -> Optional[float]:
    return entry["median"] if isinstance(entry, dict) and "median" in entry else None


def _with_spread(entry, digits: int = 1) -> str:
    if not isinstance(entry, dict):
        return "n/a"
    return f"{entry['median']:,.{digits}f} ±{entry['spread'] * 100:.0f}%"


def summary_rows(models: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per model: the headline figures, with units in the headers."""
    header = [
        "model",
        "params",
        "embedding params",
        "params/layer",
        "ONNX MB",
        "KV cache KB/token",
        "peak RSS MB",
        "GPU MB",
        "TTFT ms",
        "decode ms/token",
        "tok/s batch 1",
        "tok/s batch 8",
        "prefill tok/s",
        "precision",
        "max logit err vs fp32",
        "top-1 vs fp32",
        "speed vs fp32",
        "size vs fp32",
    ]
    rows = []
    for m in models:
        per_layer = ", ".join(f"{k} {v:,}" for k, v in m["parameters_per_layer"].items())
        rates = m.get("decode_tokens_per_s") or m.get("forward_tokens_per_s") or {}
        b1, b8 = rates.get("1"), rates.get("8")
        rows.append(
            [
                m["label"],
                f"{m['parameters']:,}",
                f"{m['parameters_embeddings']:,}",
                per_layer,
                _num(m["onnx_bytes"] / 1e6),
                _num(m["kv_cache_bytes_per_token"] / 1024, 2),
                _num(m["peak_rss_mb"], 0),
                _num(m.get("device_memory_mb"), 0),
                _with_spread(m.get("time_to_first_token_ms")),
                _with_spread(m.get("decode_ms_per_token"), 2),
                _with_spread(b1),
                _with_spread(b8),
                _with_spread(m.get("prefill_tokens_per_s"), 0) + f" ({m['prefill_tokens']} tokens)",
                *precision_cells(m),
            ]
        )
    return header, rows


def precision_cells(m: dict) -> list[str]:
    """precision, max logit error, top-1 agreement, speed and size relative to the
    fp32 graphs, as the build measured them (manifest); '-' for an fp32 artifact.
    Speed: decode step where the model decodes, else one forward pass; x > 1 is faster."""
    precision = m.get("precision") or "fp32"
    cost = m.get("precision_cost")
    if not cost:
        return [precision, "-", "-", "-", "-"]
    speed = cost.get("decode_speed_vs_fp32") or cost.get("speed_vs_fp32")
    where = " (CPU)" if cost.get("provider") == "CPUExecutionProvider" and precision == "fp16" else ""
    err = cost.get("max_abs_logit")
    top1 = cost.get("top1_agreement")
    size = cost.get("size_vs_fp32")
    return [
        precision,
        f"{err:.2g}" if isinstance(err, (int, float)) else "n/a",
        f"{top1 * 100:.1f}%" if isinstance(top1, (int, float)) else "n/a",
        f"{speed:.2f}x{where}" if isinstance(speed, (int, float)) else "n/a",
        f"{size:.2f}x" if isinstance(size, (int, float)) else "n/a",
    ]


def context_rows(models: list[dict]) -> tuple[list[str], list[list[str]]]:
    contexts = sorted({int(c) for m in models for c in m.get("decode_ms_by_context", {})})
    header = ["model"] + [f"ctx {c} ms/token" for c in contexts]
    rows = []
    for m in models:
        by = m.get("decode_ms_by_context", {})
        rows.append([m["label"]] + [_num(_med(by.get(str(c))), 2) for c in contexts])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def terminal_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def markdown_report(result: dict, plots: dict[str, str]) -> str:
    models, env = result["models"], result["machine"]
    s = result["settings"]
    pk = env["packages"]
    lines = [
        "# Model comparison",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores" + (f", GPU {', '.join(env['gpu'])}" if env.get("gpu") else "")
        + f"; provider {', '.join(sorted({m['provider'] for m in models}))}, {s['threads']} threads; "
        + ", ".join(f"{k} {v}" for k, v in pk.items()) + ".",
        f"Medians of {s['reps']} repetitions after {s['warmup']} warm-up (± half the interquartile range); "
        f"prompt {s['prompt']} tokens, {s['new_tokens']} new tokens, greedy.",
        *(
            [
                "Precision columns: the build's own measurement of the converted graphs against its fp32 graphs "
                "(fixed batch; speed > 1x is faster, decode step where the model decodes; size < 1x is smaller; "
                "fp16 timed on CPU runs through casts and is not its CUDA speed)."
            ]
            if any(m.get("precision_cost") for m in models)
            else []
        ),
        "",
        markdown_table(*summary_rows(models)),
        "",
    ]
    header, rows = context_rows(models)
    if len(header) > 1:
        lines += ["Decode latency by context length (ms per token, batch 1):", "", markdown_table(header, rows), ""]
    for title, file in plots.items():
        lines += [f"![{title}]({file})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def write_plots(models: list[dict], out: Path) -> dict[str, str]:
    """PNG plots into ``out``; returns title -> file name. Without matplotlib: none,
    with a one-line note on stderr (the tables and the JSON do not need it)."""
    try:
        return _draw_plots(models, out)
    except charts.ChartsUnavailable as e:
        print(f"note: plots skipped: {e}", file=sys.stderr)
        return {}


def _draw_plots(models: list[dict], out: Path) -> dict[str, str]:
    plots = {}
    lat = {
        m["label"]: [(int(c), e["median"]) for c, e in m["decode_ms_by_context"].items()]
        for m in models
        if m.get("decode_ms_by_context")
    }
    if lat:
        charts.line_chart(
            lat,
            title="Decode latency vs context length",
            x_label="context length (tokens)",
            y_label="ms per token",
            log_x=True,
            path=out / "latency_vs_context.png",
        )
        plots["Decode latency vs context length"] = "latency_vs_context.png"
    thr = {}
    for m in models:
        if m.get("decode_tokens_per_s"):
            thr[m["label"]] = [(int(b), e["median"]) for b, e in m["decode_tokens_per_s"].items()]
        elif m.get("forward_tokens_per_s"):  # encoder-only: tokens through one forward pass
            thr[m["label"] + " (forward)"] = [(int(b), e["median"]) for b, e in m["forward_tokens_per_s"].items()]
    if thr:
        charts.line_chart(
            thr,
            title="Decode throughput vs batch size",
            x_label="batch size",
            y_label="tokens per second",
            log_x=True,
            path=out / "throughput_vs_batch.png",
        )
        plots["Decode throughput vs batch size"] = "throughput_vs_batch.png"
    memory = {
        m["label"]: {
            "peak RSS MB": m["peak_rss_mb"],
            **({"GPU memory MB": m["device_memory_mb"]} if m.get("device_memory_mb") else {}),
            "ONNX file MB": m["onnx_bytes"] / 1e6,
            "KV cache MB at 1024 tokens": m["kv_cache_bytes_per_token"] * 1024 / 1e6,
        }
        for m in models
    }
    charts.grouped_bar_chart(memory, title="Memory per model", y_label="MB", annotate=True, path=out / "memory.png")
    plots["Memory per model"] = "memory.png"
    return plots


def write_report(result: dict, out: Path) -> dict[str, Path]:
    """compare.json, compare.md and the plots into ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result["models"], out)
    files = {"json": out / "compare.json", "markdown": out / "compare.md"}
    write_atomic(files["json"], json.dumps(result, indent=2) + "\n")
    write_atomic(files["markdown"], markdown_report(result, plots) + "\n")
    files.update({name: out / name for name in plots.values()})
    return files
