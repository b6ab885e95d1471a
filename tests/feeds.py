"""What the bad-input tests of the runtime share (tests/test_runtime_inputs.py,
tests/test_generation_inputs.py): the tiny artifacts' sessions and generators, feeds,
cache tensors, and the one-line refusal check. The tiny artifacts: vocab 512,
max_seq_len 128, kv_heads 4, head_dim 16."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.generate import Generator
from runtime.session import Session
import zoo
from zoo.spec.errors import InputError
from zoo.spec.families import Role, family

FAMILIES = ["bert-tiny", "gpt2-tiny", "llama-tiny", "t5-tiny"]
GENERATIVE = ["gpt2-tiny", "llama-tiny", "t5-tiny"]
IDS = np.array([[5, 17, 300], [3, 8, 250]], dtype=np.int64)
MASK = np.ones_like(IDS)


@pytest.fixture(scope="module")
def sessions(tiny_artifacts):
    return {name: Session(tiny_artifacts[name], device="cpu") for name in FAMILIES}


@pytest.fixture(scope="module")
def generators(sessions):
    return {name: Generator(sessions[name]) for name in GENERATIVE}


def inputs(name: str, ids=IDS, mask=MASK, **decoder) -> dict:
    """forward's inputs: ``ids``/``mask`` feed the encoder of t5-tiny, whose decoder
    gets ``decoder`` (default: the start token 0 per row)."""
    fam = family(zoo.load(name))
    if not fam.crossed:
        return fam.feeds(ids, mask)
    batch = len(ids)
    feeds = fam.feeds([[0]] * batch, [[1]] * batch, src_ids=ids, src_mask=mask)
    del feeds[fam.step_graph]["encoder_attention_mask"]  # forward defaults it to the encoder's mask
    feeds[fam.step_graph].update(decoder)
    return feeds


def cache(s: Session, batch: int, past: int, fill: float = 0.0) -> dict:
    """past.* tensors of the artifact's layout holding ``past`` cached positions."""
    c = s.artifact.cache
    return {k: np.full((batch, c.kv_heads, past, c.head_dim), fill, np.float32) for k in c.names(Role.PAST)}


def refused(call, message: str, error=InputError) -> str:
    with pytest.raises(error) as info:
        call()
    text = str(info.value)
    assert "\n" not in text, text
    assert message in text, text
    return text
