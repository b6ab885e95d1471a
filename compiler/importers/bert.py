"""BERT (``model_type: bert``): learned positions, token-type table (row 0 added to
every token: the graphs take no token_type_ids), embedding LayerNorm, post-LayerNorm
layers. The checkpoint's tensors decide the optional parts: BertForMaskedLM's head
(transform dense + act + LayerNorm, tied decoder, vocab bias) -> embedding.output_transform
and output_bias; BertModel's pooler -> embedding.pooler (output pooler_output)."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W

MODEL_TYPES = ("bert",)

CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "encoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 512)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "learned"}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", True)),
    ("embedding.token_types", lambda c: c.get("type_vocab_size", 2)),
    ("embedding.norm", lambda c: True),
    ("encoder.layers", lambda c: c["num_hidden_layers"]),
    ("encoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("encoder.attention.score", lambda c: "scaled-dot"),
    ("encoder.attention.bias", lambda c: True),
    ("encoder.ffn.hidden", lambda c: c["intermediate_size"]),
    ("encoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("hidden_act", "gelu"))),
    ("encoder.norm.kind", lambda c: "layernorm"),
    ("encoder.norm.placement", lambda c: "post"),
    ("encoder.norm.eps", lambda c: c.get("layer_norm_eps", 1e-12)),
    ("dropout", lambda c: c.get("hidden_dropout_prob", 0.1)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "hidden_act": ("gelu", "relu", "silu", "swish", "gelu_new", "gelu_pytorch_tanh"),
    "position_embedding_type": ("absolute",),
    "is_decoder": (False,),
    "add_cross_attention": (False,),
}


def unsupported_extra(c: dict) -> list[str]:
    if c.get("type_vocab_size", 2) < 0:
        return [f"type_vocab_size={c['type_vocab_size']} (supported: >= 0)"]
    return []


def from_tensors(data: dict, state: dict) -> None:
    """Optional parts that the checkpoint's tensors, not its config, decide."""
    emb = data.setdefault("embedding", {})
    emb["output_transform"] = "cls.predictions.transform.dense.weight" in state
    emb["output_bias"] = "cls.predictions.bias" in state
    emb["pooler"] = "bert.pooler.dense.weight" in state


def weight_table(base: str, head: dict[str, str]) -> list[W]:
    """The rows of a BERT-layout encoder under ``base`` ("bert", "roberta"); ``head``:
    zoo name of an MLM-head part -> its HF name."""
    E, L = f"{base}.embeddings.", f"{base}.encoder.layer.{{i}}."
    return [
        W("embed.weight", E + "word_embeddings.weight"),
        W("token_type.weight", E + "token_type_embeddings.weight"),
        W("encoder.absolute.weight", E + "position_embeddings.weight"),
        W("encoder.embed_norm.weight", E + "LayerNorm.weight"),
        W("encoder.embed_norm.bias", E + "LayerNorm.bias"),
        *(W(f"encoder.layers.{{i}}.self_attn.{z}.{k}", L + f"attention.self.{h}.{k}", stack="encoder") for z, h in (("q", "query"), ("k", "key"), ("v", "value")) for k in ("weight", "bias")),
        *(W(f"encoder.layers.{{i}}.self_attn.o.{k}", L + f"attention.output.dense.{k}", stack="encoder") for k in ("weight", "bias")),
        *(W(f"encoder.layers.{{i}}.norm_attn.norm.{k}", L + f"attention.output.LayerNorm.{k}", stack="encoder") for k in ("weight", "bias")),
        *(W(f"encoder.layers.{{i}}.ffn.up.{k}", L + f"intermediate.dense.{k}", stack="encoder") for k in ("weight", "bias")),
        *(W(f"encoder.layers.{{i}}.ffn.down.{k}", L + f"output.dense.{k}", stack="encoder") for k in ("weight", "bias")),
        *(W(f"encoder.layers.{{i}}.norm_ffn.norm.{k}", L + f"output.LayerNorm.{k}", stack="encoder") for k in ("weight", "bias")),
        *(W(f"pooler.{k}", f"{base}.pooler.dense.{k}") for k in ("weight", "bias")),
        *(W(zoo, hf) for zoo, hf in head.items()),
    ]


P = "cls.predictions."
WEIGHTS = weight_table(
    "bert",
    {
        "head_transform.dense.weight": P + "transform.dense.weight",
        "head_transform.dense.bias": P + "transform.dense.bias",
        "head_transform.norm.weight": P + "transform.LayerNorm.weight",
        "head_transform.norm.bias": P + "transform.LayerNorm.bias",
        "output_bias": P + "bias",
        "lm_head.weight": P + "decoder.weight",
    },
)

# the position-id buffer of older checkpoints, the decoder's copy of the bias, the tied output copy
DERIVED = (r"bert\.embeddings\.position_ids", r"cls\.predictions\.decoder\.bias", r"cls\.predictions\.decoder\.weight")
BASE_PREFIX = "bert."


def weights(config: dict) -> list[W]:
    return WEIGHTS
