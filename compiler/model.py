"""Layer stacks and the three model families. Modules receive built parts and
plain numbers (builder.py reads the spec)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from compiler.ffn import ACTIVATIONS
from compiler.positional import Rotary, positions_from_mask


def self_attention_mask(
    mask: torch.Tensor, positions: torch.Tensor, *, causal: bool, window: Optional[int]
) -> torch.Tensor:
    """mask (B, T) of 1/0 -> allowed (B, 1, T|1, T) bool: key is a token, and
    (causal) not in the future, and (window) within ``window`` positions."""
    allowed = mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
    if causal:
        idx = torch.arange(mask.shape[1], device=mask.device)
        allowed = allowed & (idx[:, None] >= idx[None, :])  # (B, 1, Tq, Tk)
    if window is not None:
        distance = positions[:, :, None] - positions[:, None, :]  # (B, Tq, Tk), query - key
        near = distance < window if causal else distance.abs() < window
        allowed = allowed & near[:, None]  # (B, 1, Tq, Tk)
    return allowed


def cross_attention_mask(memory_mask: torch.Tensor) -> torch.Tensor:
    """encoder mask (B, Tk) -> allowed (B, 1, 1, Tk)."""
    return memory_mask.bool()[:, None, None, :]


class Stack(nn.Module):
    """Embedded tokens (B, T, d) through positional encoding, the layers and the
    final norm. ``memory`` is given to the decoder stack of an encoder-decoder."""

    def __init__(
        self,
        *,
        layers: list[nn.Module],
        causal: bool,
        window: Optional[int],
        absolute: Optional[nn.Module],
        embed_norm: Optional[nn.Module],
        rotary: Optional[Rotary],
        score_bias: Optional[nn.Module],
        final_norm: Optional[nn.Module],
        dropout: float,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.causal, self.window = causal, window
        self.absolute, self.rotary, self.score_bias = absolute, rotary, score_bias
        self.embed_norm = embed_norm
        self.final_norm = final_norm
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        memory: Optional[torch.Tensor] = None,
        memory_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        positions = positions_from_mask(mask)  # (B, T)
        if self.absolute is not None:
            x = x + self.absolute(positions).to(x.dtype)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.drop(x)
        allowed = self_attention_mask(mask, positions, causal=self.causal, window=self.window)
        bias = self.score_bias(positions, positions) if self.score_bias is not None else None  # (B, H, T, T)
        rotate = None
        if self.rotary is not None:
            cos, sin = self.rotary(positions)  # (B, 1, T, rot) each
            rotate = lambda t: self.rotary.apply(t, cos, sin)  # noqa: E731
        if memory is None:
            for layer in self.layers:
                x = layer(x, allowed=allowed, bias=bias, rotate=rotate)
        else:
            cross_allowed = cross_attention_mask(memory_mask)
            for layer in self.layers:
                x = layer(x, memory, allowed=allowed, cross_allowed=cross_allowed, bias=bias, rotate=rotate)
        return self.final_norm(x) if self.final_norm is not None else x


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
    ):
        super().__init__()
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
        return logits + self.output_bias if self.output_bias is not None else logits


class DecoderOnlyModel(ZooModel):
    family = "decoder-only"

    def __init__(self, *, decoder: Stack, **kw):
        super().__init__(**kw)
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """-> logits (B, T, V)."""
        return self.project(self.decoder(self.embed_tokens(input_ids), attention_mask))


class EncoderOnlyModel(ZooModel):
    family = "encoder-only"

    def __init__(self, *, encoder: Stack, pooler: Optional[nn.Linear] = None, **kw):
        super().__init__(**kw)
        self.encoder = encoder
        self.pooler = pooler

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> last_hidden_state (B, T, d), logits (B, T, V)[, pooler_output (B, d) with a pooler]."""
        hidden = self.encoder(self.embed_tokens(input_ids), attention_mask)
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
        return self.encoder(self.embed_tokens(input_ids), attention_mask)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """-> logits (B, T, V)."""
        h = self.decoder(
            self.embed_tokens(decoder_input_ids),
            decoder_attention_mask,
            memory=encoder_hidden_states,
            memory_mask=encoder_attention_mask,
        )
        return self.project(h)

    def forward(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask) -> torch.Tensor:
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, decoder_attention_mask, memory, attention_mask)


class EncoderGraph(nn.Module):
    """The encoder half of an encoder-decoder, as its own exportable graph."""

    def __init__(self, model: EncoderDecoderModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.encode(input_ids, attention_mask)


class DecoderGraph(nn.Module):
    """The decoder half of an encoder-decoder, as its own exportable graph."""

    def __init__(self, model: EncoderDecoderModel):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask):
        return self.model.decode(decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask)


def graph_modules(model: ZooModel) -> dict[str, nn.Module]:
    """Graph name (zoo.contract) -> the module whose forward that graph is."""
    if isinstance(model, EncoderDecoderModel):
        return {"encoder": EncoderGraph(model), "decoder": DecoderGraph(model)}
    return {"model": model}
