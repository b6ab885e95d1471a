"""The one place that reads a ModelSpec and constructs the torch modules."""

from __future__ import annotations

import math

import torch
from torch import nn

from compiler.attention import SCORES, CrossAttention, SelfAttention
from compiler.ffn import FFN_KINDS
from compiler.layers import RESIDUALS, CrossDecoderLayer, DecoderLayer, EncoderLayer, ParallelLayer, Residual
from compiler.model import MODELS, OutputTransform, Stack, ZooModel
from compiler.norms import NORMS
from compiler.positional import POSITIONAL, Rotary
from compiler.variants import init_weights
from zoo.spec import variants
from zoo.spec.families import family
from zoo.spec.model import ModelSpec, Stack as StackSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build(spec: ModelSpec, *, seed: int = 0) -> ZooModel:
    """A freshly initialised module for ``spec`` (deterministic for a given seed),
    in eval mode and the spec's dtype."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_model(spec)
        init_weights(model)
    return model.to(DTYPES[spec.dtype]).eval()


def skeleton(spec: ModelSpec) -> ZooModel:
    """The module structure on the meta device: parameter names and shapes without
    memory or initialisation (for mapping checkpoints onto it)."""
    with torch.device("meta"):
        return _build_model(spec)


def _build_model(spec: ModelSpec) -> ZooModel:
    emb, d = spec.embedding, spec.d_model
    last = spec.stacks()[-1][1]  # the stack whose output is projected
    head_transform = None
    if emb.output_transform:
        head_transform = OutputTransform(
            nn.Linear(d, d), activation=last.ffn.activation, norm=NORMS[last.norm.kind](d, eps=last.norm.eps)
        )
    common = dict(
        vocab_size=spec.vocab_size,
        d_model=spec.d_model,
        tie_output=spec.embedding.tie_output,
        embed_scale=(math.sqrt(spec.d_model) if spec.embedding.scale_by_sqrt_d else 1.0) * emb.multiplier,
        output_scale=1.0 / math.sqrt(spec.d_model) if spec.embedding.scale_output_by_inv_sqrt_d else 1.0,
        token_types=emb.token_types,
        head_transform=head_transform,
        output_bias=emb.output_bias,
        logit_multiplier=emb.logit_multiplier,
        logit_softcap=emb.logit_softcap,
    )
    if emb.pooler:  # encoder-only (ModelSpec's rule); made before the stacks, as the init's order has it
        common["pooler"] = nn.Linear(d, d)
    fam = family(spec)
    return MODELS[fam.name](**{part: build_stack(spec, part) for part in fam.stacks}, **common)


def build_stack(spec: ModelSpec, part: str) -> Stack:
    stack = spec.stack(part)
    causal = part == "decoder"
    crossed = causal and family(spec).crossed
    layers = [build_layer(spec, part, causal=causal, crossed=crossed) for _ in range(stack.layers)]
    hooks = {"absolute": None, "rotary": None, "score-bias": None}
    hook = variants.POSITIONAL[spec.positional.kind].hook
    if hook is not None:
        hooks[hook] = POSITIONAL[spec.positional.kind].from_spec(spec, part)
    types = [stack.layer_type(i) for i in range(stack.layers)]
    positioned = [variants.LAYER_POSITIONS[t.positions].positioned for t in types]
    norm = stack.norm
    return Stack(
        layers=layers,
        causal=causal,
        windows=[stack.attention.window if variants.LAYER_ATTENTION[t.attention].windowed else None for t in types],
        absolute=hooks["absolute"],
        embed_norm=NORMS[norm.kind](spec.d_model, eps=norm.eps) if spec.embedding.norm else None,
        rotary=hooks["rotary"],
        rotaries=layer_rotaries(spec, part, types, positioned, hooks["rotary"]),
        score_bias=hooks["score-bias"],
        positioned=positioned,
        final_norm=NORMS[norm.kind](spec.d_model, eps=norm.eps) if norm.has_final else None,
        dropout=spec.dropout,
    )


def layer_rotaries(spec: ModelSpec, part: str, types: list, positioned: list[bool], default) -> list:
    """Per layer: None (no rotation), the model's rotary, or one for the layer's own RoPE
    base and scaling (one module per distinct base and scaling in the stack)."""
    own: dict = {}
    out = []
    for t, p in zip(types, positioned):
        r = t.rope
        if not p or default is None or r is None or (r.theta, r.scaling) == (spec.positional.theta, spec.positional.scaling):
            out.append(default if p else None)
            continue
        key = (r.theta, r.scaling.model_dump_json() if r.scaling is not None else None)
        if key not in own:
            own[key] = Rotary(spec.rotary_dim(part), theta=r.theta, scaling=r.scaling)
        out.append(own[key])
    return out


def build_attention(spec: ModelSpec, stack: StackSpec, cls: type, part: str) -> nn.Module:
    att = stack.attention
    head_dim = spec.head_dim(part)
    norms: dict = {}
    if att.qk_norm is not None:
        qk, eps = att.qk_norm, att.qk_norm.eps or stack.norm.eps
        per_head = qk.over == "head"
        norms = dict(
            q_norm=NORMS[qk.kind](head_dim if per_head else att.heads * head_dim, eps=eps),
            k_norm=NORMS[qk.kind](head_dim if per_head else att.n_kv_heads * head_dim, eps=eps),
            norm_heads=per_head,
        )
    score = SCORES[att.score](att.heads, head_dim)
    if att.scale is not None:  # dot-product scores only (the spec's rule)
        score.scale = att.scale
    return cls(
        spec.d_model,
        heads=att.heads,
        kv_heads=att.n_kv_heads,
        head_dim=head_dim,
        qkv_bias=att.qkv_bias,
        out_bias=att.out_bias,
        score=score,
        dropout=spec.dropout,
        softcap=att.softcap,
        **norms,
    )


def build_ffn(spec: ModelSpec, stack: StackSpec) -> nn.Module:
    f, d = stack.ffn, spec.d_model
    if f.experts is None:
        return FFN_KINDS[f.kind](d, f.hidden, activation=f.activation, bias=f.bias, dropout=spec.dropout)
    moe, shared = f.experts, f.experts.shared

    def expert(hidden: int) -> nn.Module:
        return FFN_KINDS["gated" if f.gated else "plain"](d, hidden, activation=f.activation, bias=f.bias, dropout=spec.dropout)

    return FFN_KINDS[f.kind](
        router=nn.Linear(d, moe.count, bias=False),
        experts=[expert(f.hidden) for _ in range(moe.count)],
        top_k=moe.top_k,
        normalize=moe.normalize,
        shared=expert(shared.hidden) if shared is not None else None,
        shared_gate=nn.Linear(d, 1, bias=False) if shared is not None and shared.gate else None,
    )


def build_layer(spec: ModelSpec, part: str, *, causal: bool, crossed: bool) -> nn.Module:
    stack = spec.stack(part)
    norm = stack.norm

    place = variants.PLACEMENTS[norm.placement]

    def residual() -> Residual:
        def make(wanted: bool):
            return NORMS[norm.kind](spec.d_model, eps=norm.eps) if wanted else None

        return Residual(make(place.before or place.around), pre=not place.around, dropout=spec.dropout,
                        multiplier=stack.residual_multiplier, post_norm=make(place.after))

    ffn = build_ffn(spec, stack)
    self_attn = build_attention(spec, stack, SelfAttention, part)
    if crossed:
        return CrossDecoderLayer(
            self_attn=self_attn,
            cross_attn=build_attention(spec, stack, CrossAttention, part),
            ffn=ffn,
            norm_attn=residual(),
            norm_cross=residual(),
            norm_ffn=residual(),
        )
    if RESIDUALS[stack.residual] is ParallelLayer:  # pre-norm, no cross-attention (the spec's rules)
        norms = [NORMS[norm.kind](spec.d_model, eps=norm.eps) for _ in range(variants.RESIDUALS[stack.residual].norms)]
        return ParallelLayer(self_attn=self_attn, ffn=ffn, norm_attn=norms[0], norm_ffn=norms[1] if len(norms) > 1 else None,
                             dropout=spec.dropout, multiplier=stack.residual_multiplier)
    cls = DecoderLayer if causal else EncoderLayer
    return cls(self_attn=self_attn, ffn=ffn, norm_attn=residual(), norm_ffn=residual())
