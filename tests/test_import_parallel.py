"""Importers of the parallel-residual decoders (gpt_neox, phi, gptj, falcon), verified
against transformers as tests/test_import.py does: a tiny checkpoint with trained-like
(default suite) or random-init (slow) weights, logits on a batch padded right and left,
the artifact's cached decoding (checked by the build), 16 greedy tokens."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from tests.hf_trained_like import build_session, kind_weight_cases  # noqa: E402
from tests.test_import import SMALL, V, check_decoder, check_greedy, checkpoint  # noqa: E402

NEOX = dict(SMALL, attention_dropout=0.0, hidden_dropout=0.0)
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
}


def cases() -> list:
    """The trained-like case of each model_type in the default suite; its variants (a '-' in
    the kind) and the random-init cases in the slow target."""
    return [p if "-" not in p.values[0] or p.marks else pytest.param(*p.values, id=p.id, marks=pytest.mark.slow)
            for p in kind_weight_cases(sorted(PARALLEL), [])]


@pytest.mark.parametrize("kind, weights", cases())
def test_parallel_checkpoint_matches_transformers(kind, weights, tmp_path):
    hf = checkpoint(PARALLEL[kind], weights, tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    session = build_session(imported, tmp_path / "artifact")
    check_decoder(kind, hf, imported, session, weights)
    if weights == "trained":
        check_greedy(kind, hf, session)
