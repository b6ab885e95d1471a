"""The catalog: every spec loads, is named after its file, and has the published sizes."""

from __future__ import annotations

import pytest

import zoo
from zoo.spec import catalog
from zoo.spec.errors import SpecError
from zoo.spec.loader import load_raw, load_spec
from zoo.spec.params import human
from zoo.spec.model import ModelSpec, schema

# every file of the catalog folder; the published ones checked by name below
CATALOG = sorted(p.stem for p in catalog.BUILTIN.glob("*.yaml"))
PUBLISHED = {"alibi-small", "bert-base", "gpt2-small", "llama-135m", "llama-small", "t5-small", "transformer-base"}
TINY = {
    "gpt2-tiny": "gpt2-small",
    "bert-tiny": "bert-base",
    "t5-tiny": "t5-small",
    "llama-tiny": "llama-small",
    "alibi-tiny": "alibi-small",
    "transformer-tiny": "transformer-base",
}


def test_catalog_names():
    assert catalog.names() == CATALOG and PUBLISHED <= set(CATALOG)
    assert all(f"{base.removesuffix('-small').removesuffix('-base')}-tiny" in CATALOG for base in PUBLISHED - {"llama-135m"})


@pytest.mark.parametrize("name", CATALOG)
def test_catalog_spec_loads_and_is_named_after_its_file(name):
    path = catalog.path_of(name)
    assert path.parent == catalog.BUILTIN and path.stem == name
    spec = load_spec(name)
    assert isinstance(spec, ModelSpec)
    assert spec.name == name
    assert spec.description and "\n" not in spec.description
    assert load_spec(path) == spec  # by path as well as by name
    assert zoo.load(name) == spec


@pytest.mark.parametrize("name", CATALOG)
def test_catalog_file_has_a_description_of_its_own(name):
    raw, lines = load_raw(name)
    assert lines[("description",)][0].endswith(f"{name}.yaml")
    assert "extends" not in raw


def test_entries_yield_every_spec():
    got = {name: spec for name, _, spec in catalog.entries()}
    assert sorted(got) == CATALOG
    assert all(isinstance(s, ModelSpec) for s in got.values())


def test_gpt2_small_matches_the_published_model():
    spec = load_spec("gpt2-small")
    assert (spec.family, spec.vocab_size, spec.max_seq_len, spec.d_model) == ("decoder-only", 50257, 1024, 768)
    assert spec.positional.kind == "learned" and spec.embedding.tie_output and not spec.embedding.scale_by_sqrt_d
    dec = spec.decoder
    assert (dec.layers, dec.attention.heads, dec.attention.score, dec.attention.bias) == (12, 12, "scaled-dot", True)
    assert (dec.ffn.hidden, dec.ffn.activation, dec.ffn.gated) == (3072, "gelu-tanh", False)
    assert (dec.norm.kind, dec.norm.placement, dec.norm.eps) == ("layernorm", "pre", 1e-5)
    assert spec.dropout == 0.1 and spec.encoder is None
    assert spec.parameter_count() == 124_439_808  # the HF GPT-2 small count
    assert human(spec.parameter_count()) == "124.44M"


def test_transformer_base_matches_the_paper():
    spec = load_spec("transformer-base")
    assert (spec.family, spec.vocab_size, spec.max_seq_len, spec.d_model) == ("encoder-decoder", 37000, 1024, 512)
    assert spec.positional.kind == "sinusoidal"
    assert spec.embedding.tie_output and spec.embedding.scale_by_sqrt_d
    for _, stack in spec.stacks():
        assert (stack.layers, stack.attention.heads, stack.attention.score, stack.attention.bias) == (6, 8, "scaled-dot", True)
        assert (stack.ffn.hidden, stack.ffn.activation, stack.ffn.gated, stack.ffn.bias) == (2048, "relu", False, True)
        assert (stack.norm.kind, stack.norm.placement, stack.norm.eps, stack.norm.final) == ("layernorm", "post", 1e-5, True)
    assert spec.dropout == 0.1


