"""Peak memory of `zoo import` against the checkpoint's size.

    python benchmarks/import_memory.py                          # Llama-shaped, ~540 MB fp32 (~1 min)
    python benchmarks/import_memory.py --label before           # name the run (kept beside other labels in the JSON)
    python benchmarks/import_memory.py --layers 12 --vocab 32000 --out /tmp/import_memory.json

Builds a Llama-shaped ``transformers.LlamaForCausalLM`` (random weights, ``LlamaConfig``
from the flags), saves it with ``save_pretrained(safe_serialization=True)`` into a
temporary folder (in a subprocess of its own), then runs ``zoo import FOLDER -o OUT``
(``zoo.app.cli.main``, as the command line does: read, map, check, write
``weights.safetensors``) in a fresh subprocess. This process imports neither torch nor
the zoo: Linux carries the peak RSS of the process that forks into the child's
``ru_maxrss``, so a large parent would hide the child's own peak. The child
records ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after ``import torch`` and the zoo
modules (the baseline) and after the import; the figure is the difference as a ratio
to the size of ``model.safetensors``. It also reports the child's resident memory at
the end split into anonymous and file-backed pages (/proc/self/status RssAnon,
RssFile): memory-mapped checkpoint pages are file-backed, so the kernel can drop them
under pressure, anonymous copies it cannot. Prints a table and writes JSON (default
``benchmarks/results/import_memory.json``; runs under other labels already in the
file are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "import_memory.json"
MB = 1 << 20


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(folder: str, out: str, dtype: str) -> int:
    """Run in the fresh subprocess: one `zoo import`, one JSON line of figures on stdout."""
    import torch  # noqa: F401

    import compiler.importers  # noqa: F401
    import compiler.weights  # noqa: F401
    import runtime.artifact  # noqa: F401
    import zoo.app.build  # noqa: F401
    from zoo.app.cli import main

    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    code = main(["import", folder, "-o", out, "--dtype", dtype])
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {"exit_code": code, "baseline_kb": base_kb, "peak_kb": peak_kb, "seconds": round(seconds, 2)}
    figures |= {"end_rss_anon_kb": _status_kb("RssAnon"), "end_rss_file_kb": _status_kb("RssFile")}
    print("FIGURES " + json.dumps(figures))
    return code


def checkpoint(folder: Path, args) -> int:
    """Save the Llama-shaped model into ``folder``; returns its parameter count."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=args.intermediate,
        vocab_size=args.vocab,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True)
    return count


SHAPE = ("hidden", "layers", "intermediate", "vocab", "heads")


def measure(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="import_memory."))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        hf = tmp / "hf"
        shape = [f"--{k}={getattr(args, k)}" for k in SHAPE]
        made = subprocess.run([sys.executable, __file__, *shape, "--make", str(hf)], capture_output=True, text=True, cwd=ROOT, env=env)
        if made.returncode != 0:
            raise SystemExit(f"building the checkpoint failed:\n{made.stderr[-2000:]}")
        params = int(made.stdout.split()[-1])
        size = (hf / "model.safetensors").stat().st_size
        print(f"checkpoint: {params:,} parameters, model.safetensors {size / MB:.0f} MiB ({size:,} bytes)", flush=True)
        cmd = [sys.executable, __file__, "--child", str(hf), str(tmp / "imported"), args.dtype]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FIGURES ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"the import failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        fig = json.loads(lines[-1].removeprefix("FIGURES "))
        written = (tmp / "imported" / "weights.safetensors").stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    extra = (fig["peak_kb"] - fig["baseline_kb"]) * 1024
    return {
        "parameters": params,
        "checkpoint_bytes": size,
        "written_bytes": written,
        "baseline_rss_mb": round(fig["baseline_kb"] / 1024, 1),
        "peak_rss_mb": round(fig["peak_kb"] / 1024, 1),
        "peak_minus_baseline_mb": round(extra / MB, 1),
        "ratio_to_checkpoint": round(extra / size, 3),
        "end_rss_anon_mb": round(fig["end_rss_anon_kb"] / 1024, 1),
        "end_rss_file_mb": round(fig["end_rss_file_kb"] / 1024, 1),
        "seconds": fig["seconds"],
    }


def print_table(runs: dict) -> None:
    from zoo.app.report import markdown_table

    header = ["run", "checkpoint MiB", "peak - baseline MiB", "x checkpoint", "end anon MiB", "end file MiB", "s"]
    rows = [
        [label, f"{r['checkpoint_bytes'] / MB:.0f}", f"{r['peak_minus_baseline_mb']:.0f}", f"{r['ratio_to_checkpoint']:.2f}", f"{r['end_rss_anon_mb']:.0f}", f"{r['end_rss_file_mb']:.0f}", f"{r['seconds']:.1f}"]
        for label, r in runs.items()
    ]
    print(markdown_table(header, rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024, help="hidden_size (default 1024)")
    ap.add_argument("--layers", type=int, default=8, help="num_hidden_layers (default 8)")
    ap.add_argument("--intermediate", type=int, default=2816, help="intermediate_size (default 2816)")
    ap.add_argument("--vocab", type=int, default=16000, help="vocab_size (default 16000)")
    ap.add_argument("--heads", type=int, default=16, help="attention heads (default 16)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="zoo import --dtype (default float32)")
    ap.add_argument("--label", default="current", help="name of this run in the JSON (default: current)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--make", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=3, metavar=("FOLDER", "OUT", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make:
        print(checkpoint(args.make, args))
        return 0
    if args.child:
        return child(*args.child)
    from zoo.app.report import machine_info

    row = measure(args)
    settings = {k: getattr(args, k) for k in (*SHAPE, "dtype")}
    row["settings"] = settings
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs = {k: v for k, v in data.get("runs", {}).items() if k != args.label} | {args.label: row}
    print_table(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(), "runs": runs}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
