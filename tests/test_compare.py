"""zoo compare: the figures are there, in their units, and sane; --parity names the
first diverging layer."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import onnx
import pytest

from runtime.artifact import sha256_file
from tests.conftest import ROOT


def zoo_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and zlib.crc32(data[12 : 16 + length]) == struct.unpack(">I", data[16 + length : 20 + length])[0]
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_artifacts):
    """Catalog specs with overrides (built by zoo compare) beside the session's built artifacts
    (tests/conftest.py, tiny_artifacts: each folder is named after its spec, the label it gets)."""
    out = tmp_path_factory.mktemp("compare")
    models = [
        str(tiny_artifacts["gpt2-tiny"]),
        "gpt2-tiny[decoder.layers=4]",
        "gpt2-tiny[decoder.attention.kv_heads=1]",
        str(tiny_artifacts["llama-tiny"]),
        str(tiny_artifacts["t5-tiny"]),
        str(tiny_artifacts["bert-tiny"]),
    ]
    r = zoo_cli("compare", *models, "--quick", "-o", out)
    assert r.returncode == 0, r.stderr
    return out, r.stdout, json.loads((out / "compare.json").read_text())


def test_compare_writes_table_markdown_json_and_plots(compared):
    out, stdout, data = compared
    assert "decode ms/token" in stdout and "gpt2-tiny[decoder.layers=4]" in stdout
    md = (out / "compare.md").read_text()
    assert md.count("\n| gpt2-tiny") >= 3 and "![Decode latency vs context length](latency_vs_context.png)" in md
    for name in ("latency_vs_context.png", "throughput_vs_batch.png", "memory.png"):
        w, h = png_size(out / name)
        assert w >= 400 and h >= 300


def test_compare_json_is_reproducible_and_complete(compared):
    _, _, data = compared
    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and "onnxruntime" in machine["packages"]
    assert data["settings"]["threads"] >= 1 and data["settings"]["reps"] == 2
    labels = [m["label"] for m in data["models"]]
    assert labels[4] == "t5-tiny"  # an artifact folder is labelled by its name
    for m in data["models"]:
        assert len(m["spec_sha256"]) == 64 and m["provider"] == "CPUExecutionProvider"
        assert m["parameters"] > 0 and m["onnx_bytes"] > 0 and 20 < m["peak_rss_mb"] < 4000
        assert m["prefill_tokens_per_s"]["median"] > 0
        if m["family"] == "encoder-only":
            assert m["kv_cache_bytes_per_token"] == 0 and set(m["forward_tokens_per_s"]) == {"1", "8"}
            continue
        ttft, step = m["time_to_first_token_ms"], m["decode_ms_per_token"]
        assert 0 < step["median"] < 1000 and 0 < ttft["median"] < 5000 and step["n"] == 2 and step["spread"] >= 0
        rates = m["decode_tokens_per_s"]
        assert set(rates) == {"1", "8"}
        # tokens/s at batch 1 is the inverse of the per-token latency (separate runs: sub-ms timings are noisy)
        assert 1 / 3 < rates["1"]["median"] * step["median"] / 1000 < 3
        assert set(m["decode_ms_by_context"]) == {"64", "128"}


def test_compare_figures_are_sane(compared):
    _, _, data = compared
    by = {m["label"]: m for m in data["models"]}
    base, deeper, mqa = by["gpt2-tiny"], by["gpt2-tiny[decoder.layers=4]"], by["gpt2-tiny[decoder.attention.kv_heads=1]"]
    assert deeper["parameters"] > base["parameters"]  # more layers never fewer parameters
    assert deeper["parameters"] - base["parameters"] == 2 * base["parameters_per_layer"]["decoder"]
    assert deeper["kv_cache_bytes_per_token"] == 2 * base["kv_cache_bytes_per_token"]
    assert mqa["kv_cache_bytes_per_token"] * 4 == base["kv_cache_bytes_per_token"]  # MQA: 1 of 4 heads
    assert mqa["parameters"] < base["parameters"] and mqa["onnx_bytes"] < base["onnx_bytes"]
    gqa = by["llama-tiny"]  # 4 heads, 2 kv heads: half the cache of MHA at the same shape
    assert gqa["kv_cache_bytes_per_token"] == 2 * 2 * 2 * 16 * 4
    assert base["kv_cache_bytes_per_token"] == 2 * 2 * 4 * 16 * 4


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give at least one model"),
        (("gpt2-tiny", "gpt2-tiny"), "named twice"),
        (("no-such-model",), "no-such-model"),
        (("gpt2-tiny", "--reps", "0"), "--reps must be at least 1"),
        (("gpt2-tiny", "--contexts", "64,x"), "not a comma-separated list"),
        (("gpt2-tiny[decoder.layers=zero]",), "decoder.layers"),
    ],
)
def test_compare_bad_input_is_one_line(args, message):
    r = zoo_cli("compare", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


def test_parity_passes_and_reports_each_layer(tiny_artifacts):
    r = zoo_cli("compare", "--parity", tiny_artifacts["t5-tiny"], "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["passed"] and report["first_divergent_layer"] is None
    assert [e["layer"] for e in report["layers"]] == ["encoder.layers.0", "encoder.layers.1", "decoder.layers.0", "decoder.layers.1"]
    assert {run["padding"] for run in report["runs"]} == {"left", "right"}
    for run in report["runs"]:
        assert run["outputs"]["logits"]["top1"] == 1.0 and run["outputs"]["logits"]["within"]
    assert all(e["max_abs"] < 1e-5 for e in report["layers"])


def _sabotage(folder, layer: int) -> None:
    """Scale one weight matrix of decoder layer ``layer`` inside model.onnx, and
    re-record its hash and size so that the artifact still loads."""
    path = folder / "model.onnx"
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        scopes = " ".join(p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes")
        if f"decoder.layers.{layer}'" in scopes and node.op_type == "MatMul":
            for name in node.input:
                if name in inits and len(inits[name].dims) == 2:
                    arr = onnx.numpy_helper.to_array(inits[name]) * 1.5
                    inits[name].CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), name))
                    onnx.save(proto, str(path))
                    manifest = json.loads((folder / "manifest.json").read_text())
                    manifest["files"]["model.onnx"].update(sha256=sha256_file(path), bytes=path.stat().st_size)
                    (folder / "manifest.json").write_text(json.dumps(manifest))
                    return
    raise AssertionError("no weight of that layer found")


def test_parity_names_the_first_diverging_layer(tiny_artifacts, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_artifacts["llama-tiny"], folder)
    _sabotage(folder, 1)
    r = zoo_cli("compare", "--parity", folder)
    assert r.returncode == 1
    assert "FAILED" in r.stdout and "first layer beyond the rule: decoder.layers.1" in r.stdout
    r = zoo_cli("compare", "--parity", folder, "--json")
    report = json.loads(r.stdout)
    assert report["layers"][0]["within"] and not report["layers"][1]["within"] and report["layers"][1]["worst"] > 10


def test_parity_refuses_other_weights(tiny_artifacts, tmp_path):
    from compiler.builder import build
    from compiler.weights import save_weights
    import zoo

    other = tmp_path / "other.safetensors"
    save_weights(build(zoo.load("gpt2-tiny"), seed=5), other)
    r = zoo_cli("compare", "--parity", tiny_artifacts["gpt2-tiny"], "--weights", other)
    assert r.returncode == 2 and "weights differ" in r.stderr
