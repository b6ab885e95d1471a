"""int8 for CPU that holds on trained weights: weight-only int8 in blocks, int8 compute,
and the outlier input channels of each matmul in float32.

Every MatMul with a constant weight B (K x N), and every Gemm that is one plus a bias
(a 2-D linear: a mixture's experts), becomes ONNX Runtime's MatMulNBits
(bits 8): for each output column, B is quantized in blocks of ``block_size`` along K,
symmetric, one float32 scale per block (zero point 128, the op's default). With
``accuracy_level`` 4 ONNX Runtime computes in int8: it quantizes the activations at
run time per row and per block of ``block_size`` (not one scale per tensor, which a
few large channels break), and multiplies int8 by int8.

Trained models have a few input channels that are 20-1000x the others: the
"massive activations" of the residual stream, carried into each matmul by norm
weights, and the rows of a tied embedding for the tokens that carry them. One such
channel sets the scale of its whole block, so the other values of the block round
to almost nothing; an activation that large multiplies the rounding error of its
weight. Those channels are found per matmul (``outlier_channels``): an input channel
whose calibrated activation (the fp32 graph run on a fixed batch) or whose weight row
is ``outlier_ratio`` times the typical one. They are taken out of the int8 product
(their weight rows zeroed before quantization, their activations masked to 0) and
computed in float32 beside it, ``x[..., C] @ B[C, :]`` (LLM.int8's decomposition with
the channels fixed at build time): a few channels, a small matmul.

The query and key projections (``matmuls.score_projections``: the MatMuls whose
outputs reach a Q·Kᵀ product) stay float32: the scores multiply their rounding error
by the size of the keys and queries, and a sharp softmax turns a small score error
into a different attended token; measured on the trained-like 30-layer model, they
are most of int8's disagreement with fp32 (docs/precision.md). So does a pooler
(``matmuls.pooler_projections``: a matmul before a Tanh graph output).

The token embedding table uses the same storage: a tied output projection
(Transpose of the table) is a MatMulNBits whose rows are the table's rows, and the
embedding Gather reads those int8 rows and their block scales (Gather, Cast, Sub 128,
Mul) and adds the float32 outlier columns, so tied weights stay stored once.
Choices (block size, accuracy level, ratio, embedding, q/k) were measured:
docs/precision.md, benchmarks/precision.py --candidates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from passes.precision.graph import name_nodes, reinfer, topological_sort
from passes.precision.matmuls import constant_matmuls, embedding_gathers, gemm_bias, pooler_projections, score_projections

BLOCK_SIZE = 16  # 32 is 1.1x faster and 2.5 points less accurate on the trained-like 30-layer model (docs/precision.md)
ACCURACY_LEVEL = 4
OUTLIER_RATIO = 16.0
ZERO_POINT = 128
EMBEDDINGS = ("int8", "fp16", "fp32")
MS = "com.microsoft"


@dataclass(frozen=True)
class Int8Options:
    """How ``to_int8`` quantizes (defaults: the measured choice, docs/precision.md).
    ``outlier_ratio`` None keeps no channel in float32; ``embedding``: the token
    embedding's Gather reads the int8 table (``int8``: one table with a tied output
    projection), a float16 copy (``fp16``) or the float32 table (``fp32``); a tied
    projection then stores its own int8;
    ``scores_fp32`` keeps the query and key projections (``score_projections``) in
    float32."""

    block_size: int = BLOCK_SIZE
    accuracy_level: int = ACCURACY_LEVEL
    outlier_ratio: float | None = OUTLIER_RATIO
    embedding: str = "int8"
    scores_fp32: bool = True

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class QuantizedRows:
    """A weight as rows (N, K) in int8 blocks along K, with the outlier columns C of
    K apart in float32: ``q`` (N, blocks, block_size) uint8, ``scales`` (N, blocks)."""

    name: str
    q: str
    scales: str
    n: int
    k: int
    channels: list[int]
    kept: str | None  # (N, |C|) float32 initialiser, the columns C
    kept_t: str | None = None  # its transpose (|C|, N), for a matmul
    bits: int = 8  # 4: q is (N, blocks, block_size / 2), two values a byte (passes.precision.int4)
    block_size: int = BLOCK_SIZE
    zero_points: str | None = None  # packed 4-bit zero points (N, ceil(blocks / 2)); None: the op's default


def quantize_rows(rows: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per block of ``block_size`` along the last axis of ``rows`` (N, K):
    (uint8 (N, blocks, block_size) with zero point 128, float32 scales (N, blocks))."""
    n, k = rows.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), dtype=np.float32)
    padded[:, :k] = rows
    b = padded.reshape(n, blocks, block_size)
    scales = np.abs(b).max(-1) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.round(b / scales[..., None]), -127, 127).astype(np.int16) + ZERO_POINT
    return q.astype(np.uint8), scales.astype(np.float32)


