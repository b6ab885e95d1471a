"""What the importer tests share: Hugging Face models given random-init or trained-like
weights (compiler.trained_like) before save_pretrained, and the parity rule
(zoo.spec.contract.parity_rule, zoo.app.tolerance.judge) that judges the zoo's torch module
and its ONNX artifact against transformers.

Random init gives logits and hidden states of order 1; trained-like weights give logits
of std ~7, 3 residual channels at 100-1000x the others on 1/8 of the tokens, outlier
features into every matmul and sharper attention: what real checkpoints do to the
numbers. Placement is "post" for BERT, RoBERTa, BART and Marian, "branch-post" for OLMo 2, "sandwich" for Gemma 2 and 3,
"pre" for the others.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from zoo.app.build import BuildOptions, build_artifact
from compiler.trained_like import make_trained_like
from runtime import load
from zoo.app.tolerance import judge
from zoo.spec.contract import parity_rule
from zoo.spec.errors import ParityError

WEIGHTS = ("random", "trained")


def kind_weight_cases(kinds, random_kinds) -> list:
    """pytest params (kind, weights) for every kind with both weights: the trained-like
    case of every kind and the random-init case of ``random_kinds`` in the default suite,
    the other random-init cases in the slow target (make test-slow)."""
    import pytest

    return [pytest.param(k, w, id=f"{k}-{w}", marks=() if w == "trained" or k in random_kinds else pytest.mark.slow)
            for k in kinds for w in WEIGHTS]
PLACEMENT = {"gpt2": "pre", "llama": "pre", "mistral": "pre", "qwen2": "pre", "qwen3": "pre", "granite": "pre", "gemma": "pre", "olmo2": "branch-post", "gemma2": "sandwich", "gemma3_text": "sandwich", "smollm3": "pre", "starcoder2": "pre", "phi3": "pre", "mixtral": "pre", "qwen2_moe": "pre", "qwen3_moe": "pre", "olmoe": "pre", "gpt_neox": "pre", "phi": "pre", "gptj": "pre", "falcon": "pre", "t5": "pre", "mt5": "pre", "bert": "post", "roberta": "post", "xlm-roberta": "post", "bart": "post", "marian": "post"}
# mBART and BLOOM are pre-norm, but their embedding norm renormalizes the channels planted in
# the token embedding: the post-norm calibration (outliers carried by the norm weights) applies
PLACEMENT.update({"mbart": "post", "bloom": "post", "distilbert": "post", "electra": "post", "opt": lambda c: "pre" if c.do_layer_norm_before else "post"})  # or of the config
LOGIT_STD_FLOOR = 5.0  # issue 13 point 4: trained checkpoints have logits in the tens
OUTLIER_RATIO = (50.0, 2000.0)  # residual outlier channels / median channel (target 300x)
FP32 = parity_rule("float32")


def hf_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What a Hugging Face model outputs per token (B, T, V): the logits, or for a
    headless encoder its last hidden state (the output whose scale the trained-like
    generator sets)."""
    if model.config.is_encoder_decoder:
        return model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids, decoder_attention_mask=mask).logits
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


@torch.no_grad()
def trained_like(model, *, seed: int = 0) -> dict:
    """Give ``model`` (eval mode) trained-like weights in place and check the statistics
    that make it trained-like: logit std >= 5 and outlier residual channels."""
    model.eval()
    placement = PLACEMENT[model.config.model_type]
    placement = placement(model.config) if callable(placement) else placement
    vocab = model.get_input_embeddings().num_embeddings
    stats = make_trained_like(model, hf_logits, vocab_size=vocab, placement=placement, seed=seed)
    assert stats["logit_std"] >= LOGIT_STD_FLOOR, stats
    low, high = OUTLIER_RATIO
    assert low <= stats["residual_outlier_ratio"] <= high, stats
    print(f"\n{model.config.model_type} trained-like: logit std {stats['logit_std']:.2f}, residual outliers {stats['residual_outlier_ratio']:.0f}x")
    return stats


def prepare(model, weights: str, *, seed: int = 0) -> Optional[dict]:
    """``model`` in eval mode with ``weights`` ("random": as initialised; "trained":
    trained-like); the trained-like statistics, or None."""
    assert weights in WEIGHTS, weights
    model.eval()
    return trained_like(model, seed=seed) if weights == "trained" else None


def logit_std(logits, mask) -> float:
    """The std of the logits over the real positions of ``mask``."""
    x = np.asarray(logits, dtype=np.float64)
    return float(x[np.asarray(mask).astype(bool)].std())


def assert_matches(label: str, got, ref, mask, rule=FP32) -> dict:
    """``got`` within ``rule`` of the transformers output ``ref`` over the real
    positions of ``mask`` (None: every element); prints the worst figure."""
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    mask = mask.numpy() if isinstance(mask, torch.Tensor) else mask
    figures = judge(got, ref, rule, mask)
    print(f"{label}: worst {figures['worst']:.3f} of bound (max abs {figures['max_abs']:.2e}, median |ref| {figures['scale']:.2e})")
    assert figures["within"], f"{label}: {figures}"
    return figures


def build_session(imported, out, *, precision: str = "fp32"):
    """The imported checkpoint built into ``out`` (parity checked by the build; default
    options at fp32), loaded."""
    options = None if precision == "fp32" else BuildOptions(precision=precision)
    try:
        folder, manifest, _ = build_artifact(imported.spec, out, weights=imported.state, options=options)
    except ParityError as e:  # every failing check on its own line
        raise AssertionError("\n".join([str(e), *(str(o) for o in getattr(e, "others", []))])) from None
    assert manifest["parity"]["passed"], manifest["parity"]
    return load(folder)


def greedy_agreement(got: list[list[int]], want: list[list[int]]) -> float:
    """The share of rows whose generated tokens are identical."""
    return sum(a == b for a, b in zip(got, want)) / max(1, len(want))
