"""An artifact's manifest.json as the runtime reads it: frozen dataclasses.

``Manifest.from_json(raw, path)`` checks the format version, then the presence and
type of every field it reads; a refusal is one ArtifactError line naming the
manifest.json and the field (``manifest lacks 'name'``, ``kv_cache 'layers' is a
str, not an integer``). The build writes the manifest through the pydantic model
zoo.app.manifest (no pydantic here: the runtime imports numpy and onnxruntime only);
tests/test_manifest.py checks that the two agree field by field.

File names are checked as non-empty strings here; that they stay inside the artifact
folder and are listed with a sha256 is runtime.artifact's check, which needs the folder.
Sections whose content is open-ended (the parity report, the lowering record, the
precision record of a reduced-precision build) stay JSON objects (Mapping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from zoo.spec.contract import FORMAT_VERSION, GraphSpec, TensorSpec
from zoo.spec.errors import ArtifactError
from runtime.usage import read_usage

SHA256 = re.compile(r"[0-9a-f]{64}")
_KINDS = {dict: "an object", str: "a string", int: "an integer", bool: "a boolean", list: "a list", float: "a number"}
_PLURAL = {str: "strings", int: "integers", (str, int): "strings or integers"}


def _is(value, kind) -> bool:
    if isinstance(kind, tuple):
        return any(_is(value, k) for k in kind)
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def version_error(path: Path, version) -> ArtifactError:
    if isinstance(version, int) and not isinstance(version, bool):
        if version > FORMAT_VERSION:
            return ArtifactError(
                f"{path}: artifact format version {version} is newer than this runtime reads "
                f"(it needs format version {FORMAT_VERSION}); upgrade the zoo to load it"
            )
        return ArtifactError(
            f"{path}: artifact format version {version} is older than this runtime reads "
            f"(it needs format version {FORMAT_VERSION}); rebuild the artifact with this zoo"
        )
    return ArtifactError(
        f"{path}: artifact format version {version!r} is not one this runtime knows "
        f"(it needs format version {FORMAT_VERSION}); rebuild the artifact with this zoo"
    )


class _Fields:
    """One JSON object of the manifest; ``where`` names it in messages ("manifest",
    "kv_cache", "graphs['model']")."""

    def __init__(self, path: Path, obj: Mapping, where: str):
        self.path, self.obj, self.where = path, obj, where

    def error(self, message: str) -> ArtifactError:
        return ArtifactError(f"{self.path}: {message}")

    def get(self, key: str, kind, *, required: bool = False, default=None):
        """``obj[key]`` of type ``kind``; ``default`` when absent or null and not required."""
        if key not in self.obj or (self.obj[key] is None and not required):
            if required:
                raise self.error(f"{self.where} lacks '{key}'")
            return default
        value = self.obj[key]
        if not _is(value, kind):
            raise self.error(f"{self.where} '{key}' is a {type(value).__name__}, not {_KINDS[kind]}")
        return value

    def items(self, key: str, kind, *, required: bool = False) -> Optional[tuple]:
        """A list of ``kind`` values, as a tuple."""
        values = self.get(key, list, required=required)
        if values is not None and not all(_is(v, kind) for v in values):
            raise self.error(f"{self.where} '{key}' is not a list of {_PLURAL[kind]}")
        return None if values is None else tuple(values)

    def table(self, key: str, kind, *, required: bool = False) -> Optional[dict]:
        """An object whose values are all ``kind``."""
        values = self.get(key, dict, required=required)
        for name, v in (values or {}).items():
            if not _is(v, kind):
                raise self.error(f"{self.where} '{key}' [{name!r}] is a {type(v).__name__}, not {_KINDS[kind]}")
        return None if values is None else dict(values)

    def section(self, key: str, *, required: bool = False) -> Optional[_Fields]:
        value = self.get(key, dict, required=required)
        return None if value is None else _Fields(self.path, value, key if self.where == "manifest" else f"{self.where}.{key}")


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: Optional[int] = None

    @classmethod
    def read(cls, path: Path, name: str, entry) -> FileEntry:
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: files[{name!r}] is a {type(entry).__name__}, not an object with sha256 and bytes")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise ArtifactError(f"{path}: files[{name!r}] has no sha256 (64 hex digits), so {name} cannot be verified")
        size = entry.get("bytes")
        if size is not None and (not _is(size, int) or size < 0):
            raise ArtifactError(f"{path}: files[{name!r}]: bytes {size!r} is not a size")
        return cls(digest, size)


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[str | int, ...]


@dataclass(frozen=True)
class GraphEntry:
    files: tuple[str, ...]
    inputs: tuple[TensorEntry, ...]
    outputs: tuple[TensorEntry, ...]
    nodes: Optional[int] = None
    weight_bytes: Optional[int] = None
    ops: Optional[tuple[str, ...]] = None
    nodes_before_optimize: Optional[int] = None

    @classmethod
    def read(cls, path: Path, graph: str, entry) -> GraphEntry:
        where = f"graphs[{graph!r}]"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: {where} is a {type(entry).__name__}, not an object")
        names = entry.get("files")
        if not isinstance(names, list) or not names:
            raise ArtifactError(f"{path}: {where} has no list of files")
        for name in names:
            if not isinstance(name, str) or not name:
                raise ArtifactError(f"{path}: {where} file: file name {name!r} is not a non-empty string")
        g = _Fields(path, entry, where)
        return cls(
            tuple(names),
            _tensors(path, where, entry, "inputs"),
            _tensors(path, where, entry, "outputs"),
            nodes=g.get("nodes", int),
            weight_bytes=g.get("weight_bytes", int),
            ops=g.items("ops", str),
            nodes_before_optimize=g.get("nodes_before_optimize", int),
        )

    def spec(self, name: str) -> GraphSpec:
        """The graph as zoo.spec.contract describes one (names, dtypes, axes)."""
        tensors = lambda values: tuple(TensorSpec(t.name, t.dtype, t.shape) for t in values)  # noqa: E731
        return GraphSpec(name, self.files[0], tensors(self.inputs), tensors(self.outputs))


def _tensors(path: Path, where: str, entry: dict, key: str) -> tuple[TensorEntry, ...]:
    values = entry.get(key)
    ok = isinstance(values, list) and all(
        isinstance(v, dict) and {"name", "dtype", "shape"} <= v.keys()
        and isinstance(v["name"], str) and isinstance(v["dtype"], str)
        and isinstance(v["shape"], list) and all(_is(d, (str, int)) for d in v["shape"])
        for v in values
    )
    if not ok:
        raise ArtifactError(f"{path}: {where} '{key}' is not a list of {{name, dtype, shape}}")
    return tuple(TensorEntry(v["name"], v["dtype"], tuple(v["shape"])) for v in values)


@dataclass(frozen=True)
class Tokens:
    """The special token ids (the spec's ``tokens``)."""

    bos: Optional[int] = None
    eos: tuple[int, ...] = ()
    pad: Optional[int] = None
    decoder_start: Optional[int] = None

    @classmethod
    def read(cls, t: Optional[_Fields]) -> Tokens:
        if t is None:
            return cls()
        return cls(t.get("bos", int), t.items("eos", int) or (), t.get("pad", int), t.get("decoder_start", int))


@dataclass(frozen=True)
class ModelEntry:
    """vocab_size, max_seq_len, d_model and the special token ids."""

    vocab_size: int
    max_seq_len: int
    d_model: Optional[int] = None
    tokens: Tokens = field(default_factory=Tokens)

    @classmethod
    def read(cls, m: _Fields) -> ModelEntry:
        return cls(
            m.get("vocab_size", int, required=True),
            m.get("max_seq_len", int, required=True),
            m.get("d_model", int),
            Tokens.read(m.section("tokens")),
        )


@dataclass(frozen=True)
class CacheEntry:
    """The decoder graph's KV cache; the text fields describe the tensors' names and layout."""

    layers: int
    kv_heads: int
    head_dim: int
    cross: Optional[str] = None  # set (a description) when the encoder graph returns cross.* tensors
    layout: Optional[str] = None
    past: Optional[str] = None
    present: Optional[str] = None
    prefill: Optional[str] = None
    refill_at: Optional[int] = None  # the generation loop recomputes the cache when the sequence first reaches this + 1
    buffer: Optional[str] = None  # set (a description) in a --kv-cache shared build: past and present are one buffer

    @classmethod
    def read(cls, kv: _Fields) -> CacheEntry:
        counts = [kv.get(k, int, required=True) for k in ("layers", "kv_heads", "head_dim")]
        texts = {k: kv.get(k, str) for k in ("cross", "layout", "past", "present", "prefill", "buffer")}
        return cls(*counts, **texts, refill_at=kv.get("refill_at", int))


@dataclass(frozen=True)
class Parameters:
    total: int
    embeddings: Optional[int] = None
    per_layer: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, p: _Fields) -> Parameters:
        return cls(p.get("total", int, required=True), p.get("embeddings", int), p.table("per_layer", int) or {})


