"""BERT, BART and Marian checkpoints imported into the zoo, verified against
transformers: a small model (hidden 32, 2 layers, 4 heads, vocab 100) with random-init
weights (every parameter perturbed so norms, biases and the token-type row matter) and
with trained-like weights (tests/hf_trained_like.py, post-norm placement) is saved with
save_pretrained, imported, and compared with transformers for the zoo's torch module and
its ONNX artifact on a right-padded batch (real positions only) by the fp32 parity rule
(zoo.spec.contract.parity_rule). Depth: a 24-layer, hidden-64 BERT. The trained-like BERT
also builds at fp16 and int8; marked slow: the trained-like BART at fp16 and int8."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from compiler import build  # noqa: E402
from zoo.app.build import build_artifact  # noqa: E402
from compiler.importers import CheckpointError, import_folder  # noqa: E402
from compiler.weights import save_tensors  # noqa: E402
from runtime import load  # noqa: E402
from tests.hf_trained_like import (  # noqa: E402
    FP32, LOGIT_STD_FLOOR, kind_weight_cases, assert_matches, build_session, logit_std, prepare,
)
from zoo.spec.contract import parity_rule  # noqa: E402

V = 100
BERT = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
BERT_DEEP = dict(BERT, hidden_size=64, num_hidden_layers=24, intermediate_size=128)
SEQ2SEQ = dict(
    vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=64, decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=1, decoder_start_token_id=2,
)
MODELS = {
    "bert": lambda: transformers.BertModel(transformers.BertConfig(**BERT)),
    "bert-mlm": lambda: transformers.BertForMaskedLM(transformers.BertConfig(**BERT)),
    "bert-mlm-24": lambda: transformers.BertForMaskedLM(transformers.BertConfig(**BERT_DEEP)),
    "roberta": lambda: transformers.RobertaModel(transformers.RobertaConfig(**{**BERT, "max_position_embeddings": 66})),
    "roberta-mlm": lambda: transformers.RobertaForMaskedLM(transformers.RobertaConfig(**{**BERT, "max_position_embeddings": 66})),
    "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(scale_embedding=True, **SEQ2SEQ)),
    "marian": lambda: transformers.MarianMTModel(
        transformers.MarianConfig(activation_function="swish", scale_embedding=True, **SEQ2SEQ)
    ),
}
REDUCED = ["fp16", "int8"]


@torch.no_grad()
def make(kind: str, folder, weights: str = "random"):
    """``kind`` with ``weights``: random init with every parameter perturbed, or
    trained-like; BART's final_logits_bias (a buffer) random in both."""
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    gen = torch.Generator().manual_seed(1)
    if weights == "random":
        for name, p in model.named_parameters():
            if "embed_positions" not in name or kind != "marian":  # Marian's sinusoids stay exact
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    else:
        prepare(model, weights)
    if hasattr(model, "final_logits_bias"):
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=gen))
    model.save_pretrained(folder)
    return model


def right_padded(seq: int, seed: int):
    """ids (3, seq); mask: row 0 full, rows 1 and 2 right-padded."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (3, seq), generator=gen)
    mask = torch.ones(3, seq, dtype=torch.long)
    mask[1, seq - 3 :] = 0
    mask[2, seq - 5 :] = 0
    return ids, mask


def zoo_module(imported):
    model = build(imported.spec)
    model.load_state_dict(imported.state, strict=True)
    return model.eval()


def check_bert(kind, weights, hf, imported, session, rule=FP32):
    """Every output the checkpoint has (last hidden state; pooler or MLM logits) of the
    zoo's torch module and of ``session`` against transformers."""
    mlm = "-mlm" in kind
    ids, mask = right_padded(11, seed=5)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        ref = {"last_hidden_state": out.hidden_states[-1]}
        ref.update({"logits": out.logits} if mlm else {"pooler_output": out.pooler_output})
        got = dict(zip(("last_hidden_state", "logits", "pooler_output"), zoo_module(imported)(ids, mask)))
    onnx = session.forward({"model": {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}})
    for name, want in ref.items():
        full = None if name == "pooler_output" else mask
        if rule is FP32:
            assert_matches(f"{kind} {weights} {name} torch", got[name], want, full)
        figures = assert_matches(f"{kind} {weights} {name} onnx", onnx[name], want, full, rule)
        if rule.top1 is not None and "top1" in figures:
            assert figures["top1"] >= rule.top1, figures
    if weights == "trained":
        assert logit_std(ref["logits"] if mlm else ref["last_hidden_state"], mask) >= LOGIT_STD_FLOOR


# roberta-trained in make test-slow: the roberta importer's default case is roberta-mlm, the pooler's bert
BERT_CASES = [p if p.values != ("roberta", "trained") else pytest.param(*p.values, id=p.id, marks=pytest.mark.slow)
              for p in kind_weight_cases(["bert", "bert-mlm", "roberta", "roberta-mlm"], ["bert"])]


