"""Oracle nobody here wrote: torch.nn.Transformer.

The catalog's base Transformer, with weights copied from a torch.nn.Transformer
(plus token embeddings scaled by sqrt(d_model), sinusoidal positions and the tied
output projection), must give that module's logits within 1e-5, in torch and in
the exported ONNX graphs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from compiler import build

ORACLE_TOL = 1e-5


def reference_positions(length: int, d_model: int) -> torch.Tensor:
    """The tutorial formula, written independently of compiler.positional."""
    pe = torch.zeros(length, d_model)
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


def make_reference(spec) -> nn.Transformer:
    enc, dec = spec.encoder, spec.decoder
    torch.manual_seed(1234)
    ref = nn.Transformer(
        d_model=spec.d_model,
        nhead=enc.attention.heads,
        num_encoder_layers=enc.layers,
        num_decoder_layers=dec.layers,
        dim_feedforward=enc.ffn.hidden,
        dropout=spec.dropout,
        activation="relu",
        layer_norm_eps=enc.norm.eps,
        batch_first=True,
        norm_first=False,
    )
    return ref.eval()


def copy_attention(ours, theirs: nn.MultiheadAttention) -> None:
    q, k, v = theirs.in_proj_weight.chunk(3)
    qb, kb, vb = theirs.in_proj_bias.chunk(3)
    for proj, w, b in ((ours.q, q, qb), (ours.k, k, kb), (ours.v, v, vb)):
        proj.weight.copy_(w)
        proj.bias.copy_(b)
    ours.o.weight.copy_(theirs.out_proj.weight)
    ours.o.bias.copy_(theirs.out_proj.bias)


def copy_norm(ours, theirs: nn.LayerNorm) -> None:
    ours.weight.copy_(theirs.weight)
    ours.bias.copy_(theirs.bias)


def copy_ffn(ours, theirs) -> None:
    for proj, linear in ((ours.up, theirs.linear1), (ours.down, theirs.linear2)):
        proj.weight.copy_(linear.weight)
        proj.bias.copy_(linear.bias)


@torch.no_grad()
def copy_weights(model, ref: nn.Transformer) -> None:
    for mine, theirs in zip(model.encoder.layers, ref.encoder.layers):
        copy_attention(mine.self_attn, theirs.self_attn)
        copy_ffn(mine.ffn, theirs)
        copy_norm(mine.norm_attn.norm, theirs.norm1)
        copy_norm(mine.norm_ffn.norm, theirs.norm2)
    for mine, theirs in zip(model.decoder.layers, ref.decoder.layers):
        copy_attention(mine.self_attn, theirs.self_attn)
        copy_attention(mine.cross_attn, theirs.multihead_attn)
        copy_ffn(mine.ffn, theirs)
        copy_norm(mine.norm_attn.norm, theirs.norm1)
        copy_norm(mine.norm_cross.norm, theirs.norm2)
        copy_norm(mine.norm_ffn.norm, theirs.norm3)
    copy_norm(model.encoder.final_norm, ref.encoder.norm)
    copy_norm(model.decoder.final_norm, ref.decoder.norm)


def right_padded(lengths: list[int], width: int, vocab: int, gen: torch.Generator):
    ids = torch.randint(0, vocab, (len(lengths), width), generator=gen)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids, mask


def reference_logits(ref: nn.Transformer, embed: torch.Tensor, src, src_mask, tgt, tgt_mask) -> torch.Tensor:
    d = embed.shape[1]
    pe = reference_positions(max(src.shape[1], tgt.shape[1]), d)
    src_x = embed[src] * math.sqrt(d) + pe[: src.shape[1]]
    tgt_x = embed[tgt] * math.sqrt(d) + pe[: tgt.shape[1]]
    causal = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), diagonal=1)  # True = masked
    out = ref(
        src_x,
        tgt_x,
        tgt_mask=causal,
        src_key_padding_mask=src_mask == 0,
        tgt_key_padding_mask=tgt_mask == 0,
        memory_key_padding_mask=src_mask == 0,
    )
    return out @ embed.t()


def oracle_case(name: str):
    spec = zoo.load(name)
    ref = make_reference(spec)
    model = build(spec, seed=0)
    copy_weights(model, ref)
    gen = torch.Generator().manual_seed(7)
    src, src_mask = right_padded([11, 7, 4], 11, spec.vocab_size, gen)
    tgt, tgt_mask = right_padded([9, 9, 5], 9, spec.vocab_size, gen)
    with torch.no_grad():
        expected = reference_logits(ref, model.embed.weight, src, src_mask, tgt, tgt_mask)
    return spec, model, (src, src_mask, tgt, tgt_mask), expected


def real_positions_error(got: np.ndarray, expected: torch.Tensor, tgt_mask: torch.Tensor) -> float:
    # nn.Transformer's fast path zeroes padded positions and positions differ there; compare real tokens
    real = tgt_mask.bool().numpy()
    return float(np.abs(got[real] - expected.numpy()[real]).max())


@pytest.mark.parametrize("name", ["transformer-tiny", "transformer-base"])
def test_torch_module_matches_nn_transformer(name):
    spec, model, (src, src_mask, tgt, tgt_mask), expected = oracle_case(name)
    with torch.no_grad():
        got = model(src, src_mask, tgt, tgt_mask)
    err = real_positions_error(got.numpy(), expected, tgt_mask)
    assert err <= ORACLE_TOL, f"{name}: max abs error {err:.3g} against torch.nn.Transformer"
    assert float(expected.abs().max()) > 1e-2  # the comparison is not between near-zero tensors


def _onnx_against_oracle(name, tmp_path):
    from zoo.app.build import build_artifact
    from compiler.weights import save_weights
    from runtime import load

    spec, model, (src, src_mask, tgt, tgt_mask), expected = oracle_case(name)
    weights = tmp_path / "weights.safetensors"
    save_weights(model, weights)
    folder, manifest, _ = build_artifact(spec, tmp_path / "artifact", weights=weights)
    assert manifest["parity"]["passed"]
    session = load(folder)
    logits = session.forward(
        {
            "encoder": {"input_ids": src.numpy(), "attention_mask": src_mask.numpy()},
            "decoder": {
                "decoder_input_ids": tgt.numpy(),
                "decoder_attention_mask": tgt_mask.numpy(),
                "encoder_attention_mask": src_mask.numpy(),
            },
        }
    )["logits"]
    err = real_positions_error(logits, expected, tgt_mask)
    assert err <= ORACLE_TOL, f"{name}: ONNX max abs error {err:.3g} against torch.nn.Transformer"


def test_onnx_matches_nn_transformer_tiny(tmp_path):
    _onnx_against_oracle("transformer-tiny", tmp_path)


@pytest.mark.slow
def test_onnx_matches_nn_transformer_base(tmp_path):
    _onnx_against_oracle("transformer-base", tmp_path)
