"""A deep decoder exported by copying one exported layer (issue 17, point 5).

torch.onnx's export time (torch.export's trace, decomposition, translation, the
onnxscript optimizer) grows with the number of layers. When every layer of the
decoder has the same structure, the zoo exports a 3-layer copy of the model (layers 0,
1 and the last: whatever the modules hold beyond the spec, a buffer or an attribute,
comes along) instead and copies its middle layer for the other layers, with each layer's own
weights:

    head | layer 0 | layer 1 | layer 2 + tail        (the 3-layer export, the template)
    head | layer 0 | layer 1 ... layer L-2 | layer L-1 + tail

Nodes are assigned to layers by what they depend on: a node's level is the highest
template layer whose weights or past cache it reads (transitively); level -1 is the
head and whatever the layers share (mask, rotary tables, shapes, constants). The
template's layer weights are distinct random values, so each of its initialisers is
found by value among its layer's parameters (as is, transposed or reshaped by the
exporter's folding) and replaced by layer i's parameter, transformed alike.
Anything it cannot map (an initialiser of a layer that matches no parameter, a layer
reading another layer's values other than the residual stream, a constant only the
middle layer uses, control flow) returns None: the caller exports the whole model.
The build's parity check judges the result like any export.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Optional

import onnx
import torch

from zoo.spec.families import Role

TEMPLATE_LAYERS = 3
MIN_LAYERS = 6  # below this, exporting the whole model costs about as much
SUFFIX = "__zoo_l{}"  # of the values of layer i's copy


def _layer_signature(stack, i: int) -> tuple:
    layer = stack.layers[i]
    params = tuple((n, tuple(p.shape), p.dtype) for n, p in layer.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype, hashlib.sha256(_raw(b)).hexdigest()) for n, b in layer.named_buffers())
    return repr(layer), params, buffers, stack.windows[i], stack.positioned[i], stack.rope_of[i]


def replicable(model, spec) -> bool:
    """A decoder-only model of at least MIN_LAYERS layers, all of one structure."""
    stack = getattr(model, "decoder", None)
    if spec.family != "decoder-only" or stack is None or getattr(model, "encoder", None) is not None:
        return False
    n = len(stack.layers)
    if n < MIN_LAYERS or len(set(spec.decoder.layer_types or [None])) > 1:
        return False
    first = _layer_signature(stack, 0)
    return all(_layer_signature(stack, i) == first for i in range(1, n))


def template_spec(spec):
    """``spec`` with TEMPLATE_LAYERS decoder layers."""
    dec = spec.decoder
    update = {"layers": TEMPLATE_LAYERS}
    if dec.layer_types:
        update["layer_types"] = dec.layer_types[:TEMPLATE_LAYERS]
    return spec.model_copy(update={"decoder": dec.model_copy(update=update)})


def template_model(model, spec, seed: int = 0):
    """The TEMPLATE_LAYERS-layer model: a copy of ``model`` itself (so whatever its modules
    hold beyond the spec and the weights, a buffer or an attribute, is exported as it is)
    keeping layers 0, 1 and the last, with distinct random values in every layer
    parameter. Returns (template, its spec), or None when its layers differ from
    ``model``'s."""
    spec_t = template_spec(spec)
    layers = model.decoder.layers
    n = len(layers)
    model.decoder.layers = torch.nn.ModuleList([layers[0], layers[1], layers[n - 1]])
    try:
        small = copy.deepcopy(model)
    finally:
        model.decoder.layers = layers
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in small.decoder.layers.parameters():
            p.copy_(torch.randn(p.shape, generator=gen).to(p.dtype))
    if any(_layer_signature(small.decoder, j) != _layer_signature(model.decoder, 0) for j in range(TEMPLATE_LAYERS)):
        return None
    return small, spec_t


def _raw(t: torch.Tensor, transposed: bool = False) -> bytes:
    """A tensor's bytes, row-major (of its transpose: ``transposed``)."""
    t = t.detach().cpu()
    return (t.t() if transposed else t).contiguous().view(torch.uint8).numpy().tobytes()


def _init_bytes(init: onnx.TensorProto) -> bytes:
    return init.raw_data if init.HasField("raw_data") else onnx.numpy_helper.to_array(init).tobytes()


