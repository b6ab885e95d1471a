"""GPT-J (``model_type: gptj``): RoPE on the first rotary_dim dimensions of each head
in the interleaved layout (rotate_every_two: pairs 2i, 2i+1), base 10000; a parallel
attention + FFN residual reading one shared ln_1; q, k, v and out without bias, fc_in
and fc_out with bias; an untied lm_head with a bias (embedding.output_bias)."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W

MODEL_TYPES = ("gptj",)


def _fraction(c: dict) -> float:
    return c["rotary_dim"] / (c["n_embd"] // c["n_head"])


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("n_positions", 2048)),
    ("d_model", lambda c: c["n_embd"]),
    ("positional", lambda c: {"kind": "rope", "theta": 10000.0, "fraction": _fraction(c), "layout": "interleaved"}),
    ("embedding.tie_output", lambda c: bool(c.get("tie_word_embeddings", False))),
    ("embedding.output_bias", lambda c: True),
    ("decoder.layers", lambda c: c["n_layer"]),
    ("decoder.residual", lambda c: "parallel"),
    ("decoder.attention.heads", lambda c: c["n_head"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: False),
    ("decoder.ffn.hidden", lambda c: c.get("n_inner") or 4 * c["n_embd"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("activation_function", "gelu_new"))),
    ("decoder.ffn.gated", lambda c: False),
    ("decoder.ffn.bias", lambda c: True),
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("layer_norm_epsilon", 1e-5)),
    ("dropout", lambda c: c.get("attn_pdrop", 0.0)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "activation_function": tuple(ACTIVATIONS),
}


def unsupported_extra(c: dict) -> list[str]:
    rot, head_dim = c.get("rotary_dim"), c["n_embd"] // c["n_head"]
    if rot is None or not isinstance(rot, int) or rot < 2 or rot % 2 or rot > head_dim or int(head_dim * (rot / head_dim)) != rot:
        return [f"rotary_dim={rot} (supported: an even number of dimensions, 2 to head_dim={head_dim})"]
    return []


L = "transformer.h.{i}."
WEIGHTS = [
    W("embed.weight", "transformer.wte.weight"),
    W("lm_head.weight", "lm_head.weight"),
    W("output_bias", "lm_head.bias"),
    *(W(f"decoder.layers.{{i}}.norm_attn.{k}", L + f"ln_1.{k}", stack="decoder") for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.self_attn.{p}.weight", L + f"attn.{h}.weight", stack="decoder")
      for p, h in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj"))),
    *(W(f"decoder.layers.{{i}}.ffn.{z}.{k}", L + f"mlp.{h}.{k}", stack="decoder") for z, h in (("up", "fc_in"), ("down", "fc_out")) for k in ("weight", "bias")),
    *(W(f"decoder.final_norm.{k}", f"transformer.ln_f.{k}") for k in ("weight", "bias")),
]

# causal-mask buffers of older checkpoints, and the tied output copy
DERIVED = (r"transformer\.h\.\d+\.attn\.(bias|masked_bias)", r"lm_head\.weight")
BASE_PREFIX = "transformer."


def weights(config: dict) -> list[W]:
    return WEIGHTS
