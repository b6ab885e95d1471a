"""GELU: the bias add folded into the activation (FastGelu / BiasGelu) where the target gains from it."""

from __future__ import annotations

from collections import Counter


from passes.optimize.graph import Graph, node_attr
from passes.optimize.lowering import DECOMPOSED, MS, WHY


def lower_gelu(g: Graph, spec, target: str, dtype: int, plan: dict) -> dict:
    counts: Counter = Counter()
    if plan["gelu"] == DECOMPOSED:
        return {"why": [WHY[(target, "gelu")]] if any(n.op_type == "Gelu" for n in g.g.node) else []}
    for gelu in [n for n in g.g.node if n.op_type == "Gelu" and n.domain in ("", "ai.onnx")]:
        approx = node_attr(gelu, "approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        add = g.op(gelu.input[0], "Add")
        x, bias = gelu.input[0], None
        if add is not None and len(g.consumers.get(add.output[0], [])) == 1 and add.output[0] not in g.outputs:
            for i in (0, 1):
                b = g.const(add.input[i])
                if b is not None and b.ndim == 1 and b.size > 1 and g.producer.get(add.input[1 - i]) is not None:
                    x, bias = add.input[1 - i], add.input[i]
                    break
        if approx == "tanh":
            op = "FastGelu"
        elif bias is not None:
            op = "BiasGelu"
        else:
            continue  # erf GELU without a bias: the standard Gelu op is already one node
        g.drop(gelu)
        if bias is not None:
            g.drop(add)
        g.node(op, [x] + ([bias] if bias else []), [gelu.output[0]], domain=MS, base=f"zoo_{op.lower()}")
        counts[f"{MS}:{op}"] += 1
    g.finish()
    return {"why": [WHY[(target, "gelu")]] if counts or any(n.op_type == "Gelu" for n in g.g.node) else []}
