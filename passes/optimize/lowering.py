"""What each target gets per component, and why (the table of passes.optimize)."""

from __future__ import annotations


MS = "com.microsoft"
ATTENTION = "onnx:Attention"
MHA = f"{MS}:MultiHeadAttention"
DECOMPOSED = "decomposed"
NONE = "none"  # the model has no such component (no RoPE, no GELU)

# What each target gets, per component. "decomposed" leaves the exporter's subgraph
# as it is (for norms and GELU that is already one standard op each: LayerNormalization,
# RMSNormalization, Gelu). CPU: measured with ONNX Runtime 1.32 (benchmarks/optimize.py,
# docs/optimize.md); CUDA: from the kernels each release registers (no GPU measured here).
LOWERING: dict[str, dict[str, str]] = {
    "cpu": {
        "attention": ATTENTION,
        "attention_gqa": ATTENTION,
        "rotary": "onnx:RotaryEmbedding",
        "norm": DECOMPOSED,
        "gelu": DECOMPOSED,
    },
    "cuda": {
        "attention": MHA,
        "attention_gqa": ATTENTION,
        "rotary": f"{MS}:RotaryEmbedding",
        "norm": f"{MS}:Skip*Normalization",
        "gelu": f"{MS}:FastGelu/BiasGelu",
    },
}

WHY = {
    ("cpu", "attention"): "the standard Attention op (opset 23) has an ONNX Runtime CPU kernel: scores, mask, softmax "
    "and PV in one node, measured at 0.7-0.9x the decomposed subgraph's time (prefill 1x128, 8x32; decode at 64 and "
    "512 cached tokens); MultiHeadAttention and GroupQueryAttention measured slower than both on CPU",
    ("cpu", "attention_gqa"): "the standard Attention op takes kv_heads < heads without repeating the cache (measured "
    "0.7-0.9x for prefill and short-context decode, 1.4x at 512 cached tokens: +20 us a layer, kept for one lowering)",
    ("cuda", "attention"): "MultiHeadAttention has had CUDA kernels (flash / memory-efficient / unfused) for years; "
    "the standard Attention op has a CUDA kernel only in recent ONNX Runtime releases (before that it ran on CPU "
    "inside a CUDA session: onnxruntime issue 28025)",
    ("cuda", "attention_gqa"): "MultiHeadAttention needs kv_heads = heads, GroupQueryAttention's CUDA kernel takes "
    "float16/bfloat16 only and masks by right-padded lengths (the zoo pads left); the standard Attention op's CUDA "
    "kernel covers GQA (ONNX Runtime >= 1.26): check the placement report",
    ("cpu", "rotary"): "the standard RotaryEmbedding op (opset 23) has an ONNX Runtime CPU kernel, measured at "
    "0.4-0.65x the decomposed slices, negation and products; cos/sin computed once per graph",
    ("cuda", "rotary"): "com.microsoft RotaryEmbedding has CUDA kernels in every ONNX Runtime release that has the op",
    ("cpu", "norm"): "kept as exported (LayerNormalization / RMSNormalization after a separate residual Add): the CPU "
    "kernels of SkipLayerNormalization and SkipSimplifiedLayerNormalization measured 7x and 2x slower than Add + the "
    "standard norm for a prompt (1.5x and 1x for one token; ONNX Runtime 1.32)",
    ("cuda", "norm"): "the residual add folded into the norm (SkipLayerNormalization / SkipSimplifiedLayerNormalization, "
    "CUDA kernels): one pass over the hidden state instead of two",
    ("cpu", "gelu"): "kept as exported (Gelu after the bias Add): FastGelu measured the same as Add + tanh Gelu (the "
    "session fuses those itself), BiasGelu 1.04-1.2x slower than Add + Gelu on CPU",
    ("cuda", "gelu"): "the bias add folded into the activation (FastGelu / BiasGelu, CUDA kernels)",
}
