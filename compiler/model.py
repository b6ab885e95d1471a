"""Layer stacks and the three model families. Modules receive built parts and
plain numbers (builder.py reads the spec)."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import nn

from compiler.ffn import ACTIVATIONS
from compiler.attention import KV
from compiler.positional import Rotary, positions_from_mask
from zoo.spec.families import family


def self_attention_mask(
    mask: torch.Tensor, positions: torch.Tensor, q_len: int, *, causal: bool, window: Optional[int]
) -> torch.Tensor:
    """mask (B, K) of 1/0 over the cached and the new tokens (K = past + q_len),
    positions (B, K) -> allowed (B, 1, q_len|1, K) bool: the key is a token, and
    (causal) not after the query, and (window) within ``window`` positions of it.
    The queries are the last ``q_len`` slots."""
    total = mask.shape[1]
    allowed = mask.bool()[:, None, None, :]  # (B, 1, 1, K)
    if causal:
        k_idx = torch.arange(total, device=mask.device)
        q_idx = k_idx[total - q_len :]  # slots of the new tokens
        allowed = allowed & (q_idx[:, None] >= k_idx[None, :])  # (B, 1, Tq, K)
    if window is not None:
        q_pos = positions[:, total - q_len :]
        distance = q_pos[:, :, None] - positions[:, None, :]  # (B, Tq, K), query - key
        near = distance < window if causal else distance.abs() < window
        allowed = allowed & near[:, None]  # (B, 1, Tq, K)
    return allowed


def cross_attention_mask(memory_mask: torch.Tensor) -> torch.Tensor:
    """encoder mask (B, Tk) -> allowed (B, 1, 1, Tk)."""
    return memory_mask.bool()[:, None, None, :]


class Stack(nn.Module):
    """Embedded tokens (B, T, d) through positional encoding, the layers and the
    final norm. ``memory_kv`` (each decoder layer's cross-attention keys/values) is
    given to the decoder stack of an encoder-decoder.

    With a cache, ``past`` holds each layer's keys/values of the P earlier tokens and
    ``mask`` (B, P + T) covers them and the new ones; positions are counted over the
    whole mask, so absolute tables, RoPE, ALiBi and relative bias see each new token
    at its true place. Returns the output and each layer's present cache."""

    def __init__(
        self,
        *,
        layers: list[nn.Module],
        causal: bool,
        windows: list[Optional[int]],
        absolute: Optional[nn.Module],
        embed_norm: Optional[nn.Module],
        rotary: Optional[Rotary],
        rotaries: list[Optional[Rotary]],
        score_bias: Optional[nn.Module],
        positioned: list[bool],
        final_norm: Optional[nn.Module],
        dropout: float,
    ):
        """Per layer: ``windows`` (None: full attention), ``rotaries`` (the same module for
        layers that share a RoPE base and scaling; None: no rotation) and ``positioned``
        (False: no score bias). ``rotary`` is the model's (the stack's first)."""
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.causal, self.windows, self.positioned = causal, list(windows), list(positioned)
        distinct: list[Rotary] = [rotary] if rotary is not None else []
        for r in rotaries:
            if r is not None and all(r is not d for d in distinct):
                distinct.append(r)
        self.absolute, self.score_bias = absolute, score_bias
        self.rotary = distinct[0] if distinct else None
        self.layer_rotaries = nn.ModuleList(distinct[1:])  # the layers' own RoPE bases (no parameters)
        self.rope_of = [None if r is None else next(j for j, d in enumerate(distinct) if d is r) for r in rotaries]
        self.embed_norm = embed_norm
        self.final_norm = final_norm
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        memory_kv: Optional[list[KV]] = None,
        memory_mask: Optional[torch.Tensor] = None,
        past: Optional[list[KV]] = None,
    ) -> tuple[torch.Tensor, list[KV]]:
        q_len = x.shape[1]
        positions = positions_from_mask(mask)  # (B, P + T)
        q_pos = positions[:, positions.shape[1] - q_len :]  # (B, T)
        if self.absolute is not None:
            x = x + self.absolute(q_pos).to(x.dtype)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.drop(x)
        # each distinct mask and rotation once, shared by the layers that use it
        masks = {w: self_attention_mask(mask, positions, q_len, causal=self.causal, window=w) for w in dict.fromkeys(self.windows)}
        bias = self.score_bias(q_pos, positions) if self.score_bias is not None else None  # (B, H, T, P + T)
        rotaries = [self.rotary, *self.layer_rotaries] if self.rotary is not None else []
        rotates = {}
        for j in dict.fromkeys(r for r in self.rope_of if r is not None):
            cos, sin = rotaries[j](q_pos)  # (B, 1, T, rot) each
            rotates[j] = functools.partial(rotaries[j].apply, cos=cos, sin=sin)
        cross_allowed = cross_attention_mask(memory_mask) if memory_kv is not None else None
        presents = []
        for i, layer in enumerate(self.layers):
            kw = dict(
                allowed=masks[self.windows[i]],
                bias=bias if self.positioned[i] else None,
                rotate=rotates.get(self.rope_of[i]),
                past=past[i] if past is not None else None,
            )
            if memory_kv is None:
                x, kv = layer(x, **kw)
            else:
                x, kv = layer(x, memory_kv[i], cross_allowed=cross_allowed, **kw)
            presents.append(kv)
        return (self.final_norm(x) if self.final_norm is not None else x), presents


