"""Mixture-of-experts decoders on the Llama layout (``mixtral``, ``qwen2_moe``, ``qwen3_moe``, ``olmoe``):
llama.py's attention, norms and RoPE with the feed-forward replaced by a mixture of SwiGLU
experts (spec ``ffn.experts``): a router without bias, softmax, top ``num_experts_per_tok``.
Mixtral renormalises the top-k weights (always) and may use a sliding window; Qwen2-MoE adds
biases on q, k, v and a shared expert with a sigmoid gate, and renormalises only with
norm_topk_prob (false by default); Qwen3-MoE has QK-norm per head, head_dim and norm_topk_prob;
OLMoE an RMSNorm over the whole q and k projections, norm_topk_prob (clip_qkv is refused).

Experts are read in the per-expert layout save_pretrained writes (transformers 5 converts its
fused 3-D ``experts.gate_up_proj`` / ``down_proj`` back on save): Mixtral's w1 (gate),
w3 (up), w2 (down); the Qwens' gate_proj, up_proj, down_proj. Layers without experts
(decoder_sparse_step > 1, mlp_only_layers) are refused: the zoo's stacks are uniform."""

from __future__ import annotations

from compiler.importers import llama
from compiler.importers.common import W

MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")


def _experts(c: dict) -> int:
    """num_local_experts (Mixtral, Qwen3-MoE in transformers 5) or num_experts (Qwen2-MoE, older Qwen3-MoE)."""
    return c["num_local_experts"] if "num_local_experts" in c else c["num_experts"]


def _moe(c: dict) -> dict:
    shared = c.get("shared_expert_intermediate_size") if c["model_type"] == "qwen2_moe" else None
    return {
        "count": _experts(c),
        "top_k": c["num_experts_per_tok"],
        "normalize": c["model_type"] == "mixtral" or bool(c.get("norm_topk_prob", False)),
        "shared": {"hidden": shared, "gate": True} if shared else None,
    }


def _bias(c: dict) -> object:
    if c["model_type"] == "qwen2_moe":
        return "qkv" if c.get("qkv_bias", True) else False
    return bool(c.get("attention_bias", False))


def _window(c: dict):
    if c["model_type"] == "qwen2_moe":
        return c.get("sliding_window") if c.get("use_sliding_window") else None
    return c.get("sliding_window")  # Mixtral's; Qwen3-MoE's attention uses it whenever it is set


QK_NORM = {"qwen3_moe": "head", "olmoe": "all"}  # model_type -> over what the q and k norms run
OWN = [
    ("decoder.attention.bias", _bias),
    ("decoder.attention.window", _window),
    ("decoder.attention.qk_norm", lambda c: {"kind": "rmsnorm", "over": QK_NORM[c["model_type"]]} if c["model_type"] in QK_NORM else None),
    ("decoder.ffn.hidden", lambda c: c["moe_intermediate_size"] if "moe_intermediate_size" in c else c["intermediate_size"]),
    ("decoder.ffn.experts", _moe),
]
CONFIG = [row for row in llama.CONFIG if row[0] not in {path for path, _ in OWN}] + OWN

SUPPORTED = {
    **llama.SUPPORTED,
    "decoder_sparse_step": (1,),
    "clip_qkv": (None,),
}


def unsupported_extra(c: dict) -> list[str]:
    problems = llama.unsupported_extra(c)
    if c.get("mlp_only_layers"):
        problems.append(f"mlp_only_layers={c['mlp_only_layers']} with decoder_sparse_step={c.get('decoder_sparse_step', 1)} "
                        "(supported: experts in every layer: mlp_only_layers=[] and decoder_sparse_step=1)")
    if c["model_type"] == "qwen2_moe" and c.get("use_sliding_window") and c.get("max_window_layers", 0) < c["num_hidden_layers"]:
        problems.append(f"max_window_layers={c.get('max_window_layers')} (supported: a sliding window in every layer or none)")
    return problems


L = "model.layers.{i}."
F = "decoder.layers.{i}.ffn."
EXPERT_NAMES = {  # model_type -> (HF module of the block, zoo projection <- HF name per expert)
    "mixtral": ("block_sparse_moe.", {"gate": "w1", "up": "w3", "down": "w2"}),
    "qwen2_moe": ("mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    "qwen3_moe": ("mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    "olmoe": ("mlp.", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
}
SHARED = [  # Qwen2-MoE's shared expert and its gate
    *(W(F + f"shared.{z}.weight", L + f"mlp.shared_expert.{z}_proj.weight", stack="decoder") for z in ("gate", "up", "down")),
    W(F + "shared_gate.weight", L + "mlp.shared_expert_gate.weight", stack="decoder"),
]
DERIVED = llama.DERIVED
BASE_PREFIX = llama.BASE_PREFIX


def weights(config: dict) -> list[W]:
    block, names = EXPERT_NAMES[config["model_type"]]
    experts = [W(F + f"experts.{e}.{z}.weight", L + f"{block}experts.{e}.{h}.weight", stack="decoder")
               for e in range(_experts(config)) for z, h in names.items()]
    return [*llama.WEIGHTS, W(F + "router.weight", L + block + "gate.weight", stack="decoder"), *experts, *SHARED]
