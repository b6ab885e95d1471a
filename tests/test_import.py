"""Hugging Face checkpoints imported into the zoo, verified against transformers:
a small model, with random-init and with trained-like weights (tests/hf_trained_like.py:
logits of std ~7, massive residual channels), is saved with save_pretrained, imported,
and its outputs compared with transformers for the zoo's torch module and its ONNX
artifact by the fp32 parity rule (zoo.spec.contract.parity_rule), on a batch padded on the
right (and on the left for decoders, positions from the mask). Trained-like decoders
also generate 16 greedy tokens equal to transformers' generate. Marked slow: a 24-layer
Llama and a 12 + 12-layer T5 at hidden 64, and the trained-like Llama and T5 built at
fp16 and int8."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from tests.conftest import ROOT, without_module  # noqa: E402
from tests.hf_trained_like import FP32, LOGIT_STD_FLOOR, kind_weight_cases, assert_matches, build_session, logit_std  # noqa: E402
from tests.importing import (  # noqa: E402  (the helpers the other importer tests share)
    SMALL, V, batch, check_decoder, check_greedy, check_imported_decoder, checkpoint, save, zoo_module,
)
from zoo.spec.contract import parity_rule  # noqa: E402

DEEP = dict(SMALL, hidden_size=64, num_hidden_layers=24, intermediate_size=128)  # trained-like depth at small width
PHI3_TOKENS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)  # the defaults (32000) lie outside a vocabulary of 100
CAUSAL = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=V, n_positions=64)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, rope_theta=500.0, **SMALL)),
    # RoPE scaling (rope_parameters as transformers 5 writes them), trained context 16 of 64
    "llama-linear": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_key_value_heads=2, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}, **SMALL)),
    "llama-llama3": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16, "rope_theta": 500.0}, **SMALL)),
    "llama-yarn": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0}, **SMALL)),
    "llama-tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=1, tie_word_embeddings=True, **SMALL)),
    "mistral-window": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(num_key_value_heads=2, sliding_window=4, **SMALL)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(num_key_value_heads=2, **SMALL)),
    # Gemma: RMSNorm with (1 + w), embeddings times sqrt(hidden), GeGLU, head_dim 12, tied output
    "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(num_key_value_heads=2, head_dim=12, **SMALL)),
    # Granite's multipliers, away from 1
    "granite": lambda: transformers.GraniteForCausalLM(transformers.GraniteConfig(
        num_key_value_heads=2, embedding_multiplier=6.0, attention_multiplier=0.05, residual_multiplier=0.3, logits_scaling=4.0, **SMALL)),
    # QK-norm and an explicit head_dim (12, not hidden_size / heads = 8)
    # LayerNorm with bias, plain gelu-tanh FFN, biases everywhere, GQA, a sliding window, tied output
    "starcoder2": lambda: transformers.Starcoder2ForCausalLM(transformers.Starcoder2Config(
        num_key_value_heads=2, sliding_window=6, rope_theta=1000.0, **SMALL)),
    # Phi-4-mini's layout: fused qkv_proj and gate_up_proj, partial rotary 0.75, a tied output, a window
    "phi3": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(
        num_key_value_heads=2, partial_rotary_factor=0.75, tie_word_embeddings=True, sliding_window=6, **PHI3_TOKENS, **SMALL)),
    # LongRoPE trained at 16 of 64 (3 rotated pairs, distinct factors): greedy prompt + 16 tokens cross 16,
    # where transformers switches to the long factors mid-generation (cached keys keep the short ones)
    "phi3-longrope": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(
        num_key_value_heads=2, original_max_position_embeddings=16, rope_parameters={
            "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75, "original_max_position_embeddings": 16,
            "short_factor": [1.0, 1.3, 2.1], "long_factor": [2.0, 5.0, 11.0]}, **PHI3_TOKENS, **SMALL)),
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(num_key_value_heads=2, head_dim=12, **SMALL)),
}
DEEP_LLAMA = lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, rope_theta=1e5, **DEEP))  # noqa: E731
T5 = {
    "t5": dict(feed_forward_proj="relu"),
    "t5-v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
T5_SMALL = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4, vocab_size=V)
T5_DEEP = dict(T5_SMALL, d_model=64, d_kv=16, d_ff=128, num_layers=12, num_decoder_layers=12)


# trained-like cases in make test-slow, each covered by a default case of the same model_type or
# feature: qwen2 / qwen3 by qwen2-layers / qwen3-layers (tests/test_import_layers.py), llama by
# llama-random and the scaled llamas, llama-tied (MQA, tied) by falcon and gemma, llama-linear by
# gemma3_text's linear scaling (tests/test_import_gemma.py), phi3 (fused projections, partial rotary)
# by phi3-longrope, its tied output and window by starcoder2
COVERED = {"qwen2", "qwen3", "llama", "llama-tied", "llama-linear", "phi3"}
DECODER_CASES = [p if not (p.values[0] in COVERED and p.values[1] == "trained") else pytest.param(*p.values, id=p.id, marks=pytest.mark.slow)
                 for p in kind_weight_cases(sorted(CAUSAL), ["llama"])]


@pytest.mark.parametrize("kind, weights", DECODER_CASES)
def test_decoder_checkpoint_matches_transformers(kind, weights, tmp_path):
    """Logits within the fp32 rule; with trained-like weights (logits far from ties) also
    the greedy tokens equal transformers' (LongRoPE picks one frequency set per batch, its
    longest row: compared with transformers' batched generate)."""
    longrope = kind.endswith("longrope")
    hf, imported, session = check_imported_decoder(kind, CAUSAL[kind], weights, tmp_path, batched=longrope)
    if longrope:  # the long set (a batch of 20 > 16), and the loop recomputes the cache where transformers' Phi-3 does
        check_decoder(kind + "-long", hf, imported, session, weights, seq=20)
        assert session.artifact.cache.refill_at == 16


