"""ONNX graph files: saving (weights inside, or beside as external data past the
protobuf limit) with onnx.checker's check, and what a graph's record in the
manifest says of it (inputs, outputs, nodes, weight bytes, ops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from zoo.spec.errors import ExportError

PROTOBUF_LIMIT = 2_000_000_000  # bytes; bigger models keep their weights as external data
EXTERNAL_DATA_SUFFIX = ".data"


def signature(values) -> list[dict]:
    """ONNX graph inputs or outputs -> [{name, dtype, shape}], symbolic axes by name."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        out.append({"name": v.name, "dtype": dtype, "shape": shape})
    return out


def weight_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the initialisers of a graph (its stored weights)."""
    total = 0
    for init in proto.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    return total


def graph_record(proto: onnx.ModelProto, files: list[str]) -> dict:
    """A graph's entry in the manifest's ``graphs``."""
    return {
        "files": files,
        "inputs": signature(proto.graph.input),
        "outputs": signature(proto.graph.output),
        "nodes": len(proto.graph.node),
        "weight_bytes": weight_bytes(proto),
        "ops": sorted({n.op_type for n in proto.graph.node}),
    }


def _check(path: Path, contrib: bool) -> None:
    """onnx.checker's full check (with shape inference) of the saved file; where it
    fails on a graph with contrib ops, which it does not know, the plain check."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception:
        if not contrib:
            raise
        onnx.checker.check_model(str(path))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _copy_fields(src, dst, skip: str) -> None:
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def write_model(proto: onnx.ModelProto, path: Path) -> None:
    """``onnx.save_model(proto, path)`` without serialising the weights into one
    buffer first (4x faster on 500 MB). The file is the model without its
    initialisers, then per initialiser a ModelProto holding just it: protobuf parses
    concatenated messages as one, merged (repeated fields appended), so it loads as
    the same model; each tensor's raw bytes are written straight from the proto."""
    skeleton = onnx.ModelProto()
    _copy_fields(proto, skeleton, skip="graph")
    _copy_fields(proto.graph, skeleton.graph, skip="initializer")
    with open(path, "wb") as f:
        f.write(skeleton.SerializeToString())
        for t in proto.graph.initializer:
            raw = t.raw_data if t.HasField("raw_data") else None
            if raw is not None:
                t.ClearField("raw_data")
            head = t.SerializeToString()
            if raw is not None:
                t.raw_data = raw
                head += b"\x4a" + _varint(len(raw))  # field 9 (raw_data), length-delimited
            size = len(head) + (len(raw) if raw is not None else 0)
            piece = b"\x2a" + _varint(size)  # GraphProto field 5 (initializer)
            f.write(b"\x3a" + _varint(len(piece) + size) + piece + head)  # ModelProto field 7 (graph)
            if raw is not None:
                f.write(raw)


def save_graph(proto: onnx.ModelProto, path: Path) -> list[str]:
    """Save (weights inside, or beside as external data past the protobuf limit) and
    check the saved file. Returns the names of the files written."""
    path = Path(path)
    files = [path.name]
    if weight_bytes(proto) > PROTOBUF_LIMIT:
        data = path.name + EXTERNAL_DATA_SUFFIX
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
        files.append(data)
    else:
        write_model(proto, path)
    try:
        _check(path, contrib=any(op.domain not in ("", "ai.onnx") for op in proto.opset_import))
    except Exception as e:
        raise ExportError(f"{path.name}: onnx.checker rejects the exported graph: {str(e).splitlines()[0]}") from e
    return files
