"""Bad runtime inputs (issue 7, point 4): every entry point of the runtime gives an
InputError of one line naming what is wrong (the CLI: ``error: ...``, exit code 2),
or a documented behaviour; never a crash inside ONNX Runtime, never garbage.

Session.run / Session.forward (runtime.validate.check_feed) and the outputs (the
generation side and the command line: tests/test_generation_inputs.py); for the
encoder-only (bert-tiny), decoder-only (gpt2-tiny, llama-tiny) and
encoder-decoder (t5-tiny) families. The tiny artifacts: vocab 512, max_seq_len 128,
kv_heads 4, head_dim 16.
"""

from __future__ import annotations

import numpy as np
import pytest

import runtime.session
from runtime.generate import GenerationConfig
from tests.feeds import FAMILIES, GENERATIVE, IDS, MASK, cache, generators, inputs, refused, sessions  # noqa: F401 (fixtures)
from zoo.spec.errors import InputError, OutputError
from zoo.spec.families import Role

# --------------------------------------------------------------------------- accepted and cast


@pytest.mark.parametrize("name", FAMILIES)
def test_integer_widths_lists_and_bool_masks_are_cast(sessions, name):
    s = sessions[name]
    want = s.forward(inputs(name))["logits"]
    for ids, mask in [
        (IDS.astype(np.int32), MASK.astype(bool)),
        (IDS.astype(np.uint16), MASK.astype(np.uint8)),
        (IDS.tolist(), MASK.tolist()),
        (IDS.astype(np.float32), MASK.astype(np.float64)),  # whole numbers as floats
    ]:
        np.testing.assert_array_equal(s.forward(inputs(name, ids, mask))["logits"], want)


# --------------------------------------------------------------------------- token ids


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("bad", [512, 9999, -1])
def test_ids_outside_the_vocabulary(sessions, name, bad):
    ids = IDS.copy()
    ids[1, 2] = bad
    refused(lambda: sessions[name].forward(inputs(name, ids)), f"input_ids: token id {bad} is outside the vocabulary [0, 512) (at row 1, position 2)")


def test_decoder_ids_outside_the_vocabulary(sessions):
    refused(
        lambda: sessions["t5-tiny"].forward(inputs("t5-tiny", decoder_input_ids=[[0], [600]])),
        "decoder_input_ids: token id 600 is outside the vocabulary [0, 512) (at row 1, position 0)",
    )


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize(
    "ids, message",
    [
        ([[1.0, 2.5, 3.0]], "input_ids: token 2.5 at row 0, position 1 is not an integer id"),
        ([[1.0, np.nan]], "input_ids: token nan at row 0, position 1 is not an integer id"),
        (np.array([[True, False]]), "input_ids: a bool array; token ids must be integers"),
        ([["a", "b"]], "input_ids: strings (dtype <U1); token ids must be integers"),
        ([[1, None]], "input_ids: Python objects (dtype object); token ids must be integers"),
        ([[1, 2], [3]], "input_ids: not a rectangular array"),
    ],
    ids=["fraction", "nan", "bool", "str", "object", "ragged"],
)
def test_ids_of_the_wrong_type(sessions, name, ids, message):
    mask = [[1] * len(r) for r in ids]
    refused(lambda: sessions[name].forward(inputs(name, ids, mask)), message)


# --------------------------------------------------------------------------- names and ranks


@pytest.mark.parametrize("name", FAMILIES)
def test_wrong_rank(sessions, name):
    refused(
        lambda: sessions[name].forward(inputs(name, IDS[0], MASK[0])),
        "input_ids: 1 dimension (shape (3,)), the graph takes 2: (batch, ",
    )
    refused(lambda: sessions[name].forward(inputs(name, IDS, MASK[None])), "attention_mask: 3 dimensions (shape (1, 2, 3)), the graph takes 2")


@pytest.mark.parametrize("name", FAMILIES)
def test_missing_and_unknown_inputs_list_what_the_graph_takes(sessions, name):
    s = sessions[name]
    graph = "encoder" if name == "t5-tiny" else "model"
    feed = inputs(name)
    del feed[graph]["attention_mask"]
    text = refused(lambda: s.forward(feed), f"graph '{graph}' lacks input 'attention_mask'; it takes input_ids (batch, ")
    assert "attention_mask (batch, " in text
    feed = inputs(name)
    feed[graph]["input_id"] = feed[graph].pop("input_ids")
    refused(lambda: s.forward(feed), f"graph '{graph}' has no input 'input_id' (did you mean 'input_ids'?); it takes")
    feed = inputs(name)
    feed[graph]["token_type_ids"] = MASK
    refused(lambda: s.forward(feed), f"graph '{graph}' has no input 'token_type_ids'; it takes")


def test_run_lists_the_cache_inputs_compactly(sessions):
    text = refused(lambda: sessions["gpt2-tiny"].run("model", input_ids=IDS, attention_mask=MASK), "lacks input 'past.0.key' (and 3 more)")
    assert text.endswith("it takes input_ids (batch, seq) int64, attention_mask (batch, total_seq) int64, past.{0..1}.key/value (batch, 4, past_seq, 16) float32")


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_takes_inputs_by_graph(sessions, name):
    refused(lambda: sessions[name].forward({"input_ids": IDS, "attention_mask": MASK}), "forward takes the inputs of each graph by graph name: {")
    refused(lambda: sessions[name].forward([IDS, MASK]), "; got list")


