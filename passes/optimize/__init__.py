"""Optimized graphs (``zoo build --optimize --target cpu|cuda``): the exported graphs with
attention, rotary embedding, norm + residual and GELU + bias lowered to fused ops for
the target execution provider, rewritten in place and recorded in the manifest.

The exporter writes every component decomposed (MatMul, Softmax, Where, Slice, ...;
norms already as LayerNormalization / RMSNormalization, GELU as Gelu). This pass
finds each component's subgraph by its structure (plus the exporter's module-scope
metadata for residual adds) and replaces it by one node; a subgraph that does not
match exactly is left as it is, so an unmatched graph stays correct (decomposed).
Every rewritten graph then goes through the same parity check as the plain one
(zoo.app.build), on CPU: every op emitted here, for either target, has an ONNX
Runtime CPU kernel.

Lowering per component and target (``LOWERING``; CPU measured with ONNX Runtime 1.32
in benchmarks/optimize.py, see docs/optimize.md; CUDA chosen from the kernels each
ONNX Runtime release registers, not measured here):

==========  =====================================  =========================================
component   cpu                                    cuda
==========  =====================================  =========================================
attention   onnx:Attention (opset 23)              com.microsoft:MultiHeadAttention; GQA:
                                                   onnx:Attention
rotary      onnx:RotaryEmbedding (opset 23)        com.microsoft:RotaryEmbedding
norm        as exported: Add + LayerNormalization  com.microsoft:SkipLayerNormalization /
            / RMSNormalization (Skip* measured     SkipSimplifiedLayerNormalization (the
            slower on CPU)                         residual add folded in)
gelu        as exported: Add + Gelu (the session   com.microsoft:FastGelu (tanh) / BiasGelu
            makes FastGelu of it)                  (erf), the bias add folded in
==========  =====================================  =========================================

Attention, what matches: ``Softmax(Where(allowed, [Add](Mul(MatMul(q, Transpose(k)),
scale), [bias]), lowest))`` then ``MatMul(probs, v)``, with or without the grouped
reshapes of GQA (compiler.attention.grouped_qk / grouped_pv): the scaled-dot and dot
scores, bilinear (its q is q W), causal / padding / sliding-window masks (all in
``allowed``) and ALiBi / T5 relative bias (``bias``). The mask and the bias become one
additive mask (0 / bias where allowed, the dtype's lowest value elsewhere). The
additive score (tanh) has no fused form and stays decomposed.

Fully masked query rows (the padding slots of a left-padded prompt) are the one place
where the fused kernels and the torch module disagree by design: torch's softmax over
a row of equal lowest values is uniform (the row's output is the mean of V), ONNX
Runtime's Attention returns zeros there. The rewrite keeps torch's result exactly:
such rows get q = 0 and a mask of 0, so their scores are all 0 and the softmax is
uniform again; rows with any allowed key are untouched. The cost is one (B, 1, Tq, 1)
factor per graph and one multiply of q per layer.
"""

from __future__ import annotations

# Part of an artifact's identity: bump when the rewrite rules change, so earlier builds are not reused.
VERSION = 2  # 2: sibling projections packed (passes.optimize.packing)

from collections import Counter
from pathlib import Path
from typing import Optional

import onnx
from onnx import helper

from zoo.spec.families import graphs_for
from zoo.spec.variants import FFN_KINDS
from zoo.spec.errors import ExportError
from passes.optimize.attention import lower_attention
from passes.optimize.gelu import lower_gelu
from passes.optimize.graph import Graph, float_type
from passes.optimize.lowering import DECOMPOSED, LOWERING, MS, NONE
from passes.optimize.norms import lower_norms
from passes.optimize.rotary import lower_rotary


