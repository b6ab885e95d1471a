"""The runtime runs artifacts with onnxruntime and numpy only, and the CLI drives it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, without_module


@pytest.fixture(scope="module")
def artifacts(tiny_artifacts):
    """The session's tiny catalog artifacts (conftest), read only here."""
    return tiny_artifacts


def zoo_cli(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


NO_TORCH = without_module("torch") + """
import sys
import numpy as np
import runtime
s = runtime.load(sys.argv[1])
ids = np.array([[1, 2, 3, 4]], dtype=np.int64)
out = s.forward({"model": {"input_ids": ids, "attention_mask": np.ones_like(ids)}})
print(out["logits"].shape, s.provider)
"""


def test_runtime_needs_no_torch(artifacts):
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(artifacts["gpt2-tiny"])],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "(1, 4, 512) CPUExecutionProvider" in proc.stdout


@pytest.mark.parametrize("name", ["gpt2-tiny", "bert-tiny", "t5-tiny"])
def test_zoo_run_prints_shapes_timing_and_top_tokens(artifacts, name):
    proc = zoo_cli("run", artifacts[name], "--ids", "1,2,3", "--ids", "4,5", "--repeat", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "provider  CPUExecutionProvider" in out
    assert "logits (2, " in out
    assert "median of 2 runs" in out
    assert len(re.findall(r"^  \[\d\] ", out, flags=re.M)) == 2  # top tokens of both sequences


def test_zoo_run_random_input(artifacts):
    proc = zoo_cli("run", artifacts["gpt2-tiny"], "--batch", "3", "--seq", "9", "--repeat", "0")
    assert proc.returncode == 0, proc.stderr
    assert "input_ids (3, 9)" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ids", "1,2,99999"], "outside the vocabulary"),
        (["--ids", "1,x"], "not a comma-separated list"),
        (["--ids", ",".join(["1"] * 200)], "exceed max_seq_len=128"),
    ],
)
def test_zoo_run_bad_input_is_one_line(artifacts, args, message):
    proc = zoo_cli("run", artifacts["gpt2-tiny"], *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_zoo_run_missing_artifact(tmp_path):
    proc = zoo_cli("run", tmp_path / "nothing")
    assert proc.returncode == 2 and "no such artifact folder" in proc.stderr


def test_zoo_build_cli_end_to_end(tmp_path):
    out = tmp_path / "a"
    proc = zoo_cli("build", "llama-tiny", "-o", out, "--set", "decoder.layers=1")
    assert proc.returncode == 0, proc.stderr
    assert "passed: every check within the rule" in proc.stdout
    again = zoo_cli("build", "llama-tiny", "-o", out, "--set", "decoder.layers=1")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_session_forward_matches_manifest_contract(artifacts):
    import runtime

    s = runtime.load(artifacts["t5-tiny"])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, (2, 6))
    dec = rng.integers(0, 512, (2, 3))
    out = s.forward(
        {
            "encoder": {"input_ids": ids, "attention_mask": np.ones_like(ids)},
            "decoder": {"decoder_input_ids": dec, "decoder_attention_mask": np.ones_like(dec), "encoder_attention_mask": np.ones_like(ids)},
        }
    )
    assert out["encoder_hidden_states"].shape == (2, 6, 64)
    assert out["logits"].shape == (2, 3, 512)