def test_unknown_graph(sessions):
    refused(lambda: sessions["gpt2-tiny"].run("decoder", input_ids=IDS), "gpt2-tiny has no graph 'decoder' (its graphs: model)")


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny"])
def test_forward_refuses_a_cache(sessions, name):
    s = sessions[name]
    feed = inputs(name)
    graph = "decoder" if name == "t5-tiny" else "model"
    feed[graph].update(s.empty_past(2))
    refused(lambda: s.forward(feed), "forward runs without a cache and takes ")


# --------------------------------------------------------------------------- shapes that disagree


@pytest.mark.parametrize("name", FAMILIES)
def test_mask_shape_disagrees_with_ids(sessions, name):
    s = sessions[name]
    seq_axis = "src_seq" if name == "t5-tiny" else ("seq" if name == "bert-tiny" else "total_seq")
    refused(lambda: s.forward(inputs(name, IDS, np.ones((3, 3)))), "attention_mask: batch is 3 (shape (3, 3)) but input_ids has batch 2")
    if name in ("bert-tiny", "t5-tiny"):
        refused(lambda: s.forward(inputs(name, IDS, np.ones((2, 4)))), f"attention_mask: {seq_axis} is 4 (shape (2, 4)) but input_ids has {seq_axis} 3")
    else:  # decoder-only: the mask covers past + new tokens
        refused(lambda: s.forward(inputs(name, IDS, np.ones((2, 4)))), "attention_mask: 4 columns, but it covers the cached and the new tokens: past_seq 0 + seq 3 = 3")


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_decoder_only_mask_covers_past_and_new_tokens(sessions, name):
    s = sessions[name]
    past = cache(s, 2, 5)
    refused(lambda: s.run("model", input_ids=IDS, attention_mask=MASK, **past), "attention_mask: 3 columns, but it covers the cached and the new tokens: past_seq 5 + seq 3 = 8")
    out = s.run("model", input_ids=IDS, attention_mask=np.ones((2, 8), dtype=np.int32), **past)
    assert out["logits"].shape == (2, 3, 512) and out["present.0.key"].shape[2] == 8
    refused(lambda: s.run("model", input_ids=IDS, attention_mask=MASK, **s.empty_past(3)), "past.0.key: batch is 3 (shape (3, ")
    refused(lambda: s.run("model", input_ids=IDS, attention_mask=MASK, **s.empty_past(3)), "but input_ids has batch 2")


def test_encoder_decoder_shapes(sessions):
    s = sessions["t5-tiny"]
    refused(lambda: s.forward(inputs("t5-tiny", decoder_input_ids=[[0]], decoder_attention_mask=[[1]])), "decoder_input_ids: batch 1, the encoder's input_ids batch 2")
    refused(
        lambda: s.forward(inputs("t5-tiny", decoder_attention_mask=[[1, 1], [1, 1]])),
        "decoder_attention_mask: 2 columns, but it covers the cached and the new tokens: past_seq 0 + seq 1 = 1",
    )
    refused(
        lambda: s.forward(inputs("t5-tiny", encoder_attention_mask=np.ones((2, 5)))),
        "encoder_attention_mask: shape (2, 5), the encoder's attention_mask (2, 3)",
    )
    enc = s.run("encoder", input_ids=IDS, attention_mask=MASK)
    cross = Role.CROSS.pick(enc)
    dec = {"decoder_input_ids": [[0], [0]], "decoder_attention_mask": [[1], [1]]}
    refused(
        lambda: s.run("decoder", **dec, encoder_attention_mask=np.ones((2, 4)), **cross, **s.empty_past(2)),
        "cross.0.key: src_seq is 3 (shape (2, 4, 3, 16)) but encoder_attention_mask has src_seq 4",
    )
    ok = s.run("decoder", **dec, encoder_attention_mask=MASK, **cross, **s.empty_past(2))
    np.testing.assert_allclose(ok["logits"], s.forward(inputs("t5-tiny"))["logits"], atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v.astype(np.float64), "past.0.key: dtype float64, the artifact's past tensors are float32 (cast with .astype(np.float32))"),
        (lambda v: v.astype(np.float16), "past.0.key: dtype float16, the artifact's past tensors are float32"),
        (lambda v: np.zeros((2, 2, 0, 16), np.float32), "past.0.key: shape (2, 2, 0, 16), axis 1 must be 4 (the graph takes (batch, 4, past_seq, 16))"),
        (lambda v: np.zeros((2, 4, 0, 8), np.float32), "past.0.key: shape (2, 4, 0, 8), axis 3 must be 16"),
        (lambda v: v[0], "past.0.key: 3 dimensions (shape (4, 0, 16)), the graph takes 4"),
    ],
    ids=["float64", "float16", "kv_heads", "head_dim", "rank"],
)
@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny"])  # kv_heads 4, head_dim 16
def test_cache_tensors_must_match_the_artifact(sessions, name, change, message):
    s = sessions[name]
    past = {k: change(v) for k, v in s.empty_past(2).items()}
    if name == "t5-tiny":
        enc = s.run("encoder", input_ids=IDS, attention_mask=MASK)
        cross = Role.CROSS.pick(enc)
        dec = {"decoder_input_ids": [[0], [0]], "decoder_attention_mask": [[1], [1]], "encoder_attention_mask": MASK}
        refused(lambda: s.run("decoder", **dec, **cross, **past), message)
        bad_cross = {k: change(v[:, :, :0]) for k, v in cross.items()}
        refused(lambda: s.run("decoder", **dec, **bad_cross, **s.empty_past(2)), message.replace("past", "cross").replace("cross_seq", "src_seq"))
    else:
        refused(lambda: s.run("model", input_ids=IDS, attention_mask=MASK, **past), message)


