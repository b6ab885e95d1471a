"""Mixture-of-experts checkpoints (mixtral, qwen2_moe, qwen3_moe, olmoe) imported into the
zoo and verified against transformers as tests/test_import.py verifies the dense decoders:
4 experts, top-2, hidden 32, 2 layers, saved with save_pretrained with random-init and
trained-like weights; logits of the torch module and the ONNX artifact on a batch padded
right and left, cached decoding (the build's check), and with trained-like weights 16
greedy tokens equal to transformers' generate. What the zoo cannot reproduce is refused
from config.json alone."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from tests.hf_trained_like import kind_weight_cases  # noqa: E402
from tests.importing import SMALL, check_imported_decoder  # noqa: E402

MOE = dict(num_key_value_heads=2, num_experts_per_tok=2)
CAUSAL = {
    # renormalised top-2 of 4 SwiGLU experts, a sliding window
    "mixtral": lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(num_local_experts=4, sliding_window=6, **MOE, **SMALL)),
    # raw top-k weights (norm_topk_prob false), a shared expert with its sigmoid gate, q/k/v biases
    "qwen2_moe": lambda: transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        num_experts=4, moe_intermediate_size=16, shared_expert_intermediate_size=48, **MOE, **SMALL)),
    # renormalised, QK-norm per head, head_dim 12 (not hidden / heads = 8)
    "qwen3_moe": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        num_experts=4, moe_intermediate_size=16, norm_topk_prob=True, head_dim=12, **MOE, **SMALL)),
    # RMSNorm over the whole q and k projections, raw top-k weights
    "olmoe": lambda: transformers.OlmoeForCausalLM(transformers.OlmoeConfig(num_experts=4, eos_token_id=2, **MOE, **SMALL)),
}


@pytest.mark.parametrize("kind, weights", kind_weight_cases(sorted(CAUSAL), []))
def test_moe_checkpoint_matches_transformers(kind, weights, tmp_path):
    """Logits within the fp32 rule; with trained-like weights (routing and logits far from
    ties) also the greedy tokens equal transformers'."""
    def four_experts(imported):
        assert imported.spec.decoder.ffn.experts.count == 4

    check_imported_decoder(kind, CAUSAL[kind], weights, tmp_path, expect=four_experts)


REFUSALS = {  # model_type: config fields the zoo cannot reproduce -> what the message names
    "qwen2_moe": (dict(decoder_sparse_step=2, mlp_only_layers=[0]), ("decoder_sparse_step=2", "mlp_only_layers=[0]")),
    "qwen3_moe": (dict(decoder_sparse_step=2, mlp_only_layers=[0]), ("decoder_sparse_step=2", "mlp_only_layers=[0]")),
    "olmoe": (dict(clip_qkv=8.0), ("clip_qkv=8.0",)),
}


@pytest.mark.parametrize("model_type", sorted(REFUSALS))
def test_what_the_zoo_cannot_reproduce_is_refused_before_weights(model_type, tmp_path):
    """Layers left dense (decoder_sparse_step, mlp_only_layers) and OLMoE's clip_qkv: refused,
    every field named, from config.json alone (the folder has no weights)."""
    fields, named = REFUSALS[model_type]
    config = transformers.AutoConfig.for_model(model_type, num_experts=4, num_experts_per_tok=2, **fields, **SMALL)
    config.save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError) as err:
        import_folder(tmp_path / "hf")
    message = str(err.value)
    assert all(n in message for n in named) and "no weights" not in message, message
