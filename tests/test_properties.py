"""Property tests over the spec language (hypothesis).

- Every valid spec drawn builds, exports, passes ONNX Runtime parity at the fp32
  tolerance, and (decoders) its cached step-by-step logits equal a full forward.
- Every invalid spec drawn is refused by ``zoo validate`` with exit code 2 and one
  line per error naming the file, the line and the field; never a traceback.
- Any text at all given as a spec file is either a spec or a SpecError, in
  bounded time.

The number of examples comes from the hypothesis profile: ``ci`` (the default,
derandomized so CI is reproducible), ``long`` (``make test-fuzz``: hundreds of
builds, thousands of invalid specs, random each run) or ``trained`` (``make
test-fuzz-trained``: as long, every valid build with trained-like weights). The valid
builds draw random-init or trained-like weights (compiler.trained_like). See
tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import gc
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.conftest import PROFILE, examples, record_case, record_refusal
from tests.strategies import Broken, invalid_specs, valid_specs
from zoo.spec.contract import parity_rule
from zoo.spec.errors import SpecError
from zoo.spec.loader import load_spec

# A failing build is shrunk only under the long profile: each shrink step is a whole
# build (seconds), and CI prints the failing spec without minimizing it.
BUILD_PHASES = tuple(Phase) if PROFILE == "long" else (Phase.explicit, Phase.reuse, Phase.generate)
# The weights of the valid builds: random init and trained-like (compiler.trained_like),
# drawn per case; the `trained` profile draws trained-like weights only.
WEIGHTS = ("trained-like",) if PROFILE == "trained" else ("random", "trained-like")
REFUSAL_SECONDS = 2.0  # the slowest bad spec must still be refused within this


def timed_twice(call):
    """``call()`` -> (its result, seconds). A call over REFUSAL_SECONDS is timed again after
    a collection: a spec that is slow to refuse is slow every time, while a pause of a shared
    machine's scheduler or of the GC (CI once paused one trivial text 5.5 s) is not."""
    for attempt in range(3):
        if attempt:
            gc.collect()
        t0 = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - t0
        if seconds < REFUSAL_SECONDS:
            break
    return result, seconds


def _load_error(path: Path) -> SpecError | None:
    try:
        load_spec(path)
    except SpecError as err:
        return err
    return None


def write_spec(folder: Path, data: dict | str, name: str = "spec.yaml") -> Path:
    path = folder / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def zoo_cli(*argv: str) -> tuple[int, str, str]:
    """``zoo ARGV`` in this process -> (exit code, stdout, stderr)."""
    from zoo.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- valid specs


