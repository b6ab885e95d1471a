"""Finding the weights of the int8 pass in a graph, by op type and graph walks (never
by node name, so plain and optimized graphs alike): the MatMuls with a constant weight
(a tied output projection's Transpose of the embedding included), the token
embedding Gathers, the query and key projections, and the activations to calibrate."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from passes.precision.graph import node_attr
from zoo.spec.families import Role


def _plain_gemm(node: onnx.NodeProto) -> bool:
    """A Gemm that is a MatMul plus an optional bias: alpha = beta = 1, A not transposed
    (torch's linear on 2-D inputs: BERT's pooler, a mixture's experts). transB says how
    B is stored."""
    return node_attr(node, "alpha", 1.0) == 1.0 and node_attr(node, "beta", 1.0) == 1.0 and not node_attr(node, "transA", 0)


def gemm_bias(node: onnx.NodeProto) -> str | None:
    """The bias C of a plain Gemm (``constant_matmuls``), None for a MatMul."""
    return node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None


def constant_matmuls(proto: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, bool]]:
    """(node, weight initialiser, transposed) for every MatMul whose B is a 2-D
    float32 initialiser (transposed False) or a Transpose of one (a tied output
    projection: transposed True), and every plain Gemm (``_plain_gemm``) on a 2-D float32
    initialiser (transposed: its transB); a Gemm's bias is added after (``gemm_bias``)."""
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    transposes = {}
    for n in g.node:
        if n.op_type == "Transpose" and n.input[0] in inits:
            perm = list(node_attr(n, "perm", [1, 0]))
            if perm == [1, 0]:
                transposes[n.output[0]] = n.input[0]
    out = []
    for n in g.node:
        if n.op_type == "Gemm" and _plain_gemm(n):
            name, transposed = (n.input[1], bool(node_attr(n, "transB", 0))) if n.input[1] in inits else (None, False)
        elif n.op_type == "MatMul" and len(n.input) == 2:
            b = n.input[1]
            name, transposed = (b, False) if b in inits else (transposes.get(b), True)
        else:
            continue
        if name is None:
            continue
        t = inits[name]
        if len(t.dims) == 2 and t.data_type == TensorProto.FLOAT:
            out.append((n, name, transposed))
    return out


def embedding_gathers(proto: onnx.ModelProto, vocab_size: int) -> list[tuple[onnx.NodeProto, str]]:
    """(Gather, table) for Gathers on axis 0 of a float32 (vocab_size, d) initialiser."""
    inits = {t.name: t for t in proto.graph.initializer}
    out = []
    for n in proto.graph.node:
        if n.op_type == "Gather" and n.input[0] in inits:
            t = inits[n.input[0]]
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            if axis == 0 and t.data_type == TensorProto.FLOAT and len(t.dims) == 2 and t.dims[0] == vocab_size:
                out.append((n, n.input[0]))
    return out


ATTENTION_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention")
_SCORE_PATH_OPS = frozenset(
    "Add Sub Mul Div Neg Cast Reshape Unsqueeze Squeeze Transpose Expand Concat Slice Split Identity Where "
    "RotaryEmbedding Tile".split()
)


def score_projections(proto: onnx.ModelProto) -> set[str]:
    """Names of the constant-weight MatMuls that make queries and keys: walking back
    from both inputs of each Q·Kᵀ MatMul (the activation x activation MatMul that a
    Softmax's scores come from) or from the first two inputs of a fused attention
    op, through reshapes, rotary embedding, scaling and the cache Concat; and from an
    encoder graph's cross-attention key outputs."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    constant = {n.name for n, _, _ in constant_matmuls(proto)}
    # an encoder graph's cross-attention keys are graph outputs (``cross.{i}.key``): the decoder's scores read them
    starts: list[str] = [o.name for o in g.output if Role.of(o.name) is Role.CROSS and o.name.endswith(".key")]
    for node in g.node:
        if node.op_type in ATTENTION_OPS:
            starts += [i for i in node.input[:2] if i]
        elif node.op_type == "Softmax":
            scores = _walk_to(node.input[0], producer, lambda n: n.op_type == "MatMul" and not set(n.input) & inits)
            starts += list(scores.input) if scores is not None else []
    found: set[str] = set()
    for start in starts:
        found |= {n.name for n in _walk_back(start, producer, lambda n: n.name in constant, skip=inits)}
    return found


def pooler_projections(proto: onnx.ModelProto) -> set[str]:
    """Names of the constant-weight matmuls that feed a graph output through one Tanh
    (BERT's pooler). They stay float32: the Tanh bounds its output near 1, so the
    parity rule's scale there is 1 while the error of the saturated pre-activation
    (of order 10 on trained weights) is not shrunk where tanh is steep; and it is one
    d x d matmul a sequence (0.5% of BERT's weights, nothing of its time)."""
    outputs = {o.name for o in proto.graph.output}
    tanh_in = {n.input[0] for n in proto.graph.node if n.op_type == "Tanh" and n.output[0] in outputs}
    readers: dict[str, int] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    return {n.name for n, _, _ in constant_matmuls(proto) if n.output[0] in tanh_in and readers[n.output[0]] == 1}


def _walk_back(value: str, producer: dict, stop, skip=frozenset()):
    """The nodes satisfying ``stop`` reached walking back from ``value`` through
    score-path ops (not through a ``stop`` node, nor into the values in ``skip``)."""
    stack, seen = [value], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if stop(node):
            yield node
        elif node.op_type in _SCORE_PATH_OPS:
            stack.extend(i for i in node.input if i and i not in skip)


def _walk_to(value: str, producer: dict, wanted) -> onnx.NodeProto | None:
    """The first node satisfying ``wanted`` walking back from ``value`` through score-path ops."""
    return next(_walk_back(value, producer, wanted), None)


def calibration_taps(proto: onnx.ModelProto) -> list[str]:
    """The activations to calibrate: the A input of every constant-weight MatMul."""
    return sorted({n.input[0] for n, _, _ in constant_matmuls(proto)})
