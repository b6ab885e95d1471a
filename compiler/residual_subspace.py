"""A low-rank residual stream for the trained-like generator (compiler.trained_like):
trained models' activations live mostly in a few directions that their weights are
aligned with, which is why elementwise weight error (rounding, int8 blocks) costs them
little signal. Random weights have no such alignment."""

from __future__ import annotations

import math

import torch

SQUARE_WRITERS = ("o", "o_proj", "out_proj", "dense", "c_proj", "wo", "out_lin")


@torch.no_grad()
def align_residual(roles, rank: float, off: float, gen: torch.Generator) -> None:
    """With ``rank`` < 1: the residual stream lives mostly in a random subspace
    of that share of d_model, as a trained model's activations are low-rank and aligned
    with its weights. Embeddings and the projections that write the residual map into
    it (norm kept), the projections that read the residual read it at gain 1 and the
    rest at ``off``. Elementwise weight error (rounding, int8 blocks) then
    costs less signal, as in a trained model (benchmarks/anchors.py calibrates it
    against the real checkpoint of issue 13). Off by default."""
    if rank >= 1.0:
        return
    d = roles.d_model
    r = max(1, round(rank * d))
    basis, _ = torch.linalg.qr(torch.randn(d, r, generator=gen))
    proj = basis @ basis.T
    reader = proj + off * (torch.eye(d) - proj)
    m = reader / math.sqrt(r / d + off ** 2 * (1 - r / d))
    for name, lin in roles.linears:
        conv = type(lin).__name__ == "Conv1D"  # GPT-2's (in, out) layout
        w = lin.weight.T if conv else lin.weight  # (out, in)
        out, fan_in = w.shape
        writer = out == d and (fan_in != d or name.rsplit(".", 1)[-1] in SQUARE_WRITERS)
        if writer:
            w = m @ w
            if getattr(lin, "bias", None) is not None:
                lin.bias.copy_(m @ lin.bias)
        elif fan_in == d:
            w = w @ reader
        lin.weight.copy_(w.T if conv else w)
    for e in [roles.embedding, *roles.other_embeddings]:
        e.weight.copy_(e.weight @ m)
