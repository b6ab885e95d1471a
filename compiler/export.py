"""torch module -> ONNX graphs that follow zoo.spec.contract, checked by onnx.checker.

The exporter is torch.onnx's dynamo path at opset 23 with dynamic batch and
sequence axes. After export, initialisers that are another initialiser transposed
(a tied output projection folded by the exporter's optimiser) are replaced by a
Transpose node, so tied weights are stored once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from compiler.builder import DTYPES
from zoo.spec.inputs import padded_mask
from zoo.spec.contract import OPSET, GraphSpec
from zoo.spec.families import Role, cache_layout
from zoo.spec.errors import ExportError
from zoo.spec.model import ModelSpec



def _dims(spec: ModelSpec, graph: GraphSpec) -> tuple[dict[int, object], ...]:
    """Dynamic axes per input, positionally (cache tensors arrive as *args, one tuple). The
    mask's total_seq is past_seq + seq; the exporter infers that relation (AUTO)."""
    dims = {
        "batch": torch.export.Dim("batch", min=1, max=1 << 16),
        "seq": torch.export.Dim("seq", min=1, max=spec.max_seq_len),
        "src_seq": torch.export.Dim("src_seq", min=1, max=spec.max_seq_len),
        "past_seq": torch.export.Dim("past_seq", min=0, max=spec.max_seq_len),
        "total_seq": torch.export.Dim.AUTO,
    }
    per_input = [{i: dims[a] for i, a in enumerate(t.axes) if a in dims} for t in graph.inputs]
    n_fixed = sum(1 for t in graph.inputs if Role.of(t.name) is None)  # the cache tensors go as *args
    if n_fixed == len(per_input):
        return tuple(per_input)
    return (*per_input[:n_fixed], tuple(per_input[n_fixed:]))  # the *args of the graph module


# Sizes to trace with: distinct from each other and > 1, so no axis is specialised.
EXAMPLE_SIZES = {"batch": 3, "seq": 5, "past_seq": 4, "src_seq": 7}


def example_inputs(spec: ModelSpec, graph: GraphSpec, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with, following the contract: ids, masks with padding,
    random cache tensors."""
    rng = np.random.default_rng(seed)
    cache = cache_layout(spec)
    sizes = dict(EXAMPLE_SIZES, d_model=spec.d_model, vocab=spec.vocab_size)
    if cache is not None:
        sizes.update(kv_heads=cache.kv_heads, head_dim=cache.head_dim)
    sizes = {k: min(v, spec.max_seq_len) if k.endswith("seq") else v for k, v in sizes.items()}
    sizes["total_seq"] = sizes["past_seq"] + sizes["seq"]
    dtype = DTYPES[spec.dtype]
    out = []
    for t in graph.inputs:
        shape = [sizes[a] for a in t.axes]
        if t.dtype == "int64" and t.name.endswith("attention_mask"):
            x = torch.from_numpy(padded_mask(shape[0], shape[1], rng))
        elif t.dtype == "int64":
            x = torch.from_numpy(rng.integers(0, spec.vocab_size, size=shape, dtype=np.int64))
        else:
            x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)
        out.append(x)
    return tuple(out)


@contextlib.contextmanager
def _quiet():
    """torch.onnx prints progress and warnings of its own; the zoo shows its own progress."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_graph(module: torch.nn.Module, spec: ModelSpec, graph: GraphSpec) -> onnx.ModelProto:
    """Export one graph and return its checked ModelProto."""
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                module,
                example_inputs(spec, graph),
                None,
                dynamo=True,
                opset_version=OPSET,
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_shapes=_dims(spec, graph),
                verbose=False,
                optimize=True,
            )
        proto = program.model_proto
    except Exception as e:  # the exporter raises many types; report one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{spec.name}: exporting graph '{graph.name}' failed: {type(e).__name__}: {first}") from e
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    if got_in != graph.input_names or got_out != graph.output_names:
        raise ExportError(
            f"{spec.name}: graph '{graph.name}' has inputs {got_in} and outputs {got_out}, "
            f"the contract wants {graph.input_names} and {graph.output_names}"
        )
    _name_axes(proto, graph)
    dedupe_transposed_initializers(proto)
    proto.producer_name = "transformer-zoo"
    helper.set_model_props(proto, {"zoo.spec": spec.name, "zoo.graph": graph.name})
    return proto


def _name_axes(proto: onnx.ModelProto, graph: GraphSpec) -> None:
    """Give the graph's symbolic input/output axes the contract's names (the exporter
    writes its own, such as 's53' or 'past_seq + seq')."""
    for values, specs in ((proto.graph.input, graph.inputs), (proto.graph.output, graph.outputs)):
        for value, tensor in zip(values, specs):
            for dim, axis in zip(value.type.tensor_type.shape.dim, tensor.axes):
                if dim.dim_param:
                    dim.dim_param = axis


def dedupe_transposed_initializers(proto: onnx.ModelProto, min_elements: int = 1024) -> int:
    """Replace each 2-D initialiser that equals another one transposed by a
    Transpose node; returns how many were replaced (tied embeddings -> 1)."""
    graph = proto.graph
    by_shape: dict[tuple[int, ...], list[onnx.TensorProto]] = {}
    for init in graph.initializer:
        if len(init.dims) == 2 and init.dims[0] * init.dims[1] >= min_elements:
            by_shape.setdefault(tuple(init.dims), []).append(init)
    replaced = []
    cache: dict[str, np.ndarray] = {}

    def array(t: onnx.TensorProto) -> np.ndarray:
        if t.name not in cache:
            cache[t.name] = numpy_helper.to_array(t)
        return cache[t.name]

    for shape, inits in by_shape.items():
        if shape[0] == shape[1]:
            continue
        for t in inits:
            for src in by_shape.get((shape[1], shape[0]), []):
                if src.name in replaced or t.name in replaced or t.data_type != src.data_type:
                    continue
                if np.array_equal(array(t), array(src).T):
                    replaced.append(t.name)
                    graph.node.insert(0, helper.make_node("Transpose", [src.name], [t.name], perm=[1, 0], name=f"tied/{t.name}"))
                    break
    if replaced:
        keep = [i for i in graph.initializer if i.name not in replaced]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return len(replaced)
