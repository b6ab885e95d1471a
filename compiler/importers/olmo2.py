"""OLMo 2 (``olmo2``): the llama layout (compiler.importers.llama: RoPE, SwiGLU, GQA,
RMSNorm) with its norms after the sublayers inside the residual, none before them
(x + norm(f(x)): the ``branch-post`` placement), a final norm, and an RMSNorm over the
whole q and the whole k projection before RoPE (QK-norm ``over: all``). Untied by
default; no biases in the FFN (modeling_olmo2.Olmo2MLP)."""

from __future__ import annotations

from compiler.importers import llama
from compiler.importers.common import W

MODEL_TYPES = ("olmo2",)

_OWN = {  # zoo spec path <- HF config, where OLMo 2 differs from llama's table
    "decoder.attention.qk_norm": lambda c: {"kind": "rmsnorm", "over": "all"},  # eps: rms_norm_eps, the stack's
    "decoder.norm.placement": lambda c: "branch-post",
    "decoder.norm.eps": lambda c: c.get("rms_norm_eps", 1e-5),
    "decoder.ffn.bias": lambda c: False,
}
CONFIG = [(path, _OWN.get(path, fn)) for path, fn in llama.CONFIG]
SUPPORTED = llama.SUPPORTED
unsupported_extra = llama.unsupported_extra

L = "model.layers.{i}."
_NORMS = {  # the llama table's layer norms -> OLMo 2's, both after their sublayer
    "decoder.layers.{i}.norm_attn.norm.weight": W("decoder.layers.{i}.norm_attn.post_norm.weight", L + "post_attention_layernorm.weight",
                                                  stack="decoder"),
    "decoder.layers.{i}.norm_ffn.norm.weight": W("decoder.layers.{i}.norm_ffn.post_norm.weight", L + "post_feedforward_layernorm.weight",
                                                 stack="decoder"),
}
WEIGHTS = [_NORMS.get(row.zoo, row) for row in llama.WEIGHTS]
DERIVED = llama.DERIVED
BASE_PREFIX = llama.BASE_PREFIX


def weights(config: dict) -> list[W]:
    return WEIGHTS
