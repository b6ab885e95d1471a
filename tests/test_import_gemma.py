"""Gemma 2 and Gemma 3 checkpoints imported into the zoo and verified against transformers as
tests/test_import.py verifies the others (random-init and trained-like weights, a batch padded
right and left, cached decoding in the build, 16 greedy tokens with trained-like weights): norms
before and after each sublayer (sandwich, (1 + w) RMSNorm), sliding and full layers, the attention
and logit softcaps and query_pre_attn_scalar (Gemma 2), per-head QK-norm and a RoPE per layer type,
the full layers' scaled (Gemma 3); the refusals, all in one message before any weight is read; marked
slow: the random-init cases and the fused (--optimize) builds."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from tests.hf_trained_like import kind_weight_cases  # noqa: E402
from tests.importing import SMALL, check_imported_decoder, checkpoint  # noqa: E402

GEMMA = dict(SMALL, num_key_value_heads=2, sliding_window=4)
CAUSAL = {
    # layers sliding, full, sliding (Gemma 2's alternation), head_dim 12, query_pre_attn_scalar 16 (not 12),
    # softcaps low enough to bite (scores of trained-like weights reach tens)
    "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**dict(
        GEMMA, num_hidden_layers=3, head_dim=12, query_pre_attn_scalar=16, attn_logit_softcapping=20.0, final_logit_softcapping=15.0))),
    # layers sliding, full (pattern 2); RoPE base 10000 on the sliding layer, 1e6 with linear scaling on the full one
    "gemma3_text": lambda: transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**dict(
        GEMMA, head_dim=16, query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0}}))),
}


@pytest.mark.parametrize("kind, weights", kind_weight_cases(sorted(CAUSAL), []))
def test_gemma_checkpoint_matches_transformers(kind, weights, tmp_path):
    """Logits within the fp32 rule; with trained-like weights also the greedy tokens."""
    check_imported_decoder(kind, CAUSAL[kind], weights, tmp_path)


def test_gemma_spec_mapping(tmp_path):
    """The fields Gemma 3 maps: sandwich plus-one norms, QK-norm, the per-type RoPE, the window."""
    checkpoint(CAUSAL["gemma3_text"], "random", tmp_path / "hf")
    spec = import_folder(tmp_path / "hf").spec
    stack = spec.decoder
    assert (stack.norm.placement, stack.norm.kind, stack.attention.qk_norm.kind) == ("sandwich", "rmsnorm-plus-one", "rmsnorm-plus-one")
    assert [t.attention for t in stack.layer_types] == ["sliding", "full"] and stack.attention.window == 4
    assert [t.rope.theta for t in stack.layer_types] == [10000.0, 1000000.0]
    assert stack.layer_types[0].rope.scaling is None and stack.layer_types[1].rope.scaling.factor == 4.0
    assert spec.embedding.scale_by_sqrt_d and spec.embedding.logit_softcap is None and stack.attention.scale is None


def test_gemma_unsupported_fields_are_refused_at_once(tmp_path):
    """Every field the zoo cannot reproduce, in one message, before the weights are read."""
    folder = tmp_path / "hf"
    checkpoint(CAUSAL["gemma2"], "random", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(use_bidirectional_attention=True, final_logit_softcapping=0.0, hidden_activation="gelu_fast",
                  query_pre_attn_scalar=-1, sliding_window=None, layer_types=["sliding_attention", "chunked_attention", "full_attention"])
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(CheckpointError) as e:
        import_folder(folder)
    message = str(e.value)
    for field in ("use_bidirectional_attention=true", "final_logit_softcapping=0.0", 'hidden_activation="gelu_fast"', "query_pre_attn_scalar=-1",
                  "chunked_attention", "sliding_window=null"):
        assert field in message, message


def test_older_gemma3_config_maps_as_transformers_reads_it(tmp_path):
    """A Gemma 3 config.json of the older format (rope_theta + rope_scaling for the full layers,
    rope_local_base_freq for the sliding ones, sliding_window_pattern, no layer_types) maps to
    the layer types and RoPE transformers derives from it; Gemma 2 27B's query_pre_attn_scalar 144
    over head_dim 128 to attention.scale 144 ** -0.5."""
    from compiler.importers import map_config

    raw = dict(GEMMA, num_hidden_layers=8, head_dim=16, query_pre_attn_scalar=16, rope_theta=1000000.0, rope_local_base_freq=10000.0,
               rope_scaling={"rope_type": "linear", "factor": 8.0}, sliding_window_pattern=3, model_type="gemma3_text")
    hf = transformers.Gemma3TextConfig(**{k: v for k, v in raw.items() if k != "model_type"})
    stack = map_config(tmp_path, raw)[0]["decoder"]
    types = stack["layer_types"]
    names = {"sliding": "sliding_attention", "full": "full_attention"}
    assert [names[types[i % len(types)]["attention"]] for i in range(8)] == hf.layer_types
    for entry in types:
        want = hf.rope_parameters[names[entry["attention"]]]
        assert entry["rope"]["theta"] == want["rope_theta"]
        assert (entry["rope"]["scaling"] or {}).get("factor") == want.get("factor")
    gemma2 = dict(GEMMA, head_dim=128, query_pre_attn_scalar=144, model_type="gemma2")
    assert map_config(tmp_path, gemma2)[0]["decoder"]["attention"]["scale"] == 144 ** -0.5


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CAUSAL))
def test_trained_like_gemma_optimized_build_keeps_parity(kind, tmp_path):
    """The fused CPU build (--optimize) passes the build's parity check: Gemma 2's softcapped
    attention stays decomposed (recorded in the lowering), Gemma 3's lowers to Attention."""
    from zoo.app.build import BuildOptions, build_artifact

    checkpoint(CAUSAL[kind], "trained", tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    _, manifest, _ = build_artifact(imported.spec, tmp_path / "artifact", weights=imported.state, options=BuildOptions(optimize=True))
    assert manifest["parity"]["passed"], manifest["parity"]
    attention = manifest["build"]["lowering"]["attention"]
    assert attention["lowered_as"] == ("decomposed" if kind == "gemma2" else "onnx:Attention"), attention
