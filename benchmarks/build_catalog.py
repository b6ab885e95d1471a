"""Build every catalog spec (or those named), print a table of parity and build
time, and write it as JSON.

    python benchmarks/build_catalog.py                 # every catalog spec
    python benchmarks/build_catalog.py gpt2-small t5-small --out results/catalog.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from runtime.manifest import Manifest  # noqa: E402
from zoo.app.build import build_artifact, package_versions  # noqa: E402
from zoo.spec.catalog import names  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", help="catalog names (default: all)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/catalog.json"))
    args = ap.parse_args(argv)
    rows = []
    header = f"{'spec':<18} {'family':<16} {'params':>12} {'max abs':>10} {'max rel':>10} {'build s':>8} {'export s':>9} {'parity s':>9} {'total s':>8}"
    print(header)
    print("-" * len(header))
    for name in args.specs or names():
        spec = zoo.load(name)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            _, manifest, _ = build_artifact(spec, Path(tmp) / name)
            total = time.perf_counter() - t0
        manifest = Manifest.from_json(manifest)
        p, s = manifest.parity, manifest.build_seconds
        row = {
            "spec": name,
            "family": spec.family,
            "parameters": spec.parameter_count(),
            "max_abs": p["max_abs"],
            "max_rel": p["max_rel"],
            "rule": p["tolerance"]["rule"],
            "worst_of_bound": p["worst"],
            "passed": p["passed"],
            **{f"{k}_s": v for k, v in s.items()},
            "total_s": round(total, 2),
        }
        rows.append(row)
        print(
            f"{name:<18} {spec.family:<16} {row['parameters']:>12,} {row['max_abs']:>10.2e} {row['max_rel']:>10.2e} "
            f"{s['build']:>8.1f} {s['export']:>9.1f} {s['parity']:>9.1f} {total:>8.1f}",
            flush=True,
        )
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "packages": package_versions(), "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
