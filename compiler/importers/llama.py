"""Llama and the decoders that share its layout (``llama``, ``mistral``, ``qwen2``,
``qwen3``): RoPE (GPT-NeoX halves layout), RMSNorm, SwiGLU, GQA; Qwen2 has biases on
q, k, v; Mistral may use a sliding window; Qwen3 adds a per-head RMSNorm on q and k
(QK-norm) and an explicit head_dim; Granite its four multipliers (embeddings, attention
scores in place of 1/sqrt(head_dim), residual branches, logits); Gemma RMSNorm with
(1 + w), embeddings times sqrt(hidden_size), GeGLU, an explicit head_dim."""

from __future__ import annotations

from compiler.importers.common import ACTIVATIONS, W, partial_rotary, rope_scaling, rope_theta, rope_type, unsupported_rope

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "granite", "gemma", "smollm3")
LAYER_TYPED = ("qwen2", "qwen3", "smollm3")  # read layer_types (and SmolLM3's no_rope_layers) per layer


def _bias(c: dict) -> object:
    if c["model_type"] == "qwen2":
        return "qkv"
    return bool(c.get("attention_bias", False))


def _head_dim(c: dict):
    """An explicit head_dim where it differs from hidden_size / heads (else the default)."""
    hd = c.get("head_dim")
    return hd if hd is not None and hd * c["num_attention_heads"] != c["hidden_size"] else None


def _qk_norm(c: dict):
    return {"kind": "rmsnorm", "over": "head"} if c["model_type"] == "qwen3" else None


def _granite(field: str, default=None):
    """A Granite multiplier (None elsewhere: the spec's default)."""
    return lambda c: c.get(field, default) if c["model_type"] == "granite" else None


def _layers(c: dict) -> list[dict]:
    """One zoo layer_types entry per layer: sliding where layer_types says sliding_attention and
    a window is in use (use_sliding_window), positions none where no_rope_layers has a 0 (SmolLM3)."""
    n, types = c["num_hidden_layers"], c.get("layer_types") or []
    windowed = c["model_type"] in LAYER_TYPED and c.get("use_sliding_window") and c.get("sliding_window") is not None
    nope = c.get("no_rope_layers") or [] if c["model_type"] == "smollm3" else []
    return [{"attention": "sliding" if windowed and i < len(types) and types[i] == "sliding_attention" else "full",
             "positions": "none" if i < len(nope) and not nope[i] else "model"} for i in range(n)]


def _layer_types(c: dict) -> list:
    """The per-layer entries where layers differ (else none: every layer alike)."""
    layers = _layers(c) if c["model_type"] in LAYER_TYPED else []
    return layers if any(e != layers[0] for e in layers) or any(e["positions"] == "none" for e in layers) else None


def _window(c: dict):
    if c["model_type"] in LAYER_TYPED:
        return c.get("sliding_window") if any(e["attention"] == "sliding" for e in _layers(c)) else None
    if c["model_type"] == "mistral":
        return c.get("sliding_window")
    return None


