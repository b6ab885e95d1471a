"""The graph being rewritten: nodes by name, producers and consumers, and small helpers over ONNX protos."""

from __future__ import annotations

import ast
from collections import defaultdict
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from passes.precision.graph import node_attr, topological_sort  # noqa: F401 (node_attr: the optimize passes import it from here)


class Graph:
    """An onnx GraphProto with producer / consumer indexes and helpers to add nodes,
    constants and unique names. Rewrites append nodes and drop replaced ones; ``finish``
    removes what became unused and puts the nodes back in topological order."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.removed: set[int] = set()
        self.added: list[onnx.NodeProto] = []
        self._names = {v for n in self.g.node for v in list(n.input) + list(n.output)}
        self._names |= {i.name for i in self.g.initializer} | {i.name for i in self.g.input}
        self.index()

    def index(self) -> None:
        nodes = [n for n in self.g.node if id(n) not in self.removed] + self.added
        self.producer = {o: n for n in nodes for o in n.output if o}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in nodes:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.outputs = {o.name for o in self.g.output}
        self.inits = {i.name: i for i in self.g.initializer}

    def name(self, base: str) -> str:
        n, i = base, 0
        while n in self._names:
            i += 1
            n = f"{base}_{i}"
        self._names.add(n)
        return n

    def const(self, name: str) -> Optional[np.ndarray]:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def scalar(self, name: str) -> Optional[float]:
        v = self.const(name)
        return float(v.reshape(())) if v is not None and v.size == 1 else None

    def add_const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.inits[name] = self.g.initializer[-1]
        return name

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, *, domain: str = "", base: str = "", **attrs) -> list[str]:
        outs = [self.name(f"{base or op.lower()}") for _ in range(outputs)] if isinstance(outputs, int) else outputs
        n = helper.make_node(op, inputs, outs, name=self.name(f"zoo_opt/{base or op}"), domain=domain, **attrs)
        self.added.append(n)
        for o in outs:
            if o:
                self.producer[o] = n
        for i in inputs:
            if i:
                self.consumers[i].append(n)
        return outs

    def drop(self, node: onnx.NodeProto) -> None:
        self.removed.add(id(node))

    def op(self, name: str, op_type: str) -> Optional[onnx.NodeProto]:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type and id(node) not in self.removed else None

    def finish(self) -> None:
        """Drop removed and dead nodes, topologically sort what is left."""
        nodes = [n for n in self.g.node if id(n) not in self.removed] + self.added
        # dead code: nodes none of whose outputs is used (repeat until stable)
        while True:
            used = {i for n in nodes for i in n.input if i} | self.outputs
            keep = [n for n in nodes if any(o in used for o in n.output if o)]
            if len(keep) == len(nodes):
                break
            nodes = keep
        used = {i for n in nodes for i in n.input}
        inits = [i for i in self.g.initializer if i.name in used or i.name in self.outputs]
        del self.g.node[:]
        self.g.node.extend(nodes)
        del self.g.initializer[:]
        self.g.initializer.extend(inits)
        topological_sort(self.model, "graph optimization left a cycle")
        self.removed, self.added = set(), []
        self.index()


def scopes(node: onnx.NodeProto) -> tuple[list[str], list[str]]:
    """The exporter's module scopes and classes of a node (empty when absent)."""
    names, classes = [], []
    for p in node.metadata_props:
        try:
            if p.key == "pkg.torch.onnx.name_scopes":
                names = ast.literal_eval(p.value)
            elif p.key == "pkg.torch.onnx.class_hierarchy":
                classes = ast.literal_eval(p.value)
        except (ValueError, SyntaxError):
            pass
    return names, classes


def lowest_value(dtype: int) -> float:
    return float(np.finfo(np.float16).min) if dtype == TensorProto.FLOAT16 else float(np.finfo(np.float32).min)


def float_type(g: Graph) -> int:
    for v in list(g.g.input) + list(g.g.output):
        t = v.type.tensor_type.elem_type
        if t in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
            return t
    return TensorProto.FLOAT


def np_dtype(dtype: int):
    return np.float16 if dtype == TensorProto.FLOAT16 else np.float32


def slice_last(g: Graph, node: Optional[onnx.NodeProto], rank: int = 4) -> Optional[tuple[int, int]]:
    """(start, end) of a Slice on the last axis with step 1, else None."""
    if node is None or node.op_type != "Slice" or len(node.input) < 4:
        return None
    starts, ends, axes = (g.const(i) for i in node.input[1:4])
    steps = g.const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.array([1])
    if any(v is None or v.size != 1 for v in (starts, ends, axes, steps)) or int(steps.reshape(())) != 1:
        return None
    if int(axes.reshape(())) not in (-1, rank - 1):
        return None
    return int(starts.reshape(())), int(ends.reshape(()))
