"""The compiler: module structure against the spec, deterministic initialisation,
safetensors weights."""

from __future__ import annotations

import json
import struct

import pytest
import torch

import zoo
from compiler import build, load_weights, save_weights
from compiler.weights import WeightsError, load_tensors, weights_digest
from tests.conftest import FAMILIES, tiny_spec
from zoo.spec.catalog import names
from zoo.spec.params import count_parameters
from zoo.spec.model import POSITIONAL_KINDS, SCORES
from zoo.spec.variants import NORMS


@pytest.mark.parametrize("name", names())
def test_parameter_count_matches_module(name):
    spec = zoo.load(name)
    model = build(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.parameter_count()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("positional", POSITIONAL_KINDS)
def test_parameter_count_every_variant(family, score, positional):
    spec = tiny_spec(family, score=score, positional=positional)
    assert sum(p.numel() for p in build(spec).parameters()) == spec.parameter_count()


def test_more_layers_never_fewer_parameters():
    base = zoo.load("gpt2-tiny")
    deeper = zoo.load("gpt2-tiny", ["decoder.layers=3"])
    assert deeper.parameter_count() > base.parameter_count()
    mqa = zoo.load("llama-tiny", ["decoder.attention.kv_heads=1"])
    assert mqa.parameter_count() < zoo.load("llama-tiny").parameter_count()


def test_parameter_breakdown_adds_up():
    spec = zoo.load("t5-tiny")
    c = count_parameters(spec)
    assert c.total == c.embeddings + sum(c.per_layer[s] * c.layers[s] for s in c.per_layer) + c.final_norms + c.output


def test_initialisation_is_deterministic_per_seed():
    spec = zoo.load("llama-tiny")
    assert weights_digest(build(spec, seed=3)) == weights_digest(build(spec, seed=3))
    assert weights_digest(build(spec, seed=3)) != weights_digest(build(spec, seed=4))
    before = torch.random.get_rng_state()
    build(spec, seed=5)
    assert torch.equal(before, torch.random.get_rng_state()), "build must not disturb the global RNG"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_module_dtype(dtype):
    spec = zoo.load("gpt2-tiny", [f"dtype={dtype}"])
    model = build(spec)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}


def test_eval_mode_and_dropout_inactive():
    spec = zoo.load("gpt2-tiny", ["dropout=0.5"])
    model = build(spec)
    ids = torch.randint(0, spec.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(ids, mask), model(ids, mask))


def test_left_and_right_padding_give_the_same_logits():
    spec = zoo.load("llama-tiny")
    model = build(spec)
    ids = torch.randint(1, spec.vocab_size, (1, 5))
    pad = torch.zeros(1, 3, dtype=torch.long)
    one = torch.ones(1, 5, dtype=torch.long)
    with torch.no_grad():
        alone = model(ids, one)
        right = model(torch.cat([ids, pad], 1), torch.cat([one, pad], 1))[:, :5]
        left = model(torch.cat([pad, ids], 1), torch.cat([pad, one], 1))[:, 3:]
    assert torch.allclose(alone, right, atol=1e-5)
    assert torch.allclose(alone, left, atol=1e-5)


def test_causal_decoder_ignores_the_future():
    spec = zoo.load("alibi-tiny")
    model = build(spec)
    ids = torch.randint(0, spec.vocab_size, (1, 8))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % spec.vocab_size
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(model(ids, mask)[:, :6], model(changed, mask)[:, :6])
        assert not torch.allclose(model(ids, mask)[:, 6:], model(changed, mask)[:, 6:])


def test_weights_round_trip(tmp_path):
    spec = zoo.load("t5-tiny")
    model = build(spec, seed=1)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, {"spec": spec.name})
    other = build(spec, seed=2)
    assert weights_digest(other) != weights_digest(model)
    meta = load_weights(other, path)
    assert meta["spec"] == spec.name
    assert weights_digest(other) == weights_digest(model)


def test_weights_file_is_safetensors_not_pickle(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(build(zoo.load("gpt2-tiny")), path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert header["embed.weight"]["dtype"] == "F32"
    assert not raw.startswith(b"\x80")  # no pickle protocol marker
    tensors, _ = load_tensors(path)
    assert "embed.weight" in tensors


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(build(zoo.load("gpt2-tiny")), path)
    with pytest.raises(WeightsError, match="weights do not fit"):
        load_weights(build(zoo.load("gpt2-tiny", ["decoder.layers=3"])), path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_weights(build(zoo.load("gpt2-tiny")), tmp_path / "junk.safetensors")


def with_options(family: str, embedding: dict, positional: dict | None = None, norm: str = "layernorm"):
    """tiny_spec of ``family`` with embedding options (and a positional variant), validated."""
    from zoo.spec.model import ModelSpec

    data = tiny_spec(family, norm={"kind": norm, "placement": "post"}).model_dump()
    data["embedding"] = embedding
    if positional is not None:
        data["positional"] = positional
    return ModelSpec.model_validate(data)


EMBEDDING_OPTIONS = {
    "token-types": {"token_types": 3},
    "embed-norm": {"norm": True},
    "output-transform-untied": {"output_transform": True, "tie_output": False},
    "output-bias": {"output_bias": True},
    "bert-like": {"token_types": 2, "norm": True, "output_transform": True, "output_bias": True},
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("option", list(EMBEDDING_OPTIONS))
@pytest.mark.parametrize("norm", NORMS.keys())
def test_parameter_count_embedding_options(family, option, norm):
    spec = with_options(family, EMBEDDING_OPTIONS[option], norm=norm)
    assert sum(p.numel() for p in build(spec).parameters()) == spec.parameter_count()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("positional", [{"kind": "learned", "offset": 2}, {"kind": "sinusoidal", "layout": "halves"}])
def test_parameter_count_positional_options(family, positional):
    spec = with_options(family, {"norm": True}, positional)
    assert sum(p.numel() for p in build(spec).parameters()) == spec.parameter_count()


def test_pooler_is_an_encoder_only_output():
    from zoo.spec.families import family, graphs_for
    from zoo.spec.model import FieldIssue

    spec = with_options("encoder-only", {"pooler": True})
    assert sum(p.numel() for p in build(spec).parameters()) == spec.parameter_count()
    hidden, logits, pooled = build(spec)(torch.randint(0, 61, (2, 5)), torch.ones(2, 5, dtype=torch.long))
    assert pooled.shape == (2, 32) and graphs_for(spec)[0].output_names == ["last_hidden_state", "logits", "pooler_output"]
    assert family("encoder-only").graphs(None)[0].output_names == ["last_hidden_state", "logits"]
    with pytest.raises((FieldIssue, ValueError), match="pooler"):
        with_options("decoder-only", {"pooler": True})


def test_positional_options_change_the_encoding():
    from compiler.positional import Learned, Sinusoidal

    positions = torch.arange(6)[None]
    inter, halves = Sinusoidal(8)(positions), Sinusoidal(8, halves=True)(positions)
    assert torch.equal(inter[..., 0::2], halves[..., :4]) and torch.equal(inter[..., 1::2], halves[..., 4:])
    table = Learned(6, 4, offset=2)
    assert table.weight.shape == (8, 4)
    with torch.no_grad():
        table.weight.copy_(torch.arange(8.0)[:, None].expand(8, 4))
    assert table(positions)[0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
