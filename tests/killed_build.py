"""Run one ``build_artifact`` and SIGKILL this process at a chosen stage of it
(driver for tests/test_artifact.py; no hook in the production code: the functions
the build calls are wrapped here, in this process only).

    PYTHONPATH=REPO python tests/killed_build.py SPEC TARGET STAGE [--source FOLDER] [--seed N] [--force] [--no-parity]

Stages, in the order a build reaches them:
  export           the first graph file half written (needs --source)
  second-graph     the first graph exported and checked, the second being exported
  parity           parity running: ONNX Runtime sessions open, torch reference computed
  manifest         spec.yaml written, manifest not yet computed
  manifest-tmp     manifest.json.tmp written, not yet renamed to manifest.json
  swap             partial folder complete, nothing renamed at the target yet
  between-renames  the old artifact renamed away to .NAME.old-*, the new one not yet in place
  delete-old       the new artifact in place, the old one not yet deleted

``--source FOLDER``: an artifact of the same spec whose graph files stand in for the
export (copied; the slow export is not what the stages after it are about).
Exit code 3: the build finished without reaching the stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path

STAGES = ("export", "second-graph", "parity", "manifest", "manifest-tmp", "swap", "between-renames", "delete-old")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("target", type=Path)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--source", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-parity", action="store_true")
    args = p.parse_args()
    if args.source is None and args.stage == "export":
        p.error("stage export needs --source")

    import zoo.app.build as art
    import zoo

    if args.source is not None:
        art.export_all = _copied_export(args.source, args.stage)
    _plant_kill(args.stage, args.target)
    art.build_artifact(zoo.load(args.spec), args.target, seed=args.seed, force=args.force, check_parity=not args.no_parity)
    print(f"the build finished without reaching stage {args.stage}", file=sys.stderr)
    return 3


def _copied_export(source: Path, stage: str):
    """An export_all that copies the graph files of the artifact ``source`` (half of the
    first one, then the kill, at stage "export")."""
    graphs = json.loads((source / "manifest.json").read_text(encoding="utf-8"))["graphs"]

    def copied_export(model, spec, folder, on_graph=None):
        for g in graphs.values():
            for name in g["files"]:
                if stage == "export":
                    data = (source / name).read_bytes()
                    with open(folder / name, "wb") as f:
                        f.write(data[: len(data) // 2])
                    die()
                shutil.copyfile(source / name, folder / name)
        return graphs

    return copied_export


def _plant_kill(stage: str, target: Path) -> None:
    """Replace the function the build calls at ``stage`` by one that kills this process there."""
    import zoo.app.build as art
    import zoo.app.export as export
    import zoo.app.parity as compare

    partial_prefix, old_prefix = f".{target.name}.partial-", f".{target.name}.old-"
    if stage == "second-graph":
        real_export_graph, calls = export.export_graph, []

        def export_graph(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                die()
            return real_export_graph(*a, **k)

        export.export_graph = export_graph
    elif stage == "parity":
        compare.run_graphs = lambda *a, **k: die()
    elif stage == "manifest":
        art._manifest = lambda *a, **k: die()
    elif stage in ("manifest-tmp", "swap", "between-renames"):
        real_replace = os.replace

        def replace(src, dst, **kw):
            s, d = Path(src), Path(dst)
            if stage == "manifest-tmp" and s.name == "manifest.json.tmp":
                die()
            if stage == "swap" and (s == target or s.name.startswith(partial_prefix)):
                die()
            real_replace(src, dst, **kw)
            if stage == "between-renames" and s == target and d.name.startswith(old_prefix):
                die()

        os.replace = replace
    elif stage == "delete-old":
        real_rmtree = shutil.rmtree

        def rmtree(path, *a, **k):
            if Path(path).name.startswith(old_prefix):
                die()
            return real_rmtree(path, *a, **k)

        shutil.rmtree = rmtree


if __name__ == "__main__":
    sys.exit(main())
