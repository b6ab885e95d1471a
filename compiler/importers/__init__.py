"""Import a Hugging Face model folder (config.json + weights) as a zoo spec and a
zoo state dict. One module per family, each with its mapping tables:

| model_type | module |
| --- | --- |
| gpt2 | gpt2.py |
| llama, mistral, qwen2, qwen3, granite, gemma, smollm3 | llama.py |
| phi3 | phi3.py |
| starcoder2 | starcoder2.py |
| mixtral, qwen2_moe, qwen3_moe, olmoe | moe.py |
| t5, mt5 | t5.py |
| bert | bert.py |
| roberta, xlm-roberta | roberta.py |
| bart, marian | bart.py |
| mbart | mbart.py |
| opt | opt.py |
| bloom | bloom.py |
| distilbert | distilbert.py |
| electra | electra.py |
| gpt_neox | gpt_neox.py |
| phi | phi.py |
| gptj | gptj.py |
| falcon | falcon.py |
| olmo2 | olmo2.py (llama.py's tables, norms after the sublayers) |
| gemma2, gemma3_text | gemma.py (llama.py's tables, norms before and after the sublayers, per-layer windows and RoPE) |

What a family cannot reproduce is refused before any weight is read, every
unsupported field listed in one message (exit code 2).
"""

from __future__ import annotations


import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from pydantic import ValidationError

from compiler.importers import (
    bart, bert, bloom, distilbert, electra, falcon, gemma, gpt2, gpt_neox, gptj, llama, mbart, moe, olmo2, opt, phi, phi3, roberta, starcoder2, t5,
)
from compiler.importers.common import CheckpointError, apply_table, build_spec_dict, read_config, read_json, read_weights, refuse, unsupported
from compiler.importers.sentence import read_pooling
from compiler.weights import check_finite
from zoo.spec.model import ModelSpec

FAMILIES = {
    mt: module
    for module in (gpt2, llama, olmo2, gemma, moe, phi3, starcoder2, t5, bert, roberta, bart, mbart, opt, bloom, distilbert, electra, gpt_neox, phi, gptj, falcon)
    for mt in module.MODEL_TYPES
}


@dataclass
class Imported:
    spec: ModelSpec
    state: dict[str, torch.Tensor]  # zoo parameter names
    model_type: str
    folder: Path
    pooling: Optional[dict] = None  # a sentence-transformers checkpoint's (sentence.read_pooling)

    @property
    def tokenizer(self) -> Optional[Path]:
        """The folder's tokenizer.json (Hugging Face tokenizers format), if it has one."""
        path = self.folder / "tokenizer.json"
        return path if path.is_file() else None


def is_checkpoint_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-._") or "imported"
    return name if name[0].isalnum() else "m" + name


def map_config(folder: Path, config: dict, *, name: Optional[str] = None, dtype: str = "float32") -> tuple[dict, object]:
    """HF config -> spec data (not yet validated) and the family module; refuses
    what cannot be reproduced."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(f"{folder}: model_type={model_type!r} is not supported (supported: {', '.join(sorted(FAMILIES))})")
    family = FAMILIES[model_type]
    refuse(folder, model_type, unsupported(config, family.SUPPORTED, model_type) + family.unsupported_extra(config))
    try:
        data = build_spec_dict(config, family.CONFIG)
    except KeyError as e:
        raise CheckpointError(f"{folder / 'config.json'}: lacks {e.args[0]!r}, which a {model_type} config has") from None
    except (TypeError, ValueError, ArithmeticError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: a value a {model_type} config needs is unusable: {e}") from None
    data.update(name=name or _name(folder), description=f"imported from {folder.resolve().name} ({model_type})", dtype=dtype)
    return data, family


def special_tokens(folder: Path, config: dict) -> dict:
    """bos/eos/pad/decoder_start ids from config.json, overridden by
    generation_config.json where present (as transformers reads them); ids outside
    the vocabulary are dropped."""
    merged = dict(config)
    gen = folder / "generation_config.json"
    if gen.is_file():
        merged.update({k: v for k, v in read_json(gen).items() if v is not None})
    vocab = config.get("vocab_size") or 0

    def ok(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vocab

    out: dict = {}
    for key, field in (("bos_token_id", "bos"), ("pad_token_id", "pad"), ("decoder_start_token_id", "decoder_start")):
        if ok(merged.get(key)):
            out[field] = merged[key]
    eos = merged.get("eos_token_id")
    eos = eos if isinstance(eos, list) else [eos]
    out["eos"] = [e for e in eos if ok(e)]
    if config.get("is_encoder_decoder") or "decoder_start" in out:  # transformers' generate: else bos
        out.setdefault("decoder_start", out.get("bos", out.get("pad", 0)))
    return out


def import_folder(folder: str | Path, *, name: Optional[str] = None, dtype: str = "float32") -> Imported:
    from compiler.builder import DTYPES, skeleton

    folder = Path(folder)
    config = read_config(folder)
    data, family = map_config(folder, config, name=name, dtype=dtype)
    pooling = read_pooling(folder, d_model=data.get("d_model"))  # refusals before any weight is read
    state = read_weights(folder)
    prefix = family.BASE_PREFIX
    if prefix and not any(k.startswith(prefix) for k in state):
        state = {(k if k == "lm_head.weight" else prefix + k): v for k, v in state.items()}
    if hasattr(family, "from_tensors"):  # optional heads (pooler, MLM head, logits bias) the tensors decide
        family.from_tensors(data, state)
    table = family.weights(config)
    embed_src = next(row.hf for row in table if row.zoo == "embed.weight")
    head = state.get("lm_head.weight")
    if head is not None and embed_src in state:
        # the tensors decide tying: an lm_head equal to the embedding is the tied copy
        data.setdefault("embedding", {})["tie_output"] = bool(torch.equal(head, state[embed_src]))
    data["tokens"] = special_tokens(folder, config)
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CheckpointError(f"{folder}: the mapped spec is invalid at {where or 'the top'}: {err['msg']}") from None
    model = skeleton(spec)  # names and shapes only: no memory for a large checkpoint
    own = model.state_dict()
    layers = {part: stack.layers for part, stack in spec.stacks()}
    mapped = apply_table(folder, state, table, layers, set(own), family.DERIVED)
    lacking = sorted(set(own) - set(mapped))
    if lacking:
        raise CheckpointError(f"{folder}: no checkpoint tensor maps to {', '.join(lacking[:4])}")
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{folder}: tensor shapes disagree with the config: {'; '.join(wrong[:3])}")
    narrowed = {k for k, v in mapped.items() if v.is_floating_point() and v.dtype != DTYPES[spec.dtype]}
    mapped = {k: v.to(DTYPES[spec.dtype]) for k, v in mapped.items()}
    # the files were checked as read (common._read_one); a narrower dtype can overflow to inf
    check_finite({k: mapped[k] for k in narrowed}, folder, doing="import", note=f" once converted to {spec.dtype} (values beyond its range)")
    return Imported(spec, mapped, config["model_type"], folder, pooling)


__all__ = ["CheckpointError", "Imported", "import_folder", "is_checkpoint_folder", "FAMILIES"]