@pytest.fixture(scope="module")
def deep_llama(tmp_path_factory):
    """A 24-layer, hidden-64 Llama with trained-like weights, imported and built (fp32)."""
    folder = tmp_path_factory.mktemp("deep-llama")
    hf = checkpoint(DEEP_LLAMA, "trained", folder / "hf")
    imported = import_folder(folder / "hf")
    return hf, imported, build_session(imported, folder / "artifact")


@pytest.mark.slow
def test_deep_trained_like_llama_matches_transformers(deep_llama):
    """Slow: about 70 CPU-s of export for 24 layers with a cache."""
    check_decoder("llama-24", *deep_llama, "trained")


@pytest.mark.slow
def test_deep_trained_like_llama_greedy_tokens_equal_transformers(deep_llama):
    hf, _, session = deep_llama
    check_greedy("llama-24", hf, session)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_trained_like_llama_builds_at_reduced_precision(precision, tmp_path):
    """A trained-like Llama builds with --precision fp16 / int8 (the build's parity at that
    precision), and its logits stay within that precision's rule of transformers'. Slow
    (two exports); the default suite's reduced-precision case is BERT's."""
    hf = checkpoint(CAUSAL["llama"], "trained", tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    session = build_session(imported, tmp_path / "artifact", precision=precision)
    check_decoder("llama", hf, imported, session, "trained", parity_rule("float32", precision))


def t5_checkpoint(config: dict, weights: str, folder):
    return checkpoint(lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(**config)), weights, folder)


def check_t5(label, hf, imported, session, weights, rule=FP32):
    src, src_mask = batch(9)
    src_mask[2] = 1  # encoder: right padding only, the transformers convention
    tgt, tgt_mask = batch(6)
    tgt_mask[2] = 1
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
        ours = zoo_module(imported)(src, src_mask, tgt, tgt_mask)
    got = session.forward(
        {
            "encoder": {"input_ids": src.numpy(), "attention_mask": src_mask.numpy()},
            "decoder": {"decoder_input_ids": tgt.numpy(), "decoder_attention_mask": tgt_mask.numpy(), "encoder_attention_mask": src_mask.numpy()},
        }
    )["logits"]
    if rule is FP32:
        assert_matches(f"{label} {weights} torch", ours, expected, tgt_mask)
    figures = assert_matches(f"{label} {weights} onnx", got, expected, tgt_mask, rule)
    if rule.top1 is not None:
        assert figures["top1"] >= rule.top1, figures
    if weights == "trained":
        assert logit_std(expected, tgt_mask) >= LOGIT_STD_FLOOR


