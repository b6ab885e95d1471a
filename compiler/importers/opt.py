"""OPT (``model_type: opt``): decoder-only, learned positions with 2 unused leading rows
(offset 2; transformers counts positions over the attention mask, as the zoo does),
LayerNorm pre (do_layer_norm_before) or post (OPT-350m), ReLU, biases on every
projection or none (enable_bias), a final LayerNorm in pre-norm checkpoints unless
_remove_final_layer_norm, the output tied to the token embedding. The query's
1/sqrt(head_dim) is applied before q.k in transformers, after it in the zoo: the same
scaled-dot score up to rounding. Refused: word_embed_proj_dim != hidden_size (OPT-350m's
project_in / project_out, which no spec field expresses) and LayerNorms without weights
(layer_norm_elementwise_affine false)."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W

MODEL_TYPES = ("opt",)


def _pre(c: dict) -> bool:
    return c.get("do_layer_norm_before", True)


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 2048)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "learned", "offset": 2}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", True)),
    ("decoder.layers", lambda c: c["num_hidden_layers"]),
    ("decoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", lambda c: c.get("enable_bias", True)),
    ("decoder.ffn.hidden", lambda c: c["ffn_dim"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("activation_function", "relu"))),
    ("decoder.ffn.bias", lambda c: c.get("enable_bias", True)),
    ("decoder.norm.kind", lambda c: "layernorm"),
    ("decoder.norm.placement", lambda c: "pre" if _pre(c) else "post"),
    ("decoder.norm.eps", lambda c: 1e-5),  # nn.LayerNorm's default; not a config field
    ("decoder.norm.final", lambda c: _pre(c) and not c.get("_remove_final_layer_norm", False)),
    ("dropout", lambda c: c.get("dropout", 0.1)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "activation_function": ("relu", "gelu", "silu", "swish", "gelu_new", "gelu_pytorch_tanh"),
    "layer_norm_elementwise_affine": (True,),
}


def unsupported_extra(c: dict) -> list[str]:
    proj = c.get("word_embed_proj_dim")
    if proj is not None and proj != c.get("hidden_size"):
        return [f"word_embed_proj_dim={proj} with hidden_size={c.get('hidden_size')} (supported: equal; project_in / project_out have no spec field)"]
    return []


def weights(config: dict) -> list[W]:
    L = "model.decoder.layers.{i}."
    return [
        W("embed.weight", "model.decoder.embed_tokens.weight"),
        W("decoder.absolute.weight", "model.decoder.embed_positions.weight"),
        W("lm_head.weight", "lm_head.weight"),
        *(W(f"decoder.layers.{{i}}.self_attn.{p}.{k}", L + f"self_attn.{p}_proj.{k}", stack="decoder") for p in "qkv" for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.self_attn.o.{k}", L + f"self_attn.out_proj.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.norm_attn.norm.{k}", L + f"self_attn_layer_norm.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.ffn.up.{k}", L + f"fc1.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.ffn.down.{k}", L + f"fc2.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.norm_ffn.norm.{k}", L + f"final_layer_norm.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.final_norm.{k}", f"model.decoder.final_layer_norm.{k}") for k in ("weight", "bias")),
    ]


DERIVED = (r"lm_head\.weight",)  # the tied output copy
BASE_PREFIX = "model."  # a checkpoint of the bare OPTModel has its keys under decoder.
