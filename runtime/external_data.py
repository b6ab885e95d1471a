"""Where an ONNX graph file says its tensors' bytes live, read without the onnx package.

A TensorProto may keep its bytes outside the graph file ("external data"):
``data_location = EXTERNAL`` and ``external_data`` entries, one of them
``location`` = a file path that ONNX Runtime opens relative to the graph's folder.
The runtime checks those paths (runtime.artifact) before ONNX Runtime sees the
graph, so it needs them; it imports neither onnx nor protobuf, so this module walks
the protobuf wire format itself, reading only the fields on the way to a tensor:

    ModelProto     7 graph (GraphProto), 25 functions (FunctionProto)
    GraphProto     1 node (NodeProto), 5 initializer (TensorProto), 15 sparse_initializer
    FunctionProto  7 node
    NodeProto      5 attribute (AttributeProto)
    AttributeProto 5 t, 10 tensors (TensorProto); 6 g, 11 graphs (GraphProto: subgraphs
                   of If / Loop / Scan); 22 sparse_tensor, 23 sparse_tensors
    SparseTensorProto 1 values, 2 indices (TensorProto)
    TensorProto    8 name, 13 external_data (StringStringEntryProto: 1 key, 2 value),
                   14 data_location (0 DEFAULT, 1 EXTERNAL)

Every other field is skipped by its length: the tensors' raw_data (the weights, nearly
all of a graph file) is never read or copied. The file is memory-mapped, so the pages
skipped are not even loaded; the walk costs per protobuf field outside the weights
(a few per node), not per byte. Wire format: each field is a varint key
(field number << 3 | wire type) then a varint (type 0), 8 bytes (1), a varint length
and that many bytes (2) or 4 bytes (5); types 3 and 4 (groups) are not in ONNX.
Anything that does not parse (truncated, a length past its message, a wrong wire type
on a field read here, nesting deeper than MAX_DEPTH) is a MalformedGraph.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
MAX_DEPTH = 64  # messages nested in messages (a subgraph adds 3); ONNX models use a handful
MAX_STRING = 4096  # bytes of a tensor name or location read here (a name is shown cut to this)

# message kind -> {field number: kind of the embedded message}; fields not listed are skipped
_CHILDREN = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


class MalformedGraph(ValueError):
    """The file is not a ModelProto this walk can read (the message says where)."""


@dataclass(frozen=True)
class ExternalRef:
    """A tensor whose bytes the graph file says are elsewhere."""

    tensor: str  # its name ('' when it has none)
    location: str | None  # the external_data 'location' value; None when absent
    external: bool  # data_location == EXTERNAL


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise MalformedGraph(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise MalformedGraph(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf, pos: int, end: int):
    """(field number, wire type, value) per field of the message in buf[pos:end]; value
    is the number (type 0), (start, stop) of the bytes (type 2), or None (types 1, 5)."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise MalformedGraph(f"field number 0 at byte {pos}")
        value = None
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + n), pos + n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise MalformedGraph(f"wire type {wire} (field {field}) at byte {pos}")
        if pos > end:
            raise MalformedGraph(f"field {field} runs past the end of its message (byte {end})")
        yield field, wire, value


def _text(buf, span: tuple[int, int], what: str, *, cut: bool = False) -> str:
    start, stop = span
    if stop - start > MAX_STRING and not cut:
        raise MalformedGraph(f"{what} of {stop - start:,} bytes")
    raw = bytes(buf[start : min(stop, start + MAX_STRING)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if cut:
            return raw.decode("utf-8", "replace")
        raise MalformedGraph(f"{what} is not UTF-8") from None


def _entry(buf, span: tuple[int, int]) -> tuple[str | None, str | None]:
    """A StringStringEntryProto -> (key, value); the value is read only for 'location'."""
    key = value = None
    values = []
    for field, wire, v in _fields(buf, *span):
        if field in (1, 2) and wire != 2:
            raise MalformedGraph(f"external_data field {field} with wire type {wire}")
        if field == 1:
            key = _text(buf, v, "external_data key", cut=True)
        elif field == 2:
            values.append(v)
    if key == "location" and values:
        value = _text(buf, values[-1], "external data location")  # the last one wins, as in protobuf
    return key, value


def _tensor(buf, span: tuple[int, int]) -> ExternalRef | None:
    name, location, external, has_entries = "", None, False, False
    for field, wire, v in _fields(buf, *span):
        if field == 8 and wire == 2:
            name = _text(buf, v, "tensor name", cut=True)
        elif field == 13 and wire == 2:
            has_entries = True
            key, value = _entry(buf, v)
            if key == "location":
                location = value
        elif field == 14 and wire == 0:
            external = v == EXTERNAL
        elif field in (8, 13, 14):
            raise MalformedGraph(f"tensor field {field} with wire type {wire}")
    if external or has_entries:
        return ExternalRef(name, location, external)
    return None


def _walk(buf, size: int) -> list[ExternalRef]:
    found: list[ExternalRef] = []
    stack = [("model", 0, size, 0)]
    while stack:
        kind, start, stop, depth = stack.pop()
        if kind == "tensor":
            ref = _tensor(buf, (start, stop))
            if ref is not None:
                found.append(ref)
            continue
        if depth >= MAX_DEPTH:
            raise MalformedGraph(f"messages nested more than {MAX_DEPTH} deep")
        children = _CHILDREN[kind]
        inner = []
        for field, wire, v in _fields(buf, start, stop):
            child = children.get(field)
            if child is None:
                continue
            if wire != 2:
                raise MalformedGraph(f"{kind} field {field} with wire type {wire}, not an embedded message")
            inner.append((child, v[0], v[1], depth + 1))
        stack.extend(reversed(inner))  # in file order
    return found


def external_references(path: str | Path) -> list[ExternalRef]:
    """Every tensor of the ONNX graph file ``path`` (initializers, sparse initializers,
    attribute tensors, in subgraphs and functions too) that has external_data entries or
    data_location EXTERNAL. OSError when the file cannot be opened; MalformedGraph when
    it does not parse."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise MalformedGraph("empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _walk(buf, size)
