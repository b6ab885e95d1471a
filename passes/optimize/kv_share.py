"""A KV cache that is not copied every step (``zoo build --kv-cache shared``).

The optimized decoder graph (passes.optimize) appends the new keys/values to the cache
with ``present = Concat(past, new, axis=2)`` and runs the fused ``Attention`` over the
present: every step copies the whole cache. This pass rewrites each layer to
``com.microsoft.GroupQueryAttention`` with onnxruntime-genai's past_present_share_buffer
semantics:

* ``past.{i}.key/value`` become buffers of ``max_seq`` slots (batch, kv_heads, max_seq,
  head_dim) that the runtime allocates once per generation and binds, with IO binding,
  as both the past input and the ``present.{i}.*`` output: the kernel writes the new rows
  in place at slots ``total_seq - seq .. total_seq - 1`` and attends over the first
  ``total_seq`` slots only (benchmarks/cache_scaling.py measured the layouts);
* ``seqlens_k`` (= total_seq - 1 for every row) and ``total_sequence_length`` are
  computed inside the graph from the attention mask's width, so the graph's inputs keep
  their names: the runtime feeds ids, the mask and the buffers;
* the padding, causal and sliding-window masks and any ALiBi / relative bias reach the
  kernel as its ``attention_bias`` input: the additive mask the optimize pass built
  (left padding included: every row of a batch has the same total length, the padding
  slots are masked, which is how the zoo pads);
* unbound (plain ``run`` with a past of length 0 or a concat-style past), the graph still
  returns ``present = past + new`` of total_seq slots: parity's full forward runs it so.

Only a graph whose every self-attention the optimize pass lowered to ``Attention`` over
``Concat(past, new)`` matches; anything else is refused with the reason (ExportError):
the plain or ``--optimize`` build serves those models.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

from passes.optimize.graph import Graph, node_attr
from passes.optimize.lowering import MS
from zoo.spec.errors import ExportError
from zoo.spec.families import SHARED_AXIS, Role, graphs_for

# Part of an artifact's identity: bump when the rewrite changes.
VERSION = 1
WHY = ("--kv-cache shared: GroupQueryAttention writes the new keys/values in place into the buffer bound as past and "
       "present (its CPU kernel attends over the first total_seq slots only); measured in benchmarks/kv_cache.py")
# seqlens_k = total_seq - WRITE_OFFSET: the slot after the last new row (the kernel's
# meaning); an initializer so that a test can plant an off-by-one write position
WRITE_OFFSET = "zoo_kv_write_offset"


def _lengths(g: Graph, mask_input: str) -> tuple[str, str]:
    """(seqlens_k (B,) int32, total_sequence_length () int32) from the mask (B, total_seq)."""
    shape = g.node("Shape", [mask_input], base="zoo_kv_mask_shape")[0]
    total64 = g.node("Gather", [shape, g.add_const("zoo_kv_one_i", np.array(1, np.int64))], base="zoo_kv_total64", axis=0)[0]
    batch = g.node("Shape", [mask_input], base="zoo_kv_batch", start=0, end=1)[0]
    total = g.node("Cast", [total64], base="zoo_kv_total", to=TensorProto.INT32)[0]
    last = g.node("Sub", [total, g.add_const(WRITE_OFFSET, np.array(1, np.int32))], base="zoo_kv_last")[0]
    seqlens = g.node("Expand", [last, batch], base="zoo_kv_seqlens")[0]
    return seqlens, total


def _concat_new(g: Graph, present: str, past: str) -> str:
    """The new rows of ``present = Concat(past, new, axis=2)``; ExportError otherwise."""
    cat = g.op(present, "Concat")
    if cat is None or list(cat.input)[:1] != [past] or len(cat.input) != 2 or node_attr(cat, "axis") not in (2, -2):
        raise ExportError(f"{present} is not Concat({past}, new keys/values, axis=2): no shared cache for this graph")
    return cat.input[1]


def _bsd(g: Graph, x: str, heads: int, hd: int, base: str) -> str:
    """(B, heads, T, hd) -> (B, T, heads*hd), the layout GroupQueryAttention takes: the
    projection before the graph split its heads, where the graph has one (through a
    RotaryEmbedding: rotated in the 3-D layout instead), else Transpose + Reshape."""
    node = g.producer.get(x)
    if node is not None and node.op_type == "Mul" and node.output[0].startswith("zoo_q_rows"):
        # the optimize pass's factor for fully masked query rows (left padding): the kernel masks
        # causally, so such a row still has its own key; its output feeds no real position
        return _bsd(g, node.input[0], heads, hd, base)
    source = _split_heads_source(g, x)
    if source is not None:
        return source
    if node is not None and node.op_type == "RotaryEmbedding" and node.domain in ("", "ai.onnx"):
        source = _split_heads_source(g, node.input[0])
        if source is not None:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            return g.node("RotaryEmbedding", [source, *node.input[1:]], base=f"{base}_rot3", **attrs, num_heads=heads)[0]
    t = g.node("Transpose", [x], base=f"{base}_bsnh", perm=[0, 2, 1, 3])[0]
    flat = g.add_const(f"zoo_kv_bsd_{heads * hd}", np.array([0, 0, heads * hd], np.int64))
    return g.node("Reshape", [t, flat], base=f"{base}_bsd")[0]


def _split_heads_source(g: Graph, x: str):
    """x = Transpose(Reshape(p), perm 0,2,1,3), the exporter's head split of a projection p
    (B, T, heads*hd) -> p; else None."""
    t = g.op(x, "Transpose")
    if t is None or list(node_attr(t, "perm", [])) != [0, 2, 1, 3]:
        return None
    r = g.op(t.input[0], "Reshape")
    return r.input[0] if r is not None else None


def _merged_heads(g: Graph, att: onnx.NodeProto) -> str:
    """The name for GroupQueryAttention's (B, T, heads*hd) output: the Reshape(Transpose(y))
    that merges the Attention's heads (both dropped) where the graph has it, else ''."""
    users = [n for n in g.consumers.get(att.output[0], []) if id(n) not in g.removed]
    if len(users) != 1 or users[0].op_type != "Transpose" or list(node_attr(users[0], "perm", [])) != [0, 2, 1, 3]:
        return ""
    after = [n for n in g.consumers.get(users[0].output[0], []) if id(n) not in g.removed]
    if att.output[0] in g.outputs or users[0].output[0] in g.outputs or len(after) != 1 or after[0].op_type != "Reshape":
        return ""
    g.drop(users[0])
    g.drop(after[0])
    return after[0].output[0]