class OutputTransform(nn.Module):
    """h (B, T, d) -> norm(act(dense(h))): BERT's MLM head before the projection."""

    def __init__(self, dense: nn.Linear, *, activation: str, norm: nn.Module):
        super().__init__()
        self.dense, self.act, self.norm = dense, ACTIVATIONS[activation], norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(h)))


class ZooModel(nn.Module):
    """Token embedding (shared by both stacks of an encoder-decoder), with row 0 of
    an optional token-type table added, and the output projection, tied to the
    embedding or its own ``lm_head``, with an optional transform before and bias after."""

    family: str = ""

    def __init__(
        self,
        *,
        vocab_size: int,
        d_model: int,
        tie_output: bool,
        embed_scale: float,
        output_scale: float,
        token_types: int = 0,
        head_transform: Optional[nn.Module] = None,
        output_bias: bool = False,
        logit_multiplier: float = 1.0,
        logit_softcap: Optional[float] = None,
    ):
        super().__init__()
        self.logit_multiplier, self.logit_softcap = logit_multiplier, logit_softcap
        self.embed = nn.Embedding(vocab_size, d_model)
        self.token_type = nn.Embedding(token_types, d_model) if token_types else None
        self.head_transform = head_transform
        self.lm_head = None if tie_output else nn.Linear(d_model, vocab_size, bias=False)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size)) if output_bias else None
        self.embed_scale, self.output_scale = embed_scale, output_scale

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # (B, T, d)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        if self.token_type is not None:
            x = x + self.token_type.weight[0]  # no token_type_ids input: every token is type 0
        return x

    def project(self, h: torch.Tensor) -> torch.Tensor:
        if self.output_scale != 1.0:
            h = h * self.output_scale
        if self.head_transform is not None:
            h = self.head_transform(h)
        logits = h @ self.embed.weight.t() if self.lm_head is None else self.lm_head(h)  # (B, T, V)
        if self.output_bias is not None:
            logits = logits + self.output_bias
        if self.logit_multiplier != 1.0:
            logits = logits * self.logit_multiplier
        if self.logit_softcap is not None:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits


def _pairs(flat) -> list[KV]:
    """[k0, v0, k1, v1, ...] -> [(k0, v0), (k1, v1), ...]."""
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _flat(pairs: list[KV]) -> tuple[torch.Tensor, ...]:
    return tuple(t for kv in pairs for t in kv)


class DecoderOnlyModel(ZooModel):
    family = "decoder-only"

    def __init__(self, *, decoder: Stack, **kw):
        super().__init__(**kw)
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """-> logits (B, T, V)."""
        return self.step(input_ids, attention_mask)[0]

    def step(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past: Optional[list[KV]] = None
    ) -> tuple[torch.Tensor, list[KV]]:
        """input_ids (B, T), attention_mask (B, P + T), past: per layer (k, v) of
        (B, kv_heads, P, hd) -> logits (B, T, V), per layer present (B, kv_heads, P + T, hd)."""
        h, presents = self.decoder(self.embed_tokens(input_ids), attention_mask, past=past)
        return self.project(h), presents