# the default suite: the trained-like original T5; T5 v1.1's layout (gated-gelu, untied, no rescaling)
# is mT5's (tests/test_import_more.py), the encoder-decoder random-init case BART's: both slow here
T5_CASES = [p if p.values == ("t5", "trained") else pytest.param(*p.values, id=p.id, marks=pytest.mark.slow)
            for p in kind_weight_cases(sorted(T5), [])]


@pytest.mark.parametrize("kind, weights", T5_CASES)
def test_t5_checkpoint_matches_transformers(kind, weights, tmp_path):
    hf = t5_checkpoint({**T5_SMALL, **T5[kind]}, weights, tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    assert imported.spec.embedding.scale_output_by_inv_sqrt_d == (kind == "t5")  # v1.1 does not rescale
    check_t5(kind, hf, imported, build_session(imported, tmp_path / "artifact"), weights)


@pytest.mark.slow
def test_deep_trained_like_t5_matches_transformers(tmp_path):
    """T5 v1.1 with 12 + 12 layers at hidden 64, trained-like: 24 layers of relative-bias,
    unscaled-dot attention with massive residual channels (slow: about 100 s of export)."""
    hf = t5_checkpoint({**T5_DEEP, **T5["t5-v1.1"]}, "trained", tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    check_t5("t5-v1.1-24", hf, imported, build_session(imported, tmp_path / "artifact"), "trained")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_trained_like_t5_builds_at_reduced_precision(precision, tmp_path):
    """The encoder-decoder family's default-suite case is BART (test_import_bert_bart.py)."""
    hf = t5_checkpoint({**T5_SMALL, **T5["t5-v1.1"]}, "trained", tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    session = build_session(imported, tmp_path / "artifact", precision=precision)
    check_t5("t5-v1.1", hf, imported, session, "trained", parity_rule("float32", precision))


def test_pytorch_bin_and_sharded_checkpoints(tmp_path):
    torch.manual_seed(0)
    hf = save(CAUSAL["llama"](), tmp_path / "safe")
    reference = import_folder(tmp_path / "safe").state
    # pytorch_model.bin, read with torch.load(weights_only=True)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "safe" / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    from_bin = import_folder(tmp_path / "bin").state
    # sharded safetensors with an index
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    from_shards = import_folder(tmp_path / "sharded").state
    for state in (from_bin, from_shards):
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_unsupported_fields_are_all_refused_at_once(tmp_path):
    save(CAUSAL["llama"](), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    config["pretraining_tp"] = 2
    config["rope_parameters"] = {**config["rope_parameters"], "partial_rotary_factor": 0.5}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        import_folder(tmp_path / "hf")
    message = str(err.value)
    for field in ("pretraining_tp=2", "rope_type='dynamic'", "partial_rotary_factor=0.5"):
        assert field in message, message
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "import", str(tmp_path / "hf"), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 2 and "pretraining_tp=2" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model_type", ["qwen2_moe", "qwen3_moe"])
def test_layers_without_experts_are_refused_before_weights(model_type, tmp_path):
    """decoder_sparse_step and mlp_only_layers leave some layers dense: refused, both fields
    named, from config.json alone (the folder has no weights)."""
    config = transformers.AutoConfig.for_model(model_type, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=2,
                                               mlp_only_layers=[0], **SMALL)
    config.save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError) as err:
        import_folder(tmp_path / "hf")
    message = str(err.value)
    assert "decoder_sparse_step=2" in message and "mlp_only_layers=[0]" in message and "no weights" not in message, message


def test_unknown_model_type_and_unmapped_tensors_are_refused(tmp_path):
    save(CAUSAL["gpt2"](), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps(dict(config, model_type="mamba")))
    with pytest.raises(CheckpointError, match="model_type='mamba' is not supported"):
        import_folder(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    from compiler.weights import load_tensors, save_tensors

    state, _ = load_tensors(tmp_path / "hf" / "model.safetensors")
    state["transformer.extra_adapter.weight"] = torch.zeros(2, 2)
    save_tensors(state, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not map.*extra_adapter"):
        import_folder(tmp_path / "hf")


def test_zoo_import_then_build_cli(tmp_path):
    save(CAUSAL["qwen2"](), tmp_path / "hf")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, "-m", "zoo", *map(str, a)], capture_output=True, text=True, env=env)  # noqa: E731
    proc = run("import", tmp_path / "hf", "-o", tmp_path / "imp")
    assert proc.returncode == 0, proc.stderr
    assert "bias: qkv" in (tmp_path / "imp" / "spec.yaml").read_text()
    proc = run("build", tmp_path / "imp" / "spec.yaml", "--weights", tmp_path / "imp" / "weights.safetensors", "-o", tmp_path / "art")
    assert proc.returncode == 0 and "passed" in proc.stdout, proc.stderr
    direct = run("build", tmp_path / "hf", "-o", tmp_path / "art2", "--no-parity")  # the same weights: parity checked above
    assert direct.returncode == 0, direct.stderr
    a = json.loads((tmp_path / "art" / "manifest.json").read_text())
    b = json.loads((tmp_path / "art2" / "manifest.json").read_text())
    assert a["weights_sha256"] == b["weights_sha256"]
    again = run("import", tmp_path / "hf", "-o", tmp_path / "imp")
    assert again.returncode == 2 and "--force" in again.stderr


BLOCK_TOKENIZERS = without_module("tokenizers") + """
import sys
from zoo.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_tokenizer_travels_with_the_artifact(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    save(CAUSAL["gpt2"](), tmp_path / "hf")
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, V)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "hf" / "tokenizer.json"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, "-m", "zoo", *map(str, a)], capture_output=True, text=True, env=env)  # noqa: E731
    proc = run("build", tmp_path / "hf", "-o", tmp_path / "art")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["tokenizer"] == "tokenizer.json" and "tokenizer.json" in manifest["files"]
    text = run("run", tmp_path / "art", "--text", "w1 w2 w3", "--text", "w7", "--repeat", "0")
    assert text.returncode == 0, text.stderr
    assert "input_ids (2, 3)" in text.stdout and "'w" in text.stdout
    ids = run("run", tmp_path / "art", "--ids", "1,2,3", "--repeat", "0")
    assert ids.returncode == 0, ids.stderr
    without = subprocess.run(
        [sys.executable, "-c", BLOCK_TOKENIZERS, "run", str(tmp_path / "art"), "--text", "w1"], capture_output=True, text=True, env=env
    )
    assert without.returncode == 2 and "needs the 'tokenizers' package" in without.stderr
    still = subprocess.run(
        [sys.executable, "-c", BLOCK_TOKENIZERS, "run", str(tmp_path / "art"), "--ids", "1,2"], capture_output=True, text=True, env=env
    )
    assert still.returncode == 0, still.stderr


def test_import_killed_while_replacing_keeps_the_earlier_import(tmp_path):
    """A `zoo import --force` killed between moving the earlier import away and putting the
    new one in place: the next import puts the earlier one back before anything else."""
    from runtime.artifact import staging_name

    save(CAUSAL["llama"](), tmp_path / "hf")
    moved = tmp_path / staging_name("imp", "old", 2**22 + 12345, "0123abcd")  # a pid no process has
    moved.mkdir()
    (moved / "spec.yaml").write_text("# the earlier import\n")
    (moved / "weights.safetensors").write_bytes(b"earlier")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "zoo", "import", tmp_path / "hf", "-o", tmp_path / "imp"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "--force" in proc.stderr, proc.stderr
    assert (tmp_path / "imp" / "weights.safetensors").read_bytes() == b"earlier" and not moved.exists()
