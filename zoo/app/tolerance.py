"""Judging one ONNX output against torch's by the parity rule (zoo.spec.contract.ParityRule):
elementwise, the numpy.allclose form with an absolute term that scales with the
vector each element belongs to,

    |onnx - torch| <= rtol * |torch| + atol * rms(torch's vector)

over the real (unpadded) positions; a vector is the last axis (one token's hidden
state or logits, one head's key). Rounding error in an element comes from the dot
products and norms that made it, so it grows with the size of its whole vector: a
token whose residual carries a channel in the thousands has errors of that order's
share in its small channels too, while a token without one keeps a tight bound. numpy only: the runtime's ``zoo compare
--parity`` and the build's parity check use the same function.

Figures of one output (``judge``):

- ``max_abs``: max |onnx - torch|; ``max_rel``: max_abs / max |torch|;
- ``scale``: the median over vectors of rms(torch's vector) (the absolute term's unit);
- ``worst``: max over elements of |onnx - torch| / allowed; the output is within the
  rule when ``worst <= 1``; ``worst_row``: the batch row where that is, and
  ``allowed`` / ``error`` / ``value``: the bound, the error and torch's value there;
- ``rows``: per batch row, its ``worst`` (which padding side fails);
- ``top1`` and ``positions`` for logits (B, T, V): the share of real positions whose
  arg-max token agrees.
"""

from __future__ import annotations

import numpy as np

TINY = float(np.finfo(np.float32).tiny)  # the bound of an all-zero output: exact


def real_elements(shape: tuple[int, ...], mask: np.ndarray | None) -> np.ndarray | None:
    """A boolean array broadcastable to ``shape`` selecting the real tokens of ``mask``
    (B, T): outputs laid out (B, T, ...) or (B, heads, T, head_dim) (a cache); a mask
    (B,) selects rows (B, ...) (an output pooled from one position); None
    when ``mask`` does not describe the output (every element counts)."""
    if mask is None:
        return None
    m = mask.astype(bool)
    if m.ndim == 1 and len(shape) >= 1 and shape[0] == m.shape[0]:  # one value per row (a pooled output)
        return m.reshape(m.shape + (1,) * (len(shape) - 1))
    if len(shape) >= 2 and tuple(shape[:2]) == m.shape:
        return m.reshape(m.shape + (1,) * (len(shape) - 2))
    if len(shape) == 4 and shape[0] == m.shape[0] and shape[2] == m.shape[1]:
        return m[:, None, :, None]
    return None


def judge(got: np.ndarray, ref: np.ndarray, rule, mask: np.ndarray | None = None) -> dict:
    """The figures of ``got`` (ONNX Runtime) against ``ref`` (torch) under ``rule``
    (a ParityRule), counting the real positions of ``mask`` (B, T) only."""
    a, b = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        inf = float("inf")
        return {"max_abs": inf, "max_rel": inf, "worst": inf, "within": False, "shape": [list(a.shape), list(b.shape)]}
    select = real_elements(b.shape, mask)
    keep = np.ones(b.shape, dtype=bool) if select is None else np.broadcast_to(select, b.shape)
    diff = np.abs(a - b)
    diff[~np.isfinite(a)] = np.inf
    diff = np.where(keep, diff, 0.0)
    values = np.abs(b[keep]) if keep.any() else np.zeros(1)
    rms = np.sqrt(np.mean(b * b, axis=-1, keepdims=True)) if b.ndim else np.abs(b)
    real_rms = rms[np.broadcast_to(keep.any(axis=-1, keepdims=True), rms.shape)] if b.ndim else rms
    scale = float(np.median(real_rms)) if np.size(real_rms) else 0.0
    allowed = np.maximum(rule.rtol * np.abs(b) + rule.atol * rms, TINY)
    ratio = np.where(keep, diff / allowed, 0.0)
    flat = int(np.argmax(ratio)) if ratio.size else 0
    where = np.unravel_index(flat, b.shape) if ratio.size else (0,)
    max_abs = float(diff.max()) if diff.size else 0.0
    out = {
        "max_abs": max_abs,
        "max_rel": max_abs / (float(values.max()) or 1.0),
        "scale": scale,
        "worst": float(ratio.max()) if ratio.size else 0.0,
        "worst_row": int(where[0]),
        "error": float(diff[where]),
        "allowed": float(allowed[where]),
        "value": float(b[where]),
        "rows": [float(r.max()) if r.size else 0.0 for r in ratio] if b.ndim >= 2 else None,
    }
    out["within"] = bool(out["worst"] <= 1.0)
    if mask is not None and a.ndim == 3 and select is not None:
        real = mask.astype(bool)
        out["top1"] = float((a.argmax(-1) == b.argmax(-1))[real].mean()) if real.any() else 1.0
        out["positions"] = int(real.sum())
    return out


def pooled_top1(figures: list[dict]) -> tuple[float | None, int]:
    """Top-1 agreement pooled over every real position of the logits in ``figures``."""
    checked = [f for f in figures if "top1" in f]
    positions = sum(f["positions"] for f in checked)
    if not positions:
        return None, 0
    return sum(f["top1"] * f["positions"] for f in checked) / positions, positions
