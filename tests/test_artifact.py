"""Artifacts are written atomically and verified on load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import zoo
from compiler.artifact import build_artifact
from runtime import load
from runtime.artifact import load_artifact
from tests.conftest import ROOT
from zoo.errors import ArtifactError, ParityError
from zoo.contract import FORMAT_VERSION


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("art") / "gpt2-tiny"
    build_artifact(zoo.load("gpt2-tiny"), folder)
    return folder


def test_identical_rebuild_is_up_to_date(built):
    folder, manifest, was_built = build_artifact(zoo.load("gpt2-tiny"), built)
    assert not was_built and folder == built


def test_flipped_byte_is_refused_naming_the_file(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    raw = bytearray((copy / "model.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="model.onnx: sha256 differs"):
        load(copy)


def test_other_format_version_is_refused(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"version 99, this runtime reads version {FORMAT_VERSION}"):
        load_artifact(copy)


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    import compiler.artifact as art

    monkeypatch.setattr(art, "parity", lambda *a, **k: {"passed": False, "max_abs": 1.0, "tolerance": {"max_abs": 1e-4}})
    with pytest.raises(ParityError, match="no artifact written"):
        build_artifact(zoo.load("gpt2-tiny"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_failed_rebuild_keeps_the_old_artifact(built, tmp_path, monkeypatch):
    import shutil

    import compiler.artifact as art

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    monkeypatch.setattr(art, "parity", lambda *a, **k: {"passed": False, "max_abs": 1.0, "tolerance": {"max_abs": 1e-4}})
    with pytest.raises(ParityError):
        build_artifact(zoo.load("gpt2-tiny"), copy, force=True)
    load_artifact(copy)  # still complete and intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_refuses_to_overwrite_a_folder_that_is_not_an_artifact(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("user data")
    with pytest.raises(ArtifactError, match="holds no zoo artifact"):
        build_artifact(zoo.load("gpt2-tiny"), precious)
    assert (precious / "notes.txt").read_text() == "user data"


def test_killed_build_leaves_no_complete_folder_and_rebuild_works(tmp_path):
    out = tmp_path / "art"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", "build", "t5-tiny", "-o", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".art.partial") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)  # mid-export
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(ArtifactError):
        load_artifact(out)
    folder, manifest, built = build_artifact(zoo.load("t5-tiny"), out)
    assert built and manifest["parity"]["passed"]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # the killed build's partial folder was swept
