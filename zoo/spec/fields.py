"""What every part of the spec shares: the strict base model, strict integers, the
size bounds, and the error a cross-field rule raises (no torch, no onnxruntime)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

# Integers are strict: YAML `true`, "12" or 3.0 where a count belongs is an error, not 1, 12 or 3.
Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]

# Upper bounds far above any real model (Llama 3.1: vocabulary 128,256, context 131,072,
# width 16,384, 126 layers), so a typo like 1e12 is an error at validation instead of
# an allocation that takes the machine down. Memory is checked again at build time.
MAX_SIZE = {
    "vocab_size": 16_777_216,  # 2**24
    "max_seq_len": 4_194_304,  # 2**22
    "d_model": 262_144,
    "hidden": 1_048_576,
    "heads": 4096,
    "layers": 4096,
    "buckets": 65_536,
    "experts": 4096,
}


class FieldIssue(ValueError):
    """A cross-field rule broken at ``path`` (field names from the spec root).

    ``where`` is the field whose line an error report points at, when that is not
    ``path`` itself (a missing stack is reported at the ``family`` line)."""

    def __init__(self, path: tuple[str | int, ...], message: str, where: tuple[str | int, ...] | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.where = where if where is not None else path


class Strict_(BaseModel):
    """Frozen, unknown keys refused, no inf/NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)
