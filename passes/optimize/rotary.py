"""Rotary embedding: the exporter's slices, negation and products lowered to one RotaryEmbedding op."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx

from zoo.spec.errors import ExportError
from zoo.spec.variants import ROPE_SCALINGS

from passes.optimize.graph import Graph, node_attr, np_dtype, slice_last
from passes.optimize.lowering import DECOMPOSED, MS, WHY


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
                if cat is None or len(cat.input) != 2 or node_attr(cat, "axis") not in (-1, 3):
                    continue
                neg = g.op(cat.input[0], "Neg")
                second = g.producer.get(cat.input[1])
                if neg is None or second is None:
                    continue
                first = g.producer.get(neg.input[0])
                s1, s2 = slice_last(g, first), slice_last(g, second)
                if s1 is None or s2 is None or first.input[0] != x or second.input[0] != x:
                    continue
                half = s2[1]
                if s2[0] != 0 or s1[0] != half or s1[1] < 2 * half:
                    continue
                return {"x": x, "cos": cos, "sin": sin, "half": half, "nodes": (a, b, cat, neg, first, second)}
    return None


def _step2_slice(g: Graph, node, start: int) -> Optional[str]:
    """The input of Slice(x, start::2) on the last axis, else None."""
    if node is None or node.op_type != "Slice" or len(node.input) < 5:
        return None
    starts, axes, steps = g.const(node.input[1]), g.const(node.input[3]), g.const(node.input[4])
    if any(v is None or v.size != 1 for v in (starts, axes, steps)) or int(steps.reshape(())) != 2:
        return None
    return node.input[0] if int(starts.reshape(())) == start and int(axes.reshape(())) in (-1, 3) else None


def match_interleaved(g: Graph, add: onnx.NodeProto) -> Optional[dict]:
    """x * cos + rotate_every_two(x) * sin (compiler.positional's interleaved layout):
    rotate_every_two(x) = Reshape(Concat(Unsqueeze(Neg(x[..., 1::2])), Unsqueeze(x[..., 0::2])))."""
    muls = [g.op(i, "Mul") for i in add.input]
    if None in muls:
        return None
    for a, b in ((muls[0], muls[1]), (muls[1], muls[0])):
        for xi, ri in ((0, 0), (0, 1), (1, 0), (1, 1)):
            x, cos, sin = a.input[xi], a.input[1 - xi], b.input[1 - ri]
            reshape = g.op(b.input[ri], "Reshape")
            cat = g.op(reshape.input[0], "Concat") if reshape is not None else None
            if cat is None or len(cat.input) != 2:
                continue
            ups = [g.op(i, "Unsqueeze") for i in cat.input]
            neg = g.op(ups[0].input[0], "Neg") if ups[0] is not None else None
            if neg is None or ups[1] is None:
                continue
            odd, even = g.producer.get(neg.input[0]), g.producer.get(ups[1].input[0])
            if _step2_slice(g, odd, 1) == x and _step2_slice(g, even, 0) == x:
                return {"x": x, "cos": cos, "sin": sin, "half": None, "nodes": (a, b, reshape, cat, *ups, neg, odd, even)}
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
    axes = g.const(unsq.input[1]) if len(unsq.input) > 1 else np.array(node_attr(unsq, "axes", []))
    if axes is None or list(axes.reshape(-1)) != [1]:
        return None
    spread = g.op(unsq.input[0], "Reshape")  # the interleaved layout: a0, a0, a1, a1, ...
    cat = g.op(spread.input[0] if spread is not None else unsq.input[0], "Concat")
    if cat is None or len(cat.input) != 2 or cat.input[0] != cat.input[1] or node_attr(cat, "axis") not in (-1, 2, 3):
        return None
    a = cat.input[0]
    if spread is not None:
        pair = g.op(a, "Unsqueeze")
        if pair is None:
            return None
        a = pair.input[0]
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
    if t is None or list(node_attr(t, "perm", [])) != [0, 2, 1, 3]:
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


def _factor(g: Graph, out: str) -> tuple[Optional[onnx.NodeProto], float]:
    """The Mul of the rotation's output by a scalar constant (YaRN's and LongRoPE's
    attention factor on the rotated dimensions), and that constant; (None, 1.0) if none.
    It goes into the cos/sin caches: x cos f + rotate_half(x) sin f."""
    users = g.consumers.get(out, [])
    if len(users) == 1 and users[0].op_type == "Mul" and len(users[0].input) == 2:
        other = users[0].input[1] if users[0].input[0] == out else users[0].input[0]
        f = g.const(other)
        if f is not None and f.size == 1:
            return users[0], float(f.reshape(-1)[0])
    return None, 1.0


def _rotated(g: Graph, m: dict, out: str):
    """(the tensor the op rotates, the Concat that closes a partial rotation or None), or
    None when the input is a slice that is not a partial rotation's. A partial rotation
    is x = Slice(h, 0:rot) with out -> Concat(out, Slice(h, rot:))."""
    rot, x = 2 * m["half"], m["x"]
    x_slice = g.producer.get(x)
    span = slice_last(g, x_slice)
    users = g.consumers.get(out, [])
    if span == (0, rot) and len(users) == 1 and users[0].op_type == "Concat" and len(users[0].input) == 2:
        rest = slice_last(g, g.producer.get(users[0].input[1]))
        if users[0].input[0] == out and rest is not None and rest[0] == rot and g.producer[users[0].input[1]].input[0] == x_slice.input[0]:
            return x_slice.input[0], users[0]
        return x, None
    if span is not None:
        return None
    return x, None


def _contrib_rotary(g: Graph, spec, dtype: int, caches: dict, angles: tuple, whole: str, partial_cat, replaced, out: str, attrs: dict, f: float) -> bool:
    """com.microsoft RotaryEmbedding with cos/sin tables (times ``f``) over max_seq_len; False
    when it cannot take this one (no integer positions or constant frequencies, or heads
    unknown for a partial rotation)."""
    a, positions, inv_freq = angles
    if positions is None:
        return False
    if (a, f) not in caches:
        freq = g.const(inv_freq).astype(np.float32)
        table = np.arange(spec.max_seq_len, dtype=np.float32)[:, None] * freq[None, :]
        caches[a, f] = (
            g.add_const("zoo_cos_table", (np.cos(table) * f).astype(np_dtype(dtype))),
            g.add_const("zoo_sin_table", (np.sin(table) * f).astype(np_dtype(dtype))),
        )
    cos_c, sin_c = caches[a, f]
    heads = _heads_of(g, whole)
    if partial_cat is not None and heads is None:  # the contrib op wants num_heads with rotary_embedding_dim
        return False
    g.drop(replaced)
    extra = {"num_heads": heads} if partial_cat is not None else {}
    g.node("RotaryEmbedding", [whole, positions, cos_c, sin_c], [out], base="zoo_rotary", domain=MS, **attrs, **extra)
    return True


def lower_rotary(g: Graph, spec, target: str, dtype: int, plan: dict) -> dict:
    choice = plan["rotary"]
    interleaved = getattr(spec.positional, "layout", "halves") == "interleaved"  # zoo.spec.variants.ROPE_LAYOUTS
    count, unmatched = 0, 0
    caches: dict = {}
    for add in [n for n in g.g.node if n.op_type == "Add"]:
        m = (match_interleaved if interleaved else match_rotary)(g, add)
        if m is None:
            continue
        found = _angles(g, m["cos"], m["sin"]) if choice != DECOMPOSED else None
        scale, f = _factor(g, add.output[0])
        last = scale if scale is not None else add  # the rotated part's last node
        if interleaved and found is not None:  # the rotated width from the frequencies (rot / 2 of them)
            freq = g.const(found[2]) if found[2] is not None else None
            m["half"], found = (freq.size, found) if freq is not None else (None, None)
        rotated = _rotated(g, m, last.output[0]) if found is not None else None
        if rotated is None:
            unmatched += 1
            continue
        whole, partial_cat = rotated
        attrs = {"rotary_embedding_dim": 2 * m["half"]} if partial_cat is not None else {}
        attrs.update({"interleaved": 1} if interleaved else {})
        target_out = partial_cat.output[0] if partial_cat is not None else last.output[0]
        replaced = partial_cat if partial_cat is not None else last
        if choice == "onnx:RotaryEmbedding":
            a = found[0]
            if (a, f) not in caches:
                cos, sin = g.node("Cos", [a], base="zoo_cos_cache")[0], g.node("Sin", [a], base="zoo_sin_cache")[0]
                if f != 1.0:  # the attention factor
                    k = g.add_const("zoo_rotary_factor", np.array(f, dtype=np.float32))  # the angles are float32
                    cos, sin = g.node("Mul", [cos, k], base="zoo_cos_cache")[0], g.node("Mul", [sin, k], base="zoo_sin_cache")[0]
                caches[a, f] = (cos, sin)
            g.drop(replaced)
            g.node("RotaryEmbedding", [whole, *caches[a, f]], [target_out], base="zoo_rotary", **attrs)
        elif choice == f"{MS}:RotaryEmbedding":
            if not _contrib_rotary(g, spec, dtype, caches, found, whole, partial_cat, replaced, target_out, attrs, f):
                unmatched += 1
                continue
        else:
            raise ExportError(f"unknown rotary lowering {choice!r}")
        count += 1
    g.finish()
    if count:
        return {"why": [WHY[(target, "rotary")]], "decomposed": unmatched}
    if not unmatched:
        return {"why": []}
    scaling = getattr(spec.positional, "scaling", None)
    if choice == DECOMPOSED:
        why = f"kept decomposed for {target} by plan"
    elif scaling is not None and (not ROPE_SCALINGS[scaling.kind].fused or ROPE_SCALINGS[scaling.kind].long_frequencies is not None):
        why = ROPE_SCALINGS[scaling.kind].lowering  # the registry entry says why (LongRoPE: not for the tables' op)
    else:
        why = "the rotary subgraph did not match: kept decomposed"
    return {"why": [why], "decomposed": unmatched}
