"""The hidden state after every layer, ONNX against torch, judged by the same parity
rule as the outputs: ``zoo compare --parity`` reports each layer, and a failed build
names the first layer beyond the rule. Reaches torch and the compiler lazily (inside
functions), like zoo.app.parity.

An ONNX graph does not return its layers' outputs; the exporter records each node's
module scope (``pkg.torch.onnx.name_scopes``), so the values a layer's nodes hand to
nodes outside it are found and added as graph outputs ("taps"). On the torch side a
forward hook on each layer keeps its output.
"""

from __future__ import annotations

import ast
import re

import numpy as np

from zoo.app.tolerance import judge

_LAYER_SCOPE = re.compile(r"(?:^|\.)((?:encoder|decoder)\.layers\.(\d+))$")


def layer_taps(proto) -> dict[str, list[str]]:
    """Per layer ("decoder.layers.3") the values its nodes produce that nodes outside
    it consume: the layer's output is among them."""
    scope_of: dict[int, str] = {}
    for i, node in enumerate(proto.graph.node):
        for prop in node.metadata_props:
            if prop.key != "pkg.torch.onnx.name_scopes":
                continue
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                continue
            for s in scopes:
                m = _LAYER_SCOPE.search(s)
                if m:
                    scope_of[i] = m.group(1)
    produced = {out: scope_of[i] for i, node in enumerate(proto.graph.node) if i in scope_of for out in node.output}
    graph_outputs = {o.name for o in proto.graph.output}
    leaving: dict[str, list[str]] = {}
    for i, node in enumerate(proto.graph.node):
        for name in node.input:
            layer = produced.get(name)
            if layer is not None and scope_of.get(i) != layer and name not in graph_outputs:
                if name not in leaving.setdefault(layer, []):
                    leaving[layer].append(name)
    return leaving


def with_outputs(proto, names: list[str]):
    """A copy of ``proto`` that also returns the values ``names``."""
    import copy

    from onnx import TensorProto, helper

    model = copy.deepcopy(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
    return model


def tapped_sessions(protos: dict, providers: list[str]):
    """(sessions returning every layer's candidate outputs too, taps per graph)."""
    import onnxruntime as ort

    from runtime.session import session_options

    taps = {name: layer_taps(p) for name, p in protos.items()}
    sessions = {
        name: ort.InferenceSession(
            with_outputs(p, [v for vals in taps[name].values() for v in vals]).SerializeToString(),
            sess_options=session_options(),
            providers=providers,
        )
        for name, p in protos.items()
    }
    return sessions, taps


def torch_layers(model, spec, inputs: dict) -> tuple[dict, dict]:
    """The torch outputs on ``inputs`` and each layer's output ("decoder.layers.3" ->
    numpy (B, T, d)), kept by forward hooks."""
    from zoo.app.parity import torch_outputs
    from compiler.builder import DTYPES

    captured: dict[str, np.ndarray] = {}
    hooks = []
    for part in ("encoder", "decoder"):
        stack = getattr(model, part, None)
        for i, layer in enumerate(getattr(stack, "layers", [])):
            key = f"{part}.layers.{i}"
            hooks.append(layer.register_forward_hook(lambda mod, a, out, key=key: captured.__setitem__(key, out[0].detach().float().numpy())))
    try:
        expected = torch_outputs(model, spec.family, inputs, DTYPES[spec.dtype])
    finally:
        for h in hooks:
            h.remove()
    return expected, captured


def layer_figures(got: dict, taps: dict, captured: dict, masks: dict, rule, order: list[str]) -> list[dict]:
    """Per layer, in ``order``, the rule's figures of the tapped value closest to
    torch's layer output (a layer hands on its output and, at times, a few other
    values of the same shape). ``masks``: by stack name (zoo.spec.families.Family.masks)."""
    out = []
    for layer in order:
        ref = captured.get(layer)
        candidates = [c for vals in taps.values() for c in vals.get(layer, [])]
        shaped = [got[c] for c in candidates if c in got and got[c].shape == getattr(ref, "shape", None)]
        if ref is None or not shaped:
            continue
        mask = masks[layer.split(".", 1)[0]]
        figures = min((judge(v, ref, rule, mask) for v in shaped), key=lambda f: f["worst"])
        out.append({"layer": layer, **{k: figures[k] for k in ("max_abs", "max_rel", "scale", "worst", "within")}})
    return out


def layer_order(model) -> list[str]:
    return [f"{part}.layers.{i}" for part in ("encoder", "decoder") for i in range(len(getattr(getattr(model, part, None), "layers", [])))]


def layer_report(model, spec, protos: dict, providers: list[str], inputs: dict, rule) -> list[dict]:
    """Every layer's figures under ``rule`` on ``inputs`` (one uncached pass)."""
    from runtime.graphs import run_graphs
    from zoo.spec.families import cache_layout, family, graphs_for

    sessions, taps = tapped_sessions(protos, providers)
    _, captured = torch_layers(model, spec, inputs)
    batch = next(iter(next(iter(inputs.values())).values())).shape[0]
    got = run_graphs(sessions, graphs_for(spec), inputs, cache_layout(spec), batch)
    return layer_figures(got, taps, captured, family(spec).masks(inputs), rule, layer_order(model))


def first_layer_beyond(model, spec, protos: dict, providers: list[str], inputs: dict, rule) -> str | None:
    """The first layer whose hidden state is beyond ``rule`` on ``inputs``, or None."""
    return next((e["layer"] for e in layer_report(model, spec, protos, providers, inputs, rule) if not e["within"]), None)