@pytest.mark.parametrize("kind, weights", BERT_CASES)
def test_bert_matches_transformers(kind, weights, tmp_path):
    hf = make(kind, tmp_path / "hf", weights)
    imported = import_folder(tmp_path / "hf")
    emb, mlm = imported.spec.embedding, kind.endswith("-mlm")
    assert (emb.token_types, emb.norm, emb.pooler, emb.output_transform, emb.output_bias) == (
        hf.config.type_vocab_size, True, not mlm, mlm, mlm
    )
    if kind.startswith("roberta"):
        assert imported.spec.positional.offset == 2 and imported.spec.max_seq_len == 64
    check_bert(kind, weights, hf, imported, imported_artifact(imported, tmp_path))


@pytest.mark.slow
def test_deep_trained_like_bert_matches_transformers(tmp_path):
    """24 post-norm layers at hidden 64 with trained-like weights (slow, as the deep Llama and
    T5 are; the default suite builds 24 trained-like layers in tests/test_planted_bugs.py)."""
    hf = make("bert-mlm-24", tmp_path / "hf", "trained")
    imported = import_folder(tmp_path / "hf")
    assert imported.spec.encoder.layers == 24
    check_bert("bert-mlm-24", "trained", hf, imported, imported_artifact(imported, tmp_path))


@pytest.mark.parametrize("precision", REDUCED)
def test_trained_like_bert_builds_at_reduced_precision(precision, tmp_path):
    """A trained-like BERT builds with --precision fp16 / int8 (the build's parity at that
    precision), and its outputs stay within that precision's rule of transformers'."""
    hf = make("bert-mlm", tmp_path / "hf", "trained")
    imported = import_folder(tmp_path / "hf")
    session = build_session(imported, tmp_path / "art", precision=precision)
    check_bert("bert-mlm", "trained", hf, imported, session, parity_rule("float32", precision))


def imported_artifact(imported, tmp_path):
    """Built from a weights file (the CLI's path), fp32, parity checked by the build."""
    path = tmp_path / "weights.safetensors"
    save_tensors(imported.state, path)
    folder, manifest, _ = build_artifact(imported.spec, tmp_path / "art", weights=path)
    assert manifest["parity"]["passed"]
    return load(folder)


def check_seq2seq(kind, weights, hf, imported, session, rule=FP32):
    src, src_mask = right_padded(10, seed=6)
    tgt, tgt_mask = right_padded(8, seed=7)
    with torch.no_grad():
        want = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
        got = zoo_module(imported)(src, src_mask, tgt, tgt_mask)
    inputs = {
        "encoder": {"input_ids": src.numpy(), "attention_mask": src_mask.numpy()},
        "decoder": {"decoder_input_ids": tgt.numpy(), "decoder_attention_mask": tgt_mask.numpy(), "encoder_attention_mask": src_mask.numpy()},
    }
    onnx = session.forward(inputs)
    if rule is FP32:
        assert_matches(f"{kind} {weights} logits torch", got, want, tgt_mask)
    figures = assert_matches(f"{kind} {weights} logits onnx", onnx["logits"], want, tgt_mask, rule)
    if rule.top1 is not None:
        assert figures["top1"] >= rule.top1, figures
    if weights == "trained":
        assert logit_std(want, tgt_mask) >= LOGIT_STD_FLOOR


@pytest.mark.parametrize("kind, weights", kind_weight_cases(["bart", "marian"], ["bart"]))
def test_seq2seq_matches_transformers(kind, weights, tmp_path):
    hf = make(kind, tmp_path / "hf", weights)
    imported = import_folder(tmp_path / "hf")
    spec = imported.spec
    assert spec.embedding.output_bias and spec.embedding.scale_by_sqrt_d
    assert spec.embedding.norm == (kind == "bart")
    assert spec.positional.kind == ("learned" if kind == "bart" else "sinusoidal")
    check_seq2seq(kind, weights, hf, imported, imported_artifact(imported, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("precision", REDUCED)
def test_trained_like_bart_builds_at_reduced_precision(precision, tmp_path):
    """Slow (two encoder-decoder exports); the default suite's case is BERT's."""
    hf = make("bart", tmp_path / "hf", "trained")
    imported = import_folder(tmp_path / "hf")
    session = build_session(imported, tmp_path / "art", precision=precision)
    check_seq2seq("bart", "trained", hf, imported, session, parity_rule("float32", precision))


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "kind, changes, field",
    [
        ("bert", {"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ("bert", {"is_decoder": True}, "is_decoder"),
        ("roberta", {"hidden_act": "relu"}, "hidden_act"),
        ("bart", {"normalize_before": True}, "normalize_before"),
        ("bart", {"add_bias_logits": True}, "add_bias_logits"),
        ("marian", {"share_encoder_decoder_embeddings": False}, "share_encoder_decoder_embeddings"),
        ("marian", {"decoder_vocab_size": 120}, "decoder_vocab_size"),
    ],
)
def test_refusals_list_the_field(kind, changes, field, tmp_path):
    torch.manual_seed(0)
    MODELS[kind]().save_pretrained(tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=field):
        import_folder(tmp_path)