CONFIG = [  # zoo spec path <- HF config
    ("family", lambda c: "decoder-only"),
    ("vocab_size", lambda c: c["vocab_size"]),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 2048)),
    ("d_model", lambda c: c["hidden_size"]),
    ("positional", lambda c: {"kind": "rope", "theta": rope_theta(c), "fraction": 1.0, "scaling": rope_scaling(c)}),
    ("embedding.tie_output", lambda c: c.get("tie_word_embeddings", c["model_type"] == "gemma")),
    ("embedding.scale_by_sqrt_d", lambda c: c["model_type"] == "gemma"),
    ("decoder.layers", lambda c: c["num_hidden_layers"]),
    ("decoder.attention.heads", lambda c: c["num_attention_heads"]),
    ("decoder.attention.kv_heads", lambda c: c.get("num_key_value_heads") or c["num_attention_heads"]),
    ("decoder.attention.score", lambda c: "scaled-dot"),
    ("decoder.attention.bias", _bias),
    ("decoder.attention.window", _window),
    ("decoder.layer_types", _layer_types),
    ("decoder.attention.head_dim", _head_dim),
    ("decoder.attention.qk_norm", _qk_norm),
    ("decoder.attention.scale", _granite("attention_multiplier")),
    ("decoder.residual_multiplier", _granite("residual_multiplier", 1.0)),
    ("embedding.multiplier", _granite("embedding_multiplier", 1.0)),
    ("embedding.logit_multiplier", lambda c: 1.0 / c.get("logits_scaling", 1.0) if c["model_type"] == "granite" else None),
    ("decoder.ffn.hidden", lambda c: c["intermediate_size"]),
    ("decoder.ffn.activation", lambda c: ACTIVATIONS.get(c.get("hidden_act", "gelu_pytorch_tanh" if c["model_type"] == "gemma" else "silu"))),
    ("decoder.ffn.gated", lambda c: True),
    ("decoder.ffn.bias", lambda c: bool(c.get("mlp_bias", False))),
    ("decoder.norm.kind", lambda c: "rmsnorm-plus-one" if c["model_type"] == "gemma" else "rmsnorm"),
    ("decoder.norm.placement", lambda c: "pre"),
    ("decoder.norm.eps", lambda c: c.get("rms_norm_eps", 1e-6)),
    ("dropout", lambda c: c.get("attention_dropout", 0.0)),
]

SUPPORTED = {  # HF field -> values the zoo reproduces
    "hidden_act": ("silu", "gelu", "gelu_pytorch_tanh", "relu"),
    "pretraining_tp": (1,),
}


def unsupported_extra(c: dict) -> list[str]:
    """Rules that need more than one field."""
    problems = unsupported_rope(c)
    # transformers' llama-family RoPE ignores partial_rotary_factor with the default rope
    # (the whole head rotates: so does the zoo's, fraction 1) and fails on it with a scaled one
    if partial_rotary(c) != 1.0 and rope_type(c) is not None:
        problems.append(f"partial_rotary_factor={partial_rotary(c)} with rope_type={rope_type(c)!r} (transformers' {c['model_type']} "
                        "rotates the whole head and cannot run this combination; supported: partial_rotary_factor 1.0 with a scaled rope)")
    layer_types = c.get("layer_types")
    if layer_types and len(set(layer_types)) > 1 and c["model_type"] not in LAYER_TYPED:
        problems.append(f"layer_types={sorted(set(layer_types))} (supported: one attention type in every layer for {c['model_type']}; "
                        f"per layer for {', '.join(LAYER_TYPED)})")
    return problems


L = "model.layers.{i}."
WEIGHTS = [
    W("embed.weight", "model.embed_tokens.weight"),
    W("lm_head.weight", "lm_head.weight"),
    W("decoder.layers.{i}.norm_attn.norm.weight", L + "input_layernorm.weight", stack="decoder"),
    *(W(f"decoder.layers.{{i}}.self_attn.{p}.{k}", L + f"self_attn.{p}_proj.{k}", stack="decoder") for p in "qkvo" for k in ("weight", "bias")),
    *(W(f"decoder.layers.{{i}}.self_attn.{p}_norm.weight", L + f"self_attn.{p}_norm.weight", stack="decoder") for p in "qk"),
    W("decoder.layers.{i}.norm_ffn.norm.weight", L + "post_attention_layernorm.weight", stack="decoder"),
    *(W(f"decoder.layers.{{i}}.ffn.{z}.{k}", L + f"mlp.{h}_proj.{k}", stack="decoder") for z, h in (("gate", "gate"), ("up", "up"), ("down", "down")) for k in ("weight", "bias")),
    W("decoder.final_norm.weight", "model.norm.weight"),
]

# rotary frequency buffers of older checkpoints, and the tied output copy
DERIVED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"lm_head\.weight")
BASE_PREFIX = "model."


def weights(config: dict) -> list[W]:
    return WEIGHTS
