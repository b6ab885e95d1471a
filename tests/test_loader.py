"""Loading specs: extends, merge rules, overrides, and every error with its file, line and field."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from zoo.spec import catalog
from tests.spec_files import BASE, _in_tmp, error_of, write  # noqa: F401 (_in_tmp: an autouse fixture)
from zoo.spec.errors import SpecError
from zoo.spec.loader import load_raw, load_spec, merge, parse_override
from zoo.spec.reader import LineMap, display_path, parse_text

# --------------------------------------------------------------------------- reading with lines


def test_line_map_records_every_key_path(tmp_path):
    data, lines = load_raw(write(tmp_path / "base.yaml", BASE))
    assert data["decoder"]["attention"]["heads"] == 4
    assert lines[("decoder", "attention", "heads")] == ("base.yaml", 11)
    assert lines[("decoder",)] == ("base.yaml", 8)
    assert lines[("positional", "theta")] == ("base.yaml", 7)
    assert lines.locate(("decoder", "attention", "missing")) == ("base.yaml", 10)
    assert lines.locate(("nowhere",)) == ("base.yaml", 1)


def test_yaml_12_floats_and_lists_get_lines():
    data, lines = parse_text("eps: 1e-5\nxs:\n  - 1\n  - [2, 3]\n", "x.yaml")
    assert data == {"eps": 1e-5, "xs": [1, [2, 3]]}
    assert lines[("xs", 1)] == ("x.yaml", 4)


def test_display_path_relative_under_cwd_else_absolute(tmp_path):
    assert display_path(tmp_path / "a" / "b.yaml") == os.path.join("a", "b.yaml")
    outside = Path("/").resolve() / "somewhere" / "x.yaml"
    assert display_path(outside) == str(outside)


# --------------------------------------------------------------------------- extends and merging


def test_extends_deep_merges_and_records_where_values_came_from(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    child = write(
        tmp_path / "child.yaml",
        """\
        name: child
        extends: base.yaml
        decoder:
          attention: {heads: 8}
        """,
    )
    data, lines = load_raw(child)
    assert "extends" not in data and ("extends",) not in lines
    att = data["decoder"]["attention"]
    assert att == {"heads": 8, "kv_heads": 2}  # merged key by key
    assert data["decoder"]["norm"]["placement"] == "post"
    assert data["description"] == "a test spec"  # inherited when not set
    assert lines[("decoder", "attention", "heads")] == ("child.yaml", 4)
    assert lines[("decoder", "attention", "kv_heads")] == ("base.yaml", 12)
    assert lines[("decoder", "ffn", "hidden")] == ("base.yaml", 13)
    assert lines[("name",)] == ("child.yaml", 1)
    spec = load_spec(child)
    assert spec.name == "child" and spec.decoder.attention.heads == 8


def test_positional_kind_change_replaces_the_whole_mapping(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    write(tmp_path / "a.yaml", "name: a\nextends: base.yaml\npositional: {kind: alibi}\n")
    write(tmp_path / "b.yaml", "name: b\nextends: base.yaml\npositional: alibi\n")
    write(tmp_path / "c.yaml", "name: c\nextends: base.yaml\npositional: {theta: 1000.0}\n")
    for name in ("a", "b"):
        data, lines = load_raw(f"{name}.yaml")
        assert data["positional"] in ({"kind": "alibi"}, "alibi")
        assert ("positional", "theta") not in lines
        assert load_spec(f"{name}.yaml").positional.kind == "alibi"
    c = load_spec("c.yaml").positional
    assert (c.kind, c.theta) == ("rope", 1000.0)  # same kind: merged


def test_norm_kind_change_keeps_the_other_norm_fields(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    write(tmp_path / "n.yaml", "name: n\nextends: base.yaml\ndecoder: {norm: {kind: layernorm}}\n")
    norm = load_spec("n.yaml").decoder.norm
    assert (norm.kind, norm.placement, norm.eps) == ("layernorm", "post", 1e-6)


def test_mapping_onto_positional_shorthand_extends_its_kind():
    data, _ = merge({"positional": "rope"}, LineMap(), {"positional": {"theta": 5.0}}, LineMap())
    assert data == {"positional": {"kind": "rope", "theta": 5.0}}


def test_lists_and_scalars_replace():
    data, _ = merge({"a": [1, 2], "b": {"c": 1}}, LineMap(), {"a": [3], "b": 7}, LineMap())
    assert data == {"a": [3], "b": 7}


def test_extends_a_catalog_name_and_chains(tmp_path):
    write(tmp_path / "one.yaml", "name: one\nextends: gpt2-tiny\ndecoder: {layers: 3}\n")
    write(tmp_path / "two.yaml", "name: two\nextends: ./one.yaml\ndescription: two\nd_model: 128\n")
    spec = load_spec("two.yaml")
    assert (spec.decoder.layers, spec.d_model, spec.vocab_size, spec.description) == (3, 128, 512, "two")
    _, lines = load_raw("two.yaml")
    assert lines[("vocab_size",)][0] == display_path(catalog.path_of("gpt2-tiny"))


def test_extends_path_is_relative_to_the_extending_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "base.yaml", BASE)
    write(tmp_path / "sub" / "child.yaml", "name: child\nextends: ../base.yaml\n")
    assert load_spec("sub/child.yaml").d_model == 64


def test_extends_null_is_a_plain_spec(tmp_path):
    write(tmp_path / "base.yaml", "extends: null\n" + BASE)
    assert load_spec("base.yaml").name == "base"


# --------------------------------------------------------------------------- overrides


def test_overrides_int_null_string_nested():
    spec = load_spec(
        "llama-tiny",
        [
            "decoder.layers=3",
            "decoder.attention.kv_heads=null",
            "positional=alibi",
            "name=llama-variant",
            "decoder.ffn={activation: gelu}",
        ],
    )
    assert spec.decoder.layers == 3
    assert spec.decoder.attention.kv_heads is None
    assert spec.positional.kind == "alibi"
    assert spec.name == "llama-variant"
    assert (spec.decoder.ffn.activation, spec.decoder.ffn.hidden, spec.decoder.ffn.gated) == ("gelu", 128, True)


def test_override_of_positional_kind_drops_old_fields():
    data, lines = load_raw("llama-tiny", ["positional.kind=alibi"])
    assert data["positional"] == {"kind": "alibi"}
    assert lines[("positional", "kind")] == ("--set positional.kind=alibi", None)


def test_override_errors_name_the_override():
    err = error_of("gpt2-tiny", ["decoder.layers=0"])
    assert str(err) == "--set decoder.layers=0: decoder.layers: must be > 0, got 0"
    err = error_of("gpt2-tiny", ["decoder.layers"])
    assert err.file == "--set decoder.layers" and "no '='" in err.message
    with pytest.raises(SpecError, match="bad field path"):
        parse_override("decoder..layers=2")
    err = error_of("gpt2-tiny", ["decoder.layers=[1"])
    assert err.line is None and err.field == "decoder.layers" and "invalid YAML" in err.message


def test_unknown_field_for_a_positional_kind():
    err = error_of("gpt2-tiny", ["positional.theta=3"])
    assert err.field == "positional.theta"
    assert err.message == "unknown field 'theta' for kind 'learned'; allowed: kind, offset"


# --------------------------------------------------------------------------- validation errors, located


def spec_file(tmp_path, body: str, name: str = "bad.yaml") -> Path:
    """A spec extending llama-tiny with ``body`` (starting at line 3)."""
    return write(tmp_path / name, "name: bad\nextends: llama-tiny\n" + textwrap.dedent(body))


def test_unknown_key_did_you_mean(tmp_path):
    spec_file(tmp_path, "decoder:\n  attention:\n    kv_head: 2\n")
    err = error_of("bad.yaml")
    assert str(err) == "bad.yaml:5: decoder.attention.kv_head: unknown field 'kv_head'; did you mean 'kv_heads'?"


def test_unknown_key_without_close_match_lists_allowed(tmp_path):
    spec_file(tmp_path, "embedding: {zzz: 1}\n")
    err = error_of("bad.yaml")
    assert (err.line, err.field) == (3, "embedding.zzz")
    assert err.message == "unknown field 'zzz'; allowed: tie_output, scale_by_sqrt_d, scale_output_by_inv_sqrt_d, token_types, norm, output_transform, output_bias, multiplier, logit_multiplier, logit_softcap, pooler"


def test_heads_must_divide_d_model(tmp_path):
    spec_file(tmp_path, "d_model: 700\ndecoder:\n  attention: {heads: 12, kv_heads: null}\n")
    err = error_of("bad.yaml")
    assert str(err) == "bad.yaml:5: decoder.attention.heads: heads=12 does not divide d_model=700"


def test_kv_heads_must_divide_heads(tmp_path):
    spec_file(tmp_path, "d_model: 96\ndecoder:\n  attention:\n    heads: 12\n    kv_heads: 5\n")
    err = error_of("bad.yaml")
    assert str(err) == "bad.yaml:7: decoder.attention.kv_heads: kv_heads=5 does not divide heads=12"


def test_top_k_must_not_exceed_the_experts(tmp_path):
    spec_file(tmp_path, "decoder:\n  ffn:\n    experts: {count: 4, top_k: 6}\n")
    err = error_of("bad.yaml")
    assert str(err) == "bad.yaml:5: decoder.ffn.experts.top_k: experts.top_k=6 is more than experts.count=4"


def test_rope_needs_an_even_head_dim(tmp_path):
    spec_file(tmp_path, "d_model: 60\ndecoder:\n  attention: {heads: 4, kv_heads: 1}\n")
    err = error_of("bad.yaml")
    assert (err.file, err.line, err.field) == ("bad.yaml", 5, "decoder.attention.heads")
    assert "RoPE needs an even head_dim, got head_dim=15" in err.message


def test_longrope_factor_lists_match_the_rotated_pairs(tmp_path):
    """llama-tiny's head_dim 16 rotates 8 pairs: a LongRoPE list of 3 is refused, naming both fields."""
    spec_file(tmp_path, "positional:\n  kind: rope\n  scaling: {kind: longrope, factor: 4.0, original_max_seq_len: 16,\n"
              "    short_factor: [1.0, 2.0, 3.0], long_factor: [1.0, 2.0, 3.0]}\n")
    err = error_of("bad.yaml")
    assert err.field == "positional.scaling.short_factor"
    assert "short_factor has 3 values but decoder rotates 8 frequency pairs" in err.message and "head_dim 16" in err.message


