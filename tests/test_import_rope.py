"""Importer rules around RoPE (issue 15): partial rotary in the llama family as
transformers reads it, and phi3's refusals. The phi3 and starcoder2 checkpoints are
compared with transformers in tests/test_import.py (CAUSAL)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from tests.hf_trained_like import assert_matches  # noqa: E402
from tests.importing import SMALL, batch, save, zoo_module  # noqa: E402
from tests.test_import import CAUSAL  # noqa: E402


def test_llama_partial_rotary_factor_is_what_transformers_does(tmp_path):
    """transformers' llama ignores partial_rotary_factor with the default rope (every
    dimension of the head rotates): the import rotates the whole head too (fraction 1), and
    the logits agree; with a scaled rope transformers cannot run it, and the import refuses."""
    make = lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, partial_rotary_factor=0.5, **SMALL))  # noqa: E731
    hf = save(make(), tmp_path / "hf")
    assert hf.model.rotary_emb.inv_freq.numel() == 4  # head_dim 8: all of it rotates
    imported = import_folder(tmp_path / "hf")
    assert imported.spec.positional.fraction == 1.0
    ids, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        assert_matches("llama partial", zoo_module(imported)(ids, mask), expected, mask)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {**config["rope_parameters"], "rope_type": "linear", "factor": 2.0}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="partial_rotary_factor=0.5 with rope_type='linear'"):
        import_folder(tmp_path / "hf")


def test_phi3_refusals_are_listed_at_once(tmp_path):
    """A rope type other than default / longrope, a partial rotary count transformers
    rounds to an odd number, and an unknown activation: one message, before any weight."""
    save(CAUSAL["phi3"](), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {**config["rope_parameters"], "rope_type": "dynamic", "partial_rotary_factor": 0.4}
    config["hidden_act"] = "tanh"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(CheckpointError) as err:
        import_folder(tmp_path / "hf")
    for field in ("rope_type='dynamic'", "partial_rotary_factor=0.4 (rotates int(head_dim=8 x 0.4) = 3", 'hidden_act="tanh"'):
        assert field in str(err.value), str(err.value)
