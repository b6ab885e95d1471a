"""Graph helpers of tests/test_precision.py's large-value fp16 checks: a decomposed
LayerNormalization (as other exporters write it), and running a graph in ONNX Runtime
or with every op in its own dtype (onnx.reference)."""

from __future__ import annotations

import warnings

import numpy as np

from zoo.spec.families import Role
import onnx
from onnx import helper, numpy_helper


def decompose_layer_norms(proto: onnx.ModelProto) -> onnx.ModelProto:
    """LayerNormalization -> ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul,
    Add: the norm as other exporters and older opsets write it."""
    g = proto.graph
    g.initializer.extend([
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "ln/axes"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "ln/two"),
    ])
    nodes = []
    for n in g.node:
        if n.op_type != "LayerNormalization":
            nodes.append(n)
            continue
        x, w, b = n.input
        t = n.name
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        g.initializer.append(numpy_helper.from_array(np.array(eps, dtype=np.float32), f"{t}/eps"))
        nodes += [
            helper.make_node("ReduceMean", [x, "ln/axes"], [f"{t}/mean"], name=f"{t}/mean", keepdims=1),
            helper.make_node("Sub", [x, f"{t}/mean"], [f"{t}/centered"], name=f"{t}/centered"),
            helper.make_node("Pow", [f"{t}/centered", "ln/two"], [f"{t}/square"], name=f"{t}/square"),
            helper.make_node("ReduceMean", [f"{t}/square", "ln/axes"], [f"{t}/var"], name=f"{t}/var", keepdims=1),
            helper.make_node("Add", [f"{t}/var", f"{t}/eps"], [f"{t}/var_eps"], name=f"{t}/var_eps"),
            helper.make_node("Sqrt", [f"{t}/var_eps"], [f"{t}/std"], name=f"{t}/std"),
            helper.make_node("Div", [f"{t}/centered", f"{t}/std"], [f"{t}/normed"], name=f"{t}/normed"),
            helper.make_node("Mul", [f"{t}/normed", w], [f"{t}/scaled"], name=f"{t}/scaled"),
            helper.make_node("Add", [f"{t}/scaled", b], [n.output[0]], name=f"{t}/shifted"),
        ]
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto


def run_ort(proto, ids) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for i in s.get_inputs():
        if Role.of(i.name) is Role.PAST:
            feed[i.name] = np.zeros((ids.shape[0], i.shape[1], 0, i.shape[3]), dtype=np.float16 if "16" in i.type else np.float32)
    return s.run(["logits"], feed)[0].astype(np.float64)


def run_native_fp16(proto, ids) -> np.ndarray:
    """The graph with every op computed in its own dtype (onnx.reference, numpy): what a
    device that runs fp16 kernels natively does. ONNX Runtime's CPU provider computes
    most fp16 ops in fp32 behind inserted casts and hides the overflow."""
    from onnx.reference import ReferenceEvaluator

    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for i in proto.graph.input:
        if Role.of(i.name) is Role.PAST:
            dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
            dtype = np.float16 if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else np.float32
            feed[i.name] = np.zeros((ids.shape[0], dims[1], 0, dims[3]), dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(proto).run(["logits"], feed)[0].astype(np.float64)