@dataclass(frozen=True)
class BuildEntry:
    """How the graphs were prepared: target provider, optimization, precision.
    ``precision`` is "fp32", or for an fp16/int8 build the conversion's record
    (zoo.app.convert: its ``precision``, accuracy, speed and size against fp32)."""

    target: Optional[str] = None
    optimize: bool = False
    precision: str | Mapping[str, Any] = "fp32"
    lowering: Optional[Mapping[str, Any]] = None  # passes.optimize's record, when optimized
    kv_cache: Optional[Mapping[str, Any]] = None  # --kv-cache shared: passes.optimize.kv_share's record

    @classmethod
    def read(cls, b: Optional[_Fields]) -> BuildEntry:
        if b is None:
            return cls()
        precision = b.obj.get("precision")
        if precision is not None and not isinstance(precision, (str, dict)):
            raise b.error(f"build 'precision' is a {type(precision).__name__}, not a string or an object")
        return cls(b.get("target", str), b.get("optimize", bool, default=False), precision or "fp32", b.get("lowering", dict),
                   b.get("kv_cache", dict))

    @property
    def precision_name(self) -> str:
        """fp32, fp16 or int8."""
        record = self.precision_record
        if record is None:
            return self.precision if isinstance(self.precision, str) else "fp32"
        return record.get("precision", "fp32") if isinstance(record.get("precision"), str) else "fp32"

    @property
    def precision_record(self) -> Optional[Mapping[str, Any]]:
        """The conversion's record of a reduced-precision build; None for fp32."""
        return self.precision if isinstance(self.precision, Mapping) else None