def test_error_in_an_inherited_value_points_at_the_parent_file(tmp_path):
    spec_file(tmp_path, "d_model: 66\n")  # heads=4 comes from llama-tiny
    err = error_of("bad.yaml")
    assert err.file == display_path(catalog.path_of("llama-tiny"))
    assert err.field == "decoder.attention.heads" and err.message == "heads=4 does not divide d_model=66"


def test_wrong_type(tmp_path):
    spec_file(tmp_path, "decoder:\n  layers: abc\n")
    assert str(error_of("bad.yaml")) == "bad.yaml:4: decoder.layers: expected an integer, got 'abc'"
    spec_file(tmp_path, "dropout: [1]\n")
    assert str(error_of("bad.yaml")) == "bad.yaml:3: dropout: expected a number, got a list"
    spec_file(tmp_path, "embedding: {tie_output: maybe}\n")
    assert error_of("bad.yaml").message == "expected true or false, got 'maybe'"


def test_bad_literal(tmp_path):
    spec_file(tmp_path, "decoder:\n  ffn:\n    activation: gelu2\n")
    err = error_of("bad.yaml")
    assert str(err) == (
        "bad.yaml:5: decoder.ffn.activation: 'gelu2' is not one of relu, gelu, gelu-tanh, silu; did you mean 'gelu'?"
    )