def cached_equals_full(folder: Path, spec) -> float:
    """Greedy generation with the KV cache (ONNX Runtime) against one uncached
    forward over the same tokens (both ONNX Runtime): the largest error as a share of
    the fp32 parity rule's bound (at most 1 when within)."""
    from zoo.app.tolerance import judge
    from runtime.generate import GenerationConfig, Generator
    from tests.test_generate import full_forward_logits

    gen = Generator(folder)
    rng = np.random.default_rng(len(spec.name))
    prompt_len = max(1, spec.max_seq_len // 3)
    prompt = [int(t) for t in rng.integers(0, spec.vocab_size, prompt_len)]
    decoder_start = None
    room = spec.max_seq_len - prompt_len
    kw = {}
    if spec.family == "encoder-decoder":
        decoder_start = int(rng.integers(0, spec.vocab_size))
        room, kw = spec.max_seq_len - 1, {"decoder_prompts": [[decoder_start]]}
    result = gen.generate([prompt], GenerationConfig(max_new_tokens=max(1, room), eos=()), keep_logits=True, **kw)
    tokens = result.tokens[0]
    assert len(tokens) >= 1
    full = full_forward_logits(gen.session, prompt, tokens, decoder_start=decoder_start)
    stepped = result.logits[0]
    assert stepped.shape == full.shape, (stepped.shape, full.shape)
    return judge(stepped, full, parity_rule("float32"))["worst"]


@settings(
    max_examples=examples(ci=6, long=300),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=BUILD_PHASES,
)
@given(data=valid_specs(), weights=st.sampled_from(WEIGHTS))
def test_every_valid_spec_builds_exports_and_matches_torch(data, weights):
    from compiler import build
    from zoo.app.build import build_artifact
    from compiler.trained_like import zoo_trained_like
    from tests.test_export import check_artifact

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(write_spec(Path(tmp), data))
        state = None
        if weights == "trained-like":
            model = build(spec, seed=0)
            zoo_trained_like(model, spec)
            state = model.state_dict()
        folder, manifest, built = build_artifact(spec, Path(tmp) / "artifact", weights=state)
        assert built
        check_artifact(folder, manifest, spec)  # parity <= fp32 tolerance, cached parity, graph IO
        assert manifest["parameters"]["total"] == spec.parameter_count()
        if spec.family != "encoder-only":
            assert cached_equals_full(folder, spec) <= 1.0  # of the fp32 rule's bound
    record_case(f"valid spec built and checked ({spec.family}, {weights} weights)", time.perf_counter() - t0)


# --------------------------------------------------------------------------- invalid specs


def _refused(text_or_data, label: str) -> tuple[int, str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_spec(Path(tmp), text_or_data)
        (code, out, err), seconds = timed_twice(lambda: zoo_cli("validate", str(path)))
    record_refusal(label, seconds)
    assert "Traceback" not in err and "internal error" not in err, err
    assert seconds < REFUSAL_SECONDS, f"refused after {seconds:.2f} s"
    return code, err, seconds


@settings(max_examples=examples(ci=500, long=5000), suppress_health_check=[HealthCheck.too_slow])
@given(broken=invalid_specs())
def test_every_invalid_spec_is_refused_with_exit_2_naming_the_field(broken: Broken):
    code, err, _ = _refused(broken.spec, "invalid spec (hypothesis)")
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert lines and all(line.startswith("error: ") for line in lines), err
    first = lines[0]
    assert "spec.yaml:" in first, first  # the file (and the line, where one applies)
    named = [line for line in lines if f" {broken.field}: " in line or f" {broken.field}." in line]
    assert named, f"no error names {broken.field!r}: {err}"


# --------------------------------------------------------------------------- any text at all

yaml_fragments = st.sampled_from(
    [
        "name: x\n", "family: decoder-only\n", "vocab_size: 10\n", "d_model: 8\n", "max_seq_len: 4\n",
        "decoder:\n  layers: 1\n  attention: {heads: 2}\n  ffn: {hidden: 8}\n", "extends: gpt2-tiny\n",
        "extends: nowhere.yaml\n", "extends: spec.yaml\n", "positional: rope\n", "&a [1, 2]\n", "*a\n", "- *a\n",
        "!!python/object/apply:os.system ['true']\n", "x: !!binary aGVsbG8=\n", "'\n", "{{{\n", "]]\n",
        ": :\n", "? [a]\n: b\n", "<<: {a: 1}\n", "---\n", "...\n", "\t", "\x00", "1e999999\n", "9" * 5000 + "\n",
        "decoder: &d {layers: *d}\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "x: !custom 1\n", "\ufeff", "é: ü\n",
    ]
)
any_text = st.one_of(
    st.lists(st.one_of(yaml_fragments, st.text(max_size=40)), max_size=12).map("".join),
    st.text(max_size=300),
)


@settings(max_examples=examples(ci=1000, long=20000), suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text)
@example(text="extends: spec.yaml\nname: loop\n")  # extends itself
@example(text="a: &a [*a]\n")
def test_any_text_is_a_spec_or_a_one_line_refusal(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_spec(Path(tmp), text)
        error, seconds = timed_twice(lambda: _load_error(path))
    if error is not None:
        assert str(error).strip() and "\n" not in str(error), repr(str(error))
    record_refusal("any text (hypothesis)", seconds)
    assert seconds < REFUSAL_SECONDS


@pytest.mark.parametrize(
    "data, field",
    [
        ({"vocab_size": True}, "vocab_size"),  # YAML true is not the count 1
        ({"vocab_size": "512"}, "vocab_size"),  # nor is a quoted number
        ({"d_model": 64.0}, "d_model"),
        ({"decoder": {"layers": False}}, "decoder.layers"),
    ],
)
def test_counts_are_strict_integers(tmp_path, data, field):
    text = "name: strict\nextends: gpt2-tiny\n" + yaml.safe_dump(data)
    code, _, err = zoo_cli("validate", str(write_spec(tmp_path, text)))
    assert code == 2 and f"{field}: expected an integer" in err, err
