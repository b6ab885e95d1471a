"""The parity gate catches real bugs (issue 13, point 2).

Each bug class of tests/planted_bugs.py is planted in the exported ONNX graph only
(the torch reference stays correct) and the build must fail with a ParityError that
names the rule and lists every failing check, leaving no artifact folder. The figure
that matters is the worst element's error over its bound: the bug must miss by at
least MARGIN, so that the test says something about the rule and is not flaky. A
"no bug" control must pass the same build.

Sizes: the tiny catalog specs (2 layers) with trained-like and with random-init
weights, and a realistic depth (24 layers at d_model 64) with trained-like weights.
The default suite runs every bug class at tiny size with trained-like weights and one
24-layer case; the rest is ``slow`` (make test-slow). ``pytest -s`` prints the table
(bug x size x weights: worst / bound, the check where it is, seconds).
"""

from __future__ import annotations

import time

import pytest

from tests.planted_bugs import BUGS, fmt_ratio, run_build, spec_of, trained_state, worst_check

MARGIN = 10.0  # a planted bug must exceed the bound at least this many times
TINY, REALISTIC = 0, 24  # layers: 0 = the catalog's tiny spec (2 layers)
TRAINED, RANDOM = "trained-like", "random-init"

# Cases measured below MARGIN (still failing the build): each one is reported with its
# figures (issue 13) instead of lowering MARGIN. The test xfails on them while they stay
# short and fails once they reach MARGIN, so that the entry is removed.
KNOWN_SHORT: dict[tuple[str, int, str], str] = {
    # none today. Under an earlier trained-like generator (before f504312) a missing v bias
    # in the last layer of gpt2-tiny missed by 3.4-4x only (a tied output's logits lived
    # in the vocabulary rows that carry the massive channels); it now misses by ~130x.
}

# Bugs that are no bug in some setting, so there is nothing to catch there.
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("missing bias", RANDOM): "random init sets every bias to 0: dropping one changes nothing",
}

BUG_NAMES = [name for name in BUGS if name != "none (control)"]
DEFAULT_REALISTIC = ("missing bias",)  # in the default suite at 24 layers: the weakest class, the cheapest export

RESULTS: list[dict] = []


def _size(layers: int) -> str:
    return "tiny (2 layers)" if layers == TINY else f"{layers} layers"


def _case(bug: str, layers: int, weights: str, *, slow: bool):
    marks = [pytest.mark.slow] if slow else []
    return pytest.param(bug, layers, weights, marks=marks, id=f"{bug.replace(' ', '_')}-{layers or 2}L-{weights}")


def _cases() -> list:
    cases = [_case(b, TINY, TRAINED, slow=False) for b in BUG_NAMES]
    cases += [_case(b, TINY, RANDOM, slow=True) for b in BUG_NAMES if (b, RANDOM) not in NOT_APPLICABLE]
    cases += [_case(b, REALISTIC, TRAINED, slow=b not in DEFAULT_REALISTIC) for b in BUG_NAMES]
    return cases


@pytest.fixture(scope="module")
def weights_for():
    """Trained-like state dicts, one per spec (a calibration is a few forward passes)."""
    cache: dict = {}

    def get(spec, weights: str):
        if weights == RANDOM:
            return None
        if spec.name not in cache or cache[spec.name][0] != spec:
            cache[spec.name] = (spec, trained_state(spec))
        return cache[spec.name][1]

    return get


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    if not RESULTS:
        return
    rules = "; ".join(sorted({r["rule"] for r in RESULTS}))
    print(f"\n\nplanted bugs: worst element's error / its bound (>1 fails the build; MARGIN {MARGIN:g}); rule {rules}")
    print(f"{'bug':20s} {'spec':11s} {'size':16s} {'weights':13s} {'worst/bound':>11s}  {'seconds':>7s}  where")
    for r in RESULTS:
        print(
            f"{r['bug']:20s} {r['spec']:11s} {r['size']:16s} {r['weights']:13s} {fmt_ratio(r['worst']):>11s}  "
            f"{r['seconds']:7.1f}  {r['where']}{'  (build PASSED)' if r['passed'] else ''}"
        )


def _build(bug_name: str, layers: int, weights: str, tmp_path, weights_for):
    bug = BUGS[bug_name]
    spec = spec_of(bug.spec, layers)
    state = weights_for(spec, weights)
    t0 = time.perf_counter()
    err, report = run_build(bug, spec, state, tmp_path / "a")
    worst, where = worst_check(report)
    RESULTS.append(
        {"bug": bug_name, "spec": bug.spec, "size": _size(layers), "weights": weights, "worst": worst, "where": where,
         "seconds": time.perf_counter() - t0, "passed": err is None, "rule": report["tolerance"]["rule"]}
    )
    return err, report, worst, where


@pytest.mark.parametrize("bug_name, layers, weights", _cases())
def test_planted_bug_fails_the_build(bug_name, layers, weights, tmp_path, weights_for):
    err, report, worst, where = _build(bug_name, layers, weights, tmp_path, weights_for)
    what = f"{bug_name} ({BUGS[bug_name].what}) at {_size(layers)}, {weights}"
    assert err is not None, f"{what} passed the parity gate: worst {worst:.3g}x the bound ({where})"
    assert report["tolerance"]["rule"] in str(err), str(err)
    assert len(err.others) == len(report["failures"]) >= 1
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == [], "a failed build left a folder"
    key = (bug_name, layers, weights)
    if key in KNOWN_SHORT:
        if worst >= MARGIN:
            pytest.fail(f"{what} now misses by {worst:.3g}x >= {MARGIN:g}: remove it from KNOWN_SHORT")
        pytest.xfail(f"{what}: {worst:.3g}x the bound < {MARGIN:g} ({where}); {KNOWN_SHORT[key]}")
    assert worst >= MARGIN, f"{what} fails the build by only {worst:.3g}x the bound ({where}), less than {MARGIN:g}"


@pytest.mark.parametrize(
    "layers, weights",
    [
        pytest.param(TINY, TRAINED, id="2L-trained-like"),
        pytest.param(TINY, RANDOM, marks=pytest.mark.slow, id="2L-random-init"),
        pytest.param(REALISTIC, TRAINED, marks=pytest.mark.slow, id="24L-trained-like"),
    ],
)
def test_no_bug_control_passes(layers, weights, tmp_path, weights_for):
    """The same planted-export path with nothing planted builds: the failures above
    come from the bugs, not from the way they are planted."""
    err, report, worst, where = _build("none (control)", layers, weights, tmp_path, weights_for)
    assert err is None, f"the control failed the build: {err}\n" + "\n".join(str(o) for o in err.others)
    assert report["passed"] and worst <= 1.0
    assert (tmp_path / "a" / "manifest.json").is_file()
