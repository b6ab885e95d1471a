"""int4 for CPU and CUDA: weight-only 4-bit blocks (ONNX Runtime's MatMulNBits, bits 4),
on the int8 pass's machinery (passes.precision.int8): the outlier input channels of
each matmul in float32 as calibration found them, the query and key projections and
the output projection at a chosen higher precision, the token embedding read from
the same 4-bit table as a tied output projection.

MatMulNBits' layout (bits 4), per output column n and block b of ``block_size``
along K: ``B[n, b]`` is ``block_size / 2`` bytes, element 2i in the low nibble and
2i+1 in the high nibble; ``scales[n, b]`` float32; the optional ``zero_points`` are
4-bit too, packed two blocks a byte along b (low nibble first), each row padded to
whole bytes; without them the zero point is 8. A weight is ``(q - zero) * scale``.

- symmetric: the value of largest magnitude in a block maps to -8 (scale = v / -8),
  the others round into [-8, 7]: all 16 levels, no zero-point table;
- asymmetric: the block's [min, max] (widened to hold 0) over 15 steps, the zero
  point round(-min / scale) in [0, 15].

The embedding Gather on a 4-bit table is com.microsoft GatherBlockQuantized (bits 4,
quantize_axis 1) on the very bytes the tied projection's MatMulNBits reads, so the
table is stored once at half a byte a weight.

Choices, measured on the trained-like 30-layer llama-135m (benchmarks/results/
precision_int4.json, "int4_candidates_vs_genai"): teacher-forced top-1 against the
zoo's fp32 over 3 x 128 positions of fp32's own text (onnxruntime-genai int4 of the
same checkpoint: 62.5%), decode tok/s at 2 threads beside onnxruntime-genai int4 in
the same round-robin (a shared machine: compare within a row).

=====================================  ======  ========  ==========  =========
candidate (b32, symmetric, q/k int8)   top-1   zoo tok/s genai tok/s zoo/genai
=====================================  ======  ========  ==========  =========
outliers at 16x (the first default)    64.1%   178       290         0.61
outliers at 8x                         70.6%   97        234         0.42
outliers at 4x (the second default)    86.5%   157       307         0.51
outliers at 4x, head int8              91.1%   134       269         0.50
outliers at 4x, q/k int4               83.3%   146       263         0.55
outliers at 4x, accuracy_level 0       87.0%   42        222         0.19
--optimize, outliers at 4x             85.9%   165       263         0.63
=====================================  ======  ========  ==========  =========

Then (results/generate_int4.json, generate_int4_qk8.json; benchmarks/generate.py --optimize --kv-cache shared, 5
reps): with one set of float32 channels per input (int8.shared_channels) and sibling
projections packed (passes.optimize.packing), q/k at int8: top-1 79.2%, 186 vs 265 tok/s
(0.70x); **q/k at int4 (default)**: 81.8%, 206 vs 280 tok/s (0.74x): q, k and v pack
into one 4-bit matmul, and the wider channel set keeps the agreement (onnxruntime-genai int4: 71.4%
there).

What costs agreement (float32 compute, chosen weights replaced by their 4-bit
dequantization): every matmul 63.8%; only v 66.9%, only the tied head 80.7%, only
gate/up 84.6%, only o 89.1%, only q/k 91.7%, only down 93.8%. The trained-like norm
weights make a few input channels of every matmul 4-13x the others on every token:
their 4-bit rounding error is multiplied by that. Taking the channels above 4x out of
the 4-bit product into float32 (about 5 per weight) lifts it to 92% (3x: 88%, 8x:
78%, 16x: 75%). Not the cause: accuracy level 4's int8 activations (level 0: the
same agreement, 4x slower), the symmetric scale (it already maps the extreme to -8;
asymmetric: 50%), the embedding (fp32 table: no gain, benchmarks/precision.py
--int4-candidates). The head at int8 gains 5 points for 15% of the speed; the
default keeps int4 there.
An alternative without the float32 products (not implemented): scaling each input
channel's weights by its activation score before rounding (AWQ-like, the inverse folded
into the norm weight) measured 86.7% against the float32 channels' 92.2% (float32 compute).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from passes.precision.graph import name_nodes, reinfer, topological_sort
from passes.precision.int8 import BLOCK_SIZE as INT8_BLOCK_SIZE
from passes.precision.int8 import MS, QuantizedRows, _drop_unused, _Rewriter, outlier_channels, quantize_rows, shared_channels
from passes.precision.matmuls import constant_matmuls, embedding_gathers, pooler_projections, score_projections

BLOCK_SIZE = 32
BLOCK_SIZES = (16, 32, 64, 128)
ACCURACY_LEVELS = (0, 1, 4)
HIGHER = ("int4", "int8", "fp32")  # what a weight may be kept at


@dataclass(frozen=True)
class Int4Options:
    """How ``to_int4`` quantizes (defaults: the measured choice, module docstring). ``embedding``: the table the token Gather reads (int4: one
    4-bit table with a tied projection; int8: the int8 pass's table; fp32: the float
    table); ``head``: the output projection (int4 or int8); ``scores``: the query and
    key projections (int4, int8, or fp32: kept as they are); ``outlier_ratio`` None
    keeps no channel in float32."""

    block_size: int = BLOCK_SIZE
    symmetric: bool = True
    accuracy_level: int = 4
    outlier_ratio: float | None = 4.0
    embedding: str = "int4"
    head: str = "int4"
    scores: str = "int4"

    def check(self) -> None:
        for field, value, allowed in (("block_size", self.block_size, BLOCK_SIZES), ("accuracy_level", self.accuracy_level, ACCURACY_LEVELS),
                                      ("embedding", self.embedding, HIGHER), ("head", self.head, HIGHER[:2]), ("scores", self.scores, HIGHER)):
            if value not in allowed:
                raise ValueError(f"int4 {field} must be one of {', '.join(map(str, allowed))}, got {value!r}")

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- the numbers


def pack4(values: np.ndarray) -> np.ndarray:
    """4-bit values (..., 2m) in 0..15 -> bytes (..., m): element 2i low nibble, 2i+1 high."""
    v = values.astype(np.uint8)
    return (v[..., 0::2] | (v[..., 1::2] << 4)).astype(np.uint8)


def unpack4(packed: np.ndarray) -> np.ndarray:
    """The inverse of ``pack4``: bytes (..., m) -> values (..., 2m)."""
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), dtype=np.uint8)
    out[..., 0::2], out[..., 1::2] = packed & 0x0F, packed >> 4
    return out


def quantize4(rows: np.ndarray, block_size: int, symmetric: bool):
    """``rows`` (N, K) in 4-bit blocks of ``block_size`` along K: (packed (N, blocks,
    block_size / 2) uint8, scales (N, blocks) float32, packed zero points (N,
    ceil(blocks / 2)) uint8, or None when symmetric)."""
    n, k = rows.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), dtype=np.float32)
    padded[:, :k] = rows
    b = padded.reshape(n, blocks, block_size)
    if symmetric:
        at = np.abs(b).argmax(-1)[..., None]
        scales = np.take_along_axis(b, at, -1)[..., 0] / -8.0
        zero = np.full((n, blocks), 8.0, dtype=np.float32)
    else:
        lo, hi = np.minimum(b.min(-1), 0.0), np.maximum(b.max(-1), 0.0)
        scales = (hi - lo) / 15.0
        zero = np.clip(np.round(-lo / np.where(scales == 0, 1.0, scales)), 0, 15)
    scales[scales == 0] = 1.0
    q = np.clip(np.round(b / scales[..., None]) + zero[..., None], 0, 15)
    zp = None
    if not symmetric:
        z = np.zeros((n, blocks + blocks % 2), dtype=np.uint8)
        z[:, :blocks] = zero
        zp = pack4(z)
    return pack4(q), scales.astype(np.float32), zp


def dequantize4(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, k: int) -> np.ndarray:
    """MatMulNBits' meaning of a 4-bit weight (the numpy reference): float32 rows (N, K)."""
    n, blocks = scales.shape
    q = unpack4(packed).reshape(n, blocks, -1).astype(np.float32)
    zero = unpack4(zero_points)[:, :blocks].astype(np.float32) if zero_points is not None else np.full((n, blocks), 8.0, np.float32)
    return ((q - zero[..., None]) * scales[..., None]).reshape(n, -1)[:, :k]


