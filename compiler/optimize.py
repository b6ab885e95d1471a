"""Optimized graphs (``zoo build --optimize --target cpu|cuda``): the exported graphs with
attention, rotary embedding, norm + residual and GELU + bias lowered to fused ops for
the target execution provider, rewritten in place and recorded in the manifest.

The exporter writes every component decomposed (MatMul, Softmax, Where, Slice, ...;
norms already as LayerNormalization / RMSNormalization, GELU as Gelu). This pass
finds each component's subgraph by its structure (plus the exporter's module-scope
metadata for residual adds) and replaces it by one node; a subgraph that does not
match exactly is left as it is, so an unmatched graph stays correct (decomposed).
Every rewritten graph then goes through the same parity check as the plain one
(compiler.artifact), on CPU: every op emitted here, for either target, has an ONNX
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
VERSION = 1

import ast
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zoo.contract import graphs_for
from zoo.errors import ExportError

MS = "com.microsoft"
ATTENTION = "onnx:Attention"
MHA = f"{MS}:MultiHeadAttention"
DECOMPOSED = "decomposed"
NONE = "none"  # the model has no such component (no RoPE, no GELU)

# What each target gets, per component. "decomposed" leaves the exporter's subgraph
# as it is (for norms and GELU that is already one standard op each: LayerNormalization,
# RMSNormalization, Gelu). CPU: measured with ONNX Runtime 1.32 (benchmarks/optimize.py,
# docs/optimize.md); CUDA: from the kernels each release registers (no GPU measured here).
LOWERING: dict[str, dict[str, str]] = {
    "cpu": {
        "attention": ATTENTION,
        "attention_gqa": ATTENTION,
        "rotary": "onnx:RotaryEmbedding",
        "norm": DECOMPOSED,
        "gelu": DECOMPOSED,
    },
    "cuda": {
        "attention": MHA,
        "attention_gqa": ATTENTION,
        "rotary": f"{MS}:RotaryEmbedding",
        "norm": f"{MS}:Skip*Normalization",
        "gelu": f"{MS}:FastGelu/BiasGelu",
    },
}

WHY = {
    ("cpu", "attention"): "the standard Attention op (opset 23) has an ONNX Runtime CPU kernel: scores, mask, softmax "
    "and PV in one node, measured at 0.7-0.9x the decomposed subgraph's time (prefill 1x128, 8x32; decode at 64 and "
    "512 cached tokens); MultiHeadAttention and GroupQueryAttention measured slower than both on CPU",
    ("cpu", "attention_gqa"): "the standard Attention op takes kv_heads < heads without repeating the cache (measured "
    "0.7-0.9x for prefill and short-context decode, 1.4x at 512 cached tokens: +20 us a layer, kept for one lowering)",
    ("cuda", "attention"): "MultiHeadAttention has had CUDA kernels (flash / memory-efficient / unfused) for years; "
    "the standard Attention op has a CUDA kernel only in recent ONNX Runtime releases (before that it ran on CPU "
    "inside a CUDA session: onnxruntime issue 28025)",
    ("cuda", "attention_gqa"): "MultiHeadAttention needs kv_heads = heads, GroupQueryAttention's CUDA kernel takes "
    "float16/bfloat16 only and masks by right-padded lengths (the zoo pads left); the standard Attention op's CUDA "
    "kernel covers GQA (ONNX Runtime >= 1.26): check the placement report",
    ("cpu", "rotary"): "the standard RotaryEmbedding op (opset 23) has an ONNX Runtime CPU kernel, measured at "
    "0.4-0.65x the decomposed slices, negation and products; cos/sin computed once per graph",
    ("cuda", "rotary"): "com.microsoft RotaryEmbedding has CUDA kernels in every ONNX Runtime release that has the op",
    ("cpu", "norm"): "kept as exported (LayerNormalization / RMSNormalization after a separate residual Add): the CPU "
    "kernels of SkipLayerNormalization and SkipSimplifiedLayerNormalization measured 7x and 2x slower than Add + the "
    "standard norm for a prompt (1.5x and 1x for one token; ONNX Runtime 1.32)",
    ("cuda", "norm"): "the residual add folded into the norm (SkipLayerNormalization / SkipSimplifiedLayerNormalization, "
    "CUDA kernels): one pass over the hidden state instead of two",
    ("cpu", "gelu"): "kept as exported (Gelu after the bias Add): FastGelu measured the same as Add + tanh Gelu (the "
    "session fuses those itself), BiasGelu 1.04-1.2x slower than Add + Gelu on CPU",
    ("cuda", "gelu"): "the bias add folded into the activation (FastGelu / BiasGelu, CUDA kernels)",
    "additive": "the additive score (v . tanh(Wq q + Wk k)) has no fused kernel: decomposed",
}


# --------------------------------------------------------------------------- graph helpers


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
        producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
        order, state = [], [0] * len(nodes)  # 0 new, 1 on the stack, 2 placed
        for start in range(len(nodes)):
            stack = [start]
            while stack:
                k = stack[-1]
                if state[k] == 2:
                    stack.pop()
                    continue
                state[k] = 1
                deps = [producer[i] for i in nodes[k].input if i in producer and state[producer[i]] != 2]
                if any(state[d] == 1 for d in deps):
                    raise ExportError(f"graph optimization left a cycle at {nodes[k].op_type} {nodes[k].name}")
                if deps:
                    stack.extend(deps)
                else:
                    state[k] = 2
                    order.append(nodes[k])
                    stack.pop()
        used = {i for n in order for i in n.input}
        inits = [i for i in self.g.initializer if i.name in used or i.name in self.outputs]
        del self.g.node[:]
        self.g.node.extend(order)
        del self.g.initializer[:]
        self.g.initializer.extend(inits)
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


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _lowest(dtype: int) -> float:
    return float(np.finfo(np.float16).min) if dtype == TensorProto.FLOAT16 else float(np.finfo(np.float32).min)


def _float_type(g: Graph) -> int:
    for v in list(g.g.input) + list(g.g.output):
        t = v.type.tensor_type.elem_type
        if t in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
            return t
    return TensorProto.FLOAT


def _np(dtype: int):
    return np.float16 if dtype == TensorProto.FLOAT16 else np.float32


def _slice_last(g: Graph, node: Optional[onnx.NodeProto], rank: int = 4) -> Optional[tuple[int, int]]:
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


# --------------------------------------------------------------------------- attention


class AttentionMatch:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _scores(g: Graph, x: str):
    """x = [Mul by a constant | Div by a constant](q @ Transpose(k)), the q k^T matmul
    possibly grouped (grouped_qk's reshapes) -> (scale, qk MatMul, q, grouped), or None."""
    scale = 1.0
    node = g.producer.get(x)
    if node is not None and node.op_type in ("Mul", "Div"):
        c = [g.scalar(i) for i in node.input]
        if node.op_type == "Mul" and c[1] is not None:
            scale, x = c[1], node.input[0]
        elif node.op_type == "Mul" and c[0] is not None:
            scale, x = c[0], node.input[1]
        elif node.op_type == "Div" and c[1] is not None and c[1] != 0:
            scale, x = 1.0 / c[1], node.input[0]
        else:
            return None
        node = g.producer.get(x)
    grouped = False
    if node is not None and node.op_type == "Reshape":  # grouped_qk: (B, KV, G*T, Tk) -> (B, H, T, Tk)
        grouped, node = True, g.op(node.input[0], "MatMul")
    if node is None or node.op_type != "MatMul":
        return None
    q = node.input[0]
    if grouped:
        q_reshape = g.op(q, "Reshape")
        if q_reshape is None:
            return None
        q = q_reshape.input[0]
    kt = g.op(node.input[1], "Transpose")
    if kt is None or list(_attr(kt, "perm", [])) not in ([0, 1, 3, 2], [0, 2, 3, 1]):
        return None
    return scale, node, q, grouped


def match_attention(g: Graph, softmax: onnx.NodeProto) -> Optional[AttentionMatch]:
    """The scores -> mask -> softmax -> PV chain around ``softmax``, or None."""
    if _attr(softmax, "axis", -1) not in (-1, 3):
        return None
    where = g.op(softmax.input[0], "Where")
    if where is None:
        return None
    allowed, x, fill = where.input
    fill_v = g.scalar(fill)
    if fill_v is None or fill_v > -6.0e4:  # the dtype's lowest value (float32 or float16)
        return None
    bias = None
    scores = _scores(g, x)
    node = g.producer.get(x)
    if scores is None and node is not None and node.op_type == "Add":  # scores + bias (ALiBi, relative)
        for i in (0, 1):
            scores = _scores(g, node.input[i])
            if scores is not None:
                bias = node.input[1 - i]
                break
    if scores is None:
        return None
    scale, qk, q, grouped = scores
    kt = g.producer[qk.input[1]]
    k = kt.input[0]
    k_layout = "bnsh" if list(_attr(kt, "perm")) == [0, 1, 3, 2] else "bsnh"  # (B, T, KV, hd): two transposes folded
    # forward: probs -> [Reshape] -> MatMul(., v) -> [Reshape] -> y
    probs = softmax.output[0]
    users = g.consumers.get(probs, [])
    if len(users) != 1 or probs in g.outputs:
        return None
    if grouped:
        if users[0].op_type != "Reshape" or users[0].input[0] != probs:
            return None
        probs = users[0].output[0]
        users = g.consumers.get(probs, [])
        if len(users) != 1 or probs in g.outputs:
            return None
    pv = users[0]
    if pv.op_type != "MatMul" or pv.input[0] != probs:
        return None
    v = pv.input[1]
    last = pv
    if grouped:
        users = g.consumers.get(pv.output[0], [])
        if len(users) != 1 or users[0].op_type != "Reshape" or pv.output[0] in g.outputs:
            return None
        last = users[0]
    return AttentionMatch(k_layout=k_layout, q=q, k=k, v=v, allowed=allowed, bias=bias, scale=scale, fill=fill_v, grouped=grouped, y=last.output[0], last=last, softmax=softmax)


def _attention_parts(softmax: onnx.NodeProto, spec) -> tuple[Optional[str], str]:
    """(stack, kind) of an attention from the exporter's scopes: ("decoder", "self")."""
    names, classes = scopes(softmax)
    stack = next((p for p in ("encoder", "decoder") if any(s == p or s.endswith(f".{p}") for s in names)), None)
    kind = "cross" if any(c.endswith("CrossAttention") for c in classes) else "self"
    if stack is None and len(spec.stacks()) == 1:
        stack = spec.stacks()[0][0]
    return stack, kind


class MaskCache:
    """The additive mask and the row factor, built once per (allowed, bias) pair."""

    def __init__(self, g: Graph, dtype: int):
        self.g, self.dtype, self.cache = g, dtype, {}

    def get(self, allowed: str, bias: Optional[str], lowest: float, q: str) -> tuple[str, str]:
        """``q`` (B, H, Tq, hd): the mask is expanded to Tq query rows (ONNX Runtime's
        Attention does not broadcast the mask's query axis; every attention sharing
        this mask has the same queries)."""
        key = (allowed, bias)
        if key not in self.cache:
            g, npt = self.g, _np(self.dtype)
            # any (B, 1, Tq, 1): 1 where the query row has an allowed key, else 0
            allowed_f = g.node("Cast", [allowed], base="zoo_allowed_f", to=self.dtype)[0]
            axes = g.add_const("zoo_last_axis", np.array([-1], dtype=np.int64))
            any_f = g.node("ReduceMax", [allowed_f, axes], base="zoo_row_any", keepdims=1)[0]
            any_b = g.node("Cast", [any_f], base="zoo_row_any_b", to=TensorProto.BOOL)[0]
            zero = g.add_const("zoo_zero", np.array(0, dtype=npt))
            low = g.add_const("zoo_lowest", np.array(lowest, dtype=npt))
            inner = g.node("Where", [allowed, bias or zero, low], base="zoo_attn_mask0")[0]
            mask = g.node("Where", [any_b, inner, zero], base="zoo_attn_mask_b")[0]
            tq = g.node("Shape", [q], base="zoo_tq", start=2, end=3)[0]
            one = g.add_const("zoo_one", np.array([1], dtype=np.int64))
            rows = g.node("Concat", [one, one, tq, one], base="zoo_mask_rows", axis=0)[0]
            mask = g.node("Expand", [mask, rows], base="zoo_attn_mask")[0]
            self.cache[key] = (mask, any_f)
        return self.cache[key]


def lower_attention(g: Graph, spec, target: str, dtype: int, plan: dict) -> dict:
    """Rewrite every matching attention; returns the record for the manifest."""
    masks = MaskCache(g, dtype)
    used: Counter = Counter()
    decomposed: Counter = Counter()
    for softmax in [n for n in g.g.node if n.op_type == "Softmax"]:
        stack, kind = _attention_parts(softmax, spec)
        att = spec.stack(stack).attention if stack else None
        m = match_attention(g, softmax)
        if m is None or att is None:
            decomposed["additive" if att is not None and att.score == "additive" else "unmatched"] += 1
            continue
        heads, kv_heads, hd = att.heads, att.n_kv_heads, spec.head_dim(stack)
        gqa = kv_heads != heads
        if gqa != m.grouped:
            decomposed["unmatched"] += 1
            continue
        choice = plan["attention_gqa" if gqa else "attention"]
        if choice == DECOMPOSED:
            decomposed["by plan"] += 1
            continue
        mask, any_f = masks.get(m.allowed, m.bias, m.fill, m.q)
        q = g.node("Mul", [m.q, any_f], base="zoo_q_rows")[0]
        if m.k_layout == "bsnh":
            m.k = g.node("Transpose", [m.k], base="zoo_k_bnsh", perm=[0, 2, 1, 3])[0]
        g.drop(m.last)
        if choice == ATTENTION:
            # 4-D q (B, H, T, hd), k/v (B, KV, Tk, hd): heads read from the shapes
            g.node("Attention", [q, m.k, m.v, mask], [m.y], base="zoo_attention", scale=float(m.scale))
        elif choice == MHA:
            if gqa:
                raise ExportError("MultiHeadAttention needs kv_heads = heads")
            # MHA: query (B, T, H*hd), key/value (B, H, Tk, hd), bias (B|1, 1|H, T, Tk) -> (B, T, H*hd)
            q3 = g.node("Transpose", [q], base="zoo_q_bsnh", perm=[0, 2, 1, 3])[0]
            flat = g.add_const("zoo_bsd", np.array([0, 0, heads * hd], dtype=np.int64))
            q3 = g.node("Reshape", [q3, flat], base="zoo_q_bsd")[0]
            y3 = g.node(
                "MultiHeadAttention", [q3, m.k, m.v, "", "", mask], base="zoo_mha", domain=MS, num_heads=heads, scale=float(m.scale)
            )[0]
            bsnh = g.add_const("zoo_bsnh", np.array([0, 0, heads, hd], dtype=np.int64))
            y4 = g.node("Reshape", [y3, bsnh], base="zoo_y_bsnh")[0]
            g.node("Transpose", [y4], [m.y], base="zoo_y_bnsh", perm=[0, 2, 1, 3])
        else:
            raise ExportError(f"unknown attention lowering {choice!r}")
        used[choice] += 1
    g.finish()
    why = []
    if any(c == plan["attention"] for c in used):
        why.append(WHY[(target, "attention")])
    if any(c == plan["attention_gqa"] for c in used) and any(s.attention.n_kv_heads != s.attention.heads for _, s in spec.stacks()):
        why.append(WHY[(target, "attention_gqa")])
    if decomposed.get("additive"):
        why.append(WHY["additive"])
    if decomposed.get("unmatched"):
        why.append(f"{decomposed['unmatched']} attention subgraph(s) did not match the fused pattern: kept decomposed")
    if decomposed.get("by plan"):
        why.append(f"kept decomposed for {target} by plan")
    return {"why": why, "decomposed": sum(decomposed.values())}


# --------------------------------------------------------------------------- rotary


def match_rotary(g: Graph, add: onnx.NodeProto) -> Optional[dict]:
    """x * cos + rotate_half(x) * sin (compiler.positional.Rotary.apply), x 4-D."""
    muls = [g.op(i, "Mul") for i in add.input]
    if None in muls:
        return None
    for a, b in ((muls[0], muls[1]), (muls[1], muls[0])):
        for xi in (0, 1):
            x, cos = a.input[xi], a.input[1 - xi]
            for ri in (0, 1):
                rot, sin = b.input[ri], b.input[1 - ri]
                cat = g.op(rot, "Concat")
                if cat is None or len(cat.input) != 2 or _attr(cat, "axis") not in (-1, 3):
                    continue
                neg = g.op(cat.input[0], "Neg")
                second = g.producer.get(cat.input[1])
                if neg is None or second is None:
                    continue
                first = g.producer.get(neg.input[0])
                s1, s2 = _slice_last(g, first), _slice_last(g, second)
                if s1 is None or s2 is None or first.input[0] != x or second.input[0] != x:
                    continue
                half = s2[1]
                if s2[0] != 0 or s1[0] != half or s1[1] < 2 * half:
                    continue
                return {"x": x, "cos": cos, "sin": sin, "half": half, "nodes": (a, b, cat, neg, first, second)}
    return None


def _angles(g: Graph, cos: str, sin: str) -> Optional[tuple[str, str, str]]:
    """cos/sin (B, 1, T, rot) = Cos/Sin(Unsqueeze(Concat(a, a))) -> (a, positions, inv_freq):
    a (B, T, rot/2) = positions (B, T) as float x inv_freq."""
    c, s = g.op(cos, "Cos"), g.op(sin, "Sin")
    if c is None or s is None or c.input[0] != s.input[0]:
        return None
    unsq = g.op(c.input[0], "Unsqueeze")
    if unsq is None:
        return None
    axes = g.const(unsq.input[1]) if len(unsq.input) > 1 else np.array(_attr(unsq, "axes", []))
    if axes is None or list(axes.reshape(-1)) != [1]:
        return None
    cat = g.op(unsq.input[0], "Concat")
    if cat is None or len(cat.input) != 2 or cat.input[0] != cat.input[1] or _attr(cat, "axis") not in (-1, 2):
        return None
    a = cat.input[0]
    mul = g.op(a, "Mul")
    positions = inv_freq = None
    if mul is not None:
        for i in (0, 1):
            f = g.const(mul.input[1 - i])
            up = g.op(mul.input[i], "Unsqueeze")
            cast = g.op(up.input[0], "Cast") if up is not None else None
            if f is not None and f.ndim == 1 and cast is not None:
                positions, inv_freq = cast.input[0], mul.input[1 - i]
    return a, positions, inv_freq


def _heads_of(g: Graph, x: str) -> Optional[int]:
    """Heads of x (B, heads, T, hd) = Transpose(Reshape(h, (B, T, heads, hd))), from the
    reshape's constant target shape (or the constant third part of its Concat)."""
    t = g.op(x, "Transpose")
    if t is None or list(_attr(t, "perm", [])) != [0, 2, 1, 3]:
        return None
    r = g.op(t.input[0], "Reshape")
    if r is None:
        return None
    shape = g.const(r.input[1])
    if shape is not None and shape.size == 4:
        return int(shape[2]) if shape[2] > 0 else None
    cat = g.op(r.input[1], "Concat")
    if cat is None or len(cat.input) != 4:
        return None
    part = g.const(cat.input[2])
    return int(part.reshape(-1)[0]) if part is not None and part.size == 1 and part.reshape(-1)[0] > 0 else None


def lower_rotary(g: Graph, spec, target: str, dtype: int, plan: dict) -> dict:
    choice = plan["rotary"]
    count, unmatched = 0, 0
    caches: dict = {}
    for add in [n for n in g.g.node if n.op_type == "Add"]:
        m = match_rotary(g, add)
        if m is None:
            continue
        if choice == DECOMPOSED:
            unmatched += 1
            continue
        found = _angles(g, m["cos"], m["sin"])
        if found is None:
            unmatched += 1
            continue
        a, positions, inv_freq = found
        rot = 2 * m["half"]
        x, out = m["x"], add.output[0]
        # partial rotation: x = Slice(h, 0:rot), out -> Concat(out, Slice(h, rot:))
        whole, partial_cat = x, None
        x_slice = g.producer.get(x)
        span = _slice_last(g, x_slice)
        users = g.consumers.get(out, [])
        if span == (0, rot) and len(users) == 1 and users[0].op_type == "Concat" and len(users[0].input) == 2:
            rest = _slice_last(g, g.producer.get(users[0].input[1]))
            if users[0].input[0] == out and rest is not None and rest[0] == rot and g.producer[users[0].input[1]].input[0] == x_slice.input[0]:
                whole, partial_cat = x_slice.input[0], users[0]
        elif span is not None:
            unmatched += 1
            continue
        attrs = {"rotary_embedding_dim": rot} if partial_cat is not None else {}
        target_out = partial_cat.output[0] if partial_cat is not None else out
        if choice == "onnx:RotaryEmbedding":
            if a not in caches:
                caches[a] = (g.node("Cos", [a], base="zoo_cos_cache")[0], g.node("Sin", [a], base="zoo_sin_cache")[0])
            cos_c, sin_c = caches[a]
            g.drop(partial_cat if partial_cat is not None else add)
            g.node("RotaryEmbedding", [whole, cos_c, sin_c], [target_out], base="zoo_rotary", **attrs)
        elif choice == f"{MS}:RotaryEmbedding":
            if positions is None:
                unmatched += 1
                continue
            if a not in caches:
                freq = g.const(inv_freq).astype(np.float32)
                angles = np.arange(spec.max_seq_len, dtype=np.float32)[:, None] * freq[None, :]
                caches[a] = (
                    g.add_const("zoo_cos_table", np.cos(angles).astype(_np(dtype))),
                    g.add_const("zoo_sin_table", np.sin(angles).astype(_np(dtype))),
                )
            cos_c, sin_c = caches[a]
            heads = _heads_of(g, whole)
            if partial_cat is not None and heads is None:  # the contrib op wants num_heads with rotary_embedding_dim
                unmatched += 1
                continue
            g.drop(partial_cat if partial_cat is not None else add)
            extra = {"num_heads": heads} if partial_cat is not None else {}
            g.node("RotaryEmbedding", [whole, positions, cos_c, sin_c], [target_out], base="zoo_rotary", domain=MS, **attrs, **extra)
        else:
            raise ExportError(f"unknown rotary lowering {choice!r}")
        count += 1
    g.finish()
    if count:
        return {"why": [WHY[(target, "rotary")]], "decomposed": unmatched}
    if not unmatched:
        return {"why": []}
    return {"why": [f"kept decomposed for {target} by plan" if choice == DECOMPOSED else "the rotary subgraph did not match: kept decomposed"],
            "decomposed": unmatched}


# --------------------------------------------------------------------------- norms


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
        axis = _attr(norm, "axis", -1)
        ok = add is not None and _is_residual_add(add) and axis in (-1, 2) and len(norm.output) == 1
        weight = g.const(norm.input[1])
        ok = ok and weight is not None and weight.ndim == 1
        if not ok:
            lone["onnx:" + norm.op_type] += 1
            continue
        eps = float(_attr(norm, "epsilon", 1e-5))
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


# --------------------------------------------------------------------------- gelu


def lower_gelu(g: Graph, spec, target: str, dtype: int, plan: dict) -> dict:
    counts: Counter = Counter()
    if plan["gelu"] == DECOMPOSED:
        return {"why": [WHY[(target, "gelu")]] if any(n.op_type == "Gelu" for n in g.g.node) else []}
    for gelu in [n for n in g.g.node if n.op_type == "Gelu" and n.domain in ("", "ai.onnx")]:
        approx = _attr(gelu, "approximate", b"none")
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


# --------------------------------------------------------------------------- driver


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
}
NORMS = ("LayerNormalization", "RMSNormalization")


def _name(op: str) -> str:
    return op if ":" in op else f"onnx:{op}"


def optimize_model(model: onnx.ModelProto, spec, *, target: str = "cpu", plan: Optional[dict] = None) -> dict:
    """Rewrite ``model`` (one graph of ``spec``) in place; returns per component what it
    is in the graph now ({lowered_as, nodes[, decomposed], why})."""
    plan = {**LOWERING[target], **(plan or {})}
    g = Graph(model)
    dtype = _float_type(g)
    notes = {
        "attention": lower_attention(g, spec, target, dtype, plan),
        "rotary": lower_rotary(g, spec, target, dtype, plan),
        "norm": lower_norms(g, spec, target, dtype, plan),
        "gelu": lower_gelu(g, spec, target, dtype, plan),
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
    ``graphs``, compiler.export.export_all's record, updated). Returns the lowering record:
    per component what it became (op, node count, what stayed decomposed) and why, the
    fused op counts, the target."""
    from compiler.export import save_graph, weight_bytes

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
