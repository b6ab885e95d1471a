"""Graph helpers shared by the precision passes: node names, value types, node
order, shape inference again after a rewrite, weight bytes, quiet loggers."""

from __future__ import annotations

import logging

import onnx

from zoo.spec.errors import ExportError


def name_nodes(proto: onnx.ModelProto) -> None:
    """Every node gets a unique name (the block list names nodes)."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"zoo_precision_{i}_{node.op_type}"
        seen.add(node.name)


def value_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value (shape inference; initialisers and graph IO)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # contrib ops can stop it; what it has is still useful
        inferred = proto
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def topological_sort(proto: onnx.ModelProto) -> None:
    """Order the nodes so that each comes after the producers of its inputs (the
    converter appends the casts it inserts at the end; onnx.checker wants order)."""
    g = proto.graph
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    producers: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for o in node.output:
            producers[o] = i
    waiting: dict[int, set[int]] = {}
    users: dict[int, list[int]] = {}
    for i, node in enumerate(g.node):
        deps = {producers[v] for v in node.input if v not in available and v in producers}
        waiting[i] = deps
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = [i for i, d in waiting.items() if not d]
    order: list[int] = []
    while ready:
        ready.sort(reverse=True)  # keep the original order where it is free
        i = ready.pop()
        order.append(i)
        for u in users.get(i, []):
            waiting[u].discard(i)
            if not waiting[u]:
                ready.append(u)
    if len(order) != len(g.node):
        raise ExportError("the converted graph has a cycle")
    nodes = [g.node[i] for i in order]
    del g.node[:]
    g.node.extend(nodes)


def reinfer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the intermediate value types (the converter leaves some stale) and infer them again."""
    del proto.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:  # contrib ops it cannot infer: ONNX Runtime infers at load time
        return proto


class quiet_logs:
    """The converter and the quantizer log warnings of their own (pre-processing advice)."""

    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)
        return False
