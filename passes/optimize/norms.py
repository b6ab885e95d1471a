"""Norms: the residual add folded into the norm (Skip*Normalization) where the target gains from it."""

from __future__ import annotations

from collections import Counter

import onnx

from zoo.spec import variants

from passes.optimize.graph import Graph, node_attr, scopes
from passes.optimize.lowering import DECOMPOSED, MS, WHY

NORMS = tuple(e.onnx_op for e in variants.NORMS.entries())  # the ops the norms export as


def _is_residual_add(node: onnx.NodeProto) -> bool:
    """The add of a residual sub-layer (compiler.layers.Residual): x + f(...), same shapes."""
    names, classes = scopes(node)
    return len(classes) >= 2 and classes[-2] == "compiler.layers.Residual" and classes[-1].startswith("aten.add")


def lower_norms(g: Graph, spec, target: str, dtype: int, plan: dict) -> dict:
    counts: Counter = Counter()
    lone: Counter = Counter()
    if plan["norm"] == DECOMPOSED:
        return {"why": [WHY[(target, "norm")]] if any(n.op_type in NORMS for n in g.g.node) else []}
    for norm in [n for n in g.g.node if n.op_type in ("LayerNormalization", "RMSNormalization")]:
        add = g.op(norm.input[0], "Add")
        axis = node_attr(norm, "axis", -1)
        ok = add is not None and _is_residual_add(add) and axis in (-1, 2) and len(norm.output) == 1
        weight = g.const(norm.input[1])
        ok = ok and weight is not None and weight.ndim == 1
        if not ok:
            lone["onnx:" + norm.op_type] += 1
            continue
        eps = float(node_attr(norm, "epsilon", 1e-5))
        s = add.output[0]
        others = [u for u in g.consumers.get(s, []) if u is not norm]
        outs = [norm.output[0], "", "", s if (others or s in g.outputs) else ""]
        while outs and not outs[-1]:
            outs.pop()
        g.drop(add)
        g.drop(norm)
        if norm.op_type == "LayerNormalization":
            inputs = [add.input[0], add.input[1], norm.input[1]] + ([norm.input[2]] if len(norm.input) > 2 and norm.input[2] else [])
            g.node("SkipLayerNormalization", inputs, outs, domain=MS, base="zoo_skip_ln", epsilon=eps)
            counts[f"{MS}:SkipLayerNormalization"] += 1
        else:
            g.node("SkipSimplifiedLayerNormalization", [add.input[0], add.input[1], norm.input[1]], outs, domain=MS, base="zoo_skip_rms", epsilon=eps)
            counts[f"{MS}:SkipSimplifiedLayerNormalization"] += 1
    g.finish()
    return {"why": [WHY[(target, "norm")]] if counts or lone else []}
