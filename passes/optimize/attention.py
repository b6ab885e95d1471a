"""Attention: the decomposed scores, mask, softmax and PV matched and lowered to one fused op."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto

from zoo.spec.errors import ExportError
from zoo.spec.variants import SCORES

from passes.optimize.graph import Graph, node_attr, np_dtype, scopes
from passes.optimize.lowering import ATTENTION, DECOMPOSED, MHA, MS, WHY


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
    if kt is None or list(node_attr(kt, "perm", [])) not in ([0, 1, 3, 2], [0, 2, 3, 1]):
        return None
    return scale, node, q, grouped


def match_attention(g: Graph, softmax: onnx.NodeProto) -> Optional[AttentionMatch]:
    """The scores -> mask -> softmax -> PV chain around ``softmax``, or None."""
    if node_attr(softmax, "axis", -1) not in (-1, 3):
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
    k_layout = "bnsh" if list(node_attr(kt, "perm")) == [0, 1, 3, 2] else "bsnh"  # (B, T, KV, hd): two transposes folded
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
            g, npt = self.g, np_dtype(self.dtype)
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
        if not any(c.endswith("Attention") for c in scopes(softmax)[1]):
            continue  # a softmax outside attention (a mixture of experts' router)
        stack, kind = _attention_parts(softmax, spec)
        att = spec.stack(stack).attention if stack else None
        m = match_attention(g, softmax)
        if m is None or att is None:
            unfused = att is not None and not SCORES[att.score].fused  # the entry says it has no fused form
            decomposed[att.score if unfused else "unmatched"] += 1
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
    why += [SCORES[key].lowering for key in SCORES if key in decomposed]
    if decomposed.get("unmatched") and any(st.attention.softcap for _, st in spec.stacks()):
        why.append("soft-capped scores (c tanh(s / c)) do not match the fused pattern: decomposed")
    if decomposed.get("unmatched"):
        why.append(f"{decomposed['unmatched']} attention subgraph(s) did not match the fused pattern: kept decomposed")
    if decomposed.get("by plan"):
        why.append(f"kept decomposed for {target} by plan")
    return {"why": why, "decomposed": sum(decomposed.values())}