def test_bert_t5_llama_alibi_values():
    bert = load_spec("bert-base")
    assert (bert.family, bert.vocab_size, bert.max_seq_len, bert.d_model) == ("encoder-only", 30522, 512, 768)
    assert (bert.encoder.layers, bert.encoder.ffn.activation, bert.encoder.norm.placement) == (12, "gelu", "post")
    assert bert.encoder.norm.eps == 1e-12 and bert.decoder is None

    t5 = load_spec("t5-small")
    assert (t5.vocab_size, t5.max_seq_len, t5.d_model) == (32128, 512, 512)
    assert (t5.positional.kind, t5.positional.buckets, t5.positional.max_distance) == ("relative-bias", 32, 128)
    for _, s in t5.stacks():
        assert (s.layers, s.attention.heads, s.attention.score, s.attention.bias) == (6, 8, "dot", False)
        assert (s.ffn.hidden, s.ffn.activation, s.ffn.bias) == (2048, "relu", False)
        assert (s.norm.kind, s.norm.placement, s.norm.eps) == ("rmsnorm", "pre", 1e-6)

    llama = load_spec("llama-small")
    assert (llama.vocab_size, llama.max_seq_len, llama.d_model) == (32000, 2048, 768)
    assert (llama.positional.kind, llama.positional.theta) == ("rope", 10000.0)
    assert not llama.embedding.tie_output and llama.dropout == 0.0
    att, ffn = llama.decoder.attention, llama.decoder.ffn
    assert (att.heads, att.kv_heads, att.bias) == (12, 4, False)
    assert (ffn.hidden, ffn.activation, ffn.gated, ffn.bias) == (2048, "silu", True, False)
    assert llama.decoder.norm.kind == "rmsnorm"

    smol = load_spec("llama-135m")  # SmolLM-135M's structure
    assert (smol.vocab_size, smol.d_model, smol.decoder.layers, smol.positional.theta) == (49152, 576, 30, 1e5)
    assert (smol.decoder.attention.heads, smol.decoder.attention.kv_heads, smol.decoder.ffn.hidden) == (9, 3, 1536)
    assert smol.embedding.tie_output and human(smol.parameter_count()) == "134.52M"

    alibi = load_spec("alibi-small")
    assert (alibi.vocab_size, alibi.max_seq_len, alibi.positional.kind) == (50257, 2048, "alibi")
    assert (alibi.decoder.ffn.hidden, alibi.decoder.ffn.activation, alibi.dropout) == (3072, "gelu", 0.0)


@pytest.mark.parametrize("tiny,parent", sorted(TINY.items()))
def test_tiny_variant_changes_sizes_only(tiny, parent):
    raw, _ = load_raw(catalog.path_of(tiny).parent / f"{tiny}.yaml")
    small, big = load_spec(tiny), load_spec(parent)
    assert (small.vocab_size, small.max_seq_len, small.d_model) == (512, 128, 64)
    for part, stack in small.stacks():
        other = big.stack(part)
        assert (stack.layers, stack.attention.heads, stack.ffn.hidden) == (2, 4, 128)
        assert stack.attention.kv_heads == (2 if tiny == "llama-tiny" else None)
        # the structure is inherited
        assert stack.attention.score == other.attention.score and stack.attention.bias == other.attention.bias
        assert stack.ffn.activation == other.ffn.activation and stack.ffn.gated == other.ffn.gated
        assert stack.norm == other.norm
    assert small.family == big.family and small.embedding == big.embedding and small.dropout == big.dropout
    assert small.positional.kind == big.positional.kind
    if tiny == "t5-tiny":
        assert (small.positional.buckets, small.positional.max_distance) == (16, 32)
    else:
        assert small.positional == big.positional
    assert small.description != big.description


def test_extra_catalog_directory_from_environment(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("name: mine\nextends: gpt2-tiny\ndescription: my variant\ndecoder: {layers: 3}\n")
    monkeypatch.setenv("ZOO_SPECS_PATH", str(tmp_path))
    assert "mine" in catalog.names() and "gpt2-tiny" in catalog.names()
    assert load_spec("mine").decoder.layers == 3


def test_unknown_catalog_name_suggests_close_names():
    with pytest.raises(SpecError, match=r"no spec named 'gpt2-smal' in the catalog; did you mean 'gpt2-small'"):
        catalog.path_of("gpt2-smal")


def test_schema_describes_every_field():
    out = schema()
    assert {"name", "family", "decoder", "encoder", "positional", "extends"} <= set(out["properties"])
    assert out["additionalProperties"] is False


LAYER_TYPE_REFUSALS = [  # (positional, window, layers, layer_types) -> the message
    ("rope", None, 2, [{"attention": "sliding"}, {}], r"layer_types\[0\]\.attention=sliding needs decoder\.attention\.window"),
    ("rope", 4, 2, [{}, {}], r"attention\.window=4 is used by no layer: layer_types has no sliding entry"),
    ("rope", None, 2, [{}, {}, {}], r"layer_types has 3 entries, more than layers=2"),
    ("learned", None, 2, [{"positions": "none"}], r"layer_types\[0\]\.positions=none cannot leave out positional\.kind=learned"),
    ("alibi", None, 2, [{"rope": {"theta": 10.0}}], r"layer_types\[0\]\.rope sets a RoPE base: it needs positional\.kind=rope, not alibi"),
    ("rope", None, 2, [{"positions": "none", "rope": {"theta": 10.0}}], r"layer_types\[0\]\.rope is set on a layer with positions=none"),
]


@pytest.mark.parametrize("positional, window, layers, types, message", LAYER_TYPE_REFUSALS)
def test_layer_types_refusals_name_the_numbers(positional, window, layers, types, message):
    from tests.conftest import tiny_spec

    spec = tiny_spec("decoder-only", positional=positional).model_dump()
    spec["decoder"].update(layers=layers, layer_types=types)
    spec["decoder"]["attention"]["window"] = window
    with pytest.raises(ValueError, match=message):
        ModelSpec.model_validate(spec)
