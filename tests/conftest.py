"""Shared fixtures: small specs built in code, and a cache of built artifacts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from zoo.spec.catalog import names

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ZOO_QUIET", "1")

FAMILIES = ("decoder-only", "encoder-only", "encoder-decoder")


def tiny_spec(family: str, *, score: str = "scaled-dot", positional: str = "learned", **stack_overrides):
    """A 2-layer, d_model 32 spec of ``family`` with GQA (4 heads, 2 kv heads)."""
    from zoo.spec.model import ModelSpec

    stack = {
        "layers": 2,
        "attention": {"heads": 4, "kv_heads": 2, "score": score},
        "ffn": {"hidden": 64, "activation": "gelu"},
        **stack_overrides,
    }
    parts = {}
    if family != "decoder-only":
        parts["encoder"] = stack
    if family != "encoder-only":
        parts["decoder"] = stack
    return ModelSpec(
        name=f"tiny-{family}-{score}-{positional}",
        family=family,
        vocab_size=61,
        max_seq_len=32,
        d_model=32,
        positional={"kind": positional},
        **parts,
    )


@pytest.fixture
def make_tiny():
    return tiny_spec


def without_module(*modules: str) -> str:
    """Python source that makes ``import MODULE`` fail for each module given, to
    prepend to a subprocess's script: proves a code path does not need them."""
    return f"""
import builtins
_real_import = builtins.__import__
_blocked = {tuple(modules)!r}
def _guarded(name, *a, **k):
    for module in _blocked:
        if name == module or name.startswith(module + '.'):
            raise ImportError(module + " is not available here")
    return _real_import(name, *a, **k)
builtins.__import__ = _guarded
"""


# every *-tiny spec of the catalog (a new one is built and checked by every test that takes these)
TINY_CATALOG = tuple(n for n in names() if n.endswith("-tiny"))


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """Every *-tiny catalog spec built once per test session (seed 0): name -> folder."""
    import zoo
    from zoo.app.build import build_artifact

    root = tmp_path_factory.mktemp("tiny-artifacts")
    return {name: build_artifact(zoo.load(name), root / name)[0] for name in TINY_CATALOG}


# --------------------------------------------------------------------------- hypothesis

# Profiles: `ci` (default) is derandomized, so CI runs the same examples each time and a
# failure reproduces; `long` (make test-fuzz, or ZOO_HYPOTHESIS_PROFILE=long) draws new
# random examples each run, hundreds of builds and thousands of bad inputs; `trained`
# (make test-fuzz-trained) is `long` with every valid build on trained-like weights.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
_hypothesis_settings.register_profile("long", deadline=None, print_blob=True)
_hypothesis_settings.register_profile("trained", deadline=None, print_blob=True)  # long, trained-like weights only
PROFILE = os.environ.get("ZOO_HYPOTHESIS_PROFILE", "ci")
_hypothesis_settings.load_profile(PROFILE)


def examples(*, ci: int, long: int) -> int:
    """How many examples a property test draws under the active profile."""
    return long if PROFILE in ("long", "trained") else ci


REFUSALS: dict[str, list[float]] = {}


def record_case(label: str, seconds: float) -> None:
    """Count a generated case and its time (summed up at the end of the run)."""
    REFUSALS.setdefault(label, []).append(seconds)


record_refusal = record_case  # a bad input and how long it took to be refused


def pytest_terminal_summary(terminalreporter):
    # tests import this file as tests.conftest, pytest may hold it as another module: merge both
    refusals = dict(REFUSALS)
    other = sys.modules.get("tests.conftest")
    if other is not None and other.REFUSALS is not REFUSALS:
        for label, times in other.REFUSALS.items():
            refusals.setdefault(label, []).extend(times)
    if not refusals:
        return
    terminalreporter.section(f"generated and hostile cases (hypothesis profile {PROFILE})")
    for label, times in sorted(refusals.items()):
        terminalreporter.write_line(
            f"{label}: {len(times)} cases, longest {max(times) * 1000:,.1f} ms, median {sorted(times)[len(times) // 2] * 1000:,.1f} ms"
        )