def _layer_attention(g: Graph, i: int) -> onnx.NodeProto:
    """The Attention node that reads layer i's present key/value."""
    key = Role.PRESENT.name_of(i, "key")
    users = [n for n in g.consumers.get(key, []) if n.op_type == "Attention" and id(n) not in g.removed]
    if len(users) != 1:
        raise ExportError(f"layer {i}: {len(users)} fused Attention node(s) read {key} (1 needed): build with --optimize "
                          "for a model whose attention the optimize pass fuses, or leave --kv-cache at concat")
    return users[0]


def _rewrite_layer(g: Graph, i: int, att: onnx.NodeProto, lengths: tuple[str, str], heads: int, kv_heads: int, hd: int) -> None:
    """Layer i's Attention over Concat(past, new) -> GroupQueryAttention on the shared buffer."""
    names = {kind: (Role.PAST.name_of(i, kind), Role.PRESENT.name_of(i, kind)) for kind in ("key", "value")}
    q, k_all, v_all, mask = (list(att.input) + [""] * 4)[:4]
    if (k_all, v_all) != (names["key"][1], names["value"][1]) or not mask:
        raise ExportError(f"layer {i}: the Attention node does not read (present.{i}.key, present.{i}.value, mask)")
    new = {kind: _concat_new(g, present, past) for kind, (past, present) in names.items()}
    for kind in names:
        g.drop(g.producer[names[kind][1]])
    g.drop(att)
    q3 = _bsd(g, q, heads, hd, f"zoo_kv_q{i}")
    k3, v3 = (_bsd(g, new[kind], kv_heads, hd, f"zoo_kv_{kind[0]}{i}") for kind in ("key", "value"))
    seqlens, total = lengths
    inputs = [q3, k3, v3, names["key"][0], names["value"][0], seqlens, total, "", "", "", mask]
    merged = _merged_heads(g, att)
    y3 = g.node("GroupQueryAttention", inputs, [merged or g.name(f"zoo_kv_y{i}"), names["key"][1], names["value"][1]],
                domain=MS, num_heads=heads, kv_num_heads=kv_heads, scale=float(node_attr(att, "scale", hd ** -0.5)))[0]
    if merged:
        return
    bsnh = g.add_const(f"zoo_kv_bsnh_{heads}", np.array([0, 0, heads, hd], np.int64))
    y4 = g.node("Reshape", [y3, bsnh], base=f"zoo_kv_y{i}_bsnh")[0]
    g.node("Transpose", [y4], [att.output[0]], base=f"zoo_kv_y{i}_bnsh", perm=[0, 2, 1, 3])