def _match_weights(proto: onnx.ModelProto, small) -> Optional[dict[str, tuple[int, str, bool]]]:
    """Initialiser name -> (template layer, parameter name in the layer, transposed);
    None unless every parameter of every template layer is found (one the exporter
    folded into something else would be shared by the copies)."""
    by_bytes: dict[tuple[int, bytes], tuple[int, str, bool]] = {}
    numels = set()
    for j, layer in enumerate(small.decoder.layers):
        for name, p in layer.named_parameters():
            numels.add(p.numel())
            by_bytes[(p.numel(), hashlib.sha256(_raw(p)).digest())] = (j, name, False)
            if p.dim() == 2:
                by_bytes[(p.numel(), hashlib.sha256(_raw(p.t())).digest())] = (j, name, True)
    found = {}
    for init in proto.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        if n in numels:
            hit = by_bytes.get((n, hashlib.sha256(_init_bytes(init)).digest()))
            if hit is not None:
                found[init.name] = hit
    wanted = {(j, name) for j, layer in enumerate(small.decoder.layers) for name, _ in layer.named_parameters()}
    return found if {(j, name) for j, name, _ in found.values()} == wanted else None


def _levels(proto: onnx.ModelProto, weights: dict[str, tuple[int, str, bool]]) -> Optional[list[int]]:
    """Per node, the highest template layer it depends on (-1: none); None for control flow.
    The shape of a graph input is level -1 (the exporter reads the batch size off any
    cache input)."""
    level: dict[str, int] = {name: j for name, (j, _, _) in weights.items()}
    inputs = {v.name for v in proto.graph.input}
    for name in inputs:
        if Role.of(name) is Role.PAST:
            level[name] = Role.layer_of(name)
    out = []
    for node in proto.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        if node.op_type == "Shape" and node.input[0] in inputs:
            lv = -1
        else:
            lv = max((level.get(v, -1) for v in node.input if v), default=-1)
        for v in node.output:
            level[v] = lv
        out.append(lv)
    return out


def _rename(node: onnx.NodeProto, names: dict[str, str], tag: str) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.name = node.name + tag
    new.input[:] = [names.get(v, v) for v in node.input]
    new.output[:] = [names.get(v, v) for v in node.output]
    return new


def _set_weights(g: onnx.GraphProto, weights: dict[str, tuple[int, str, bool]], layers) -> None:
    """Each template layer initialiser replaced, in place, by the real layers' parameters
    (layer 0 -> 0, 2 -> L-1, the middle one -> one per copy, named with SUFFIX); the
    protos are filled in the graph, so no weight is copied twice."""
    n = len(layers)
    params = [dict(layer.named_parameters()) for layer in layers]
    middle = []
    for k in reversed(range(len(g.initializer))):
        t = g.initializer[k]
        j, p, tr = weights.get(t.name, (-1, None, False))
        if j in (0, 2):
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(field)
            t.raw_data = _raw(params[0 if j == 0 else n - 1][p], tr)
        elif j == 1:
            middle.append((t.name, t.data_type, list(t.dims), p, tr))
            del g.initializer[k]
    for i in range(1, n - 1):
        for name, dtype, dims, p, tr in reversed(middle):
            t = g.initializer.add()
            t.name, t.data_type = name + SUFFIX.format(i), dtype
            t.dims.extend(dims)
            t.raw_data = _raw(params[i][p], tr)


def _interface(proto: onnx.ModelProto, levels: list[int], weights: dict) -> Optional[tuple[str, str]]:
    """The residual stream into the middle layer (from layer 0) and out of it (into layer
    2), after checking that the layers touch nothing else of each other's."""
    made: dict[str, int] = {name: j for name, (j, _, _) in weights.items()}
    for node, lv in zip(proto.graph.node, levels):
        made.update((v, lv) for v in node.output)
    reads: dict[int, set[str]] = {k: set() for k in range(-1, TEMPLATE_LAYERS)}
    for node, lv in zip(proto.graph.node, levels):
        reads[lv].update(v for v in node.input if v)
    for name in {v.name for v in proto.graph.input}:
        if Role.of(name) is Role.PAST:
            made[name] = Role.layer_of(name)
    x_in = {v for v in reads[1] if made.get(v, -1) == 0}
    y_out = {v for v in reads[2] if made.get(v, -1) == 1}
    if len(x_in) != 1 or len(y_out) != 1 or any(made.get(v, -1) == 0 for v in reads[2]):
        return None
    if any(0 <= made.get(v, -1) < lv and v in weights for lv in (1, 2) for v in reads[lv]):
        return None  # a layer reading an earlier layer's weights
    shared = {v for v in reads[1] if made.get(v, -1) == -1 and Role.of(v) is None}
    if not shared <= reads[0]:
        return None  # a value only the middle layer reads: perhaps derived from its weights
    outs = {v.name: made.get(v.name, -1) for v in proto.graph.output}
    if any((lv == 1) != (Role.of(name) is Role.PRESENT and Role.layer_of(name) == 1) for name, lv in outs.items()):
        return None
    return x_in.pop(), y_out.pop()


