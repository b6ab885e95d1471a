"""BART (``model_type: bart``) and Marian (``marian``): encoder-decoder, post-LayerNorm,
biases everywhere, one embedding shared by both stacks and the tied output, a
vocab-sized final_logits_bias. BART: learned positions with 2 unused leading rows
(offset 2), layernorm_embedding in each stack, GELU. Marian: sinusoidal positions,
sin on the first half of the dimensions and cos on the second (not saved; recomputed),
no embedding norm, swish (silu), embeddings scaled by sqrt(d_model)."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W

MODEL_TYPES = ("bart", "marian")


def _positional(c: dict) -> dict:
    if c["model_type"] == "marian":
        return {"kind": "sinusoidal", "layout": "halves"}
    return {"kind": "learned", "offset": 2}


def _stack(s: str):
    return [
        (f"{s}.layers", lambda c: c[f"{s}_layers"]),
        (f"{s}.attention.heads", lambda c: c[f"{s}_attention_heads"]),
        (f"{s}.attention.score", lambda c: "scaled-dot"),
        (f"{s}.attention.bias", lambda c: True),
        (f"{s}.ffn.hidden", lambda c: c[f"{s}_ffn_dim"]),
        (f"{s}.ffn.activation", lambda c: ACTIVATIONS.get(c.get("activation_function", "gelu"))),
        (f"{s}.norm.kind", lambda c: "layernorm"),
        (f"{s}.norm.placement", lambda c: "post"),
        (f"{s}.norm.eps", lambda c: 1e-5),  # nn.LayerNorm's default; not a config field
        (f"{s}.norm.final", lambda c: False),
    ]


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "encoder-decoder"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 1024)),
    ("d_model", lambda c: c["d_model"]),
    ("positional", _positional),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", True)),
    ("embedding.scale_by_sqrt_d", lambda c: bool(c.get("scale_embedding", False))),
    ("embedding.norm", lambda c: c["model_type"] == "bart"),
    *_stack("encoder"),
    *_stack("decoder"),
    ("dropout", lambda c: c.get("dropout", 0.1)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "activation_function": ("gelu", "relu", "silu", "swish", "gelu_new", "gelu_pytorch_tanh"),
    "is_encoder_decoder": (True,),
    "scale_embedding": (False, True),
    # fairseq flags that transformers' BART code ignores: a checkpoint setting them was
    # trained with a layout that neither transformers nor the zoo reproduces
    "normalize_before": (False,),
    "add_final_layer_norm": (False,),
    "add_bias_logits": (False,),
    "normalize_embedding": (True,),
    "static_position_embeddings": (False,),
    "share_encoder_decoder_embeddings": (True,),
}


def unsupported_extra(c: dict) -> list[str]:
    problems = []
    dec_vocab = c.get("decoder_vocab_size")
    if c["model_type"] == "marian" and dec_vocab not in (None, c["vocab_size"]):
        problems.append(f"decoder_vocab_size={dec_vocab} with vocab_size={c['vocab_size']} (supported: one vocabulary)")
    for key in ("encoder_d_model", "decoder_d_model"):
        if key in c and c[key] != c["d_model"]:
            problems.append(f"{key}={c[key]} with d_model={c['d_model']} (supported: one width)")
    return problems


def from_tensors(data: dict, state: dict) -> None:
    """BartModel / MarianModel have no final_logits_bias; the *ForConditionalGeneration do."""
    data.setdefault("embedding", {})["output_bias"] = "final_logits_bias" in state


def weights(config: dict) -> list[W]:
    rows = [
        W("embed.weight", "model.shared.weight"),
        W("lm_head.weight", "lm_head.weight"),
        W("output_bias", "final_logits_bias", lambda t: t.reshape(-1)),
    ]
    for s in ("encoder", "decoder"):
        hf = f"model.{s}.layers.{{i}}."
        rows += [
            W(f"{s}.absolute.weight", f"model.{s}.embed_positions.weight"),
            *(W(f"{s}.embed_norm.{k}", f"model.{s}.layernorm_embedding.{k}") for k in ("weight", "bias")),
            *(W(f"{s}.layers.{{i}}.self_attn.{p}.{k}", hf + f"self_attn.{p}_proj.{k}", stack=s) for p in "qkv" for k in ("weight", "bias")),
            *(W(f"{s}.layers.{{i}}.self_attn.o.{k}", hf + f"self_attn.out_proj.{k}", stack=s) for k in ("weight", "bias")),
            *(W(f"{s}.layers.{{i}}.norm_attn.norm.{k}", hf + f"self_attn_layer_norm.{k}", stack=s) for k in ("weight", "bias")),
            *(W(f"{s}.layers.{{i}}.ffn.up.{k}", hf + f"fc1.{k}", stack=s) for k in ("weight", "bias")),
            *(W(f"{s}.layers.{{i}}.ffn.down.{k}", hf + f"fc2.{k}", stack=s) for k in ("weight", "bias")),
            *(W(f"{s}.layers.{{i}}.norm_ffn.norm.{k}", hf + f"final_layer_norm.{k}", stack=s) for k in ("weight", "bias")),
        ]
    hf = "model.decoder.layers.{i}."
    rows += [
        *(W(f"decoder.layers.{{i}}.cross_attn.{p}.{k}", hf + f"encoder_attn.{p}_proj.{k}", stack="decoder") for p in "qkv" for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.cross_attn.o.{k}", hf + f"encoder_attn.out_proj.{k}", stack="decoder") for k in ("weight", "bias")),
        *(W(f"decoder.layers.{{i}}.norm_cross.norm.{k}", hf + f"encoder_attn_layer_norm.{k}", stack="decoder") for k in ("weight", "bias")),
    ]
    return rows


# copies of the shared embedding, the tied output copy, Marian's sinusoid tables (recomputed)
DERIVED = (r"model\.(encoder|decoder)\.embed_tokens\.weight", r"lm_head\.weight", r"model\.(encoder|decoder)\.embed_positions\.weight")
BASE_PREFIX = "model."
