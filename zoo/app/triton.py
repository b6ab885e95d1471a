"""An artifact as a Triton Inference Server model repository (ONNX Runtime backend).

``export_triton(artifact, repo)`` writes::

    REPO/README.md                      how to serve it, what goes in and out
    REPO/NAME/config.pbtxt              one model per graph of the artifact
    REPO/NAME/1/model.onnx              the graph, byte for byte (+ its external data files)

Decoder-only and encoder-only artifacts give one model, NAME; encoder-decoder gives
NAME_encoder and NAME_decoder. Every input and output of the config comes from the
artifact's manifest (names, dtypes, axes): the leading ``batch`` axis is Triton's
batch dimension (``max_batch_size``), every other named axis is ``-1``, fixed sizes stay.

Triton's ONNX Runtime backend runs one forward pass per request: the generation loop
(the KV cache carried from step to step, sampling, stopping) stays with the caller, as
``runtime.generate`` does it in process. Pure Python: reads the manifest, copies files;
imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from runtime.artifact import Artifact, load_artifact, staging_name, swap_into_place
from zoo.spec.contract import GraphSpec, TensorSpec
from zoo.spec.errors import ArtifactError, InputError

# numpy dtype names (as the manifest records them) -> Triton's DataType
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU", "auto": "KIND_AUTO"}
# The onnxruntime backend's optimization.graph.level: 0 (or absent) = every ORT optimization,
# 1 = basic + extended, -1 = basic only, 2 = none.
GRAPH_LEVELS = {"all": 0, "extended": 1, "basic": -1, "off": 2}
MODEL_FILE = "model.onnx"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class TritonOptions:
    """How the repository serves the model (the CLI's flags)."""

    max_batch_size: int = 8
    preferred_batch_sizes: Optional[tuple[int, ...]] = None  # None: powers of two up to max_batch_size
    max_queue_delay_us: int = 100
    instances: int = 1  # per GPU for KIND_GPU (and KIND_AUTO on a GPU machine), in all for KIND_CPU
    kind: str = "auto"  # gpu | cpu | auto
    gpus: Optional[tuple[int, ...]] = None  # KIND_GPU only: which GPUs (default: all)
    graph_optimization: str = "all"  # all | extended | basic | off
    threads: int = 0  # ORT intra-op threads per instance (0: ORT's choice)
    warmup: bool = False  # a model_warmup request of zeros, run when the model loads
    name: Optional[str] = None  # the Triton model name (default: the artifact's name)
    link: bool = False  # hard-link the graph files instead of copying (falls back to a copy)

    def check(self) -> None:
        def integer(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if not integer(self.max_batch_size) or self.max_batch_size < 1:
            raise InputError(f"--max-batch-size must be at least 1, got {self.max_batch_size!r}")
        if not integer(self.max_queue_delay_us) or self.max_queue_delay_us < 0:
            raise InputError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us!r}")
        if not integer(self.instances) or self.instances < 1:
            raise InputError(f"--instances must be at least 1, got {self.instances!r}")
        if not integer(self.threads) or self.threads < 0:
            raise InputError(f"--threads must be >= 0, got {self.threads!r}")
        if self.kind not in KINDS:
            raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.graph_optimization not in GRAPH_LEVELS:
            raise InputError(f"--graph-optimization must be one of {', '.join(GRAPH_LEVELS)}, got {self.graph_optimization!r}")
        if self.preferred_batch_sizes is not None:
            if not self.preferred_batch_sizes:
                raise InputError("--preferred-batch-sizes is empty")
            for b in self.preferred_batch_sizes:
                if not integer(b) or not 1 <= b <= self.max_batch_size:
                    raise InputError(f"--preferred-batch-sizes: {b!r} is not between 1 and --max-batch-size {self.max_batch_size}")
        if self.gpus is not None:
            if self.kind != "gpu":
                raise InputError("--gpus is for --kind gpu")
            if not self.gpus or any(not integer(g) or g < 0 for g in self.gpus):
                raise InputError(f"--gpus must list GPU indices >= 0, got {self.gpus!r}")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise InputError(
                f"--name {self.name!r} is not a Triton model name here: letters, digits, '_', '.', '-' (at most 128), not starting with '.' or '-'"
            )

    def batch_sizes(self) -> tuple[int, ...]:
        if self.preferred_batch_sizes is not None:
            return tuple(sorted(set(self.preferred_batch_sizes)))
        sizes, b = set(), 2
        while b <= self.max_batch_size:
            sizes.add(b)
            b *= 2
        if self.max_batch_size > 1:
            sizes.add(self.max_batch_size)
        return tuple(sorted(sizes))


@dataclass(frozen=True)
class TritonModel:
    """One model of the repository: the Triton name, the artifact graph it serves, its config."""

    name: str
    graph: GraphSpec
    files: tuple[str, ...]  # the graph's files as the artifact names them; the first becomes model.onnx
    config: str  # config.pbtxt


@dataclass
class TritonExport:
    repo: Path
    artifact: Artifact
    models: list[TritonModel] = field(default_factory=list)
    linked: bool = False  # whether the graph files are hard links into the artifact


# --------------------------------------------------------------------------- config.pbtxt


def _string(s: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def triton_type(dtype: str, where: str) -> str:
    try:
        return TRITON_TYPES[dtype]
    except KeyError:
        raise ArtifactError(f"{where}: dtype {dtype!r} has no Triton data type") from None


def triton_dims(tensor: TensorSpec, where: str) -> list[int]:
    """The dims of ``tensor`` without its leading batch axis: fixed sizes kept, named axes -1."""
    axes = tuple(tensor.axes)
    if not axes or axes[0] != "batch":
        raise ArtifactError(f"{where}: tensor {tensor.name!r} has axes {list(axes)}, not a leading 'batch' axis; Triton cannot batch it")
    dims = []
    for axis in axes[1:]:
        if isinstance(axis, int) and not isinstance(axis, bool) and axis > 0:
            dims.append(axis)
        elif isinstance(axis, str) and axis:
            dims.append(-1)
        elif isinstance(axis, int) and not isinstance(axis, bool) and axis == 0:
            dims.append(-1)  # an ONNX dimension without value or name: unknown
        else:
            raise ArtifactError(f"{where}: tensor {tensor.name!r} has axis {axis!r}, neither a size nor a name")
    return dims


def example_sizes(max_seq_len: int) -> dict[str, int]:
    """Concrete sizes for the named axes of one request (warm-up, tests): seq tokens after a past
    of past_seq, total_seq = past_seq + seq, within max_seq_len."""
    s = max(1, min(8, max_seq_len // 2))
    p = max(1, min(8, max_seq_len - s))
    return {"seq": s, "past_seq": p, "total_seq": s + p, "src_seq": s}


def concrete_shape(tensor: TensorSpec, batch: int, sizes: dict[str, int]) -> list[int]:
    """The shape of ``tensor`` for a request of ``batch`` rows, named axes from ``sizes``
    (an axis not there: sizes['seq'])."""
    out = []
    for axis in tensor.axes:
        if axis == "batch":
            out.append(batch)
        elif isinstance(axis, str):
            out.append(sizes.get(axis, sizes["seq"]))
        else:
            out.append(int(axis))
    return out


def _tensor_block(t: TensorSpec, where: str) -> str:
    dims = triton_dims(t, where)
    lines = [
        "  {",
        f"    name: {_string(t.name)}",
        f"    data_type: {triton_type(t.dtype, where)}",
    ]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:  # only the batch axis: Triton wants one dim; reshape drops it for the model
        lines.append("    dims: [ 1 ]")
        lines.append("    reshape: { shape: [ ] }")
    lines.append("  }")
    return "\n".join(lines)


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.splitlines())


def model_config(name: str, graph: GraphSpec, artifact: Artifact, options: TritonOptions) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig) for one graph."""
    where = f"{artifact.folder}: graphs[{graph.name!r}]"
    kind = KINDS[options.kind]
    m = artifact.manifest
    header = (
        f"Generated by `zoo export-triton` from artifact {artifact.name} ({m.get('family')}), graph {graph.name!r}.\n"
        f"artifact_id {m.get('artifact_id', '?')}; ONNX opset {m.get('opset', '?')}, checked at build time with "
        f"onnxruntime {(m.get('packages') or {}).get('onnxruntime', '?')}.\n"
        "One request = one forward pass. For generation the client drives the loop (see README.md)."
    )
    parts = [
        _comment(header),
        f"name: {_string(name)}",
        'backend: "onnxruntime"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {options.max_batch_size}",
        "version_policy: { latest: { num_versions: 1 } }",
        "input [\n" + ",\n".join(_tensor_block(t, where) for t in graph.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t, where) for t in graph.outputs) + "\n]",
    ]
    batching = ["dynamic_batching {"]
    if sizes := options.batch_sizes():
        batching.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in sizes)} ]")
    batching += [f"  max_queue_delay_microseconds: {options.max_queue_delay_us}", "}"]
    parts.append(
        "# Requests are batched only when every input has the same shape (same seq, past_seq, src_seq);\n"
        "# pad on the client side to make them batch.\n" + "\n".join(batching)
    )
    group = ["instance_group [", "  {", f"    count: {options.instances}", f"    kind: {kind}"]
    if options.gpus is not None:
        group.append(f"    gpus: [ {', '.join(str(g) for g in options.gpus)} ]")
    group += ["  }", "]"]
    parts.append("\n".join(group))
    level = GRAPH_LEVELS[options.graph_optimization]
    parts.append(
        f"# ONNX Runtime graph optimizations: {options.graph_optimization} "
        "(level 0 = all, 1 = basic + extended, -1 = basic, 2 = none)\n"
        f"optimization {{ graph: {{ level: {level} }} }}"
    )
    params = {"intra_op_thread_count": str(options.threads), "execution_mode": "0"}
    parts.append("\n".join(f"parameters {{ key: {_string(k)} value: {{ string_value: {_string(v)} }} }}" for k, v in params.items()))
    if options.warmup:
        parts.append(_warmup(graph, artifact, where))
    return "\n\n".join(parts) + "\n"


def _warmup(graph: GraphSpec, artifact: Artifact, where: str) -> str:
    sizes = example_sizes(int(artifact.model.get("max_seq_len", 16)))
    lines = ["model_warmup [", "  {", '    name: "zeros"', "    batch_size: 1"]
    for t in graph.inputs:
        dims = concrete_shape(t, 1, sizes)[1:] or [1]
        lines += [
            "    inputs {",
            f"      key: {_string(t.name)}",
            "      value: {",
            f"        data_type: {triton_type(t.dtype, where)}",
            f"        dims: [ {', '.join(str(d) for d in dims)} ]",
            "        zero_data: true",
            "      }",
            "    }",
        ]
    lines += ["  }", "]"]
    return "# One request of zeros when the model loads (first-request latency off the critical path)\n" + "\n".join(lines)


# --------------------------------------------------------------------------- the repository


def plan(artifact: Artifact, options: TritonOptions) -> list[TritonModel]:
    """The models of the repository for ``artifact``, configs rendered (nothing written)."""
    base = options.name or artifact.name
    if not _NAME.fullmatch(base):
        raise InputError(f"{artifact.folder}: model name {base!r} is not usable as a Triton model name; give --name")
    graphs = artifact.graphs
    family = artifact.family
    expected = {"decoder-only": ["model"], "encoder-only": ["model"], "encoder-decoder": ["encoder", "decoder"]}.get(family)
    if expected is None:
        raise ArtifactError(f"{artifact.folder}: family {family!r} is not one this exporter knows")
    if sorted(g.name for g in graphs) != sorted(expected):
        raise ArtifactError(f"{artifact.folder}: a {family} artifact with graphs {[g.name for g in graphs]}; expected {expected}")
    models = []
    for graph in graphs:
        name = base if graph.name == "model" else f"{base}_{graph.name}"
        files = tuple(artifact.manifest["graphs"][graph.name]["files"])
        if MODEL_FILE in files[1:]:
            raise ArtifactError(f"{artifact.folder}: graph {graph.name!r} has an external data file named {MODEL_FILE}")
        models.append(TritonModel(name, graph, files, model_config(name, graph, artifact, options)))
    return models


def _copy_checked(src: Path, dst: Path, entry: dict, link: bool) -> bool:
    """Copy (or hard-link) ``src`` to ``dst`` and check its sha256 and size against the
    manifest ``entry`` on the way; returns whether it was linked."""
    linked = False
    h = hashlib.sha256()
    if link:
        try:
            os.link(src, dst)
            linked = True
        except OSError:
            linked = False  # another filesystem, or links not allowed: copy instead
    try:
        if linked:
            with open(dst, "rb") as f:
                while block := f.read(_COPY_CHUNK):
                    h.update(block)
        else:
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                while block := fin.read(_COPY_CHUNK):
                    h.update(block)
                    fout.write(block)
            shutil.copystat(src, dst)
    except FileNotFoundError:
        raise ArtifactError(f"{src}: listed in the manifest but missing") from None
    size = dst.stat().st_size
    if entry.get("bytes") is not None and size != entry["bytes"]:
        raise ArtifactError(f"{src}: {size:,} bytes, the manifest records {entry['bytes']:,}; the file is truncated or was changed")
    if h.hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{src}: sha256 differs from the manifest; the file is corrupted or was changed")
    return linked


def _inside(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b)


def export_triton(artifact: str | Path | Artifact, repo: str | Path, options: TritonOptions = TritonOptions(), *, force: bool = False) -> TritonExport:
    """Write ``repo`` as a Triton model repository serving ``artifact``.

    Written into a hidden sibling folder and renamed into place at the end, so ``repo``
    is either the complete repository or what was there before. A non-empty ``repo`` is
    refused unless ``force`` (it is then replaced, as a whole). The graph files are
    checked against the manifest's sha256 as they are copied."""
    options.check()
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact, verify=False)  # the graphs are hashed as copied
    models = plan(art, options)
    repo = Path(repo)
    if repo.is_symlink():
        raise InputError(f"{repo}: is a symbolic link; give the real folder")
    if repo.exists():
        if not repo.is_dir():
            raise InputError(f"{repo}: exists and is not a folder")
        if any(repo.iterdir()) and not force:
            raise InputError(f"{repo}: exists and is not empty; refusing to overwrite it (--force replaces it)")
    real_repo, real_art = repo.resolve(), art.folder.resolve()
    if _inside(real_art, real_repo) or _inside(real_repo, real_art):
        raise InputError(f"{repo}: the repository and the artifact {art.folder} would contain one another; write it elsewhere")
    repo.parent.mkdir(parents=True, exist_ok=True)
    partial = repo.parent / staging_name(repo.name, "partial", os.getpid(), uuid.uuid4().hex[:8])
    partial.mkdir()
    result = TritonExport(repo, art, models)
    try:
        linked = []
        for model in models:
            version = partial / model.name / "1"
            version.mkdir(parents=True)
            (partial / model.name / "config.pbtxt").write_text(model.config, encoding="utf-8")
            for i, name in enumerate(model.files):
                entry = art.manifest["files"].get(name)
                if entry is None:
                    raise ArtifactError(f"{art.folder}: graph file {name!r} is not among the manifest's files")
                dst = version / (MODEL_FILE if i == 0 else name)
                dst.parent.mkdir(parents=True, exist_ok=True)
                linked.append(_copy_checked(art.folder / name, dst, entry, options.link))
        result.linked = bool(linked) and all(linked)
        (partial / "README.md").write_text(readme(art, models, options), encoding="utf-8")
        swap_into_place(partial, repo)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return result


# --------------------------------------------------------------------------- README.md


def _shape_text(t: TensorSpec) -> str:
    return "[" + ", ".join(str(a) for a in t.axes) + "]"


def readme(art: Artifact, models: list[TritonModel], options: TritonOptions) -> str:
    """The repository's README.md: how to serve it, its tensors, how to call it, how to scale."""
    out = _readme_serving(art, models, options) + _readme_tensors(art, models) + _readme_calling(art, models) + _readme_scaling()
    return "\n".join(out)


def _readme_serving(art: Artifact, models: list[TritonModel], options: TritonOptions) -> list[str]:
    m = art.manifest
    ort = (m.get("packages") or {}).get("onnxruntime", "?")
    names = ", ".join(f"`{x.name}`" for x in models)
    return [
        f"# Triton model repository: {art.name}",
        "",
        f"Generated by `zoo export-triton` from the artifact `{art.folder.name}` ({art.family}, "
        f"artifact_id `{str(m.get('artifact_id', '?'))[:12]}`). Models: {names}. Backend: ONNX Runtime "
        f"(`backend: \"onnxruntime\"`), ONNX opset {m.get('opset', '?')}, checked at build time with onnxruntime {ort}: "
        "use a Triton release whose ONNX Runtime is at least that new (the release notes list it).",
        "",
        "## Serve it",
        "",
        "```sh",
        "REPO=$(realpath .)   # this folder",
        "docker run --rm --gpus=all -p8000:8000 -p8001:8001 -p8002:8002 -v $REPO:/models \\",
        "  nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models",
        "curl -s localhost:8000/v2/health/ready && echo ready",
        "```",
        "",
        "Ports: 8000 HTTP, 8001 gRPC, 8002 Prometheus metrics. Leave out `--gpus=all` on a machine without one "
        f"(the instance group is `{KINDS[options.kind]}`"
        + ("; `KIND_GPU` needs a GPU" if options.kind == "gpu" else "")
        + ").",
        "",
        f"Batching: `max_batch_size: {options.max_batch_size}`, dynamic batching (preferred sizes "
        f"{list(options.batch_sizes()) or 'none'}, queue delay {options.max_queue_delay_us} µs), "
        f"{options.instances} instance(s) per {'GPU' if options.kind != 'cpu' else 'server'}. Triton batches requests "
        "together only when all their inputs have the same shape; the first dimension of every tensor below is the batch.",
        "",
        "## Inputs and outputs",
        "",
    ]


def _readme_tensors(art: Artifact, models: list[TritonModel]) -> list[str]:
    model = art.model
    tokens = model.get("tokens") or {}
    out: list[str] = []
    for x in models:
        out += [f"### `{x.name}` (graph `{x.graph.name}`)", "", "| | name | dtype | shape (batch first) |", "| --- | --- | --- | --- |"]
        for kind, tensors in (("in", x.graph.inputs), ("out", x.graph.outputs)):
            for t in tensors:
                out.append(f"| {kind} | `{t.name}` | {TRITON_TYPES.get(t.dtype, t.dtype)} | {_shape_text(t)} |")
        out.append("")
    out += [
        "Token ids are int64; attention masks are int64, 1 for a token and 0 for padding. "
        f"vocab_size {model.get('vocab_size')}, max_seq_len {model.get('max_seq_len')}, d_model {model.get('d_model')}; "
        f"special tokens: {', '.join(f'{k} {v}' for k, v in tokens.items() if v is not None) or 'none'}.",
        "",
    ]
    return out


def _readme_calling(art: Artifact, models: list[TritonModel]) -> list[str]:
    """One forward pass per request, or the generation loop the client runs."""
    if art.cache is not None:
        return _readme_generation(art, models)
    return [
        "## Calling it",
        "",
        "One request = one forward pass over `input_ids` and `attention_mask` "
        "(batch, seq); every output comes back in the same call.",
        "",
    ]


def _readme_generation(art: Artifact, models: list[TritonModel]) -> list[str]:
    """The decode loop with the cache travelling through every request."""
    model = art.model
    tokens = model.get("tokens") or {}
    cache = art.cache
    out: list[str] = []
    dec = next(x for x in models if x.graph.name in ("model", "decoder"))
    past = next((t for t in dec.graph.inputs if t.name.startswith("past.")), None)
    itemsize = _ITEMSIZE.get(past.dtype, 4) if past is not None else 4
    per_token = 2 * cache.layers * cache.kv_heads * cache.head_dim * itemsize
    ids = "decoder_input_ids" if art.family == "encoder-decoder" else "input_ids"
    mask = "decoder_attention_mask" if art.family == "encoder-decoder" else "attention_mask"
    out += [
        "## Generating: the loop is the client's",
        "",
        "Triton's ONNX Runtime backend runs one forward pass per request and keeps nothing between "
        "requests. Generation is a loop of such passes, and the loop is the caller's:",
        "",
    ]
    step = 1
    if art.family == "encoder-decoder":
        out.append(
            f"{step}. `{models[0].name}`: `input_ids`, `attention_mask` (batch, src_seq) -> `encoder_hidden_states` "
            f"and `cross.{{i}}.key/value`, once per prompt. Keep the cross tensors: every decoder step takes them unchanged, "
            "with `encoder_attention_mask` = the encoder's mask."
        )
        step += 1
    out += [
        f"{step}. Prefill: `{dec.name}` with `{ids}` = the prompt (batch, seq), `{mask}` = its mask "
        f"(batch, seq) and every `past.{{i}}.key/value` empty: shape (batch, {cache.kv_heads}, 0, {cache.head_dim}).",
        f"{step + 1}. Pick the next token from `logits[:, -1]` (greedy, or sample: temperature, top-k, top-p).",
        f"{step + 2}. Decode step: `{ids}` = the new tokens (batch, 1), `{mask}` = the mask extended by a 1 "
        "(batch, total_seq), and `past.{i}.*` = the previous step's `present.{i}.*` "
        f"(batch, {cache.kv_heads}, total_seq, {cache.head_dim}). Repeat from {step + 1} until EOS "
        f"({tokens.get('eos')}) or a length limit; total_seq may not exceed max_seq_len {model.get('max_seq_len')}.",
        "",
        f"The cache travels with every request and response: {per_token:,} bytes per token of context per "
        "direction and per row"
        + (f", and the cross tensors {per_token:,} bytes per source token on every step" if cache.cross else "")
        + ". Over the network that is the cost of each step; keep the client next to the "
        "server (or use Triton's shared-memory API) for long contexts.",
        "",
        "The zoo's own runtime does this loop in process, with the cache kept on the device between steps, "
        "batched prompts of different lengths (left padding), sampling and stopping:",
        "",
        "```sh",
        f"zoo generate {art.folder} --ids 1,2,3 --max-new-tokens 20",
        "```",
        "",
        "Triton's plain ONNX backend does none of that: each request is one step; the client keeps the cache "
        "(or a Triton sequence batcher with implicit state would keep it, which these graphs are not set up for).",
        "",
    ]
    return out


def _readme_scaling() -> list[str]:
    return [
        "## Scaling",
        "",
        "- More instances per GPU: `zoo export-triton ... --instances N` (instance_group count).",
        "- Several GPUs: KIND_GPU / KIND_AUTO place the instances on every visible GPU (`--gpus 0,1` to choose).",
        "- Replicas: run several Triton servers on the same repository (shared storage, read-only) behind a "
        "load balancer; each server is stateless between requests.",
        "",
        "See docs/triton.md in the zoo for the details.",
        "",
    ]