# --------------------------------------------------------------------------- mask values, empty and long inputs


@pytest.mark.parametrize("name", FAMILIES)
def test_mask_values(sessions, name):
    s = sessions[name]
    for value in (2, -1, 0.5):
        mask = MASK.astype(type(value))
        mask[0, 1] = value
        refused(lambda: s.forward(inputs(name, IDS, mask)), f"attention_mask: value {value} at row 0, position 1; a mask holds 1 (token) or 0 (padding)")
    mask = MASK.copy()
    mask[1] = 0
    refused(lambda: s.forward(inputs(name, IDS, mask)), "attention_mask: row 1 is all 0 (padding); every row needs at least one token to attend to")


def test_decoder_masks_with_nothing_to_attend_to(sessions):
    s = sessions["t5-tiny"]
    refused(lambda: s.forward(inputs("t5-tiny", decoder_attention_mask=[[1], [0]])), "decoder_attention_mask: row 1 is all 0")
    refused(lambda: s.forward(inputs("t5-tiny", encoder_attention_mask=[[1, 1, 1], [0, 0, 0]])), "encoder_attention_mask: row 1 is all 0")


@pytest.mark.parametrize("name", FAMILIES)
def test_empty_inputs(sessions, name):
    s = sessions[name]
    refused(lambda: s.forward(inputs(name, np.zeros((2, 0), int), np.zeros((2, 0), int))), "input_ids: ")
    refused(lambda: s.forward(inputs(name, np.zeros((2, 0), int), np.zeros((2, 0), int))), " is 0; give at least one token (shape (2, 0))")
    refused(lambda: s.forward(inputs(name, np.zeros((0, 3), int), np.zeros((0, 3), int))), "input_ids: batch is 0; give at least one sequence (shape (0, 3))")


@pytest.mark.parametrize("name", FAMILIES)
def test_longer_than_max_seq_len(sessions, name):
    long = np.ones((1, 129), dtype=np.int64)
    refused(lambda: sessions[name].forward(inputs(name, long, long)), "input_ids: 129 tokens, more than max_seq_len=128")
    ok = np.ones((1, 128), dtype=np.int64)
    assert np.isfinite(sessions[name].forward(inputs(name, ok, ok))["logits"]).all()


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_past_plus_new_tokens_longer_than_max_seq_len(sessions, name):
    s = sessions[name]
    past = cache(s, 2, 126)
    refused(lambda: s.run("model", input_ids=IDS, attention_mask=np.ones((2, 129)), **past), "past_seq 126 + seq 3 = 129 tokens, more than max_seq_len=128")


# --------------------------------------------------------------------------- outputs


def test_nan_outputs_are_refused(sessions):
    s = sessions["gpt2-tiny"]
    past = cache(s, 2, 1, np.nan)
    refused(lambda: s.run("model", input_ids=IDS, attention_mask=np.ones((2, 4)), **past), "graph 'model': output logits has ", OutputError)
    assert OutputError.exit_code == 1 and InputError.exit_code == 2


def test_nan_logits_stop_generation(generators, monkeypatch):
    gen = generators["gpt2-tiny"]
    monkeypatch.setattr(gen.runner, "step", lambda feeds: np.full((1, 512), np.nan, np.float32))
    refused(lambda: gen.generate([[1, 2]], GenerationConfig(max_new_tokens=3)), "generation step 0: the logits of row 0 hold NaN/inf", OutputError)


def test_check_false_and_the_generation_loop_skip_the_checks(sessions, generators, monkeypatch):
    calls = []
    real = runtime.session.check_feed
    monkeypatch.setattr(runtime.session, "check_feed", lambda *a, **k: calls.append(a[0].name) or real(*a, **k))
    s = sessions["bert-tiny"]
    s.run("model", check=False, input_ids=IDS, attention_mask=MASK)
    s.forward(inputs("bert-tiny"), check=False)
    for name in GENERATIVE:
        generators[name].generate([[1, 2, 3], [4]], GenerationConfig(max_new_tokens=4, eos=()))
    assert calls == []
    s.run("model", input_ids=IDS, attention_mask=MASK)
    assert calls == ["model"]