@dataclass(frozen=True)
class Manifest:
    """The whole manifest.json. The first six fields are required; the others are
    None where an artifact lacks them (the build writes them all)."""

    format_version: int
    name: str
    family: str
    graphs: Mapping[str, GraphEntry]
    files: Mapping[str, FileEntry]
    model: ModelEntry
    description: Optional[str] = None
    dtype: Optional[str] = None
    artifact_id: Optional[str] = None
    spec_sha256: Optional[str] = None
    weights_sha256: Optional[str] = None
    seed: Optional[int] = None
    parameters: Optional[Parameters] = None
    opset: Optional[int] = None
    exporter: Optional[str] = None
    packages: Optional[Mapping[str, str]] = None
    created: Optional[str] = None
    kv_cache: Optional[CacheEntry] = None
    tokenizer: Optional[str] = None
    usage: Mapping[str, str] = field(default_factory=dict)  # role -> file (zoo.spec.usage): tokenizer_config, chat_template, ...
    parity: Optional[Mapping[str, Any]] = None  # zoo.app.parity's report, as the build checked it
    build_seconds: Optional[Mapping[str, float]] = None
    build: BuildEntry = field(default_factory=BuildEntry)

    @classmethod
    def from_json(cls, raw, path: Path | str = Path("manifest.json")) -> Manifest:
        """Check and type a parsed manifest.json (ArtifactError, one line, naming ``path``
        and the field)."""
        path = Path(path)
        if not isinstance(raw, dict):
            raise ArtifactError(f"{path}: manifest is not a JSON object")
        version = raw.get("format_version")
        if isinstance(version, bool) or version != FORMAT_VERSION:
            raise version_error(path, version)
        m = _Fields(path, raw, "manifest")
        name, family = m.get("name", str, required=True), m.get("family", str, required=True)
        graphs, files = m.get("graphs", dict, required=True), m.get("files", dict, required=True)
        model = m.section("model", required=True)
        files = {f: FileEntry.read(path, f, entry) for f, entry in files.items()}
        if not graphs:
            raise ArtifactError(f"{path}: manifest lists no graphs")
        graphs = {g: GraphEntry.read(path, g, entry) for g, entry in graphs.items()}
        tokenizer = raw.get("tokenizer")
        if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer):
            raise ArtifactError(f"{path}: tokenizer: file name {tokenizer!r} is not a non-empty string")
        kv, params = m.section("kv_cache"), m.section("parameters")
        return cls(
            version, name, family, graphs, files, ModelEntry.read(model),
            **{k: m.get(k, str) for k in ("description", "dtype", "artifact_id", "spec_sha256", "weights_sha256", "exporter", "created")},
            seed=m.get("seed", int),
            parameters=Parameters.read(params) if params else None,
            opset=m.get("opset", int),
            packages=m.table("packages", str),
            kv_cache=CacheEntry.read(kv) if kv and kv.obj else None,
            tokenizer=tokenizer,
            usage=read_usage(raw.get("usage"), path),
            parity=m.get("parity", dict),
            build_seconds=m.table("build_seconds", float),
            build=BuildEntry.read(m.section("build")),
        )

    @property
    def precision(self) -> str:
        """fp32, fp16 or int8: how the graphs were built."""
        return self.build.precision_name

    def graph_specs(self) -> tuple[GraphSpec, ...]:
        return tuple(g.spec(name) for name, g in self.graphs.items())

    def graph_files(self) -> set[str]:
        """Every file of every graph (the .onnx files and their external data)."""
        return {f for g in self.graphs.values() for f in g.files}

    def graph_bytes(self) -> int:
        """Bytes of the graph files, as the manifest records them."""
        return sum(self.files[f].bytes or 0 for f in self.graph_files() if f in self.files)