def test_bad_positional_kind(tmp_path):
    spec_file(tmp_path, "positional: {kind: rop}\n")
    err = error_of("bad.yaml")
    assert (err.line, err.field) == (3, "positional.kind")
    assert err.message == "'rop' is not one of sinusoidal, learned, rope, alibi, relative-bias, none; did you mean 'rope'?"
    spec_file(tmp_path, "positional: alibix\n")
    assert "did you mean 'alibi'?" in error_of("bad.yaml").message


def test_bad_value_inside_a_positional_variant(tmp_path):
    spec_file(tmp_path, "positional:\n  kind: rope\n  theta: -1\n")
    assert str(error_of("bad.yaml")) == "bad.yaml:5: positional.theta: must be > 0.0, got -1"


def test_family_and_stack_mismatch(tmp_path):
    spec_file(tmp_path, "family: encoder-only\n")
    err = error_of("bad.yaml")
    assert (err.file, err.line, err.field) == ("bad.yaml", 3, "encoder")
    assert "family encoder-only needs a" in err.message
    write(tmp_path / "two.yaml", BASE.replace("decoder:", "encoder:\n  layers: 1\n  attention: {heads: 1}\n  ffn: {hidden: 4}\ndecoder:"))
    err = error_of("two.yaml")
    assert (err.line, err.field) == (8, "encoder")
    assert err.message == "family decoder-only has no 'encoder' stack; remove it"


