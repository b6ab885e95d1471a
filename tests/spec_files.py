"""What the spec-loading tests share (tests/test_loader.py, tests/test_loader_hostile.py):
a base spec, files written in a temporary working directory, and the one-line
SpecError check."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from zoo.spec.errors import SpecError
from zoo.spec.loader import load_spec

BASE = """\
name: base
description: a test spec
family: decoder-only
vocab_size: 100
max_seq_len: 64
d_model: 64
positional: {kind: rope, theta: 500.0}
decoder:
  layers: 2
  attention:
    heads: 4
    kv_heads: 2
  ffn: {hidden: 128, activation: silu, gated: true}
  norm: {kind: rmsnorm, placement: post, eps: 1.0e-6}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # error paths are shown relative to the current directory


def write(path: Path | str, text: str) -> Path:
    path = Path(path)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(source, overrides=()) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(source, overrides)
    err = info.value
    assert "\n" not in str(err)
    return err
