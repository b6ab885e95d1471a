"""config.pbtxt: Triton's ``ModelConfig`` protobuf (the one tritonclient ships), filled
field by field from the artifact's manifest and the options, written in protobuf text
format after a header of comments.

tritonclient is imported only when a config is rendered (``pip install
'transformer-zoo[triton]'``); the options, dtypes and dims here need nothing beyond the
standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from runtime.artifact import Artifact
from zoo.spec.contract import GraphSpec, TensorSpec
from zoo.spec.errors import ArtifactError, InputError, ZooError

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
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class TritonClientMissing(ZooError):
    """tritonclient (whose ModelConfig protobuf writes config.pbtxt) is not installed."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__("writing config.pbtxt needs tritonclient's ModelConfig protobuf: pip install 'transformer-zoo[triton]'")


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
        if self.name is not None and not NAME.fullmatch(self.name):
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


# --------------------------------------------------------------------------- the ModelConfig message


def _protobuf():
    """tritonclient's model_config_pb2 and protobuf's text_format, imported on first use."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise TritonClientMissing() from None
    return model_config_pb2, text_format


def _tensor(message, t: TensorSpec, where: str, pb) -> None:
    """Fill one ModelInput / ModelOutput ``message`` from ``t``."""
    message.name = t.name
    message.data_type = pb.DataType.Value(triton_type(t.dtype, where))
    dims = triton_dims(t, where)
    if dims:
        message.dims.extend(dims)
    else:  # only the batch axis: Triton wants one dim; an empty reshape drops it for the model
        message.dims.append(1)
        message.reshape.SetInParent()


def _warmup(config, graph: GraphSpec, artifact: Artifact, where: str, pb) -> None:
    """One model_warmup request of zeros, each input at a concrete shape within max_seq_len."""
    sizes = example_sizes(artifact.info.model.max_seq_len)
    warm = config.model_warmup.add(name="zeros", batch_size=1)
    for t in graph.inputs:
        value = warm.inputs[t.name]
        value.data_type = pb.DataType.Value(triton_type(t.dtype, where))
        value.dims.extend(concrete_shape(t, 1, sizes)[1:] or [1])
        value.zero_data = True


def _header(graph: GraphSpec, artifact: Artifact, options: TritonOptions) -> str:
    """The comments written before the message text."""
    m = artifact.info
    lines = [
        f"Generated by `zoo export-triton` from artifact {artifact.name} ({m.family}), graph {graph.name!r}.",
        f"artifact_id {m.artifact_id or '?'}; ONNX opset {m.opset or '?'}, checked at build time with "
        f"onnxruntime {(m.packages or {}).get('onnxruntime', '?')}.",
        "One request = one forward pass. For generation the client drives the loop (see README.md).",
        "Requests are batched only when every input has the same shape (same seq, past_seq, src_seq);",
        "pad on the client side to make them batch.",
        f"ONNX Runtime graph optimizations: {options.graph_optimization} (level 0 = all, 1 = basic + extended, -1 = basic, 2 = none).",
    ]
    if options.warmup:
        lines.append("model_warmup: one request of zeros when the model loads (first-request latency off the critical path).")
    return "".join(f"# {line}\n" for line in lines)


def model_config_message(name: str, graph: GraphSpec, artifact: Artifact, options: TritonOptions):
    """Triton's ModelConfig protobuf message for one graph."""
    pb, _ = _protobuf()
    where = f"{artifact.folder}: graphs[{graph.name!r}]"
    config = pb.ModelConfig(name=name, backend="onnxruntime", platform="onnxruntime_onnx", max_batch_size=options.max_batch_size)
    config.version_policy.latest.num_versions = 1
    for t in graph.inputs:
        _tensor(config.input.add(), t, where, pb)
    for t in graph.outputs:
        _tensor(config.output.add(), t, where, pb)
    config.dynamic_batching.preferred_batch_size.extend(options.batch_sizes())
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    group = config.instance_group.add(count=options.instances, kind=pb.ModelInstanceGroup.Kind.Value(KINDS[options.kind]))
    if options.gpus is not None:
        group.gpus.extend(options.gpus)
    config.optimization.graph.SetInParent()  # level 0 (every optimization) is the field's default
    config.optimization.graph.level = GRAPH_LEVELS[options.graph_optimization]
    config.parameters["intra_op_thread_count"].string_value = str(options.threads)
    config.parameters["execution_mode"].string_value = "0"
    if options.warmup:
        _warmup(config, graph, artifact, where, pb)
    return config


def model_config(name: str, graph: GraphSpec, artifact: Artifact, options: TritonOptions) -> str:
    """config.pbtxt for one graph: a header of comments, then the ModelConfig in protobuf text format."""
    message = model_config_message(name, graph, artifact, options)
    _, text_format = _protobuf()
    return _header(graph, artifact, options) + "\n" + text_format.MessageToString(message)
