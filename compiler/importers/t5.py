"""T5 (``model_type: t5``; v1.0 and v1.1): relative-position bias (one table per
stack, in its first layer), RMSNorm without bias, unscaled dot scores, no biases,
ReLU or gated-GELU feed-forward, decoder output scaled by 1/sqrt(d_model) when tied.
mT5 (``mt5``): T5 v1.1's layout and maths under the same names, never rescaling the
decoder output (transformers' MT5 has no scale_decoder_outputs). The tensors decide tying:
a checkpoint's own lm_head (real mT5 files have one) is used, although transformers 5.25
forces tie_word_embeddings for mt5 and reads the shared embedding instead."""

from __future__ import annotations

from compiler.importers.common import W

MODEL_TYPES = ("t5", "mt5")


def _act(c: dict) -> tuple[str, bool]:
    proj = c.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    act = proj.split("-")[-1]
    return {"relu": "relu", "gelu": "gelu-tanh" if gated else "gelu", "silu": "silu", "gelu_new": "gelu-tanh"}.get(act, act), gated


def _scale_output(c: dict) -> bool:
    if c["model_type"] == "mt5":
        return False
    return c.get("scale_decoder_outputs", c.get("tie_word_embeddings", True) is not False)


def _stack(layers_key: str):
    return [
        (f"{{s}}.layers", lambda c, k=layers_key: c.get(k) or c["num_layers"]),
        ("{s}.attention.heads", lambda c: c["num_heads"]),
        ("{s}.attention.score", lambda c: "dot"),
        ("{s}.attention.bias", lambda c: False),
        ("{s}.ffn.hidden", lambda c: c["d_ff"]),
        ("{s}.ffn.activation", lambda c: _act(c)[0]),
        ("{s}.ffn.gated", lambda c: _act(c)[1]),
        ("{s}.ffn.bias", lambda c: False),
        ("{s}.norm.kind", lambda c: "rmsnorm"),
        ("{s}.norm.placement", lambda c: "pre"),
        ("{s}.norm.eps", lambda c: c.get("layer_norm_epsilon", 1e-6)),
    ]


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "encoder-decoder"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("n_positions") or 512),
    ("d_model", lambda c: c["d_model"]),
    (
        "positional",
        lambda c: {
            "kind": "relative-bias",
            "buckets": c.get("relative_attention_num_buckets", 32),
            "max_distance": c.get("relative_attention_max_distance", 128),
        },
    ),
    ("embedding.tie_output", lambda c: True),  # the checkpoint's lm_head decides (see importers.import_folder)
    ("embedding.scale_output_by_inv_sqrt_d", _scale_output),
    *((path.format(s="encoder"), get) for path, get in _stack("num_layers")),
    *((path.format(s="decoder"), get) for path, get in _stack("num_decoder_layers")),
    ("dropout", lambda c: c.get("dropout_rate", 0.1)),
]

SUPPORTED = {
    "feed_forward_proj": ("relu", "gated-gelu", "gelu", "gated-relu", "gated-silu", "silu"),
    "is_encoder_decoder": (True,),
}


def unsupported_extra(c: dict) -> list[str]:
    if c["d_kv"] * c["num_heads"] != c["d_model"]:
        return [f"d_kv={c['d_kv']} with d_model={c['d_model']} / num_heads={c['num_heads']} (supported: d_kv = d_model / num_heads)"]
    return []


def weights(config: dict) -> list[W]:
    gated = _act(config)[1]
    rows = [W("embed.weight", "shared.weight"), W("lm_head.weight", "lm_head.weight")]
    for s, ffn_layer in (("encoder", 1), ("decoder", 2)):
        hf = f"{s}.block.{{i}}.layer."
        rows += [
            *(W(f"{s}.layers.{{i}}.self_attn.{p}.weight", hf + f"0.SelfAttention.{p}.weight", stack=s) for p in "qkvo"),
            W(f"{s}.layers.{{i}}.norm_attn.norm.weight", hf + "0.layer_norm.weight", stack=s),
            W(f"{s}.layers.{{i}}.ffn.down.weight", hf + f"{ffn_layer}.DenseReluDense.wo.weight", stack=s),
            W(f"{s}.layers.{{i}}.norm_ffn.norm.weight", hf + f"{ffn_layer}.layer_norm.weight", stack=s),
            W(f"{s}.score_bias.weight", f"{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            W(f"{s}.final_norm.weight", f"{s}.final_layer_norm.weight"),
        ]
        if gated:
            rows += [
                W(f"{s}.layers.{{i}}.ffn.gate.weight", hf + f"{ffn_layer}.DenseReluDense.wi_0.weight", stack=s),
                W(f"{s}.layers.{{i}}.ffn.up.weight", hf + f"{ffn_layer}.DenseReluDense.wi_1.weight", stack=s),
            ]
        else:
            rows.append(W(f"{s}.layers.{{i}}.ffn.up.weight", hf + f"{ffn_layer}.DenseReluDense.wi.weight", stack=s))
    rows += [
        *(W(f"decoder.layers.{{i}}.cross_attn.{p}.weight", f"decoder.block.{{i}}.layer.1.EncDecAttention.{p}.weight", stack="decoder") for p in "qkvo"),
        W("decoder.layers.{i}.norm_cross.norm.weight", "decoder.block.{i}.layer.1.layer_norm.weight", stack="decoder"),
    ]
    return rows


# copies of the shared embedding, and the tied output copy
DERIVED = (r"(encoder|decoder)\.embed_tokens\.weight", r"lm_head\.weight")
BASE_PREFIX = ""