def test_missing_required_field_points_at_its_parent(tmp_path):
    write(tmp_path / "m.yaml", BASE.replace("    heads: 4\n", ""))
    err = error_of("m.yaml")
    assert str(err) == "m.yaml:10: decoder.attention.heads: required field is missing"
    write(tmp_path / "top.yaml", "\n".join(l for l in BASE.splitlines() if not l.startswith("family")))
    assert str(error_of("top.yaml")) == "top.yaml:1: family: required field is missing"


def test_all_errors_are_kept_in_others(tmp_path):
    spec_file(tmp_path, "decoder:\n  layers: 0\n  ffn: {activation: nope, hidden: x}\n")
    err = error_of("bad.yaml")
    fields = [err.field] + [e.field for e in err.others]
    assert fields == ["decoder.layers", "decoder.ffn.hidden", "decoder.ffn.activation"]
    assert all(e.file == "bad.yaml" for e in err.others)


# --------------------------------------------------------------------------- extends errors


def test_extends_cycle(tmp_path):
    write(tmp_path / "a.yaml", "name: a\nextends: b.yaml\n")
    write(tmp_path / "b.yaml", "name: b\n\nextends: ./a.yaml\n")
    err = error_of("a.yaml")
    assert str(err) == "b.yaml:3: extends: extends cycle: a.yaml -> b.yaml -> a.yaml"
    write(tmp_path / "self.yaml", "name: self\nextends: self.yaml\n")
    assert "extends cycle: self.yaml -> self.yaml" in str(error_of("self.yaml"))


def test_missing_extends_target(tmp_path):
    write(tmp_path / "x.yaml", "name: x\nextends: gpt2-smal\n")
    err = error_of("x.yaml")
    assert (err.file, err.line, err.field) == ("x.yaml", 2, "extends")
    assert "no spec named 'gpt2-smal'" in err.message and "did you mean 'gpt2-small'" in err.message
    write(tmp_path / "y.yaml", "name: y\n# parent\nextends: ./gpt2-smal.yaml\n")
    err = error_of("y.yaml")
    assert (err.file, err.line, err.field) == ("y.yaml", 3, "extends")
    assert "no spec file './gpt2-smal.yaml'" in err.message and "gpt2-small" in err.message


def test_extends_requires_a_name_of_its_own(tmp_path):
    write(tmp_path / "x.yaml", "extends: gpt2-tiny\nd_model: 32\n")
    err = error_of("x.yaml")
    assert str(err) == "x.yaml:1: name: a spec that extends another must set its own name"


def test_extends_must_be_a_string(tmp_path):
    write(tmp_path / "x.yaml", "name: x\nextends: [gpt2-tiny]\n")
    assert "expected a catalog name or a file path" in str(error_of("x.yaml"))
