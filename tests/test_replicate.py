"""A deep decoder exported from a 3-layer template whose middle layer is copied
(compiler.replicate): the same graph as the full export, each layer with its own
weights, parity against torch; layers that differ fall back to the full export; and
passes.files.write_model writes what onnx.save_model would."""

from __future__ import annotations

import collections
import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import zoo
from compiler.builder import build
from compiler.export import example_inputs, export_graph
from compiler.model import graph_modules
from compiler.replicate import MIN_LAYERS, export_replicated, replicable
from compiler.trained_like import zoo_trained_like
from passes.files import write_model
from zoo.app.parity import parity
from zoo.spec.families import graphs_for


def deep(name: str, layers: int = MIN_LAYERS):
    return zoo.load(name, overrides=[f"decoder.layers={layers}"])


def run(proto: onnx.ModelProto, spec, graph) -> list[np.ndarray]:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {t.name: x.numpy() for t, x in zip(graph.inputs, example_inputs(spec, graph, seed=1))}
    return sess.run(None, feeds)


@pytest.fixture(scope="module")
def llama():
    """A 6-layer tiny Llama with trained-like weights (every layer its own norms and
    outlier channels), its replicated and its full export."""
    spec = deep("llama-tiny")
    model = build(spec, seed=0)
    zoo_trained_like(model, spec, seed=3)  # in place
    graph = graphs_for(spec)[0]
    fast = export_replicated(model, spec, graph)
    full = export_graph(graph_modules(model)["model"], spec, graph)
    return spec, model, graph, fast, full


def test_replicated_export_is_the_full_export(llama):
    spec, model, graph, fast, full = llama
    assert fast is not None, "llama-tiny at 6 layers must replicate"
    assert [v.name for v in fast.graph.input] == graph.input_names and [v.name for v in fast.graph.output] == graph.output_names
    for v in list(fast.graph.input) + list(fast.graph.output):  # the contract's axis names
        assert [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim][0] == "batch"
    ops = lambda p: collections.Counter(n.op_type for n in p.graph.node)  # noqa: E731
    assert ops(fast) == ops(full)
    onnx.checker.check_model(fast, full_check=True)
    for a, b in zip(run(fast, spec, graph), run(full, spec, graph)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_replicated_export_passes_parity_and_carries_each_layers_weights(llama, tmp_path):
    spec, model, graph, fast, _ = llama
    path = tmp_path / "model.onnx"
    write_model(fast, path)
    assert parity(model, spec, {"model": path})["passed"]
    swapped = copy.deepcopy(model)  # a planted bug: layers 2 and 3 trade weights
    swapped.decoder.layers[2].load_state_dict(model.decoder.layers[3].state_dict())
    swapped.decoder.layers[3].load_state_dict(model.decoder.layers[2].state_dict())
    assert not parity(swapped, spec, {"model": path})["passed"]


@pytest.mark.parametrize("name", ["gpt2-tiny", pytest.param("mixtral-tiny", marks=pytest.mark.slow)])
def test_replicated_build_parity(name, tmp_path):
    """Learned positions, biases, tied output (GPT-2) and routed experts (Mixtral: each
    copy's expert token counts are sizes of their own)."""
    from zoo.app.build import build_artifact

    spec = deep(name)
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    assert manifest["parity"]["passed"] and manifest["parity"]["cache"]["within"]
    assert export_replicated(build(spec, seed=0), spec, graphs_for(spec)[0]) is not None or pytest.fail("did not replicate")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3-tiny", "phi3-tiny", "pythia-tiny", "alibi-tiny", "cosine-tiny"])
def test_replicated_build_parity_more_families(name, tmp_path):
    from zoo.app.build import build_artifact

    spec = deep(name)
    model = build(spec, seed=0)
    assert export_replicated(model, spec, graphs_for(spec)[0]) is not None
    zoo_trained_like(model, spec, seed=1)
    assert build_artifact(spec, tmp_path / "a", weights=model.state_dict())[1]["parity"]["passed"]


def test_the_template_is_a_copy_of_the_model_not_of_its_spec():
    """What the modules hold beyond the spec and the weights (a RoPE table changed in
    place, every norm's eps: the planted bugs of tests/planted_bugs.py) is exported as
    it is, replicated or not."""
    spec = deep("llama-tiny")
    model = build(spec, seed=0)
    model.decoder.rotary.inv_freq = model.decoder.rotary.inv_freq / 3
    for m in model.modules():
        if hasattr(m, "eps"):
            m.eps = 0.5
    graph = graphs_for(spec)[0]
    fast = run(export_replicated(model, spec, graph), spec, graph)[0]

    def torch_logits(m) -> np.ndarray:
        with torch.no_grad():
            out = graph_modules(m)["model"](*example_inputs(spec, graph, seed=1))
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    mutated, plain = torch_logits(model), torch_logits(build(spec, seed=0))
    np.testing.assert_allclose(fast, mutated, rtol=1e-4, atol=1e-4)
    assert np.abs(fast - plain).max() > 100 * np.abs(fast - mutated).max() + 1e-3


def test_layers_that_differ_are_exported_whole():
    gemma = deep("gemma3-tiny")  # local and global layers
    assert not replicable(build(gemma, seed=0), gemma)
    shallow = deep("llama-tiny", MIN_LAYERS - 1)
    assert not replicable(build(shallow, seed=0), shallow)
    spec = deep("llama-tiny")
    model = build(spec, seed=0)
    assert replicable(model, spec)
    model.decoder.windows[4] = 3  # one sliding-window layer
    assert not replicable(model, spec)


def test_write_model_writes_what_save_model_would(tmp_path):
    inits = [
        numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w"),
        numpy_helper.from_array(np.zeros((0,), np.float32), "empty"),
        helper.make_tensor("listed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]),  # float_data, not raw
        numpy_helper.from_array(np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32), "big"),
    ]
    node = helper.make_node("Add", ["w", "x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], producer_name="zoo")
    helper.set_model_props(proto, {"zoo.graph": "model"})
    write_model(proto, tmp_path / "m.onnx")
    assert onnx.load(tmp_path / "m.onnx") == proto
    assert proto.graph.initializer[0].raw_data  # the proto keeps its weights
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": np.ones((3, 4), np.float32)})[0]
    np.testing.assert_array_equal(out, np.arange(12).reshape(3, 4) + 1)