def _layer_names(i: int) -> dict[str, str]:
    """Template middle-layer cache names -> layer i's."""
    return {r.name_of(1, k): r.name_of(i, k) for r in (Role.PAST, Role.PRESENT) for k in ("key", "value")}


def replicate_layers(proto: onnx.ModelProto, model, small, graph) -> Optional[onnx.ModelProto]:
    """The template export ``proto`` of ``small`` (template_model) turned, in place, into
    the export of ``model``'s graph ``graph`` (GraphSpec); None when it cannot be."""
    weights = _match_weights(proto, small)
    levels = _levels(proto, weights) if weights else None
    ends = _interface(proto, levels, weights) if levels is not None else None
    if ends is None:
        return None
    x_in, y_out = ends
    n = len(model.decoder.layers)
    layers = model.decoder.layers
    g = proto.graph
    middle_made = {v for node, lv in zip(g.node, levels) if lv == 1 for v in node.output}
    nodes, stream = [], x_in
    nodes += [node for node, lv in zip(g.node, levels) if lv in (-1, 0)]
    for i in range(1, n - 1):
        tag = SUFFIX.format(i)
        names = {v: v + tag for v in middle_made}
        names.update({w: w + tag for w, (j, _, _) in weights.items() if j == 1})
        names.update(_layer_names(i))
        names[x_in] = stream
        nodes += [_rename(node, names, tag) for node, lv in zip(g.node, levels) if lv == 1]
        stream = names[y_out]
    last = {v: v.replace(".2.", f".{n - 1}.") for v in (r.name_of(2, k) for r in (Role.PAST, Role.PRESENT) for k in ("key", "value"))}
    last[y_out] = stream
    nodes += [_rename(node, last, "") for node, lv in zip(g.node, levels) if lv == 2]
    _set_io(g, graph, n)
    del g.node[:]
    g.node.extend(nodes)
    _set_weights(g, weights, layers)
    _copy_value_info(g, levels, middle_made, n)
    return proto


def _set_io(g: onnx.GraphProto, graph, n: int) -> None:
    """Inputs and outputs in the contract's order: layer i's cache tensors described
    like the template middle layer's (the last layer's like its last)."""

    def pick(values, names):
        by = {v.name: v for v in values}
        out = []
        for name in names:
            role = Role.of(name)
            src = name
            if role is not None:
                i = Role.layer_of(name)
                src = role.name_of(0 if i == 0 else 2 if i == n - 1 else 1, name.split(".")[2])
            v = onnx.ValueInfoProto()
            v.CopyFrom(by[src])
            v.name = name
            out.append(v)
        return out

    inputs, outputs = pick(g.input, graph.input_names), pick(g.output, graph.output_names)
    del g.input[:]
    g.input.extend(inputs)
    del g.output[:]
    g.output.extend(outputs)


def _dims(v: onnx.ValueInfoProto):
    return [d for d in v.type.tensor_type.shape.dim if d.dim_param]


def _copy_value_info(g: onnx.GraphProto, levels, middle_made: set[str], n: int) -> None:
    """The exporter's intermediate value types, once per copy of the middle layer. A
    symbolic size only the middle layer has (an expert's token count) gets a name per
    copy: ONNX Runtime takes equal names for equal sizes."""
    shared = {d.dim_param for v in [*g.input, *g.output, *g.value_info] if v.name not in middle_made for d in _dims(v)}
    out = []
    for v in g.value_info:
        if v.name not in middle_made:
            out.append(v)
            continue
        for i in range(1, n - 1):
            c = onnx.ValueInfoProto()
            c.CopyFrom(v)
            c.name = v.name + SUFFIX.format(i)
            for d in _dims(c):
                if d.dim_param not in shared:
                    d.dim_param += SUFFIX.format(i)
            out.append(c)
    del g.value_info[:]
    g.value_info.extend(out)


def export_replicated(model, spec, graph) -> Optional[onnx.ModelProto]:
    """Graph ``graph`` (GraphSpec) of ``model`` exported from the template, or None where
    the layers are not all alike or the template's layers cannot be told apart."""
    from compiler.export import export_graph
    from compiler.model import graph_modules
    from zoo.spec.families import graphs_for

    if not replicable(model, spec):
        return None
    made = template_model(model, spec)
    if made is None:
        return None
    small, spec_t = made
    graph_t = next(g for g in graphs_for(spec_t) if g.name == graph.name)
    proto = export_graph(graph_modules(small)[graph.name], spec_t, graph_t)
    return replicate_layers(proto, model, small, graph)
