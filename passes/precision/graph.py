"""Graph helpers shared by the precision passes: node names, value types, node
order, shape inference again after a rewrite, weight bytes, quiet loggers."""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir

from zoo.spec.errors import ExportError


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """The value of ``node``'s attribute ``name``, ``default`` where it is not set."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


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


def topological_sort(proto: onnx.ModelProto, cycle: str = "the converted graph has a cycle") -> None:
    """Order the nodes so that each comes after the producers of its inputs (the
    converter appends the casts it inserts at the end; onnx.checker wants order).
    onnx_ir's stable sort (the original order kept where it is free) gives the order;
    the node protos themselves are only moved, nothing else in ``proto`` changes.
    ``cycle``: the ExportError's message when no order exists."""
    model = ir.from_proto(proto)
    position = {node: i for i, node in enumerate(model.graph)}
    try:
        model.graph.sort()
    except ValueError as e:
        raise ExportError(cycle) from e
    nodes = [proto.graph.node[position[node]] for node in model.graph]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


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