def dequantize_rows(q: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The float32 rows (N, K) that ``quantize_rows`` stands for."""
    return ((q.astype(np.float32) - ZERO_POINT) * scales[..., None]).reshape(q.shape[0], -1)[:, :k]


def weight_scores(rows: np.ndarray) -> np.ndarray:
    """Per column k of ``rows`` (N, K): max |w| over N, over the median column's."""
    peak = np.abs(rows).max(0)
    return peak / max(float(np.median(peak)), np.finfo(np.float32).tiny)


def activation_scores(x: np.ndarray) -> np.ndarray:
    """Per channel (last axis of ``x``): the median over tokens of |x| over that token's
    median |x|. A channel that stands out in every token scores its ratio (the
    outlier features a norm weight carries into a matmul: 20-60); a heavy-tailed
    activation (a SwiGLU output, an attention output on the massive tokens), whose
    large values move from channel to channel, scores about 1."""
    flat = np.abs(np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1]))
    median = np.median(flat, axis=1, keepdims=True)
    rows = median[:, 0] > 0
    if not rows.any():
        return np.zeros(x.shape[-1], dtype=np.float32)
    return np.median(flat[rows] / median[rows], axis=0)


def outlier_channels(rows: np.ndarray, activations: np.ndarray | None, ratio: float | None) -> list[int]:
    """Columns of ``rows`` (N, K) kept in float32: weight or activation score above ``ratio``."""
    if ratio is None:
        return []
    hot = weight_scores(rows) > ratio
    if activations is not None:
        hot |= activations > ratio
    return [int(c) for c in np.flatnonzero(hot)]


def shared_channels(plan: dict) -> dict:
    """``plan`` (key -> (rows, channels, MatMul users)) with the channels of every weight
    widened to the union over each input its users read: the matmuls of one input (q/k/v,
    gate/up) then share one mask and one gather of float32 channels, and pack together
    (passes.optimize.packing). A channel kept in float32 only adds precision."""
    by_input: dict[str, set] = {}
    for _, channels, users in plan.values():
        for node in users:
            by_input.setdefault(node.input[0], set()).update(channels)
    return {key: (rows, sorted(set(channels).union(*(by_input[n.input[0]] for n in users))), users)
            for key, (rows, channels, users) in plan.items()}


# --------------------------------------------------------------------------- rewriting


