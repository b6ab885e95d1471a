"""fp16 graphs (for CUDA): weights and compute in float16, except what overflows.

fp16 (onnxruntime.transformers.float16 with a block list; the ops it keeps in fp32 are
chosen here, by op type and by walking the graph, never by node name, so the pass works
on plain and on optimized graphs alike):

- norms (LayerNormalization, RMSNormalization, the ONNX Runtime fused
  (Skip)(Simplified)LayerNormalization, Group/Instance/BatchNormalization) and the
  decomposed norm (ReduceMean/ReduceSum*/Pow/Sqrt/Reciprocal, and the Add/Div/Mul
  that take a reduction's or a root's result): the variance is a sum of squares,
  which overflows fp16 (65504) once |x| is a few hundred; fused fp16 kernels that
  accumulate it in fp16 return zeros or NaN (onnxruntime issue 29034);
- Softmax and its input scores: walking back from Softmax's input through
  elementwise/shape ops up to and including the Q·Kᵀ MatMul (scale, mask, ALiBi and
  relative-position biases): the masked fill (-3.4e38) and large scores stay finite;
- position math: Sin/Cos (RoPE and sinusoidal tables) and every float computation
  that ends in a cast to an integer (T5's relative-position buckets), walked back
  to their integer inputs: positions past 2048 are not exact in fp16;
- ScatterND: the mixture of experts sums the experts' outputs with an add reduction, which
  ONNX Runtime's CPU kernel lacks in float16 (and a sum of experts is better in fp32).

Two fixes to the converter's output: the Cast round trips it inserts between fp32
nodes are removed (``drop_round_trips``), and the nodes are sorted again
(``graph.topological_sort``). The cache IO is float16; the outputs a person reads
stay float32.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from passes.precision.graph import name_nodes, quiet_logs, reinfer, topological_sort, value_types
from zoo.spec.families import Role

NORM_OPS = (
    "LayerNormalization",
    "RMSNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "BatchNormalization",
)
REDUCTION_OPS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt", "Reciprocal")
SOFTMAX_OPS = ("Softmax", "LogSoftmax")
POSITION_OPS = ("Sin", "Cos")
SUM_OPS = ("ScatterND",)  # the mixture of experts' sum over experts (add reduction: no float16 CPU kernel)
KEPT_FP32_OPS = NORM_OPS + REDUCTION_OPS + SOFTMAX_OPS + POSITION_OPS + SUM_OPS
# ops a walk back from an anchor passes through (elementwise, shape, gather)
_PATH_OPS = frozenset(
    "Add Sub Mul Div Where Neg Abs Cast Reshape Unsqueeze Squeeze Transpose Expand Concat Slice Gather "
    "Log Exp Clip Min Max Tile Identity Floor Ceil Round Sign Sin Cos Pow Sqrt Reciprocal ReduceMean ReduceSum".split()
)
_MATMUL_OPS = ("MatMul", "Gemm", "Einsum", "FusedMatMul")
_ELEMENTWISE_AFTER_NORM = ("Add", "Sub", "Mul", "Div")
_INTEGER_TYPES = {
    TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.BOOL,
}


def fp32_nodes(proto: onnx.ModelProto) -> set[str]:
    """Names of the nodes to keep in fp32 (see the module docstring). Op-agnostic:
    decided by op type and by walking the graph from anchors."""
    name_nodes(proto)
    g = proto.graph
    types = value_types(proto)
    producer = {o: n for n in g.node for o in n.output}
    keep: set[str] = set()

    def walk(value: str, *, stop_at_matmul: bool) -> None:
        stack = [value]
        while stack:
            v = stack.pop()
            node = producer.get(v)
            if node is None or node.name in keep or types.get(v, TensorProto.FLOAT) != TensorProto.FLOAT:
                continue
            if node.op_type in _MATMUL_OPS:
                keep.add(node.name)
                if not stop_at_matmul:
                    stack.extend(node.input)
                continue
            if node.op_type not in _PATH_OPS:
                continue
            keep.add(node.name)
            if node.op_type == "Cast":  # from an integer (positions) or from a kept value: the walk ends
                continue
            stack.extend(node.input)

    roots = ("Sqrt", "Reciprocal", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2")
    for node in g.node:
        if node.op_type in NORM_OPS or node.op_type in REDUCTION_OPS:
            keep.add(node.name)
        elif node.op_type in SOFTMAX_OPS:
            keep.add(node.name)
            for name in node.input:
                walk(name, stop_at_matmul=True)
        elif node.op_type in POSITION_OPS:
            keep.add(node.name)
            for name in node.input:
                walk(name, stop_at_matmul=False)
        elif node.op_type in ("Cast", "Floor", "Ceil", "Round"):
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if node.op_type != "Cast" or to in _INTEGER_TYPES:  # float math that becomes an index
                if node.op_type != "Cast":
                    keep.add(node.name)
                for name in node.input:
                    walk(name, stop_at_matmul=False)
    # a decomposed norm: the eps Add after the mean of squares, the Div/Mul by the root
    for node in g.node:
        if node.op_type in _ELEMENTWISE_AFTER_NORM and any(producer.get(i) is not None and producer[i].op_type in roots for i in node.input):
            keep.add(node.name)
    return keep


def drop_round_trips(proto: onnx.ModelProto) -> int:
    """Remove Cast(fp32 -> fp16) -> Cast(fp16 -> fp32) pairs: the converter casts the
    output of every fp32 node to fp16 and back for the next fp32 node, which would
    send the masked scores (-3.4e38) and large values through fp16 after all. The
    consumers read the fp32 value directly. Returns how many casts were bypassed."""
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    rename: dict[str, str] = {}
    for node in g.node:
        if cast_to(node) != TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or cast_to(first) != TensorProto.FLOAT16:
            continue
        source = first.input[0]
        src_node = producer.get(source)
        src_type = TensorProto.FLOAT if src_node is None or src_node.op_type != "Cast" else cast_to(src_node)
        if src_type == TensorProto.FLOAT and node.output[0] not in outputs:
            rename[node.output[0]] = source
    if not rename:
        return 0
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {i for n in g.node for i in n.input} | outputs
    keep = [n for n in g.node if n.op_type != "Cast" or any(o in used for o in n.output)]
    del g.node[:]
    g.node.extend(keep)
    return len(rename)


def to_fp16(proto: onnx.ModelProto, *, naive: bool = False) -> tuple[onnx.ModelProto, list[str]]:
    """``proto`` with weights and compute in float16, except what ``fp32_nodes``
    keeps; cache IO float16, other float outputs float32. ``naive=True``: every op
    in fp16 (the converter's own block list only), to show what the block list is for.
    Returns the converted proto and the op types of the nodes kept in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    name_nodes(proto)
    keep_io = [o.name for o in proto.graph.output if Role.of(o.name) is None]  # the cache tensors go fp16
    ops = set(DEFAULT_OP_BLOCK_LIST)
    nodes: set[str] = set()
    if not naive:
        ops |= set(NORM_OPS) | set(SOFTMAX_OPS) | set(POSITION_OPS) | set(SUM_OPS)
        nodes = fp32_nodes(proto)
    kept = sorted({n.op_type for n in proto.graph.node if n.name in nodes or n.op_type in KEPT_FP32_OPS}) if not naive else []
    with quiet_logs():
        converted = convert_float_to_float16(proto, keep_io_types=keep_io, op_block_list=sorted(ops), node_block_list=sorted(nodes))
    drop_round_trips(converted)
    topological_sort(converted)
    return reinfer(converted), kept
