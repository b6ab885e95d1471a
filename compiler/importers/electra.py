"""ELECTRA (``model_type: electra``): BERT's encoder under ``electra.`` (learned
positions, token-type row 0, embedding LayerNorm, post-LayerNorm layers), no pooler.
ElectraModel -> last_hidden_state; ElectraForMaskedLM (the generator) -> its head
(generator_predictions: dense, exact GELU, LayerNorm; generator_lm_head tied to the
embedding, with a bias) as embedding.output_transform and output_bias.

Refused: embedding_size != hidden_size (ELECTRA-small's embeddings_project: the spec has
no embedding width of its own), a hidden_act other than gelu (the generator head applies
gelu whatever hidden_act says), and the other heads (ElectraForPreTraining's per-token
discriminator score, the classification and QA heads: outputs the zoo's graphs do not
have), named by the config's architectures."""

from __future__ import annotations

from compiler.importers import bert
from compiler.importers.common import W

MODEL_TYPES = ("electra",)

CONFIG = list(bert.CONFIG)

SUPPORTED = {
    **bert.SUPPORTED,
    "hidden_act": ("gelu",),
}
HEADS = ("ElectraModel", "ElectraForMaskedLM")


def unsupported_extra(c: dict) -> list[str]:
    problems = bert.unsupported_extra(c)
    width = c.get("embedding_size", c.get("hidden_size"))
    if width != c.get("hidden_size"):
        problems.append(f"embedding_size={width} with hidden_size={c.get('hidden_size')} (supported: equal; embeddings_project has no spec field)")
    other = [a for a in c.get("architectures") or [] if a not in HEADS]
    if other:
        problems.append(f"architectures={other} (supported: {', '.join(HEADS)})")
    return problems


def from_tensors(data: dict, state: dict) -> None:
    emb = data.setdefault("embedding", {})
    emb["output_transform"] = "generator_predictions.dense.weight" in state
    emb["output_bias"] = "generator_lm_head.bias" in state
    emb["pooler"] = False


P = "generator_predictions."
WEIGHTS = bert.weight_table(
    "electra",
    {
        "head_transform.dense.weight": P + "dense.weight",
        "head_transform.dense.bias": P + "dense.bias",
        "head_transform.norm.weight": P + "LayerNorm.weight",
        "head_transform.norm.bias": P + "LayerNorm.bias",
        "output_bias": "generator_lm_head.bias",
        "lm_head.weight": "generator_lm_head.weight",
    },
)
# the position-id buffer of older checkpoints, the tied output copy
DERIVED = (r"electra\.embeddings\.(position_ids|token_type_ids)", r"generator_lm_head\.weight")
BASE_PREFIX = "electra."


def weights(config: dict) -> list[W]:
    return WEIGHTS
