"""The decode loop's per-step bookkeeping (runtime.generate._Runner's kept feed dict, the
history kept only where read) changes nothing a caller sees: tokens and logits equal
those of the loop before it (benchmarks/step_compare.py loads that loop from git)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from runtime.generate import GenerationConfig, Generator
from zoo.spec.families import Role

REF = "fc0bbf9"  # the commit before the loop was trimmed


def _ref_module():
    try:
        subprocess.run(["git", "cat-file", "-e", f"{REF}:runtime/generate.py"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with {REF} is not here")
    from benchmarks.step_compare import load_ref_generate

    return load_ref_generate(REF)


CONFIGS = {
    "greedy": GenerationConfig(max_new_tokens=12, eos=()),
    "penalty": GenerationConfig(max_new_tokens=12, eos=(), repetition_penalty=1.5, no_repeat_ngram_size=2),
    "sampled": GenerationConfig(max_new_tokens=12, eos=(), sample=True, temperature=0.9, top_k=20, seed=3),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loop_matches_the_loop_before(tiny_artifacts, name):
    ref = _ref_module()
    folder = tiny_artifacts["gpt2-tiny"]
    prompts = [[1, 2, 3, 4, 5], [7, 8]]
    old = ref.Generator(folder, device="cpu", threads=1).generate(prompts, CONFIGS[name], keep_logits=True)
    new = Generator(folder, device="cpu", threads=1).generate(prompts, CONFIGS[name], keep_logits=True)
    assert new.tokens == old.tokens
    assert new.finish_reasons == old.finish_reasons
    np.testing.assert_array_equal(new.logits, old.logits)


def test_runner_carries_the_last_present_as_past(tiny_artifacts):
    gen = Generator(tiny_artifacts["gpt2-tiny"], device="cpu", threads=1)
    out = gen.generate([[1, 2, 3]], GenerationConfig(max_new_tokens=5, eos=()))
    past = gen.runner.past
    assert sorted(past) == sorted(gen.session.artifact.cache.names(Role.PAST))
    # 3 prompt tokens + 4 fed back (the 5th token is never fed)
    assert {v.shape[2] for v in past.values()} == {3 + out.steps - 1}
    _, heads, _, head_dim = next(iter(past.values())).shape
    gen.runner.start(2, {}, np.float32)  # a new start empties the cache and drops the old feeds
    assert {v.shape for v in gen.runner.past.values()} == {(2, heads, 0, head_dim)}
    assert set(gen.runner.feed) == set(past)


def test_before_after_reports_a_ratio(tiny_artifacts):
    ref = _ref_module()
    from benchmarks.step_compare import before_after

    row = before_after(tiny_artifacts["gpt2-tiny"], ref, threads=1, reps=1, new=4)
    assert set(row) == {"before", "after", "ratio"} and row["before"] > 0 and row["after"] > 0