# --------------------------------------------------------------------------- rewriting


class _Rewriter4(_Rewriter):
    """The int8 rewriter with 4-bit weights beside int8 ones (one storage per weight and bits)."""

    def quantized(self, weight: str, rows: np.ndarray, channels: list[int], bits: int = 4) -> QuantizedRows:
        key = f"{weight}@{bits}"
        if key not in self.rows:
            main = rows.copy()
            main[:, channels] = 0.0
            tag = f"{weight}/int{bits}"
            kept = self.constant(f"{tag}_kept", np.ascontiguousarray(rows[:, channels])) if channels else None
            if bits == 8:
                q, scales = quantize_rows(main, INT8_BLOCK_SIZE)
                zp, block = None, INT8_BLOCK_SIZE
            else:
                q, scales, zp = quantize4(main, self.options.block_size, self.options.symmetric)
                block = self.options.block_size
            self.rows[key] = QuantizedRows(key, self.constant(tag, q), self.constant(f"{tag}_scales", scales), rows.shape[0], rows.shape[1],
                                           list(channels), kept, bits=bits, block_size=block,
                                           zero_points=self.constant(f"{tag}_zp", zp) if zp is not None else None)
        return self.rows[key]

    def gather4(self, node: onnx.NodeProto, r: QuantizedRows) -> list[onnx.NodeProto]:
        """The embedding Gather on the 4-bit rows (the tied projection's bytes, seen as
        (V, blocks * block_size / 2)): GatherBlockQuantized, then the kept columns."""
        t, blocks = node.name, -(-r.k // r.block_size)
        width = blocks * r.block_size
        flat = self.once(("flat4", r.q), lambda: self._flat(r, width))
        inputs = [flat, node.input[1], r.scales] + ([r.zero_points] if r.zero_points else [])
        nodes = [helper.make_node("GatherBlockQuantized", inputs, [f"{t}/rows4"], name=f"{t}/int4", domain=MS,
                                  gather_axis=0, quantize_axis=1, block_size=r.block_size, bits=4)]
        return self.finish_rows(nodes, f"{t}/rows4", width, node, r)

    def _flat(self, r: QuantizedRows, width: int) -> str:
        """A (V, width / 2) view of the packed table: a Reshape of the same initialiser."""
        shape = self.constant(f"{r.q}/flat_shape", np.array([r.n, width // 2], np.int64))
        self.pending.append(helper.make_node("Reshape", [r.q, shape], [f"{r.q}/flat"], name=f"{r.q}/flat"))
        return f"{r.q}/flat"


# --------------------------------------------------------------------------- the pass


def _bits(option: str) -> int | None:
    return {"int4": 4, "int8": 8, "fp32": None}[option]


def _plan(proto: onnx.ModelProto, tables: list, activations: dict, options: Int4Options, vocab_size: int):
    """(weight, transposed, bits) -> (rows (N, K), channels, MatMul users), and the
    embedding Gathers -> their key."""
    inits = {t.name: t for t in proto.graph.initializer}
    scores, pooler = score_projections(proto), pooler_projections(proto)
    users: dict[tuple, list] = {}
    for node, weight, transposed in constant_matmuls(proto):
        dims = inits[weight].dims
        n = dims[0] if transposed else dims[1]
        bits = _bits(options.scores) if node.name in scores else _bits(options.head) if n == vocab_size else 4
        if bits is not None and node.name not in pooler:
            users.setdefault((weight, transposed, bits), []).append(node)
    bits = _bits(options.embedding)
    gathers = {n.name: (table, True, bits) for n, table in tables} if bits else {}
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


def to_int4(proto: onnx.ModelProto, *, vocab_size: int, activations: dict | None = None,
            options: Int4Options = Int4Options()) -> tuple[onnx.ModelProto, dict]:
    """``proto`` with every constant-weight MatMul in 4-bit blocks (the score and
    output projections at ``options.scores`` / ``options.head``) and the token
    embedding at ``options.embedding`` (module docstring). ``activations``: input name
    -> activation_scores, from calibrate. Returns the new proto and what was done."""
    options.check()
    name_nodes(proto)
    tables = embedding_gathers(proto, vocab_size)
    plan, gathers = _plan(proto, tables, activations or {}, options, vocab_size)
    rw = _Rewriter4(proto, options)
    rw.pending = []
    replace: dict[str, list] = {}
    for (weight, transposed, bits), (rows, channels, users) in plan.items():
        r = rw.quantized(f"{weight}{'/t' if not transposed else ''}", rows, channels, bits)
        for node in users:
            replace[node.name] = rw.matmul(node, r)
    g = proto.graph
    for node in g.node:
        if node.name in gathers:
            table, _, bits = gathers[node.name]
            r = rw.rows[f"{table}@{bits}"]
            replace[node.name] = rw.pending + (rw.gather4(node, r) if bits == 4 else rw.gather(node, r))
            rw.pending = []
    nodes = [m for n in g.node for m in replace.get(n.name, [n])]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(rw.added)
    if not any(o.domain == MS for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS, 1))
    _drop_unused(proto)
    topological_sort(proto)
    return reinfer(proto), _info(proto, options, rw, gathers)


def _info(proto: onnx.ModelProto, options: Int4Options, rw: _Rewriter4, gathers: dict) -> dict:
    """What ``to_int4`` did, for the manifest."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    ops = [n for n in g.node if n.op_type == "MatMulNBits"]
    kept = [len(r.channels) for r in rw.rows.values()]
    kind = "symmetric" if options.symmetric else "asymmetric (4-bit zero points)"
    return {
        "method": "weight-only int4 in blocks (MatMulNBits, bits 4), outlier input channels in float32",
        **options.to_json(),
        "weight_type": f"int4 {kind}, blocks of {options.block_size} along K",  # what zoo build prints
        "per_channel": True,
        "matmuls": len(ops),
        "int4_matmuls": sum(1 for n in ops if any(a.name == "bits" and a.i == 4 for a in n.attribute)),
        "int8_matmuls": sum(1 for n in ops if any(a.name == "bits" and a.i == 8 for a in n.attribute)),
        "fp32_matmuls": sum(1 for n in g.node if n.op_type == "MatMul" and n.input[1] in inits
                            and not n.name.endswith(("/kept", "/place"))),
        "weights_with_kept_channels": sum(1 for k in kept if k),
        "kept_channels_max": max(kept, default=0),
        "embeddings": [{"table": t, "scheme": f"int{b} blocks",
                        "tied_projections": sum(1 for n in ops if n.input[1] == rw.rows[f"{t}@{b}"].q)}
                       for t, _, b in sorted(set(gathers.values()))],
    }
