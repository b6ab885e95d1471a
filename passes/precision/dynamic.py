"""int8 by dynamic quantization (zoo.app.convert VERSION 1's int8, kept to compare
with and to show what the top-1 floor catches): onnxruntime.quantization.quantize_dynamic
on MatMul/Gemm with a constant weight, int8 weights per output channel (symmetric),
uint8 activations quantized per tensor at run time (DynamicQuantizeLinear ->
MatMulInteger). The token embedding table is quantized per row; a tied output
projection reads the same int8 tensor.

It holds on random-init weights and breaks on trained ones: one scale per activation
tensor cannot hold a few channels 20-1000x the rest (docs/precision.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from passes.files import weight_bytes
from passes.precision.graph import name_nodes, quiet_logs, reinfer, topological_sort
from passes.precision.matmuls import embedding_gathers

INT8_WEIGHT_TYPE = "QInt8"  # measured against QUInt8: see docs/precision.md
INT8_PER_CHANNEL = True
INT8_OPS = ("MatMul", "Gemm")


def to_int8_dynamic(proto: onnx.ModelProto, out: Path, *, vocab_size: int, weight_type: str = INT8_WEIGHT_TYPE,
                    per_channel: bool = INT8_PER_CHANNEL, embeddings: bool = True, exclude=()) -> tuple[onnx.ModelProto, dict]:
    """Dynamic int8 quantization of ``proto``'s MatMul/Gemm weights (and, with
    ``embeddings``, of its token embedding table, tied projection included); the
    nodes named in ``exclude`` stay float32. Returns the quantized proto and what was
    quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    name_nodes(proto)
    tied = _tied_tables(proto, vocab_size) if embeddings else {}
    # the tied projection's MatMul reads a Transpose, not a constant: quantize_dynamic leaves it; done below
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, quiet_logs():
        dst = Path(tmp) / "q.onnx"
        quantize_dynamic(
            proto,
            dst,
            op_types_to_quantize=list(INT8_OPS),
            per_channel=per_channel,
            weight_type=getattr(QuantType, weight_type),
            nodes_to_exclude=list(exclude),
            use_external_data_format=weight_bytes(proto) > 1_800_000_000,
            extra_options={"MatMulConstBOnly": True},
        )
        quantized = onnx.load(str(dst))
    info = {"method": "onnxruntime.quantization.quantize_dynamic", "ops": list(INT8_OPS), "weight_type": weight_type,
            "per_channel": per_channel, "activations": "uint8, per tensor, quantized at run time", "embeddings": []}
    if embeddings:
        for table in _embedding_tables(quantized, vocab_size):
            info["embeddings"].append(_quantize_table(quantized, table, tied=table in tied))
    info["matmuls"] = sum(1 for n in quantized.graph.node if n.op_type == "MatMulInteger")
    topological_sort(quantized)
    return reinfer(quantized), info


def _embedding_tables(proto: onnx.ModelProto, vocab_size: int) -> list[str]:
    """Float initialisers of shape (vocab_size, d) that a Gather reads (token embeddings)."""
    return list(dict.fromkeys(table for _, table in embedding_gathers(proto, vocab_size)))


def _tied_tables(proto: onnx.ModelProto, vocab_size: int) -> set[str]:
    tables = set(_embedding_tables(proto, vocab_size))
    return {n.input[0] for n in proto.graph.node if n.op_type == "Transpose" and n.input[0] in tables}


def _perm(node) -> list[int]:
    return list(next((a.ints for a in node.attribute if a.name == "perm"), [1, 0]))


