"""DistilBERT (``model_type: distilbert``): BERT without token types or pooler. Learned
positions (with sinusoidal_pos_embds the sinusoid table is stored in the checkpoint, so
it is imported as a learned table), an embedding LayerNorm, post-LayerNorm layers with
eps 1e-12 (not a config field), q_lin/k_lin/v_lin/out_lin and lin1/lin2 with biases.
DistilBertForMaskedLM's head (vocab_transform, the activation, vocab_layer_norm,
vocab_projector tied to the embedding with its bias) -> embedding.output_transform and
output_bias, which the checkpoint's tensors decide."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W

MODEL_TYPES = ("distilbert",)

CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "encoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 512)),
    ("d_model", lambda c: c["dim"]),
    ("positional", lambda c: {"kind": "learned"}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", True)),
    ("embedding.norm", lambda c: True),
    ("encoder.layers", lambda c: c["n_layers"]),
    ("encoder.attention.heads", lambda c: c["n_heads"]),
    ("encoder.attention.score", lambda c: "scaled-dot"),
    ("encoder.attention.bias", lambda c: True),
    ("encoder.ffn.hidden", lambda c: c["hidden_dim"]),
    ("encoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("activation", "gelu"))),
    ("encoder.norm.kind", lambda c: "layernorm"),
    ("encoder.norm.placement", lambda c: "post"),
    ("encoder.norm.eps", lambda c: 1e-12),  # every DistilBERT LayerNorm; not a config field
    ("dropout", lambda c: c.get("dropout", 0.1)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "activation": ("gelu", "relu", "silu", "swish", "gelu_new", "gelu_pytorch_tanh"),
}


def unsupported_extra(c: dict) -> list[str]:
    return []


def from_tensors(data: dict, state: dict) -> None:
    """DistilBertModel has no MLM head; DistilBertForMaskedLM does."""
    emb = data.setdefault("embedding", {})
    emb["output_transform"] = "vocab_transform.weight" in state
    emb["output_bias"] = "vocab_projector.bias" in state


E, L = "distilbert.embeddings.", "distilbert.transformer.layer.{i}."
WEIGHTS = [
    W("embed.weight", E + "word_embeddings.weight"),
    W("encoder.absolute.weight", E + "position_embeddings.weight"),
    *(W(f"encoder.embed_norm.{k}", E + f"LayerNorm.{k}") for k in ("weight", "bias")),
    *(W(f"encoder.layers.{{i}}.self_attn.{p}.{k}", L + f"attention.{p}_lin.{k}", stack="encoder") for p in "qkv" for k in ("weight", "bias")),
    *(W(f"encoder.layers.{{i}}.self_attn.o.{k}", L + f"attention.out_lin.{k}", stack="encoder") for k in ("weight", "bias")),
    *(W(f"encoder.layers.{{i}}.norm_attn.norm.{k}", L + f"sa_layer_norm.{k}", stack="encoder") for k in ("weight", "bias")),
    *(W(f"encoder.layers.{{i}}.ffn.up.{k}", L + f"ffn.lin1.{k}", stack="encoder") for k in ("weight", "bias")),
    *(W(f"encoder.layers.{{i}}.ffn.down.{k}", L + f"ffn.lin2.{k}", stack="encoder") for k in ("weight", "bias")),
    *(W(f"encoder.layers.{{i}}.norm_ffn.norm.{k}", L + f"output_layer_norm.{k}", stack="encoder") for k in ("weight", "bias")),
    *(W(f"head_transform.dense.{k}", f"vocab_transform.{k}") for k in ("weight", "bias")),
    *(W(f"head_transform.norm.{k}", f"vocab_layer_norm.{k}") for k in ("weight", "bias")),
    W("output_bias", "vocab_projector.bias"),
    W("lm_head.weight", "vocab_projector.weight"),
]
# the position-id buffer of older checkpoints, the tied output copy
DERIVED = (r"distilbert\.embeddings\.position_ids", r"vocab_projector\.weight")
BASE_PREFIX = "distilbert."


def weights(config: dict) -> list[W]:
    return WEIGHTS
