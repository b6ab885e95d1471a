"""The shared-buffer cache prototypes (benchmarks/cache_scaling.py) give the concat cache's logits.

Tiny graphs, batch 2, six decode steps from an empty cache: ``gqa-share``
(GroupQueryAttention writing in place into a max-length buffer bound as both past and
present) and ``scatter-mask`` (TensorScatter + masked Attention) against ``concat``
(Attention with past inputs); and GQA in place with a left-padded row (attention_bias)
against Attention with the same additive mask. A planted off-by-one write index must fail the check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _check(*extra: str) -> tuple[int, dict]:
    cmd = [sys.executable, "benchmarks/cache_scaling.py", "--check", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])


def test_shared_buffer_layouts_give_concat_logits():
    rc, diffs = _check()
    assert rc == 0 and set(diffs) == {"gqa-share", "scatter-mask", "gqa-share-left-padded"}
    assert max(diffs.values()) <= 1e-5, diffs


@pytest.mark.parametrize("shift", [-1, 1])
def test_planted_off_by_one_write_index_fails(shift):
    rc, diffs = _check("--plant-shift", str(shift))
    assert rc == 1 and min(diffs["gqa-share"], diffs["scatter-mask"]) > 1e-2, diffs