def _shared_axes(model: onnx.ModelProto) -> None:
    """past.* and present.* declare the buffer's axis (batch, kv_heads, max_seq, head_dim)."""
    for v in list(model.graph.input) + list(model.graph.output):
        if Role.of(v.name) in (Role.PAST, Role.PRESENT):
            dims = v.type.tensor_type.shape.dim
            dims[2].Clear()
            dims[2].dim_param = SHARED_AXIS


def _query_count_from_ids(g: Graph, ids_input: str) -> None:
    """The optimize pass reads the query count (for the mask's rows) off layer 0's 4-D query,
    which the rewrite no longer needs: read it off the ids (B, T) instead."""
    for node in [n for n in g.g.node if n.op_type == "Shape" and n.output[0].startswith("zoo_tq")]:
        g.drop(node)
        g.node("Shape", [ids_input], [node.output[0]], base="zoo_kv_tq", start=1, end=2)


def share_cache(model: onnx.ModelProto, spec, mask_input: str, ids_input: str = "input_ids") -> dict:
    """Rewrite the optimized decoder graph ``model`` in place; returns the manifest record."""
    stack = spec.stack("decoder")
    att = stack.attention
    heads, kv_heads, hd = att.heads, att.n_kv_heads, spec.head_dim("decoder")
    g = Graph(model)
    lengths = _lengths(g, mask_input)
    for i in range(stack.layers):
        _rewrite_layer(g, i, _layer_attention(g, i), lengths, heads, kv_heads, hd)
    _query_count_from_ids(g, ids_input)
    g.finish()
    _shared_axes(model)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    return {"op": f"{MS}:GroupQueryAttention", "layers": stack.layers, "axis": SHARED_AXIS, "version": VERSION}


def share_graphs(spec, folder, graphs: dict, lowering: Optional[dict] = None) -> dict:
    """``share_cache`` on the decoder-only step graph in ``folder`` (saved in place;
    ``graphs``, the export record, and ``lowering``, the optimize record, updated).
    Returns the manifest's kv-cache record."""
    from pathlib import Path

    from passes.files import save_graph, signature
    from passes.optimize import op_counts
    from zoo.spec.families import family

    fam = family(spec)
    if not fam.generates or fam.crossed:
        raise ExportError(f"--kv-cache shared is for decoder-only models; {spec.name} is {spec.family}")
    gspec = next(g for g in graphs_for(spec) if g.name == fam.step_graph)
    path = Path(folder) / gspec.file
    model = onnx.load(str(path))
    record = share_cache(model, spec, fam.mask, fam.ids)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{spec.name}: the shared-cache graph is not valid ONNX: {str(e).splitlines()[0]}") from e
    files = save_graph(model, path)
    graphs[gspec.name].update(files=files, inputs=signature(model.graph.input), outputs=signature(model.graph.output),
                              nodes=len(model.graph.node), ops=sorted(op_counts(model)))
    if lowering is not None and "attention" in lowering:
        lowering["attention"].update(lowered_as=record["op"], nodes=record["layers"], why=WHY)
    return record
