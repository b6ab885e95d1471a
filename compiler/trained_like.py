"""Trained-like weights: give a randomly initialised transformer (a zoo module or a
Hugging Face one) the activation statistics of a trained checkpoint, so that parity,
precision and importer tests see what users' models do to the numbers.

Random init gives logits and hidden states of order 1. Trained decoders have (Sun et al. 2024,
"Massive activations"; Dettmers et al. 2022, LLM.int8(); Kovaleva et al. 2021, "BERT busters"; and the 135M checkpoint of issue 13):

- logits in the tens: a logit standard deviation of ``logit_std`` (7);
- a few residual channels 100-10,000x the median one on a few tokens (BOS, delimiters):
  ``outlier_channels`` (3) at ``massive_ratio`` (300x) on ``outlier_token_share`` (1/8)
  of the vocabulary, planted in the token embedding and carried by the residual;
- outlier features in the inputs of the matmuls, on every token, from norm weights
  that are large in those channels: ``input_outlier_ratio`` (4x; post-norm: POST_NORM);
- sharp attention with wide margins: attention sinks on the massive tokens
  (compiler.attention_sinks, ``sink_margin`` 6), q and k otherwise scaled so that the
  scores' spread grows ``score_gain`` (1.5)x, a score's own scale and QK-norm gains ``scale_gain`` (6)x;
- non-zero biases and relative-position tables of a few units (T5's span -10..5);
- a residual stream of rank ``residual_rank`` (d_model / 8) aligned with the weights
  (compiler.residual_subspace): it sets what elementwise weight error costs.

Calibrated against the real 135M checkpoint of issue 13 (benchmarks/anchors.py), by
measurement on the model itself over a fixed random batch: Linears get unit gain; each
norm's weight is set in a pre-hook as it runs so that its output's normal channels have
RMS 1 on normal tokens; the outlier channels are planted at ``massive_ratio`` times the
residual's median channel, the sinks set, the norms calibrated again; the last norm
gives the logits ``logit_std`` (reading the outlier channels at weight 0). ``measure``
reports the statistics (docs/parity.md lists them per catalog family).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
from torch import nn

from compiler.attention_sinks import plant_shared_channels, plant_sinks, sharpen_scales
from compiler.norm_gain import scale_gain, set_gain
from compiler.projections import is_linear, stacked_experts
from compiler.query_keys import query_key_columns  # the q/k output units of a projection, by name
from compiler.residual_stream import normal_mask as _normal_mask, residual as _residual
from compiler.residual_subspace import align_residual
from compiler.variants import variant_of
from zoo.spec.families import family
from zoo.spec.variants import PLACEMENTS

# Post-norm stacks renormalize the residual after every sublayer: only large norm weights
# keep the channels massive, and then they dominate every token's normalized input, so
# the sinks and the low-rank stream (calibrated on a pre-norm decoder) do not apply.
POST_NORM = {"input_outlier_ratio": 20.0, "score_gain": 4.0, "residual_rank": 1.0, "sink_margin": 0.0}
LogitsFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

QK_NORM_NAMES = ("q_norm", "k_norm", "q_layernorm", "k_layernorm")  # QK-norm (zoo, Qwen3, OLMo 2, Gemma 3, Phi)


@dataclass(frozen=True)
class TrainedLike:
    """The statistics to reach (see the module docstring for their sources)."""

    logit_std: float = 7.0
    outlier_channels: int = 3
    massive_ratio: float = 300.0
    outlier_token_share: float = 0.125
    input_outlier_ratio: float = 4.0
    score_gain: float = 1.5
    bias_std: float = 0.1
    norm_jitter: float = 0.1
    embedding_std: float = 0.02
    relative_bias_std: float = 2.0
    residual_rank: float = 0.125
    off_subspace: float = 0.1
    sink_margin: float = 6.0
    scale_gain: float = 6.0  # a score's own scale parameter (cosine's temperature: Swin v2's 10 -> 60, below its 100)


@dataclass
class Roles:
    """What the generator needs to know about a module tree, found by ``find_roles``."""

    embedding: nn.Embedding
    norms: list[tuple[str, nn.Module]]
    linears: list[tuple[str, nn.Module]]
    other_embeddings: list[nn.Module]
    tables: list[nn.Parameter]  # per-head relative-position tables
    unscaled: list[nn.Module]  # attention modules whose scores are a plain q·k (T5)
    qk_norms: list[nn.Module]  # norms on q and k: they bound the scores, their gains sharpen them

    @property
    def d_model(self) -> int:
        return self.embedding.embedding_dim


def _is_norm(module: nn.Module, d: int) -> bool:
    return "Norm" in type(module).__name__ and isinstance(w := getattr(module, "weight", None), torch.Tensor) and w.shape == (d,)


def find_roles(model: nn.Module) -> Roles:
    """The token embedding (the largest nn.Embedding), norms, projections, other
    embeddings (positions, token types) and relative-position tables of ``model``."""
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        raise ValueError("trained_like: the model has no nn.Embedding")
    token = max(embeddings, key=lambda m: m.num_embeddings)
    d = token.embedding_dim
    # tied copies of the token embedding (T5's, BART's per-stack embed_tokens) and frozen
    # tables (Marian's sinusoids: computed, not trained) are not other embeddings
    embeddings = [m for m in embeddings if m is token or (m.weight is not token.weight and m.weight.requires_grad)]
    qk_norms = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in QK_NORM_NAMES]
    norms = [(n, m) for n, m in model.named_modules() if _is_norm(m, d) and m not in qk_norms]
    linears = [(n, m) for n, m in model.named_modules() if is_linear(m)] + stacked_experts(model)
    others = [m for m in embeddings if m is not token and m.embedding_dim == d]
    tables = [m.weight for m in embeddings if m is not token and m.embedding_dim != d]
    tables += [m.weight for m in model.modules() if type(m).__name__ == "RelativeBias"]
    unscaled = [m for m in model.modules() if isinstance(getattr(m, "q", None), nn.Linear) and _unscaled(m)]
    return Roles(token, norms, linears, others, tables, unscaled, qk_norms)


def _unscaled(attention: nn.Module) -> bool:  # a plain q.k without 1/sqrt(hd): zoo dot, T5
    variant = variant_of(getattr(attention, "score", None))
    return getattr(variant, "dot_product", None) == "unscaled" or type(attention).__name__ == "T5Attention"


def _fan_in(module: nn.Module) -> int:
    return module.weight.shape[0] if type(module).__name__ == "Conv1D" else module.weight.shape[1]


QK_NORM_NAMES = ("q_norm", "k_norm", "q_layernorm", "k_layernorm")  # QK-norm (zoo, Qwen3, OLMo 2, Gemma 3, Phi)

@torch.no_grad()
def _reinit(model: nn.Module, roles: Roles, cfg: TrainedLike, gen: torch.Generator, channels: torch.Tensor) -> None:
    """Unit-gain projections, q/k sharpened (and reading the outlier ``channels``
    at 1/input_outlier_ratio, so that those do not decide every score), non-zero
    biases, embeddings at ``embedding_std``, norms at 1 (calibrated later), tables of
    a few units."""
    normal = lambda shape, std: torch.randn(shape, generator=gen) * std  # noqa: E731
    for name, m in roles.linears:
        m.weight.copy_(normal(m.weight.shape, 1.0 / math.sqrt(_fan_in(m))))
        cols = query_key_columns(name, m, model)
        if cols is not None:
            gain = math.sqrt(cfg.score_gain)
            if type(m).__name__ == "Conv1D":  # (in, out)
                m.weight[:, cols] *= gain
                m.weight[channels, cols] /= cfg.input_outlier_ratio
            else:  # (out, in)
                m.weight[cols] *= gain
                m.weight[cols if isinstance(cols, slice) else cols[:, None], channels] /= cfg.input_outlier_ratio
        if getattr(m, "bias", None) is not None:
            m.bias.copy_(normal(m.bias.shape, cfg.bias_std))
    for m in roles.unscaled:  # q·k not divided by sqrt(head_dim) (T5): the scale is in the weights
        m.q.weight /= math.sqrt(getattr(m, "head_dim", None) or m.key_value_proj_dim)
    for m in [roles.embedding, *roles.other_embeddings]:
        m.weight.copy_(normal(m.weight.shape, cfg.embedding_std))
    for t in roles.tables:
        t.copy_(normal(t.shape, cfg.relative_bias_std))
    for _, m in roles.norms:
        set_gain(m, 1.0)
        if getattr(m, "bias", None) is not None:
            m.bias.copy_(normal(m.bias.shape, cfg.bias_std))
    for m in roles.qk_norms:  # q, k normalised: their projections cannot sharpen the scores, their gains (sqrt 6 each) do
        set_gain(m, math.sqrt(cfg.scale_gain) * (1.0 + cfg.norm_jitter * torch.randn(m.weight.shape, generator=gen)))
        if getattr(m, "bias", None) is not None:
            m.bias.zero_()
    align_residual(roles, cfg.residual_rank, cfg.off_subspace, gen)


def _normalized(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the norm computes before its weight: RMS or layer normalization."""
    x = x.float()
    eps = float(getattr(module, "eps", getattr(module, "variance_epsilon", 1e-6)))
    if getattr(module, "bias", None) is not None or isinstance(module, nn.LayerNorm):
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _batch(vocab: int, outlier_tokens: torch.Tensor, gen: torch.Generator, batch: int = 4, seq: int = 32):
    """Random ids (batch, seq) with every row holding at least one outlier token, mask of ones."""
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    if outlier_tokens.numel():
        ids[:, seq // 3] = outlier_tokens[torch.randint(0, outlier_tokens.numel(), (batch,), generator=gen)]
    return ids, torch.ones_like(ids)


def _run(model: nn.Module, logits_fn: LogitsFn, ids, mask, hooks: list[tuple[nn.Module, Callable]]) -> torch.Tensor:
    handles = [m.register_forward_pre_hook(fn) for m, fn in hooks]
    try:
        with torch.no_grad():
            return logits_fn(model, ids, mask)
    finally:
        for h in handles:
            h.remove()


def _norm_order(model, roles: Roles, logits_fn, ids, mask) -> list[nn.Module]:
    """The norms in the order the forward pass calls them (the last feeds the output)."""
    order: list[nn.Module] = []
    hooks = [(m, lambda mod, args: order.append(mod) if mod not in order else None) for _, m in roles.norms]
    _run(model, logits_fn, ids, mask, hooks)
    return order


@torch.no_grad()
def _calibrate_norms(model, roles, logits_fn, ids, mask, channels, final, cfg, gen) -> None:
    """One pass: each norm, as it runs, gets the weight that gives the normal channels
    of its output RMS 1 on normal tokens (with jitter); the outlier channels get
    ``input_outlier_ratio`` times that, except in the final norm (0 there: trained
    final norms all but drop those channels; with a tied output the embedding rows
    that carry them would otherwise decide every logit)."""
    d = roles.d_model
    others = torch.ones(d, dtype=torch.bool).index_fill_(0, channels, False)

    def hook(module, args):
        flat = args[0].detach().reshape(-1, d).float()
        rows = flat[_normal_mask(flat, channels)]
        n = _normalized(module, rows if rows.shape[0] else flat)
        q = float(n[:, others].pow(2).mean().sqrt()) or 1.0
        jitter = 1.0 + cfg.norm_jitter * torch.randn(d, generator=gen)
        w = jitter / q
        ratio = 0.0 if module is final else cfg.input_outlier_ratio
        w[channels] = ratio * float(w[others].abs().mean())
        set_gain(module, w)
        if module is final and getattr(module, "bias", None) is not None:
            module.bias[channels] = 0.0

    _run(model, logits_fn, ids, mask, [(m, hook) for _, m in roles.norms])




def _logit_std(logits: torch.Tensor, ids: torch.Tensor, outlier_tokens: torch.Tensor) -> float:
    normal = ~torch.isin(ids, outlier_tokens)
    return float(logits.float()[normal].std())


@torch.no_grad()
def make_trained_like(
    model: nn.Module,
    logits_fn: LogitsFn,
    *,
    vocab_size: int,
    placement: str = "pre",
    config: TrainedLike = TrainedLike(),
    seed: int = 0,
    seq: int = 32,
) -> dict:
    """Give ``model`` trained-like weights in place (see the module docstring);
    ``logits_fn(model, ids, mask)`` returns its logits (B, T, V). ``placement``: an
    entry of zoo.spec.variants.PLACEMENTS ("pre": norm, sublayer, residual add; "post";
    "sandwich"; "branch-post"), which says how to treat the residual stream; ``seq``: the length of
    the calibration batch (at most the model's longest sequence). Returns ``measure``'s
    statistics and the planted channels and tokens (their count and ids)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    if PLACEMENTS[placement].residual == "post":
        config = replace(config, **POST_NORM)
    gen = torch.Generator().manual_seed(seed)
    roles = find_roles(model)
    model.eval()
    d = roles.d_model
    channels = torch.randperm(d, generator=gen)[: config.outlier_channels].sort().values
    share = max(1, round(config.outlier_token_share * vocab_size))
    tokens = torch.randperm(vocab_size, generator=gen)[:share].sort().values
    _reinit(model, roles, config, gen, channels)
    sharpen_scales(model, config.scale_gain)
    ids, mask = _batch(vocab_size, tokens, gen, seq=seq)
    order = _norm_order(model, roles, logits_fn, ids, mask)
    final = order[-1] if order else None
    none = torch.zeros(0, dtype=torch.long)
    _calibrate_norms(model, roles, logits_fn, ids, mask, none, final, config, gen)
    typical, _ = _residual(model, roles, logits_fn, ids, mask, none, placement)
    signs = torch.where(torch.rand(len(channels), generator=gen) < 0.5, -1.0, 1.0)
    magnitude = config.massive_ratio * typical
    for _ in range(3):  # the planted value moves the median channel a little: settle it
        rows = roles.embedding.weight[tokens]
        rows[:, channels] = signs * magnitude * (1 + 0.1 * torch.rand(len(tokens), len(channels), generator=gen))
        roles.embedding.weight[tokens] = rows
        _calibrate_norms(model, roles, logits_fn, ids, mask, channels, final, config, gen)
        if config.sink_margin > 0:
            plant_shared_channels(roles.embedding, tokens, channels, signs)
            run = lambda hooks: _run(model, logits_fn, ids, mask, hooks)  # noqa: E731
            plant_sinks(model, roles.unscaled, channels, config.sink_margin, run, _normal_mask, gen)
            _calibrate_norms(model, roles, logits_fn, ids, mask, channels, final, config, gen)
        typical, peak = _residual(model, roles, logits_fn, ids, mask, channels, placement)
        if abs(math.log(peak / (typical or 1.0) / config.massive_ratio)) < math.log(1.5):
            break
        magnitude *= config.massive_ratio * (typical or 1.0) / peak
    if final is not None:
        scale = config.logit_std / (_logit_std(logits_fn(model, ids, mask), ids, tokens) or 1.0)
        scale_gain(final, scale)
        if getattr(final, "bias", None) is not None:
            final.bias.mul_(scale)
    stats = measure(model, logits_fn, vocab_size=vocab_size, channels=channels, tokens=tokens, placement=placement, seed=seed + 1, seq=seq)
    return {**stats, "channels": channels.tolist(), "outlier_tokens": len(tokens), "outlier_token_ids": tokens.tolist(),
            "config": asdict(config)}


def measure(model, logits_fn: LogitsFn, *, vocab_size: int, channels, tokens, placement: str = "pre", seed: int = 1, seq: int = 32) -> dict:
    """The statistics aimed at, on a fresh batch: logit std (normal tokens), the residual's outlier
    ratio (middle layers) and median channel, and the median over self-attention layers of the
    median over heads and queries of the largest attention weight, on normal tokens after a massive one."""
    roles = find_roles(model)
    gen = torch.Generator().manual_seed(seed)
    channels, tokens = torch.as_tensor(channels, dtype=torch.long), torch.as_tensor(tokens, dtype=torch.long)
    ids, mask = _batch(vocab_size, tokens, gen, seq=seq)
    typical, peak = _residual(model, roles, logits_fn, ids, mask, channels, placement)
    peak_attention: list[float] = []
    layers = [m for m in model.modules() if type(m).__name__ == "SelfAttention"]  # zoo modules

    def attention(module, args):
        x = args[0]
        q, k = module.queries(x), module.keys(x)  # (B, H|KV, T, hd)
        k = k.repeat_interleave(module.heads // module.kv_heads, dim=1)
        p = torch.softmax(module.score(q, k).float(), dim=-1)  # (B, H, T, T), unmasked
        peak_attention.append(float(p.max(-1).values.median()))

    logits = _run(model, logits_fn, ids, mask, [])
    pool = torch.ones(vocab_size, dtype=torch.bool).index_fill_(0, tokens, False).nonzero()[:, 0]
    text = pool[torch.randint(0, len(pool), ids.shape, generator=gen)]  # normal tokens after a massive one, as text has
    text[:, 0] = tokens[0] if tokens.numel() else text[:, 0]
    _run(model, logits_fn, text, mask, [(m, attention) for m in layers])
    normal = logits.float()[~torch.isin(ids, tokens)]
    return {
        "logit_std": _logit_std(logits, ids, tokens),
        "logit_median_abs": float(normal.abs().median()) if normal.numel() else 0.0,
        "residual_median": typical,
        "residual_outlier_ratio": peak / (typical or 1.0),
        "attention_peak": sorted(peak_attention)[len(peak_attention) // 2] if peak_attention else None,
    }


def zoo_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) of a zoo module (the family decides the call)."""
    if family(model).crossed:
        return model(ids, mask, ids, mask)
    out = model(ids, mask)
    return out[1] if isinstance(out, tuple) else out


def zoo_trained_like(model: nn.Module, spec, *, seed: int = 0, config: TrainedLike = TrainedLike()) -> dict:
    """``make_trained_like`` for a zoo module built from ``spec``."""
    stacks = [spec.stack(part) for part in ("encoder", "decoder") if getattr(spec, part, None) is not None]
    used = {s.norm.placement for s in stacks}  # a renormalised stream in any stack decides; else the stream is read as placed
    placement = next((p for p in PLACEMENTS if p in used and PLACEMENTS[p].residual == "post"), None) or max(
        used, key=lambda p: PLACEMENTS[p].stream_at == "layer-outputs")
    dtype = next(model.parameters()).dtype
    model.float()  # calibrated in float32; a float16 / bfloat16 spec gets the rounded weights
    stats = make_trained_like(
        model, zoo_logits, vocab_size=spec.vocab_size, placement=placement, config=config, seed=seed, seq=min(32, spec.max_seq_len)
    )
    model.to(dtype)
    return stats
