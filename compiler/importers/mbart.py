"""mBART (``model_type: mbart``): BART's tables with pre-LayerNorm layers and a final
LayerNorm after each stack (``model.{encoder,decoder}.layer_norm``), which transformers'
MBart always builds: a config's fairseq flags ``normalize_before`` and
``add_final_layer_norm`` are true in mBART checkpoints, and a checkpoint setting either to
false was trained with a layout transformers does not build (refused). layernorm_embedding
(embedding.norm), scale_embedding (sqrt(d_model)), learned positions with offset 2,
final_logits_bias, one shared embedding tied to the output: as BART."""

from __future__ import annotations

from compiler.importers import bart
from compiler.importers.common import W

MODEL_TYPES = ("mbart",)

_PRE = {f"{s}.norm.{k}": v for s in ("encoder", "decoder") for k, v in (("placement", "pre"), ("final", True))}
CONFIG = [
    *((path, (lambda c, v=_PRE[path]: v) if path in _PRE else get) for path, get in bart.CONFIG),
    ("embedding.norm", lambda c: True),  # layernorm_embedding
]

SUPPORTED = {
    **bart.SUPPORTED,
    "normalize_before": (True,),
    "add_final_layer_norm": (True,),
}

unsupported_extra = bart.unsupported_extra
from_tensors = bart.from_tensors


def weights(config: dict) -> list[W]:
    return [
        *bart.weights(config),
        *(W(f"{s}.final_norm.{k}", f"model.{s}.layer_norm.{k}") for s in ("encoder", "decoder") for k in ("weight", "bias")),
    ]


DERIVED = bart.DERIVED
BASE_PREFIX = bart.BASE_PREFIX
