"""Importers of the parallel-residual decoders (gpt_neox, phi, gptj, falcon), verified
against transformers as tests/test_import.py does: a tiny checkpoint with trained-like
(default suite) or random-init (slow) weights, logits on a batch padded right and left,
the artifact's cached decoding (checked by the build), 16 greedy tokens."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from tests.hf_trained_like import kind_weight_cases  # noqa: E402
from tests.importing import SMALL, V, check_imported_decoder  # noqa: E402

NEOX = dict(SMALL, attention_dropout=0.0, hidden_dropout=0.0)
FALCON = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_hidden_size=64, max_position_embeddings=64)
PARALLEL = {
    # Pythia: per-head fused qkv, rotary_pct 0.5 of head_dim 8, two input norms in parallel, untied embed_out
    "gpt_neox": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(rotary_pct=0.5, rotary_emb_base=500, **NEOX)),
    "gpt_neox-sequential": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        rotary_pct=0.5, use_parallel_residual=False, **NEOX)),
    # Phi-2: partial_rotary_factor 0.5, one shared input_layernorm, lm_head bias; Phi-1.5 style qk_layernorm, GQA
    "phi": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(partial_rotary_factor=0.5, **SMALL)),
    "phi-qk-layernorm": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(
        partial_rotary_factor=0.75, qk_layernorm=True, num_key_value_heads=2, **SMALL)),
    # GPT-J: interleaved RoPE on rotary_dim 4 of head_dim 8, one shared ln_1, lm_head bias
    "gptj": lambda: transformers.GPTJForCausalLM(transformers.GPTJConfig(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_inner=64, rotary_dim=4, n_positions=64)),
    # Falcon-7B: multi-query, parallel on one shared input_layernorm, no bias, tied output
    "falcon": lambda: transformers.FalconForCausalLM(transformers.FalconConfig(**FALCON)),
    # Falcon-40B: new decoder architecture, ln_attn / ln_mlp, 2 KV groups of 2 queries each, with bias
    "falcon-new": lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        new_decoder_architecture=True, num_kv_heads=2, bias=True, **FALCON)),
    # sequential layers, multi-head with the per-head [q, k, v] layout, untied
    "falcon-sequential": lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        multi_query=False, parallel_attn=False, bias=True, tie_word_embeddings=False, **FALCON)),
}


def cases() -> list:
    """The trained-like case of each model_type in the default suite; its variants (a '-' in
    the kind) and the random-init cases in the slow target."""
    return [p if "-" not in p.values[0] or p.marks else pytest.param(*p.values, id=p.id, marks=pytest.mark.slow)
            for p in kind_weight_cases(sorted(PARALLEL), [])]


@pytest.mark.parametrize("kind, weights", cases())
def test_parallel_checkpoint_matches_transformers(kind, weights, tmp_path):
    check_imported_decoder(kind, PARALLEL[kind], weights, tmp_path)


@pytest.mark.parametrize(
    "config, fields",
    [
        ({"model_type": "falcon", **FALCON, "alibi": True, "new_decoder_architecture": True, "parallel_attn": False},
         ("alibi=true", "new_decoder_architecture=True with parallel_attn=False")),
        ({"model_type": "falcon", **FALCON, "num_ln_in_parallel_attn": 2, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
         ("num_ln_in_parallel_attn=2 without new_decoder_architecture", "rope_type='dynamic'")),
        ({"model_type": "gptj", "vocab_size": V, "n_embd": 32, "n_head": 4, "n_layer": 2, "rotary_dim": 3, "activation_function": "tanh"},
         ("rotary_dim=3", 'activation_function="tanh"')),
        ({"model_type": "gpt_neox", **NEOX, "hidden_act": "tanh", "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
         ('hidden_act="tanh"', "rope_type='dynamic'")),
    ],
    ids=["falcon-alibi", "falcon-norms", "gptj-rotary-dim", "gpt_neox"],
)
def test_what_cannot_be_reproduced_is_refused_before_any_weight(config, fields, tmp_path):
    """Every field in one message, from config.json alone (the folder has no weights)."""
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        import_folder(tmp_path)
    for field in fields:
        assert field in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "make, queries_keys",
    [
        (PARALLEL["gpt_neox"], lambda hd: [r for h in range(4) for r in range(3 * h * hd, 3 * h * hd + 2 * hd)]),  # per head q, k
        (PARALLEL["falcon"], lambda hd: list(range(5 * hd))),  # multi-query: 4 queries, 1 key
        (PARALLEL["falcon-new"], lambda hd: [r for g in range(2) for r in range(4 * g * hd, 4 * g * hd + 3 * hd)]),  # 2 groups
    ],
    ids=["gpt_neox", "falcon-mqa", "falcon-new"],
)
def test_trained_like_finds_the_queries_and_keys_of_a_fused_projection(make, queries_keys):
    from compiler.query_keys import query_key_columns

    model = make()
    name = next(n for n, _ in model.named_modules() if n.endswith("query_key_value"))
    module = model.get_submodule(name)
    assert query_key_columns(name, module, model).tolist() == queries_keys(8)
