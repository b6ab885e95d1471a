"""Llama-family checkpoints whose layers differ or whose norms sit elsewhere, imported into
the zoo and verified against transformers as tests/test_import.py verifies the others
(random-init and trained-like weights, a batch padded right and left, cached decoding in the
build, 16 greedy tokens with trained-like weights): OLMo 2 (norms after the sublayers,
QK-norm over the projections), Qwen2 / Qwen3 with sliding windows in some layers
(max_window_layers), SmolLM3 (no RoPE in every other layer, sliding windows)."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from tests.hf_trained_like import kind_weight_cases  # noqa: E402
from tests.importing import SMALL, check_imported_decoder  # noqa: E402

CAUSAL = {
    # OLMo 2: norms after the sublayers inside the residual (branch-post), QK-norm over the whole projections
    "olmo2": lambda: transformers.Olmo2ForCausalLM(transformers.Olmo2Config(num_key_value_heads=2, **SMALL)),
    # per-layer attention: max_window_layers 1 < 2 layers (layer 0 full, layer 1 sliding over 4)
    "qwen2-layers": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=1, **SMALL)),
    "qwen3-layers": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        num_key_value_heads=2, head_dim=12, use_sliding_window=True, sliding_window=4, max_window_layers=1, **SMALL)),
    # SmolLM3: layer 1 without RoPE (no_rope_layer_interval 2), and sliding (windows go to the NoPE layers)
    "smollm3": lambda: transformers.SmolLM3ForCausalLM(transformers.SmolLM3Config(
        num_key_value_heads=2, no_rope_layer_interval=2, use_sliding_window=True, sliding_window=4,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, **SMALL)),
}


@pytest.mark.parametrize("kind, weights", kind_weight_cases(sorted(CAUSAL), []))
def test_layered_checkpoint_matches_transformers(kind, weights, tmp_path):
    """Logits within the fp32 rule; with trained-like weights also the greedy tokens."""
    check_imported_decoder(kind, CAUSAL[kind], weights, tmp_path)
