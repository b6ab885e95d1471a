"""Sibling projections packed into one matmul (every ``zoo build --optimize``).

The query, key and value projections read the same normed hidden state, and so do a
gated feed-forward's gate and up projections: as exported, each is its own MatMul
(plus its bias Add). This pass concatenates the weights of such siblings along N and
runs one matmul, one bias Add, one Split back into the values the graph already uses
(onnxruntime-genai packs q/k/v the same way). At decode, where a step is a series of
small GEMVs, that is fewer kernels, each with more columns to spread over the threads.

It runs last, after the precision pass, so it packs what that pass left:

- float ``MatMul`` over a constant (K, N) weight, with or without a constant bias
  ``Add`` (a sibling without one gets zeros);
- ``com.microsoft.MatMulNBits`` of equal K, bits, block size and accuracy level without
  zero points (the int8 / int4 passes' symmetric blocks: B and scales are N-major, so
  they concatenate along N), together with the float32 product of its kept outlier
  channels where it has one (``MatMul(x[..., C], B[C, :])`` added to it: packed too).
  int4's query/key projections at int8 and value at int4 are two groups.

A weight that anything else reads (a tied table) is left alone, and so is a group of
one. Numerically the packed product is the same dot products (each output column still
sums over the same K); the build's parity check runs on the packed graphs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx

from passes.optimize.graph import Graph, node_attr
from passes.optimize.lowering import MS

# Part of an artifact's identity (passes.optimize.VERSION covers it): bump with it.
WHY = ("sibling projections that read the same input (q/k/v, gate/up) run as one matmul over their concatenated "
       "weights, then a Split: fewer, wider GEMVs per decode step (benchmarks/step_cost.py, benchmarks/generate.py)")
NBITS_ATTRS = ("K", "bits", "block_size", "accuracy_level")


@dataclass
class _Member:
    """One projection: its matmul, the nodes after it that the pack absorbs, the value it yields."""

    node: onnx.NodeProto
    out: str  # the value the graph reads: the bias Add's / kept sum's output, else the matmul's
    n: int
    weights: tuple  # constant inputs of the matmul (B[, scales])
    bias: Optional[np.ndarray] = None
    kept: Optional[tuple] = None  # (xc, weight (C, N)) of the float32 outlier product
    absorbed: tuple = ()


def _sole_user(g: Graph, value: str) -> Optional[onnx.NodeProto]:
    users = [u for u in g.consumers.get(value, []) if id(u) not in g.removed]
    return users[0] if len(users) == 1 and value not in g.outputs else None


def _other(add: onnx.NodeProto, value: str) -> str:
    return add.input[1] if add.input[0] == value else add.input[0]


def _float_member(g: Graph, node: onnx.NodeProto) -> Optional[_Member]:
    w = g.const(node.input[1])
    if w is None or w.ndim != 2 or not np.issubdtype(w.dtype, np.floating):
        return None
    return _with_bias(g, _Member(node, node.output[0], int(w.shape[1]), (w,)))


def _with_bias(g: Graph, m: _Member) -> _Member:
    """``m`` with the constant bias Add after it absorbed, where it has one."""
    add = _sole_user(g, m.node.output[0])
    if add is not None and add.op_type == "Add":
        b = g.const(_other(add, m.node.output[0]))
        if b is not None and b.shape in ((m.n,), (1, m.n)) and np.issubdtype(b.dtype, np.floating):
            m.bias, m.out, m.absorbed = b.reshape(-1), add.output[0], (add,)
    return m


def _nbits_member(g: Graph, node: onnx.NodeProto) -> Optional[_Member]:
    if node.domain != MS or len([i for i in node.input if i]) != 3 or len(node.input) != 3:
        return None  # zero points, g_idx or bias: not packed
    q, scales = g.const(node.input[1]), g.const(node.input[2])
    if q is None or scales is None:
        return None
    m = _Member(node, node.output[0], int(node_attr(node, "N")), (q, scales))
    add = _sole_user(g, node.output[0])
    kept = g.op(_other(add, node.output[0]), "MatMul") if add is not None and add.op_type == "Add" else None
    if kept is not None and _sole_user(g, kept.output[0]) is add:
        w = g.const(kept.input[1])
        if w is not None and w.ndim == 2 and w.shape[1] == m.n:
            m.kept, m.out, m.absorbed = (kept.input[0], w), add.output[0], (kept, add)
            return m
    return _with_bias(g, m)


def _member(g: Graph, node: onnx.NodeProto) -> tuple[Optional[tuple], Optional[_Member]]:
    """(group key, member) of a matmul that can be packed, else (None, None)."""
    if node.op_type not in ("MatMul", "MatMulNBits") or len(node.input) < 2:
        return None, None
    if any(len([u for u in g.consumers.get(w, []) if id(u) not in g.removed]) != 1 or w in g.outputs for w in node.input[1:]):
        return None, None  # a weight something else reads too (a tied table)
    if node.op_type == "MatMul":
        m = _float_member(g, node)
        key = m and ("MatMul", node.input[0], str(m.weights[0].dtype), m.weights[0].shape[0], m.bias is not None)
    else:
        m = _nbits_member(g, node)
        key = m and ("MatMulNBits", node.input[0], *(node_attr(node, a, 0) for a in NBITS_ATTRS),
                     m.kept[0] if m.kept else None, str(m.weights[1].dtype), m.bias is not None)
    return (key, m) if m is not None else (None, None)


def _groups(g: Graph) -> list[list[_Member]]:
    """The groups of two or more siblings: MatMulNBits first, so that the float32 outlier
    products they absorb are not packed a second time as float siblings."""
    out: list[list[_Member]] = []
    taken: set[int] = set()
    for op in ("MatMulNBits", "MatMul"):
        groups: dict[tuple, list[_Member]] = {}
        for node in [n for n in g.g.node if n.op_type == op and id(n) not in taken]:
            key, m = _member(g, node)
            if key is not None:
                groups.setdefault(key, []).append(m)
        out += [ms for ms in groups.values() if len(ms) > 1]
        taken |= {id(node) for ms in out for m in ms for node in m.absorbed}
    return out


def _pack(g: Graph, ms: list[_Member], tag: str) -> None:
    """One matmul (+ bias Add / kept product) and a Split for the group ``ms``."""
    first = ms[0].node
    n = sum(m.n for m in ms)
    if first.op_type == "MatMul":
        w = g.add_const(f"{tag}_w", np.concatenate([m.weights[0] for m in ms], axis=1))
        y = g.node("MatMul", [first.input[0], w], base=f"{tag}_mm")[0]
    else:
        q = g.add_const(f"{tag}_q", np.concatenate([m.weights[0] for m in ms], axis=0))
        s = g.add_const(f"{tag}_scales", np.concatenate([m.weights[1] for m in ms], axis=0))
        attrs = {a: node_attr(first, a) for a in NBITS_ATTRS if node_attr(first, a) is not None}
        y = g.node("MatMulNBits", [first.input[0], q, s], base=f"{tag}_nbits", domain=MS, **attrs, N=n)[0]
        if ms[0].kept is not None:
            kw = g.add_const(f"{tag}_kept_w", np.concatenate([m.kept[1] for m in ms], axis=1))
            kept = g.node("MatMul", [ms[0].kept[0], kw], base=f"{tag}_kept")[0]
            y = g.node("Add", [y, kept], base=f"{tag}_sum")[0]
    if ms[0].bias is not None:
        y = g.node("Add", [y, g.add_const(f"{tag}_b", np.concatenate([m.bias for m in ms]))], base=f"{tag}_add")[0]
    sizes = g.add_const(f"{tag}_sizes", np.array([m.n for m in ms], np.int64))
    g.node("Split", [y, sizes], [m.out for m in ms], base=f"{tag}_split", axis=-1)
    for m in ms:
        for node in (m.node, *m.absorbed):
            g.drop(node)


def pack_projections(model: onnx.ModelProto) -> dict:
    """Pack every group of sibling projections of ``model`` in place; returns
    {"groups": n, "matmuls": packed matmul count, "by_op": {op: groups}}."""
    g = Graph(model)
    groups = _groups(g)
    by_op: Counter = Counter()
    for i, ms in enumerate(groups):
        _pack(g, ms, f"zoo_pack{i}")
        by_op[ms[0].node.op_type] += 1
    if groups:
        g.finish()
    return {"groups": len(groups), "matmuls": sum(len(ms) for ms in groups), "by_op": dict(by_op)}


def pack_graphs(spec, folder, graphs: dict, lowering: Optional[dict]) -> dict:
    """``pack_projections`` on every graph of ``spec`` in ``folder`` (saved in place;
    ``graphs``, the export record, updated). Returns the lowering record's "packing"
    entry (also stored in ``lowering`` where given)."""
    from pathlib import Path

    from passes.files import save_graph, signature, weight_bytes
    from passes.optimize import op_counts
    from zoo.spec.errors import ExportError
    from zoo.spec.families import graphs_for

    per_graph = {}
    for gspec in graphs_for(spec):
        path = Path(folder) / gspec.file
        model = onnx.load(str(path))
        rec = pack_projections(model)
        per_graph[gspec.name] = rec
        if not rec["groups"]:
            continue
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"{spec.name}: the packed graph '{gspec.name}' is not valid ONNX: {str(e).splitlines()[0]}") from e
        files = save_graph(model, path)
        graphs[gspec.name].update(files=files, nodes=len(model.graph.node), weight_bytes=weight_bytes(model),
                                  outputs=signature(model.graph.output), ops=sorted(op_counts(model)))
    entry = {"groups": sum(r["groups"] for r in per_graph.values()), "matmuls": sum(r["matmuls"] for r in per_graph.values()),
             "per_graph": per_graph, "why": WHY}
    if lowering is not None:
        lowering["packing"] = entry
    return entry
