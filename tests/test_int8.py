"""int8 that holds on trained weights (issue 13 point 5): passes.precision.int8.

- the block quantization and the outlier-channel search, on arrays;
- on a one-matmul graph with an outlier input channel (what trained models have):
  taking that channel out of the int8 product is what keeps the error small;
- trained-like weights (compiler.trained_like): the dynamic quantization of VERSION 1
  (one activation scale per tensor) fails the int8 parity rule's top-1 floor, and the
  default int8 build passes it on the same weights;
- slow: the trained-like 30-layer llama-135m builds in int8 with default options and
  agrees with fp32 on the model's own text (teacher-forced top-1).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import zoo
from zoo.app.build import BuildOptions, build_artifact
from compiler.builder import build
from passes.precision.dynamic import to_int8_dynamic
from passes.precision import int8 as int8_pass
from passes.precision.int4 import to_int4
from passes.precision.int8 import Int8Options, activation_scores, dequantize_rows, outlier_channels, quantize_rows, to_int8
from zoo.app.convert.measure import natural_text, top1_agreement
from compiler.trained_like import POST_NORM, TrainedLike, zoo_trained_like
from zoo.app.parity import parity
from runtime.session import Session
from zoo.spec.contract import parity_rule
from zoo.spec.families import graphs_for


def test_block_quantization_error_is_bounded_by_half_a_step_per_block():
    rows = np.random.default_rng(0).normal(size=(7, 100)).astype(np.float32)
    q, scales = quantize_rows(rows, 32)
    assert q.dtype == np.uint8 and q.shape == (7, 4, 32) and scales.shape == (7, 4)
    back = dequantize_rows(q, scales, 100)
    step = np.repeat(scales, 32, axis=1)[:, :100]
    assert np.all(np.abs(back - rows) <= step / 2 + 1e-7)


def test_outlier_channels_are_found_in_activations_and_in_weight_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 96)).astype(np.float32)
    x[:, [5, 40]] *= 30.0  # outlier features: large on every token
    x[3] *= 1000.0  # one large token: every channel at once, not an outlier channel
    rows = rng.normal(size=(50, 96)).astype(np.float32)
    rows[7:9, 70] = 3000.0  # a tied table's massive token rows: column 70 dwarfs its blocks
    assert outlier_channels(rows, activation_scores(x), 16.0) == [5, 40, 70]
    assert outlier_channels(rows, activation_scores(x), None) == []
    assert activation_scores(x)[np.r_[0:5, 6:40, 41:96]].max() < 5


def _one_matmul(w: np.ndarray) -> onnx.ModelProto:
    k, n = w.shape
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_an_outlier_channel_taken_out_of_the_int8_product_keeps_the_error_small(accuracy_level):
    """A channel 50x the others on every token, read by a weight row 20x smaller than
    the others (a projection that ignores the massive channel, as trained q/k do)."""
    rng = np.random.default_rng(2)
    w = (rng.normal(size=(128, 64)) / np.sqrt(128)).astype(np.float32)
    w[17] /= 20.0
    x = rng.normal(size=(32, 128)).astype(np.float32)
    x[:, 17] *= 50.0
    ref = x @ w
    errors = {}
    for ratio in (None, 16.0):
        proto, info = to_int8(_one_matmul(w.copy()), vocab_size=0, activations={"x": activation_scores(x)},
                              options=Int8Options(accuracy_level=accuracy_level, outlier_ratio=ratio))
        assert info["matmuls"] == 1 and info["kept_channels_max"] == (1 if ratio else 0)
        y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        errors[ratio] = float(np.abs(y - ref).max() / np.abs(ref).max())
    assert errors[16.0] < errors[None] / 3 and errors[16.0] < 0.02, errors


def _one_gemm(w: np.ndarray, bias: np.ndarray, trans_b: int, tanh_out: bool = False) -> onnx.ModelProto:
    """y = x @ W + C as torch exports a 2-D linear (a mixture's expert, BERT's pooler):
    Gemm with transB 1 on W stored (N, K), or transB 0 on W stored (K, N)."""
    k, n = (w.shape[1], w.shape[0]) if trans_b else w.shape
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["h" if tanh_out else "y"], name="gemm", transB=trans_b)]
    if tanh_out:
        nodes.append(helper.make_node("Tanh", ["h"], ["y"], name="tanh"))
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "c")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_a_gemm_is_quantized_like_a_matmul_and_keeps_its_bias(monkeypatch, trans_b, bits):
    """A 2-D linear exported as Gemm (Mixtral's experts) goes to MatMulNBits, its
    outlier channel kept in float32, its bias added after; dropping the bias (a
    planted bug) fails the same bound."""
    rng = np.random.default_rng(5)
    rows = (rng.normal(size=(48, 128)) / np.sqrt(128)).astype(np.float32)  # (N, K)
    bias = (3.0 * rng.normal(size=48)).astype(np.float32)
    x = rng.normal(size=(16, 128)).astype(np.float32)
    x[:, 9] *= 50.0
    ref = x @ rows.T + bias
    convert = to_int8 if bits == 8 else to_int4

    def error() -> float:
        gemm = _one_gemm(rows.copy() if trans_b else np.ascontiguousarray(rows.T), bias, trans_b)
        proto, info = convert(gemm, vocab_size=0, activations={"x": activation_scores(x)})
        assert info["matmuls"] == 1 and info["kept_channels_max"] >= 1
        assert [n.op_type for n in proto.graph.node].count("MatMulNBits") == 1 and "Gemm" not in {n.op_type for n in proto.graph.node}
        y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        return float(np.abs(y - ref).max() / np.abs(ref).max())

    bound = 0.005 if bits == 8 else 0.04  # measured: 0.0011 and 0.014 of the largest |y|
    good = error()
    assert good < bound, good
    monkeypatch.setattr(int8_pass, "gemm_bias", lambda node: None)
    assert error() > 3 * bound


def test_a_pooler_before_a_tanh_output_stays_float32():
    """BERT's pooler (Gemm -> Tanh -> graph output) is left as it is (pooler_projections)."""
    rng = np.random.default_rng(6)
    proto = _one_gemm(rng.normal(size=(32, 32)).astype(np.float32), np.zeros(32, np.float32), 1, tanh_out=True)
    for convert in (to_int8, to_int4):
        out, info = convert(copy.deepcopy(proto), vocab_size=0)
        assert info["matmuls"] == 0 and [n.op_type for n in out.graph.node] == ["Gemm", "Tanh"]


# --------------------------------------------------------------------------- trained-like weights


@pytest.fixture(scope="module")
def trained_llama(tmp_path_factory):
    """llama-tiny with trained-like weights, its fp32 artifact and torch module."""
    spec = zoo.load("llama-tiny")
    model = build(spec, seed=0)
    zoo_trained_like(model, spec)
    folder, _, _ = build_artifact(spec, tmp_path_factory.mktemp("fp32") / "a", weights=model.state_dict())
    return spec, model, folder


def test_dynamic_int8_fails_the_top1_floor_on_trained_like_weights(tmp_path):
    """VERSION 1's int8 (quantize_dynamic: uint8 activations, one scale per tensor) on
    trained-like weights with outlier features of 20x into every matmul (POST_NORM, the
    setting of post-norm stacks; the calibrated 4x costs a 2-layer model too little):
    the floor stops it; the default int8 build of the same weights passes the same rule."""
    spec = zoo.load("llama-tiny")
    model = build(spec, seed=0)
    zoo_trained_like(model, spec, config=TrainedLike(**POST_NORM))
    fp32, _, _ = build_artifact(spec, tmp_path / "fp32", weights=model.state_dict())
    rule = parity_rule("float32", "int8")
    paths = {}
    for g in graphs_for(spec):
        proto, _ = to_int8_dynamic(onnx.load(str(fp32 / g.file)), tmp_path / g.file, vocab_size=spec.vocab_size, per_channel=False)
        onnx.save_model(proto, tmp_path / g.file)
        paths[g.name] = tmp_path / g.file
    report = parity(model, spec, paths, precision="int8")
    assert not report["passed"] and report["top1"] < rule.top1
    assert any("top-1" in line for line in report["failures"]), report["failures"]

    _, manifest, _ = build_artifact(spec, tmp_path / "int8", weights=model.state_dict(), options=BuildOptions(precision="int8"))
    assert manifest["parity"]["passed"] and manifest["parity"]["top1"] >= rule.top1
    assert manifest["parity"]["top1"] > report["top1"] + 0.2


@pytest.mark.slow
def test_trained_like_llama_135m_int8_builds_and_agrees_with_fp32_on_its_own_text(tmp_path):
    """The realistic size (30 layers, d_model 576, GQA 9/3, tied 49152 vocabulary):
    the default int8 build passes parity, decodes faster than fp32, and teacher-forced
    on 3 x 128 tokens of the fp32 model's own sampled continuations its top-1 agrees
    with fp32 at >= 95% (issue 13). The continuations draw no massive-activation token
    but a first one as BOS, as real text has them (an eighth of the vocabulary carries
    them here: text that drew them freely would be 1 token in 8 a sink)."""
    spec = zoo.load("llama-135m")
    model = build(spec, seed=0)
    massive = zoo_trained_like(model, spec)["outlier_token_ids"]
    folder, manifest, _ = build_artifact(spec, tmp_path / "int8", weights=model.state_dict(), options=BuildOptions(precision="int8"))
    assert manifest["parity"]["passed"], manifest["parity"]["failures"]
    record = manifest["build"]["precision"]
    assert record["decode_speed_vs_fp32"] > 1.2 and record["size_vs_fp32"] < 0.45, record

    def torch_logits(ids):
        t = torch.from_numpy(ids)
        with torch.no_grad():
            return model(t, torch.ones_like(t)).numpy()

    text = natural_text(torch_logits, spec.vocab_size, prompts=3, length=128, seed=0, exclude=massive, bos=massive[0])
    session = Session(folder, device="cpu")
    got = session.forward({"model": {"input_ids": text, "attention_mask": np.ones_like(text)}})["logits"]
    assert top1_agreement(torch_logits(text), got, start=8) >= 0.95


def test_calibration_keeps_each_graphs_activations_apart(tmp_path):
    """An encoder and a decoder graph name their MatMul inputs alike (the same module
    paths): each graph's float32 channels must come from its own activations, not from
    whichever graph ran last (BART's encoder once read its decoder's)."""
    from zoo.app.convert.calibrate import calibrate

    spec = zoo.load("t5-tiny")
    model = build(spec, seed=0)
    zoo_trained_like(model, spec)
    folder, _, _ = build_artifact(spec, tmp_path / "fp32", weights=model.state_dict())
    protos = {g.name: onnx.load(str(folder / g.file)) for g in graphs_for(spec)}
    acts = calibrate(spec, protos, scratch=tmp_path)
    shared = set(acts["encoder"]) & set(acts["decoder"])
    assert shared, "the encoder and decoder graphs share no MatMul input name: the case this test guards is gone"
    for t in protos["decoder"].graph.initializer:  # another decoder: its activations change
        if t.data_type == TensorProto.FLOAT and len(t.dims) == 2:
            t.CopyFrom(numpy_helper.from_array(3.0 * numpy_helper.to_array(t), t.name))
    again = calibrate(spec, protos, scratch=tmp_path)
    assert all(np.array_equal(acts["encoder"][t], again["encoder"][t]) for t in shared)
    assert not all(np.array_equal(acts["decoder"][t], again["decoder"][t]) for t in shared)
