"""Feed-forward blocks (zoo.spec.variants.FFN_KINDS): plain (down(act(up x))), gated
(down(act(gate x) * up x)) and a mixture of experts of either; the activations of
zoo.spec.variants.ACTIVATIONS."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from compiler.variants import implement
from zoo.spec import variants

ACTIVATIONS = implement(
    variants.ACTIVATIONS,
    {
        "relu": F.relu,
        "gelu": F.gelu,
        "gelu-tanh": lambda x: F.gelu(x, approximate="tanh"),
        "silu": F.silu,
    },
)


class FeedForward(nn.Module):
    """x (B, T, d) -> (B, T, d). Gated: SwiGLU with silu, GeGLU with gelu."""

    def __init__(self, d_model: int, hidden: int, *, activation: str, gated: bool, bias: bool, dropout: float):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.gate = nn.Linear(d_model, hidden, bias=bias) if gated else None
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            h = self.act(self.up(x))
        else:
            h = self.act(self.gate(x)) * self.up(x)
        return self.down(self.drop(h))


def top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of x (N, E) along the last axis, largest first, ties broken toward the lower
    index: ONNX TopK's rule, which the exported graph follows. torch.topk leaves ties unspecified,
    so eager torch takes a stable descending sort (the exporter has no stable sort: it gets TopK)."""
    if torch.compiler.is_exporting():
        return torch.topk(x, k, dim=-1)
    values, ids = torch.sort(x, dim=-1, descending=True, stable=True)
    return values[:, :k], ids[:, :k]


class MixtureOfExperts(nn.Module):
    """x (B, T, d) -> (B, T, d): softmax over the router's logits (fp32), the ``top_k`` most
    probable experts (ties: the lower index, ONNX TopK's rule) weighted by their probabilities
    (renormalised to sum 1 with ``normalize``), plus the shared expert, times sigmoid(shared_gate x)
    where there is one.

    The exported graph runs each expert on the tokens routed to it only (``per-expert``);
    FORMULATIONS keeps the others benchmarks/moe.py measured against it."""

    def __init__(
        self,
        *,
        router: nn.Linear,
        experts: list[FeedForward],
        top_k: int,
        normalize: bool,
        shared: Optional[FeedForward] = None,
        shared_gate: Optional[nn.Linear] = None,
    ):
        super().__init__()
        self.router, self.experts = router, nn.ModuleList(experts)
        self.top_k, self.normalize = top_k, normalize
        self.shared, self.shared_gate = shared, shared_gate

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d) -> top-k weights (N, k) fp32 and expert ids (N, k)."""
        probs = torch.softmax(self.router(x).float(), dim=-1)  # (N, E)
        weights, ids = top_k(probs, self.top_k)  # (N, k)
        if self.normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, d), N = B * T
        weights, ids = self.routing(flat)
        out = FORMULATIONS[self.formulation](self, flat, weights, ids)
        if self.shared is not None:
            s = self.shared(flat)
            out = out + (s * torch.sigmoid(self.shared_gate(flat)) if self.shared_gate is not None else s)
        return out.reshape(shape)  # (B, T, d)

    # per-expert (NonZero, Gather, the expert, index_add) against masked dense (every expert on every
    # token) and gather (each token's experts' matrices by id, batched matmuls), ONNX Runtime 1.32 CPU,
    # 1 thread, d 512, 8 SwiGLU experts of hidden 1024, top-2 (benchmarks/moe.py, results/moe.json):
    #   prefill 1x128: dense 21.0 ms, gather 10.0x, per-expert 0.40x; prefill 8x128: gather 9.1x, per-expert 0.26x;
    #   decode 1x1: dense 2.15 ms, gather 1.03x, per-expert 0.37x; decode 8x1: gather 3.1x, per-expert 0.59x.
    # Per-expert computes k/E of dense's FLOPs and reads only the routed experts' weights; gather copies
    # k expert matrices per token (N x k x h x d floats), which costs more than it saves beyond one token.
    # per-expert is the fastest in every case, so it is the one formulation exported.
    formulation = "per-expert"


def _dense(moe: MixtureOfExperts, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, times the routing weights scattered over all experts."""
    sparse = torch.zeros(x.shape[0], len(moe.experts), dtype=weights.dtype, device=x.device)
    sparse = sparse.scatter(1, ids, weights)  # (N, E): the top-k weights, 0 elsewhere
    out = torch.zeros_like(x)
    for e, expert in enumerate(moe.experts):
        out = out + (expert(x) * sparse[:, e : e + 1]).to(x.dtype)
    return out


def _stacked(moe: MixtureOfExperts, name: str) -> torch.Tensor:
    return torch.stack([getattr(e, name).weight for e in moe.experts])  # (E, out, in): a constant of the graph


def _gather(moe: MixtureOfExperts, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Each token's k experts' matrices gathered by id, then batched matmuls (no bias: measurement only)."""
    first = moe.experts[0]
    up = _stacked(moe, "up")[ids]  # (N, k, h, d)
    h = torch.einsum("nkhd,nd->nkh", up, x)
    if first.gate is not None:
        h = first.act(torch.einsum("nkhd,nd->nkh", _stacked(moe, "gate")[ids], x)) * h
    else:
        h = first.act(h)
    y = torch.einsum("nkdh,nkh->nkd", _stacked(moe, "down")[ids], h)  # (N, k, d)
    return (y * weights.unsqueeze(-1).to(y.dtype)).sum(dim=1)


def _per_expert(moe: MixtureOfExperts, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Each expert on the tokens routed to it only (NonZero, Gather, ScatterND add), as transformers
    does; summed in fp32 (ONNX Runtime's CPU ScatterND has no float16 add)."""
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e, expert in enumerate(moe.experts):
        token, slot = torch.nonzero(ids == e, as_tuple=True)  # (M,), (M,)
        y = expert(x[token]).float() * weights[token, slot].unsqueeze(-1)  # (M, d)
        out = out.index_add(0, token, y)
    return out.to(x.dtype)


FORMULATIONS = {"dense": _dense, "gather": _gather, "per-expert": _per_expert}


# the feed-forward kinds of zoo.spec.variants.FFN_KINDS: (d_model, hidden, activation, bias, dropout) -> module;
# moe takes its router and experts built (compiler.builder.build_ffn)
FFN_KINDS = implement(
    variants.FFN_KINDS,
    {
        "plain": lambda d, hidden, **kw: FeedForward(d, hidden, gated=False, **kw),
        "gated": lambda d, hidden, **kw: FeedForward(d, hidden, gated=True, **kw),
        "moe": MixtureOfExperts,
    },
)