class _Rewriter:
    """Builds the int8 graph: new initialisers, and the nodes that replace each
    quantized MatMul and embedding Gather (shared per input: masks, channel gathers)."""

    def __init__(self, proto: onnx.ModelProto, options: Int8Options):
        self.proto, self.options = proto, options
        self.inits = {t.name: t for t in proto.graph.initializer}
        self.added: list[onnx.TensorProto] = []
        self.shared: dict[tuple, str] = {}
        self.rows: dict[str, QuantizedRows] = {}

    def constant(self, name: str, array: np.ndarray) -> str:
        self.added.append(numpy_helper.from_array(array, name))
        return name

    def quantized(self, weight: str, rows: np.ndarray, channels: list[int]) -> QuantizedRows:
        """``rows`` (N, K) of ``weight`` quantized once (a tied table serves two nodes)."""
        if weight not in self.rows:
            main = rows.copy()
            main[:, channels] = 0.0
            q, scales = quantize_rows(main, self.options.block_size)
            kept = self.constant(f"{weight}/int8_kept", np.ascontiguousarray(rows[:, channels])) if channels else None
            self.rows[weight] = QuantizedRows(weight, self.constant(f"{weight}/int8", q), self.constant(f"{weight}/int8_scales", scales),
                                              rows.shape[0], rows.shape[1], list(channels), kept, block_size=self.options.block_size)
        return self.rows[weight]

    def kept_t(self, r: QuantizedRows) -> str:
        if r.kept_t is None:
            arr = numpy_helper.to_array(next(t for t in self.added if t.name == r.kept))
            r.kept_t = self.constant(f"{r.name}/int8_kept_t", np.ascontiguousarray(arr.T))
        return r.kept_t

    def once(self, key: tuple, make) -> str:
        """A value shared by the nodes that need the same thing of the same input."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    def matmul(self, node: onnx.NodeProto, r: QuantizedRows) -> list[onnx.NodeProto]:
        """MatMulNBits on the int8 rows, plus the float32 product of the kept channels."""
        x, tag, nodes, bias = node.input[0], node.name, [], gemm_bias(node)
        y = f"{tag}/unbiased" if bias else node.output[0]
        attrs = dict(K=r.k, N=r.n, bits=r.bits, block_size=r.block_size)
        if self.options.accuracy_level:
            attrs["accuracy_level"] = self.options.accuracy_level
        a = x
        if r.channels and self.options.accuracy_level:  # the int8 activations must not see them either
            a = self.once(("mask", x, tuple(r.channels)), lambda: self._mask(x, r, nodes))
        main = f"{tag}/int8_out" if r.channels else y
        inputs = [a, r.q, r.scales] + ([r.zero_points] if r.zero_points else [])
        nodes.append(helper.make_node("MatMulNBits", inputs, [main], name=f"{tag}/int{r.bits}", domain=MS, **attrs))
        if r.channels:
            xc = self.once(("gather", x, tuple(r.channels)), lambda: self._channels(x, r, nodes))
            nodes.append(helper.make_node("MatMul", [xc, self.kept_t(r)], [f"{tag}/kept_out"], name=f"{tag}/kept"))
            nodes.append(helper.make_node("Add", [main, f"{tag}/kept_out"], [y], name=f"{tag}/sum"))
        if bias:  # a Gemm's C
            nodes.append(helper.make_node("Add", [y, bias], [node.output[0]], name=f"{tag}/bias"))
        return nodes

    def _mask(self, x: str, r: QuantizedRows, nodes: list) -> str:
        m = np.ones(r.k, dtype=np.float32)
        m[r.channels] = 0.0
        tag = f"{x}/int8_mask_{len(self.shared)}"
        nodes.append(helper.make_node("Mul", [x, self.constant(tag, m)], [f"{tag}/out"], name=tag))
        return f"{tag}/out"

    def _channels(self, x: str, r: QuantizedRows, nodes: list) -> str:
        tag = f"{x}/int8_channels_{len(self.shared)}"
        nodes.append(helper.make_node("Gather", [x, self.constant(tag, np.array(r.channels, dtype=np.int64))], [f"{tag}/out"], name=tag, axis=-1))
        return f"{tag}/out"

    def gather(self, node: onnx.NodeProto, r: QuantizedRows) -> list[onnx.NodeProto]:
        """The embedding Gather on the int8 rows: Gather rows and their scales,
        dequantize, flatten to (..., K), add the kept columns at their place."""
        ids, t = node.input[1], node.name
        blocks, bs = -(-r.k // r.block_size), r.block_size
        c = self.once(("constants", "int8"), lambda: self._gather_constants())
        nodes = [
            helper.make_node("Gather", [r.q, ids], [f"{t}/q"], name=f"{t}/q", axis=0),
            helper.make_node("Cast", [f"{t}/q"], [f"{t}/qf"], name=f"{t}/cast", to=TensorProto.FLOAT),
            helper.make_node("Sub", [f"{t}/qf", f"{c}/zero_point"], [f"{t}/centered"], name=f"{t}/centered"),
            helper.make_node("Gather", [r.scales, ids], [f"{t}/s"], name=f"{t}/s", axis=0),
            helper.make_node("Unsqueeze", [f"{t}/s", f"{c}/last"], [f"{t}/s1"], name=f"{t}/s1"),
            helper.make_node("Mul", [f"{t}/centered", f"{t}/s1"], [f"{t}/deq"], name=f"{t}/deq"),
            helper.make_node("Shape", [ids], [f"{t}/ids_shape"], name=f"{t}/ids_shape"),
            helper.make_node("Concat", [f"{t}/ids_shape", self.constant(f"{t}/width", np.array([blocks * bs], np.int64))], [f"{t}/shape"], name=f"{t}/shape", axis=0),
            helper.make_node("Reshape", [f"{t}/deq", f"{t}/shape"], [f"{t}/flat"], name=f"{t}/flat"),
        ]
        return self.finish_rows(nodes, f"{t}/flat", blocks * bs, node, r)

    def finish_rows(self, nodes: list, out: str, width: int, node: onnx.NodeProto, r: QuantizedRows) -> list[onnx.NodeProto]:
        """After ``nodes`` made ``out`` (..., width) of dequantized table rows: slice them
        to (..., K) and add the kept columns at their place, as the Gather's output."""
        ids, y, t = node.input[1], node.output[0], node.name
        c = self.once(("constants", "int8"), lambda: self._gather_constants())
        if width != r.k:
            ends = self.constant(f"{t}/k", np.array([r.k], np.int64))
            nodes.append(helper.make_node("Slice", [out, f"{c}/zero", ends, f"{c}/last"], [f"{t}/rows"], name=f"{t}/rows"))
            out = f"{t}/rows"
        if not r.channels:
            nodes[-1].output[0] = y
            return nodes
        place = np.zeros((len(r.channels), r.k), dtype=np.float32)
        place[np.arange(len(r.channels)), r.channels] = 1.0
        nodes += [
            helper.make_node("Gather", [r.kept, ids], [f"{t}/kept"], name=f"{t}/kept", axis=0),
            helper.make_node("MatMul", [f"{t}/kept", self.constant(f"{t}/place", place)], [f"{t}/kept_rows"], name=f"{t}/place"),
            helper.make_node("Add", [out, f"{t}/kept_rows"], [y], name=f"{t}/sum"),
        ]
        return nodes

    def gather16(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """The embedding Gather on a float16 copy of its table, cast back to float32."""
        table, t = node.input[0], node.name
        half = self.once(("fp16", table), lambda: self.constant(
            f"{table}/fp16", numpy_helper.to_array(self.inits[table]).astype(np.float16)))
        return [helper.make_node("Gather", [half, node.input[1]], [f"{t}/fp16_rows"], name=f"{t}/fp16", axis=0),
                helper.make_node("Cast", [f"{t}/fp16_rows"], [node.output[0]], name=f"{t}/cast", to=TensorProto.FLOAT)]

    def _gather_constants(self) -> str:
        self.constant("int8/zero_point", np.array(ZERO_POINT, dtype=np.float32))
        self.constant("int8/last", np.array([-1], dtype=np.int64))
        self.constant("int8/zero", np.array([0], dtype=np.int64))
        return "int8"


# --------------------------------------------------------------------------- the pass


def _plan(proto: onnx.ModelProto, tables: list, activations: dict, options: Int8Options):
    """The weights to quantize: (weight, transposed) -> (rows (N, K), channels, users),
    and the embedding Gathers (``tables``: embedding_gathers) -> their table's key."""
    inits = {t.name: t for t in proto.graph.initializer}
    users: dict[tuple[str, bool], list[onnx.NodeProto]] = {}
    skip = pooler_projections(proto) | (score_projections(proto) if options.scores_fp32 else set())
    for node, weight, transposed in constant_matmuls(proto):
        if node.name not in skip:
            users.setdefault((weight, transposed), []).append(node)
    if options.embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {options.embedding!r}")
    gathers = {n.name: (table, True) for n, table in tables} if options.embedding == "int8" else {}
    plan = {}
    for key in dict.fromkeys([*users, *gathers.values()]):
        w = numpy_helper.to_array(inits[key[0]]).astype(np.float32)
        rows = w if key[1] else w.T
        channels: set[int] = set()
        for node in users.get(key, [None]):
            act = activations.get(node.input[0]) if node is not None else None
            channels |= set(outlier_channels(rows, act, options.outlier_ratio))
        plan[key] = (rows, sorted(channels), users.get(key, []))
    return shared_channels(plan), gathers


def to_int8(proto: onnx.ModelProto, *, vocab_size: int, activations: dict | None = None,
            options: Int8Options = Int8Options()) -> tuple[onnx.ModelProto, dict]:
    """``proto`` with every constant-weight MatMul (and, with ``options.embedding``,
    the token embedding) in int8 (see the module docstring). ``activations``: input
    name -> ``activation_scores`` of that input, from ``calibrate``. Returns the new
    proto and what was quantized."""
    name_nodes(proto)
    tables = embedding_gathers(proto, vocab_size)
    plan, gathers = _plan(proto, tables, activations or {}, options)
    rw = _Rewriter(proto, options)
    replace: dict[str, list] = {}
    for (weight, transposed), (rows, channels, users) in plan.items():
        r = rw.quantized(f"{weight}{'/t' if not transposed else ''}", rows, channels)
        for node in users:
            replace[node.name] = rw.matmul(node, r)
    g = proto.graph
    half = {n.name for n, _ in tables} if options.embedding == "fp16" else set()
    for node in g.node:
        if node.name in gathers:
            replace[node.name] = rw.gather(node, rw.rows[gathers[node.name][0]])
        elif node.name in half:
            replace[node.name] = rw.gather16(node)
    nodes = [m for n in g.node for m in replace.get(n.name, [n])]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(rw.added)
    if not any(o.domain == MS for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS, 1))
    _drop_unused(proto)
    topological_sort(proto)
    return reinfer(proto), _info(proto, options, rw, plan, gathers)


