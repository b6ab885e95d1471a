"""RoBERTa (``model_type: roberta``) and XLM-RoBERTa (``xlm-roberta``, the same layout and
maths under the same names): BERT's layout under ``roberta.``, with positions
offset by pad_token_id + 1 (position p reads row p + pad + 1 of a
max_position_embeddings table) and the MLM head under ``lm_head.``.

transformers counts positions over tokens that are not pad_token_id; the zoo counts
them over the attention mask. The two agree whenever the masked tokens are exactly the
pad tokens (what a tokenizer produces)."""

from __future__ import annotations

from compiler.importers import bert
from compiler.importers.common import W

MODEL_TYPES = ("roberta", "xlm-roberta")


def _offset(c: dict) -> int:
    return c.get("pad_token_id", 1) + 1


CONFIG = [
    *((path, get) for path, get in bert.CONFIG if path not in ("max_seq_len", "positional")),
    ("max_seq_len", lambda c: c.get("max_position_embeddings", 514) - _offset(c)),
    ("positional", lambda c: {"kind": "learned", "offset": _offset(c)}),
]

SUPPORTED = {
    **bert.SUPPORTED,
    "hidden_act": ("gelu",),  # the MLM head applies exact gelu whatever hidden_act says
}


def unsupported_extra(c: dict) -> list[str]:
    problems = bert.unsupported_extra(c)
    pad = c.get("pad_token_id", 1)
    if not isinstance(pad, int) or pad < 0 or c.get("max_position_embeddings", 514) <= pad + 1:
        problems.append(f"pad_token_id={pad} with max_position_embeddings={c.get('max_position_embeddings')} (supported: a table longer than pad_token_id + 1)")
    return problems


def from_tensors(data: dict, state: dict) -> None:
    emb = data.setdefault("embedding", {})
    emb["output_transform"] = "lm_head.dense.weight" in state
    emb["output_bias"] = "lm_head.bias" in state
    emb["pooler"] = "roberta.pooler.dense.weight" in state


WEIGHTS = bert.weight_table(
    "roberta",
    {
        "head_transform.dense.weight": "lm_head.dense.weight",
        "head_transform.dense.bias": "lm_head.dense.bias",
        "head_transform.norm.weight": "lm_head.layer_norm.weight",
        "head_transform.norm.bias": "lm_head.layer_norm.bias",
        "output_bias": "lm_head.bias",
        "lm_head.weight": "lm_head.decoder.weight",
    },
)
# the position-id buffer of older checkpoints, the decoder's copy of the bias, the tied output copy
DERIVED = (r"roberta\.embeddings\.(position_ids|token_type_ids)", r"lm_head\.decoder\.bias", r"lm_head\.decoder\.weight")
BASE_PREFIX = "roberta."


def weights(config: dict) -> list[W]:
    return WEIGHTS