def _ensure_opset(model: onnx.ModelProto) -> None:
    if any(n.domain == MS for n in model.graph.node) and not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter((f"{n.domain}:" if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node)


# The ops that make up each component once lowered (op_counts names: contrib ops with
# their domain); a component with none of them in a graph is decomposed there.
COMPONENT_OPS = {
    "attention": ("Attention", f"{MS}:MultiHeadAttention", f"{MS}:GroupQueryAttention"),
    "rotary": ("RotaryEmbedding", f"{MS}:RotaryEmbedding"),
    "norm": ("LayerNormalization", "RMSNormalization", f"{MS}:SkipLayerNormalization", f"{MS}:SkipSimplifiedLayerNormalization"),
    "gelu": ("Gelu", f"{MS}:FastGelu", f"{MS}:BiasGelu", f"{MS}:Gelu"),
    "moe": (f"{MS}:MoE",),
}


def _moe(spec) -> dict:
    """Mixture-of-experts feed-forwards stay as exported; the registry entry says why."""
    layers = sum(stack.layers for _, stack in spec.stacks() if stack.ffn.experts is not None)
    return {"why": [FFN_KINDS["moe"].lowering] if layers else [], "decomposed": layers}


def _name(op: str) -> str:
    return op if ":" in op else f"onnx:{op}"


def optimize_model(model: onnx.ModelProto, spec, *, target: str = "cpu", plan: Optional[dict] = None) -> dict:
    """Rewrite ``model`` (one graph of ``spec``) in place; returns per component what it
    is in the graph now ({lowered_as, nodes[, decomposed], why})."""
    plan = {**LOWERING[target], **(plan or {})}
    g = Graph(model)
    dtype = float_type(g)
    notes = {
        "attention": lower_attention(g, spec, target, dtype, plan),
        "rotary": lower_rotary(g, spec, target, dtype, plan),
        "norm": lower_norms(g, spec, target, dtype, plan),
        "gelu": lower_gelu(g, spec, target, dtype, plan),
        "moe": _moe(spec),
    }
    _ensure_opset(model)
    counts = op_counts(model)
    record = {}
    for comp, note in notes.items():
        present = {op: counts[op] for op in COMPONENT_OPS[comp] if counts[op]}
        absent = not present and not note["why"] and not note.get("decomposed")  # the model has none
        entry = {"lowered_as": "+".join(sorted(_name(op) for op in present)) or (NONE if absent else DECOMPOSED), "nodes": sum(present.values())}
        if note.get("decomposed"):
            entry["decomposed"] = note["decomposed"]
        entry["why"] = note["why"]
        record[comp] = entry
    return record


def optimize_graphs(spec, folder: Path, graphs: dict, *, target: str = "cpu", plan: Optional[dict] = None) -> dict:
    """Optimize every graph of ``spec`` in ``folder`` for ``target`` (rewritten in place;
    ``graphs``, zoo.app.export.export_all's record, updated). Returns the lowering record:
    per component what it became (op, node count, what stayed decomposed) and why, the
    fused op counts, the target."""
    from passes.files import save_graph, weight_bytes

    if target not in LOWERING:
        raise ExportError(f"--target must be one of {', '.join(LOWERING)}, got {target!r}")
    per_graph, fusions = {}, Counter()
    fused_ops = {op for ops in COMPONENT_OPS.values() for op in ops}
    for gspec in graphs_for(spec):
        path = Path(folder) / gspec.file
        model = onnx.load(str(path))
        before = len(model.graph.node)
        per_graph[gspec.name] = optimize_model(model, spec, target=target, plan=plan)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"{spec.name}: the optimized graph '{gspec.name}' is not valid ONNX: {str(e).splitlines()[0]}") from e
        files = save_graph(model, path)
        counts = op_counts(model)
        fusions.update({_name(k): v for k, v in counts.items() if k in fused_ops})
        graphs[gspec.name].update(
            files=files,
            nodes=len(model.graph.node),
            nodes_before_optimize=before,
            weight_bytes=weight_bytes(model),
            ops=sorted(counts),
        )
    components = {}
    for comp in COMPONENT_OPS:
        recs = [r[comp] for r in per_graph.values()]
        lowered = {x for r in recs for x in r["lowered_as"].split("+")}
        if lowered - {NONE}:
            lowered -= {NONE}
        if any(r["nodes"] for r in recs):
            lowered -= {DECOMPOSED}
        entry = {"lowered_as": "+".join(sorted(lowered)), "nodes": sum(r["nodes"] for r in recs)}
        if any(r.get("decomposed") for r in recs):
            entry["decomposed"] = sum(r.get("decomposed", 0) for r in recs)
        entry["why"] = "; ".join(dict.fromkeys(w for r in recs for w in r["why"])) or "not in this model"
        if len(per_graph) > 1:
            entry["per_graph"] = {name: {"lowered_as": r[comp]["lowered_as"], "nodes": r[comp]["nodes"]} for name, r in per_graph.items()}
        components[comp] = entry
    return {
        **components,
        "fusions": dict(sorted(fusions.items())),
        "target": target,
        "plan": {**LOWERING[target], **(plan or {})},
        "parity": "every op in these graphs has an ONNX Runtime CPU kernel: the build's parity check runs them like the plain ones"
        + ("; a CUDA session checks where each node was placed (runtime.placement)" if target == "cuda" else ""),
    }