def _info(proto: onnx.ModelProto, options: Int8Options, rw: "_Rewriter", plan: dict, gathers: dict) -> dict:
    """What ``to_int8`` did, for the manifest."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    kept = [len(r.channels) for r in rw.rows.values()]
    used = {i for n in g.node for i in n.input}
    tables = [{"table": t, "scheme": "int8 blocks", "tied_projections": len(plan[(t, True)][2]), "kept_channels": len(rw.rows[t].channels),
               "float_copy_kept": t in used} for t, _ in sorted(set(gathers.values()))]
    tables += [{"table": t[: -len("/fp16")], "scheme": "float16 copy", "tied_projections": 0, "float_copy_kept": t[: -len("/fp16")] in used}
               for t in sorted(x.name for x in rw.added if x.name.endswith("/fp16"))]
    return {
        "method": "weight-only int8 in blocks (MatMulNBits, bits 8), outlier input channels in float32",
        **options.to_json(),
        "weight_type": f"int8 symmetric, blocks of {options.block_size} along K",  # what zoo build prints
        "per_channel": True,  # every output channel has its own scales (one per block)
        "matmuls": sum(1 for n in g.node if n.op_type == "MatMulNBits"),
        "fp32_matmuls": sum(1 for n in g.node if n.op_type == "MatMul" and n.input[1] in inits
                            and not n.name.endswith(("/kept", "/place"))),
        "weights_with_kept_channels": sum(1 for k in kept if k),
        "kept_channels_max": max(kept, default=0),
        "embeddings": tables,
    }


def _drop_unused(proto: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nothing reads (the tied table's Transpose) and unused initialisers."""
    g = proto.graph
    outputs = {o.name for o in g.output}
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        keep = [n for n in g.node if any(o in used for o in n.output)]
        if len(keep) == len(g.node):
            break
        del g.node[:]
        g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
