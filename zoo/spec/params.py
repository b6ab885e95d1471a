"""Parameter counts derived from a spec alone (no torch), exact to the compiled module;
each variant's own count comes from its registry entry (zoo.spec.variants).

``tests/test_compiler.py`` checks these numbers against ``sum(p.numel())`` of the
built module for every catalog spec, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zoo.spec.families import family
from zoo.spec.variants import FFN_KINDS, NORMS, PLACEMENTS, POSITIONAL, RESIDUALS, SCORES

if TYPE_CHECKING:  # pragma: no cover
    from zoo.spec.model import Attention, FeedForward, ModelSpec, Norm


@dataclass(frozen=True)
class ParameterCount:
    embeddings: int  # token table, absolute position tables, relative-bias tables
    per_layer: dict[str, int] = field(default_factory=dict)  # stack -> parameters of one layer
    layers: dict[str, int] = field(default_factory=dict)  # stack -> number of layers
    final_norms: int = 0
    output: int = 0  # untied output projection, output transform and bias, pooler

    @property
    def total(self) -> int:
        stacks = sum(self.per_layer[s] * self.layers[s] for s in self.per_layer)
        return self.embeddings + stacks + self.final_norms + self.output


def attention_parameters(att: "Attention", d_model: int) -> int:
    head_dim = att.width(d_model)
    q_out, kv_out = att.heads * head_dim, att.n_kv_heads * head_dim
    n = d_model * q_out + 2 * d_model * kv_out + q_out * d_model
    if att.qkv_bias:
        n += q_out + 2 * kv_out
    if att.out_bias:
        n += d_model
    if att.qk_norm is not None:
        norm = NORMS[att.qk_norm.kind]
        n += 2 * norm.parameters(head_dim) if att.qk_norm.over == "head" else norm.parameters(q_out) + norm.parameters(kv_out)
    return n + SCORES[att.score].parameters(att.heads, head_dim)


def ffn_parameters(ffn: "FeedForward", d_model: int) -> int:
    return FFN_KINDS[ffn.kind].parameters(d_model, ffn)


def norm_parameters(norm: "Norm", d_model: int) -> int:
    return NORMS[norm.kind].parameters(d_model)


def count_parameters(spec: "ModelSpec") -> ParameterCount:
    d = spec.d_model
    embeddings = spec.vocab_size * d
    per_layer: dict[str, int] = {}
    layers: dict[str, int] = {}
    final_norms = 0
    positional = POSITIONAL[spec.positional.kind]
    for part, stack in spec.stacks():
        embeddings += positional.parameters(spec, part)  # absolute tables, relative-bias tables
        crossed = part == "decoder" and family(spec).crossed
        sublayers = 3 if crossed else RESIDUALS[stack.residual].norms  # the input norms of one layer
        n = attention_parameters(stack.attention, d) * (2 if crossed else 1)
        n += ffn_parameters(stack.ffn, d) + sublayers * PLACEMENTS[stack.norm.placement].norms * norm_parameters(stack.norm, d)
        per_layer[part] = n
        layers[part] = stack.layers
        if stack.norm.has_final:
            final_norms += norm_parameters(stack.norm, d)
        if spec.embedding.norm:
            embeddings += norm_parameters(stack.norm, d)
    emb = spec.embedding
    embeddings += emb.token_types * d
    output = 0 if emb.tie_output else d * spec.vocab_size
    last = spec.stacks()[-1][1]
    if emb.output_transform:
        output += d * d + d + norm_parameters(last.norm, d)
    if emb.output_bias:
        output += spec.vocab_size
    if emb.pooler:
        output += d * d + d
    return ParameterCount(embeddings, per_layer, layers, final_norms, output)


def human(n: int) -> str:
    """1234567 -> '1.23M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
