"""Where ``zoo build`` spends its time, per phase, and the layer-replicating export
(compiler.replicate) against the full one, in the same process, round-robin.

Phases, timed by wrapping the functions that do them (wall seconds, summed over
every graph of the build):

* ``build``: the torch module (seeded init, weights);
* ``capture``: torch.export's trace (``torch.export.export``);
* ``decompose``: the exported program's decomposition (``run_decompositions``);
* ``translate``: FX graph -> ONNX IR (torch.onnx's translation);
* ``onnx_optimizer``: the onnxscript optimizer torch.onnx runs (``optimize=True``);
* ``replicate``: compiler.replicate's copy of the template layer (fast mode only);
* ``post``: our post-processing of the proto (contract check, axes, tied weights);
* ``save``: passes.files.write_model (``onnx.save_model`` in mode ``before``); ``checker``: onnx.checker's full check of the file;
* ``parity``: the build's parity check against torch; ``other``: the rest.

    python benchmarks/export_time.py                          # llama-135m and gpt2-small
    python benchmarks/export_time.py --spec llama-tiny --reps 1

Writes JSON (machine, packages, per spec and mode the phase seconds of every
repetition and their medians) to ``benchmarks/results/export_time.json`` unless
``--out``. The machine state (other processes) is recorded as the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

MODES = ("before", "full", "replicate")  # before: the code before issue 17; full: whole export, new save
PHASES = ("build", "capture", "decompose", "translate", "onnx_optimizer", "replicate", "post", "save", "checker", "parity", "other")


class PhaseClock:
    """Seconds per phase: ``wrap(owner, attr, phase)`` times every call of
    ``owner.attr`` (outermost call only, so nested phases are not counted twice)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._active: list[str] = []
        self._undo: list = []

    def wrap(self, owner, attr: str, phase: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kw):
            if self._active:  # nested: charge the inner phase, take it off the outer
                outer = self._active[-1]
                t0 = time.perf_counter()
                self._active.append(phase)
                try:
                    return original(*args, **kw)
                finally:
                    self._active.pop()
                    dt = time.perf_counter() - t0
                    self.seconds[phase] = self.seconds.get(phase, 0.0) + dt
                    self.seconds[outer] = self.seconds.get(outer, 0.0) - dt
            t0 = time.perf_counter()
            self._active.append(phase)
            try:
                return original(*args, **kw)
            finally:
                self._active.pop()
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


def instrument(clock: PhaseClock) -> None:
    import onnx
    from torch.export import exported_program
    from torch.onnx._internal.exporter import _core, _onnx_program

    import compiler.export as cexport
    import compiler.replicate as creplicate
    import passes.files as pfiles
    import zoo.app.build as zbuild

    clock.wrap(torch.export, "export", "capture")
    clock.wrap(exported_program.ExportedProgram, "run_decompositions", "decompose")
    clock.wrap(_core, "_exported_program_to_onnx_program", "translate")
    clock.wrap(_onnx_program.ONNXProgram, "optimize", "onnx_optimizer")
    clock.wrap(creplicate, "replicate_layers", "replicate")
    for name in ("_name_axes", "dedupe_transposed_initializers", "_check_contract"):
        if hasattr(cexport, name):
            clock.wrap(cexport, name, "post")
    clock.wrap(onnx, "save_model", "save")
    clock.wrap(pfiles, "write_model", "save")
    clock.wrap(pfiles, "_check", "checker")
    clock.wrap(zbuild, "parity", "parity")
    clock.wrap(zbuild, "build", "build")


def one_build(spec, mode: str, clock: PhaseClock) -> dict[str, float]:
    import onnx

    import passes.files as pfiles
    import zoo.app.export as zexport
    from zoo.app.build import build_artifact

    clock.seconds = {}
    zexport.REPLICATE = mode == "replicate"
    write = pfiles.write_model
    if mode == "before":  # the save of before passes.files.write_model
        pfiles.write_model = lambda proto, path: onnx.save_model(proto, path)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _, manifest, _ = build_artifact(spec, Path(tmp) / "a", force=True)
        total = time.perf_counter() - t0
    pfiles.write_model = write
    out = {p: round(clock.seconds.get(p, 0.0), 3) for p in PHASES if p != "other"}
    out["other"] = round(total - sum(out.values()), 3)
    out["total"] = round(total, 3)
    out["export"] = round(manifest["build_seconds"]["export"], 3)
    out["nodes"] = manifest["graphs"]["model"]["nodes"] if "model" in manifest["graphs"] else None
    return out


def table(results: dict) -> str:
    cols = [*PHASES, "export", "total"]
    lines = ["| spec | mode | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for name, modes in results.items():
        for mode, r in modes.items():
            lines.append(f"| {name} | {mode} | " + " | ".join(f"{r['median'][c]:.2f}" for c in cols) + " |")
        for base in ("before", "full"):
            if {base, "replicate"} <= modes.keys():
                m = {k: modes["replicate"]["median"][k] / modes[base]["median"][k] for k in ("export", "total")}
                lines.append(f"| {name} | replicate / {base} | export {m['export']:.2f}x, total {m['total']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", action="append", help="catalog name or YAML (repeatable); default llama-135m and gpt2-small")
    ap.add_argument("--mode", action="append", choices=MODES, help="default all three")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export_time.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from zoo.spec.loader import load_spec

    specs = [load_spec(s) for s in (args.spec or ["llama-135m", "gpt2-small"])]
    modes = args.mode or list(MODES)
    clock = PhaseClock()
    instrument(clock)
    runs: dict = {s.name: {m: [] for m in modes} for s in specs}
    for rep in range(args.reps):
        for spec in specs:
            order = modes[rep % len(modes):] + modes[: rep % len(modes)]  # round-robin: rotate who goes first
            for mode in order:
                r = one_build(spec, mode, clock)
                runs[spec.name][mode].append(r)
                print(f"rep {rep} {spec.name} {mode}: total {r['total']:.1f} s, export {r['export']:.1f} s", flush=True)
    clock.restore()
    results = {
        name: {m: {"runs": rs, "median": {k: statistics.median(r[k] for r in rs) for k in [*PHASES, "export", "total"]}} for m, rs in by.items()}
        for name, by in runs.items()
    }
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": args.threads,
        "reps": args.reps,
        "cpus": os.cpu_count(),
        "loadavg_end": os.getloadavg(),
        "packages": {"torch": torch.__version__},
        "results": results,
    }, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
