"""BERT, BART and Marian checkpoints imported into the zoo, verified against
transformers: a small random model (hidden 32, 2 layers, 4 heads, vocab 100, every
parameter perturbed so norms, biases and the token-type row matter) is saved with
save_pretrained, imported, and compared with transformers for the zoo's torch module
and its ONNX artifact on a right-padded batch (real positions only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from compiler import build  # noqa: E402
from compiler.artifact import build_artifact  # noqa: E402
from compiler.importers import CheckpointError, import_folder  # noqa: E402
from compiler.weights import save_tensors  # noqa: E402
from runtime import load  # noqa: E402

TOL = 1e-4
V = 100
BERT = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
SEQ2SEQ = dict(
    vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=64, decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=1, decoder_start_token_id=2,
)
MODELS = {
    "bert": lambda: transformers.BertModel(transformers.BertConfig(**BERT)),
    "bert-mlm": lambda: transformers.BertForMaskedLM(transformers.BertConfig(**BERT)),
    "roberta": lambda: transformers.RobertaModel(transformers.RobertaConfig(**{**BERT, "max_position_embeddings": 66})),
    "roberta-mlm": lambda: transformers.RobertaForMaskedLM(transformers.RobertaConfig(**{**BERT, "max_position_embeddings": 66})),
    "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(scale_embedding=True, **SEQ2SEQ)),
    "marian": lambda: transformers.MarianMTModel(
        transformers.MarianConfig(activation_function="swish", scale_embedding=True, **SEQ2SEQ)
    ),
}


@torch.no_grad()
def make(kind: str, folder):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "embed_positions" not in name or kind != "marian":  # Marian's sinusoids stay exact
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
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


def real_max_abs(a, b, mask) -> float:
    a, b = torch.as_tensor(np.asarray(a)).float(), torch.as_tensor(np.asarray(b)).float()
    return float((a - b).abs()[mask.bool()].max())


def imported_artifact(imported, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_tensors(imported.state, path)
    folder, manifest, _ = build_artifact(imported.spec, tmp_path / "art", weights=path)
    assert manifest["parity"]["passed"]
    return load(folder)


def zoo_module(imported):
    model = build(imported.spec)
    model.load_state_dict(imported.state, strict=True)
    return model.eval()


@pytest.mark.parametrize("kind", ["bert", "bert-mlm", "roberta", "roberta-mlm"])
def test_bert_matches_transformers(kind, tmp_path):
    hf = make(kind, tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    emb, mlm = imported.spec.embedding, kind.endswith("-mlm")
    assert (emb.token_types, emb.norm, emb.pooler, emb.output_transform, emb.output_bias) == (
        hf.config.type_vocab_size, True, not mlm, mlm, mlm
    )
    if kind.startswith("roberta"):
        assert imported.spec.positional.offset == 2 and imported.spec.max_seq_len == 64
    ids, mask = right_padded(11, seed=5)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        ref = {"last_hidden_state": out.hidden_states[-1]}
        if not mlm:
            ref["pooler_output"] = out.pooler_output
        else:
            ref["logits"] = out.logits
        got = dict(zip(("last_hidden_state", "logits", "pooler_output"), zoo_module(imported)(ids, mask)))
    onnx = imported_artifact(imported, tmp_path).forward({"model": {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}})
    for name, want in ref.items():
        full = torch.ones(want.shape[:2], dtype=torch.long) if name == "pooler_output" else mask
        err_torch, err_onnx = real_max_abs(got[name], want, full), real_max_abs(onnx[name], want, full)
        print(f"{kind} {name}: torch {err_torch:.2e} onnx {err_onnx:.2e}")
        assert err_torch <= TOL and err_onnx <= TOL, (name, err_torch, err_onnx)


@pytest.mark.parametrize("kind", ["bart", "marian"])
def test_seq2seq_matches_transformers(kind, tmp_path):
    hf = make(kind, tmp_path / "hf")
    imported = import_folder(tmp_path / "hf")
    spec = imported.spec
    assert spec.embedding.output_bias and spec.embedding.scale_by_sqrt_d
    assert spec.embedding.norm == (kind == "bart")
    assert spec.positional.kind == ("learned" if kind == "bart" else "sinusoidal")
    src, src_mask = right_padded(10, seed=6)
    tgt, tgt_mask = right_padded(8, seed=7)
    with torch.no_grad():
        want = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
        got = zoo_module(imported)(src, src_mask, tgt, tgt_mask)
    inputs = {
        "encoder": {"input_ids": src.numpy(), "attention_mask": src_mask.numpy()},
        "decoder": {"decoder_input_ids": tgt.numpy(), "decoder_attention_mask": tgt_mask.numpy(), "encoder_attention_mask": src_mask.numpy()},
    }
    onnx = imported_artifact(imported, tmp_path).forward(inputs)
    err_torch, err_onnx = real_max_abs(got, want, tgt_mask), real_max_abs(onnx["logits"], want, tgt_mask)
    print(f"{kind} logits: torch {err_torch:.2e} onnx {err_onnx:.2e}")
    assert err_torch <= TOL and err_onnx <= TOL


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
