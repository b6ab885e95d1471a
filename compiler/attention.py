"""Attention: score functions (the implementations of zoo.spec.variants.SCORES, one
signature), the shared attend() step, and separate self- and cross-attention layers.

Every score maps q (B, H, Tq, hd), k (B, KV, Tk, hd) -> scores (B, H, Tq, Tk), where
KV (kv_heads) divides H and each key head serves H / KV consecutive query heads (GQA,
MQA). Dot-product scores fold the query groups into the matmul (``grouped_qk``)
instead of copying each key head H / KV times: with a long cache, that copy would cost
more than the attention itself. The
softmax runs in fp32 whatever the dtype; masked positions are set to the dtype's
lowest finite value (never -inf), so a fully masked row (a padding query) gives a
uniform row instead of NaN, in torch and in ONNX alike.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from compiler.variants import implement
from zoo.spec import variants

Rotate = Callable[[torch.Tensor], torch.Tensor]
KV = tuple[torch.Tensor, torch.Tensor]  # a layer's cached keys and values, each (B, kv_heads, T, hd)


def repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, KV, T, hd) -> (B, heads, T, hd), each kv head repeated for its query heads."""
    b, kv, t, hd = x.shape
    if kv == heads:
        return x
    return x[:, :, None].expand(b, kv, heads // kv, t, hd).reshape(b, heads, t, hd)


def grouped_qk(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q (B, H, Tq, hd) @ k (B, KV, Tk, hd)^T -> (B, H, Tq, Tk) without repeating k."""
    b, h, t, hd = q.shape
    kv = k.shape[1]
    if kv == h:
        return q @ k.transpose(-1, -2)
    return (q.reshape(b, kv, (h // kv) * t, hd) @ k.transpose(-1, -2)).reshape(b, h, t, -1)


def grouped_pv(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """p (B, H, Tq, Tk) @ v (B, KV, Tk, hd) -> (B, H, Tq, hd) without repeating v."""
    b, h, t, tk = p.shape
    kv = v.shape[1]
    if kv == h:
        return p @ v
    return (p.reshape(b, kv, (h // kv) * t, tk) @ v).reshape(b, h, t, -1)


class ScaledDot(nn.Module):
    """softmax(q k^T / sqrt(hd)) (Vaswani et al.)."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(head_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return grouped_qk(q, k) * self.scale  # (B, H, Tq, Tk)


class Dot(nn.Module):
    """q k^T, unscaled (Luong's dot; T5 folds the scale into its initialisation);
    ``scale`` (attention.scale) multiplies it where a spec sets one."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.scale = 1.0

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = grouped_qk(q, k)  # (B, H, Tq, Tk)
        return scores * self.scale if self.scale != 1.0 else scores


class Additive(nn.Module):
    """v_h . tanh(W_q,h q + W_k,h k) per head (Bahdanau et al.)."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.w_q = nn.Parameter(torch.zeros(heads, head_dim, head_dim))
        self.w_k = nn.Parameter(torch.zeros(heads, head_dim, head_dim))
        self.v = nn.Parameter(torch.zeros(heads, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        qa = q @ self.w_q  # (B, H, Tq, hd)
        ka = repeat_kv(k, q.shape[1]) @ self.w_k  # (B, H, Tk, hd): per query head's own W_k
        hidden = torch.tanh(qa[:, :, :, None, :] + ka[:, :, None, :, :])  # (B, H, Tq, Tk, hd)
        return (hidden @ self.v[None, :, None, :, None]).squeeze(-1)  # (B, H, Tq, Tk)


class Bilinear(nn.Module):
    """q^T W_h k per head (Luong's general score)."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(heads, head_dim, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return grouped_qk(q @ self.w, k)  # (B, H, Tq, Tk)


class Cosine(nn.Module):
    """tau_h * cos(q, k): q and k L2-normalised per head, a learned temperature per
    head (Henry et al. 2020, "Query-Key Normalization"; Swin v2's scaled cosine attention).
    Normalised in fp32 whatever the dtype."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(heads))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        qn = nn.functional.normalize(q.float(), dim=-1) * self.temperature.float()[:, None, None]  # (B, H, Tq, hd)
        kn = nn.functional.normalize(k.float(), dim=-1)  # (B, KV, Tk, hd)
        return grouped_qk(qn.to(q.dtype), kn.to(k.dtype))  # (B, H, Tq, Tk)


SCORES: dict[str, type[nn.Module]] = implement(
    variants.SCORES,
    {
        "scaled-dot": ScaledDot,
        "dot": Dot,
        "additive": Additive,
        "bilinear": Bilinear,
        "cosine": Cosine,
    },
)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    score: nn.Module,
    allowed: torch.Tensor,
    bias: Optional[torch.Tensor],
    dropout: nn.Module,
    softcap: Optional[float] = None,
) -> torch.Tensor:
    """q (B, H, Tq, hd), k/v (B, KV, Tk, hd), allowed (B|1, 1, Tq, Tk) bool,
    bias (B|1, H, Tq, Tk) or None -> (B, H, Tq, hd); ``softcap``: scores -> c tanh(scores / c)."""
    scores = score(q, k).float()
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if bias is not None:
        scores = scores + bias.float()
    scores = torch.where(allowed, scores, torch.finfo(torch.float32).min)
    probs = dropout(torch.softmax(scores, dim=-1).to(v.dtype))
    return grouped_pv(probs, v)


class _Attention(nn.Module):
    """Projections shared by self- and cross-attention; kv_heads < heads shares
    each key/value head among heads // kv_heads query heads (GQA; 1 -> MQA).
    ``q_norm`` / ``k_norm``: QK-norm, over each head (``norm_heads``) or the whole projection."""

    def __init__(
        self, d_model: int, *, heads: int, kv_heads: int, head_dim: int, qkv_bias: bool, out_bias: bool, score: nn.Module,
        dropout: float, q_norm: Optional[nn.Module] = None, k_norm: Optional[nn.Module] = None, norm_heads: bool = True,
        softcap: Optional[float] = None,
    ):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q = nn.Linear(d_model, heads * head_dim, bias=qkv_bias)
        self.k = nn.Linear(d_model, kv_heads * head_dim, bias=qkv_bias)
        self.v = nn.Linear(d_model, kv_heads * head_dim, bias=qkv_bias)
        self.o = nn.Linear(heads * head_dim, d_model, bias=out_bias)
        self.q_norm, self.k_norm, self.norm_heads = q_norm, k_norm, norm_heads
        self.softcap = softcap
        self.score = score
        self.drop = nn.Dropout(dropout)

    def split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, self.head_dim).transpose(1, 2)  # (B, heads, T, hd)

    def _project(self, x: torch.Tensor, linear: nn.Module, norm: Optional[nn.Module], heads: int) -> torch.Tensor:
        """x (B, T, d) -> (B, heads, T, hd), QK-normed when ``norm`` is given."""
        y = linear(x)
        if norm is not None and not self.norm_heads:
            y = norm(y)
        y = self.split(y, heads)
        return norm(y) if norm is not None and self.norm_heads else y

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self._project(x, self.q, self.q_norm, self.heads)  # (B, H, T, hd)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return self._project(x, self.k, self.k_norm, self.kv_heads)  # (B, KV, T, hd)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.o(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))  # (B, T, d)


class SelfAttention(_Attention):
    """x (B, T, d) attends to itself and to the cached keys/values of earlier
    tokens; positions enter through ``rotate`` (RoPE on q and the new k) or ``bias``
    (ALiBi, relative bias), masks through ``allowed`` (over past + new keys).

    Returns the output and the present cache (k, v), each (B, kv_heads, P + T, hd):
    keys are cached after rotation and before the GQA expansion, so a cache holds
    kv_heads heads, not heads."""

    def forward(
        self,
        x: torch.Tensor,
        *,
        allowed: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        rotate: Optional[Rotate] = None,
        past: Optional[KV] = None,
    ) -> tuple[torch.Tensor, KV]:
        q, k = self.queries(x), self.keys(x)  # (B, H, T, hd), (B, KV, T, hd)
        v = self.split(self.v(x), self.kv_heads)  # (B, KV, T, hd)
        if rotate is not None:
            q, k = rotate(q), rotate(k)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)  # (B, KV, P + T, hd)
            v = torch.cat((past[1], v), dim=2)
        y = attend(q, k, v, score=self.score, allowed=allowed, bias=bias, dropout=self.drop, softcap=self.softcap)
        return self.merge(y), (k, v)


class CrossAttention(_Attention):
    """Decoder states x (B, Tq, d) attend to encoder states. Their keys and values
    (``project``) depend on the encoder output only, so generation computes them
    once (in the encoder graph) and every decoder step reuses them."""

    def project(self, memory: torch.Tensor) -> KV:
        """memory (B, S, d) -> k, v, each (B, kv_heads, S, hd)."""
        return self.keys(memory), self.split(self.v(memory), self.kv_heads)

    def forward(self, x: torch.Tensor, memory_kv: KV, *, allowed: torch.Tensor) -> torch.Tensor:
        q = self.queries(x)  # (B, H, Tq, hd)
        k, v = memory_kv  # (B, KV, Tk, hd)
        return self.merge(attend(q, k, v, score=self.score, allowed=allowed, bias=None, dropout=self.drop, softcap=self.softcap))
