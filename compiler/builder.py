"""The one place that reads a ModelSpec and constructs the torch modules."""

from __future__ import annotations

import math

import torch
from torch import nn

from compiler import positional as pos
from compiler.attention import SCORES, Additive, Bilinear, CrossAttention, SelfAttention
from compiler.ffn import FeedForward
from compiler.layers import CrossDecoderLayer, DecoderLayer, EncoderLayer, Residual
from compiler.model import DecoderOnlyModel, EncoderDecoderModel, EncoderOnlyModel, OutputTransform, Stack, ZooModel
from compiler.norms import NORMS, RMSNorm
from zoo.spec.model import ModelSpec, Stack as StackSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INIT_STD = 0.02


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
        embed_scale=math.sqrt(spec.d_model) if spec.embedding.scale_by_sqrt_d else 1.0,
        output_scale=1.0 / math.sqrt(spec.d_model) if spec.embedding.scale_output_by_inv_sqrt_d else 1.0,
        token_types=emb.token_types,
        head_transform=head_transform,
        output_bias=emb.output_bias,
    )
    if spec.family == "decoder-only":
        return DecoderOnlyModel(decoder=build_stack(spec, "decoder"), **common)
    if spec.family == "encoder-only":
        pooler = nn.Linear(d, d) if emb.pooler else None
        return EncoderOnlyModel(encoder=build_stack(spec, "encoder"), pooler=pooler, **common)
    return EncoderDecoderModel(encoder=build_stack(spec, "encoder"), decoder=build_stack(spec, "decoder"), **common)


def build_stack(spec: ModelSpec, part: str) -> Stack:
    stack = spec.stack(part)
    causal = part == "decoder"
    crossed = causal and spec.family == "encoder-decoder"
    layers = [build_layer(spec, stack, causal=causal, crossed=crossed) for _ in range(stack.layers)]
    absolute = rotary = score_bias = None
    p = spec.positional
    if p.kind == "sinusoidal":
        absolute = pos.Sinusoidal(spec.d_model, halves=p.layout == "halves")
    elif p.kind == "learned":
        absolute = pos.Learned(spec.max_seq_len, spec.d_model, offset=p.offset)
    elif p.kind == "rope":
        rotary = pos.Rotary(spec.rotary_dim(part), theta=p.theta)
    elif p.kind == "alibi":
        score_bias = pos.Alibi(stack.attention.heads)
    elif p.kind == "relative-bias":
        score_bias = pos.RelativeBias(
            stack.attention.heads, buckets=p.buckets, max_distance=p.max_distance, bidirectional=not causal
        )
    norm = stack.norm
    return Stack(
        layers=layers,
        causal=causal,
        window=stack.attention.window,
        absolute=absolute,
        embed_norm=NORMS[norm.kind](spec.d_model, eps=norm.eps) if spec.embedding.norm else None,
        rotary=rotary,
        score_bias=score_bias,
        final_norm=NORMS[norm.kind](spec.d_model, eps=norm.eps) if norm.has_final else None,
        dropout=spec.dropout,
    )


def build_attention(spec: ModelSpec, stack: StackSpec, cls: type) -> nn.Module:
    att = stack.attention
    head_dim = spec.d_model // att.heads
    return cls(
        spec.d_model,
        heads=att.heads,
        kv_heads=att.n_kv_heads,
        qkv_bias=att.qkv_bias,
        out_bias=att.out_bias,
        score=SCORES[att.score](att.heads, head_dim),
        dropout=spec.dropout,
    )


def build_layer(spec: ModelSpec, stack: StackSpec, *, causal: bool, crossed: bool) -> nn.Module:
    norm = stack.norm

    def residual() -> Residual:
        return Residual(NORMS[norm.kind](spec.d_model, eps=norm.eps), pre=norm.placement == "pre", dropout=spec.dropout)

    ffn = FeedForward(
        spec.d_model,
        stack.ffn.hidden,
        activation=stack.ffn.activation,
        gated=stack.ffn.gated,
        bias=stack.ffn.bias,
        dropout=spec.dropout,
    )
    self_attn = build_attention(spec, stack, SelfAttention)
    if crossed:
        return CrossDecoderLayer(
            self_attn=self_attn,
            cross_attn=build_attention(spec, stack, CrossAttention),
            ffn=ffn,
            norm_attn=residual(),
            norm_cross=residual(),
            norm_ffn=residual(),
        )
    cls = DecoderLayer if causal else EncoderLayer
    return cls(self_attn=self_attn, ffn=ffn, norm_attn=residual(), norm_ffn=residual())


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """GPT-2-style: weights N(0, 0.02), biases 0, norms 1; score parameters
    N(0, 1/sqrt(head_dim)) so that additive and bilinear scores are not flat;
    relative-bias tables N(0, 0.5) so that distance matters from the start.
    Parameters are visited in registration order, so a seed fixes every value."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(owner, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(p) if leaf == "weight" else nn.init.zeros_(p)
        elif leaf == "bias":
            nn.init.zeros_(p)
        elif isinstance(owner, pos.RelativeBias):
            nn.init.normal_(p, std=0.5)
        elif isinstance(owner, (Additive, Bilinear)):
            nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[-1]))
        else:
            nn.init.normal_(p, std=INIT_STD)