def _gather_rows(tag: str, q_name: str, s_rows: str, ids: str, out: str) -> list:
    """Gather(table, ids) on int8 rows: Cast(Gather(table_q, ids)) * Gather(scale, ids)."""
    return [
        helper.make_node("Gather", [q_name, ids], [f"{tag}/rows_int8"], name=f"{tag}/int8", axis=0),
        helper.make_node("Cast", [f"{tag}/rows_int8"], [f"{tag}/rows"], name=f"{tag}/cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [s_rows, ids], [f"{tag}/scales"], name=f"{tag}/scales", axis=0),
        helper.make_node("Mul", [f"{tag}/rows", f"{tag}/scales"], [out], name=f"{tag}/dequantize"),
    ]


def _projection(ut: str, a: str, y: str, w_q: str, zp_name: str, s_name: str) -> list:
    """MatMul(a, Transpose(table)) as a dynamically quantized MatMul on the int8 table."""
    return [
        helper.make_node("DynamicQuantizeLinear", [a], [f"{ut}/a_q", f"{ut}/a_scale", f"{ut}/a_zp"], name=f"{ut}/quantize"),
        helper.make_node("MatMulInteger", [f"{ut}/a_q", w_q, f"{ut}/a_zp", zp_name], [f"{ut}/int32"], name=f"{ut}/int8"),
        helper.make_node("Cast", [f"{ut}/int32"], [f"{ut}/float"], name=f"{ut}/cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{ut}/a_scale", s_name], [f"{ut}/scales"], name=f"{ut}/scales"),
        helper.make_node("Mul", [f"{ut}/float", f"{ut}/scales"], [y], name=f"{ut}/dequantize"),
    ]


def _quantize_table(proto: onnx.ModelProto, name: str, *, tied: bool) -> dict:
    """Replace the float table ``name`` (V, D) by int8 rows with a scale per row (the
    embedding Gather, ``_gather_rows``); a Transpose(table) feeding MatMuls (the tied
    output projection) -> ``_projection`` on Transpose(table_q) with the row scales as
    per-column scales. Nodes that read the table otherwise keep a float copy."""
    g = proto.graph
    table = numpy_helper.to_array(next(t for t in g.initializer if t.name == name)).astype(np.float32)
    scale = np.abs(table).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q_name, s_name, s_rows, zp_name = f"{name}_int8", f"{name}_row_scale", f"{name}_row_scale_2d", f"{name}_zero_point"
    g.initializer.extend([
        numpy_helper.from_array(np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8), q_name),
        numpy_helper.from_array(scale.astype(np.float32), s_name),
        numpy_helper.from_array(scale.astype(np.float32)[:, None], s_rows),
        numpy_helper.from_array(np.zeros(table.shape[0], dtype=np.int8), zp_name),
    ])
    new_nodes: dict[int, list] = {}
    index = {n.name: i for i, n in enumerate(g.node)}
    projections = 0
    for node in [n for n in g.node if name in n.input]:
        if node.op_type == "Gather" and node.input[0] == name and node.input[1] != name:
            if next((a.i for a in node.attribute if a.name == "axis"), 0) == 0:
                new_nodes[index[node.name]] = _gather_rows(node.name, q_name, s_rows, node.input[1], node.output[0])
        elif tied and node.op_type == "Transpose" and _perm(node) == [1, 0]:
            users = [n for n in g.node if node.output[0] in n.input]
            if not users or any(u.op_type != "MatMul" or u.input[1] != node.output[0] for u in users):
                continue
            w_q = f"{node.name}/weight_int8"
            new_nodes[index[node.name]] = [helper.make_node("Transpose", [q_name], [w_q], name=f"{node.name}/int8", perm=[1, 0])]
            for u in users:
                new_nodes[index[u.name]] = _projection(u.name, u.input[0], u.output[0], w_q, zp_name, s_name)
                projections += 1
    nodes = [m for i, n in enumerate(g.node) for m in new_nodes.get(i, [n])]
    del g.node[:]
    g.node.extend(nodes)
    still_used = any(name in n.input for n in g.node) or any(o.name == name for o in g.output)
    keep = [t for t in g.initializer if (t.name != name or still_used) and (t.name != zp_name or projections)]
    del g.initializer[:]
    g.initializer.extend(keep)
    return {"table": name, "rows": int(table.shape[0]), "scheme": "int8 per row, symmetric",
            "tied_projections": projections, "float_copy_kept": bool(still_used)}
