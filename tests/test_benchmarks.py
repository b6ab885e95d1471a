"""The benchmark scripts run end to end (slow target: they build models and time them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_generate_benchmark_runs_and_writes_every_figure(tmp_path):
    out = tmp_path / "generate.json"
    cmd = [sys.executable, "benchmarks/generate.py", "--models", "gpt2-tiny", "--reps", "2", "--new-tokens", "8", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| gpt2-tiny | zoo |" in r.stdout and "x transformers" in r.stdout
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "threads", "onnxruntime", "torch", "transformers"} <= set(data["machine"])
    res = data["results"]["gpt2-tiny"]
    methods = res["methods"]
    assert set(methods) >= {"zoo", "zoo-iobinding", "transformers", "zoo-torch-nocache"}
    for m, e in methods.items():
        assert e["decode_tokens_per_s"] > 0 and e["ttft_ms"] > 0 and e["peak_rss_mb"] > 50, (m, e)
        if m == "gemv-bound":  # GEMVs over the fp32 weight bytes: a speed, no tokens
            assert e["greedy_tokens_agree_with_transformers"] is None
        else:
            assert e["greedy_tokens_agree_with_transformers"] is True, m  # same weights, same greedy tokens
    assert methods["transformers"]["decode_ratio_to_transformers"] == pytest.approx(1.0)
    assert methods["zoo"]["batch8_tokens_per_s"] > 0
    assert set(res["decode_step_ms_by_context"]) == {"64", "256", "1024"}
    assert methods["zoo"]["share_of_bound"] > 0 and res["gemv_bandwidth"]["gb_per_s"] > 0
    assert methods["zoo"]["batch8_over_batch1"] > 1
    assert abs(res["weight_bytes"] / res["parameter_bytes"] - 1) <= 0.05


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_benchmark_script_imports(script):
    """Every benchmark script still imports what it uses (default suite: no run, just --help)."""
    r = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--help"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