class EncoderOnlyModel(ZooModel):
    family = "encoder-only"

    def __init__(self, *, encoder: Stack, pooler: Optional[nn.Linear] = None, **kw):
        super().__init__(**kw)
        self.encoder = encoder
        self.pooler = pooler

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> last_hidden_state (B, T, d), logits (B, T, V)[, pooler_output (B, d) with a pooler]."""
        hidden = self.encoder(self.embed_tokens(input_ids), attention_mask)[0]
        if self.pooler is None:
            return hidden, self.project(hidden)
        return hidden, self.project(hidden), torch.tanh(self.pooler(hidden[:, 0]))  # (B, d) first token


class EncoderDecoderModel(ZooModel):
    family = "encoder-decoder"

    def __init__(self, *, encoder: Stack, decoder: Stack, **kw):
        super().__init__(**kw)
        self.encoder, self.decoder = encoder, decoder

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """-> encoder_hidden_states (B, S, d)."""
        return self.encoder(self.embed_tokens(input_ids), attention_mask)[0]

    def cross_kv(self, encoder_hidden_states: torch.Tensor) -> list[KV]:
        """Each decoder layer's cross-attention keys/values, (B, kv_heads, S, hd) each."""
        return [layer.cross_attn.project(encoder_hidden_states) for layer in self.decoder.layers]

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """-> logits (B, T, V), without a cache."""
        memory_kv = self.cross_kv(encoder_hidden_states)
        return self.decode_step(decoder_input_ids, decoder_attention_mask, memory_kv, encoder_attention_mask)[0]

    def decode_step(
        self,
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
        memory_kv: list[KV],
        encoder_attention_mask: torch.Tensor,
        past: Optional[list[KV]] = None,
    ) -> tuple[torch.Tensor, list[KV]]:
        """decoder_attention_mask (B, P + T) -> logits (B, T, V), per layer present self-attention cache."""
        h, presents = self.decoder(
            self.embed_tokens(decoder_input_ids),
            decoder_attention_mask,
            memory_kv=memory_kv,
            memory_mask=encoder_attention_mask,
            past=past,
        )
        return self.project(h), presents

    def forward(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask) -> torch.Tensor:
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, decoder_attention_mask, memory, attention_mask)


# The exported graphs. Each takes and returns flat tensors in zoo.spec.contract's order;
# cache tensors travel as *args ([k0, v0, k1, v1, ...]).


class CachedDecoderGraph(nn.Module):
    """Decoder-only graph: (input_ids, attention_mask, past...) -> (logits, present...).
    One graph serves prefill (past of length 0) and decode (see zoo.spec.contract)."""

    def __init__(self, model: DecoderOnlyModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        logits, presents = self.model.step(input_ids, attention_mask, _pairs(past))
        return (logits, *_flat(presents))


class EncoderGraph(nn.Module):
    """Encoder half of an encoder-decoder: (input_ids, attention_mask) ->
    (encoder_hidden_states, cross...): the decoder's cross-attention keys/values are
    computed here, once per input, rather than at every decoder step."""

    def __init__(self, model: EncoderDecoderModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        memory = self.model.encode(input_ids, attention_mask)
        return (memory, *_flat(self.model.cross_kv(memory)))


class DecoderGraph(nn.Module):
    """Decoder half: (decoder_input_ids, decoder_attention_mask, encoder_attention_mask,
    cross..., past...) -> (logits, present...)."""

    def __init__(self, model: EncoderDecoderModel):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, decoder_attention_mask, encoder_attention_mask, *caches):
        n = 2 * len(self.model.decoder.layers)
        cross, past = _pairs(caches[:n]), _pairs(caches[n:])
        logits, presents = self.model.decode_step(decoder_input_ids, decoder_attention_mask, cross, encoder_attention_mask, past)
        return (logits, *_flat(presents))


# By family name (zoo.spec.families): the module class the builder makes, and per graph
# the wrapper whose forward that graph is (an encoder-only model's own forward is its graph).
MODELS: dict[str, type[ZooModel]] = {m.family: m for m in (EncoderOnlyModel, DecoderOnlyModel, EncoderDecoderModel)}
WRAPPERS: dict[str, dict[str, Callable[[ZooModel], nn.Module]]] = {
    "encoder-only": {"model": lambda model: model},
    "decoder-only": {"model": CachedDecoderGraph},
    "encoder-decoder": {"encoder": EncoderGraph, "decoder": DecoderGraph},
}


def graph_modules(model: ZooModel) -> dict[str, nn.Module]:
    """Graph name (zoo.spec.families) -> the module whose forward that graph is."""
    return {graph: wrap(model) for graph, wrap in WRAPPERS[family(model).name].items()}
