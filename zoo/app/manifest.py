"""manifest.json as the build writes it: a pydantic model, every object closed
(``extra="forbid"``) and strictly typed, so a misspelt or mistyped field fails the
build instead of reaching an artifact. ``ArtifactManifest(...).to_json()`` is the
JSON object written (fields absent from a graph or the build record stay absent).

The runtime reads the same file through plain dataclasses (runtime.manifest, no
pydantic there); tests/test_manifest.py checks that both name the same fields.
Open-ended sections are typed as JSON objects (``dict[str, Any]``) rather than
field by field: the parity report (zoo.app.parity), the lowering record
(passes.optimize) and the precision record of an fp16/int8 build (zoo.app.convert).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict


class _Closed(BaseModel):
    # strict: no coercion (a "3" is not a 3); inf/nan in the open-ended reports are kept as
    # json.dumps writes them (Infinity, NaN), not turned into null
    model_config = ConfigDict(extra="forbid", strict=True, ser_json_inf_nan="constants")


class TensorEntry(_Closed):
    name: str
    dtype: str  # a numpy dtype name
    shape: list[Union[str, int]]  # symbolic axes by name, fixed ones by size


class GraphEntry(_Closed):
    """One graph (passes.files.graph_record, updated by the optimize and precision steps)."""

    files: list[str]  # the .onnx file first, then its external data files
    inputs: list[TensorEntry]
    outputs: list[TensorEntry]
    nodes: int
    weight_bytes: int
    ops: list[str]
    nodes_before_optimize: Optional[int] = None  # optimized builds only


class FileEntry(_Closed):
    sha256: str
    bytes: int


class Parameters(_Closed):
    total: int
    embeddings: int
    per_layer: dict[str, int]


class Tokens(_Closed):
    bos: Optional[int]
    eos: list[int]
    pad: Optional[int]
    decoder_start: Optional[int]


class ModelEntry(_Closed):
    vocab_size: int
    max_seq_len: int
    d_model: int
    tokens: Tokens


class CacheEntry(_Closed):
    """zoo.spec.families.CacheLayout.to_json."""

    layers: int
    kv_heads: int
    head_dim: int
    layout: str
    past: str
    present: str
    cross: Optional[str]
    prefill: str
    refill_at: Optional[int] = None  # LongRoPE: the cache is recomputed at this length + 1
    buffer: Optional[str] = None  # --kv-cache shared: past/present are one buffer (zoo.spec.families.SHARED_BUFFER)


class BuildEntry(_Closed):
    """zoo.app.build.BuildOptions.to_json, with the optimize and precision steps' records."""

    target: str
    optimize: bool
    precision: Union[str, dict[str, Any]]  # "fp32", or the conversion's record (zoo.app.convert)
    lowering: Optional[dict[str, Any]] = None  # passes.optimize's record, optimized builds only
    kv_cache: Optional[dict[str, Any]] = None  # --kv-cache shared: passes.optimize.kv_share's record


class ArtifactManifest(_Closed):
    format_version: int
    name: str
    family: str
    description: Optional[str]
    dtype: str
    artifact_id: str
    spec_sha256: str
    weights_sha256: str
    seed: int
    parameters: Parameters
    opset: int
    exporter: str
    packages: dict[str, str]
    created: str
    graphs: dict[str, GraphEntry]
    model: ModelEntry
    kv_cache: Optional[CacheEntry]
    tokenizer: Optional[str]
    usage: Optional[dict[str, str]] = None  # role -> file (zoo.spec.usage); absent when the artifact carries none
    parity: Optional[dict[str, Any]]  # zoo.app.parity's report; None when the build skipped parity
    build_seconds: dict[str, float]
    files: dict[str, FileEntry]
    build: BuildEntry

    def to_json(self) -> dict:
        """The JSON object of manifest.json (unset optional fields of a graph or the
        build record left out, as the build has always written them)."""
        return self.model_dump(mode="json", exclude_unset=True)
