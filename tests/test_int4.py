"""int4 (issue 17 point 1): passes.precision.int4 and ``zoo build --precision int4``.

- the 4-bit blocks on arrays, against a numpy dequantization written here (not the
  module's): nibble order, scales, zero points, symmetric and asymmetric; and ONNX
  Runtime's MatMulNBits reads the packed bytes as that reference says;
- tiny catalog models of each family (decoder-only, encoder-only, encoder-decoder) and
  trained-like llama-tiny build with ``--precision int4`` and pass the int4 parity rule;
- ``--target cuda``: MatMulNBits graphs too, checked by parity on the CPU;
- the CLI: a build prints the int4 record; a float16 spec is refused in one line;
- planted bugs (nibbles swapped, block scales shifted by one block) fail parity.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import passes.precision.int4 as int4
import zoo
from compiler.builder import build
from compiler.trained_like import zoo_trained_like
from passes.precision.int4 import Int4Options, dequantize4, pack4, quantize4, to_int4, unpack4
from tests.test_bad_inputs import nothing_written, refused, zoo_cli
from zoo.app.build import BuildOptions, build_artifact
from zoo.app.cli import main
from zoo.spec.contract import parity_rule
from zoo.spec.errors import ParityError

RULE = parity_rule("float32", "int4")


def reference_dequantize(packed, scales, zero_points, k: int, block: int) -> np.ndarray:
    """What MatMulNBits' documentation says the bytes mean, written element by element:
    weight (n, j) is block j // block, nibble j % block of it, low nibble first."""
    n = scales.shape[0]
    out = np.zeros((n, k), np.float32)
    for r in range(n):
        for j in range(k):
            b, i = divmod(j, block)
            byte = int(packed[r, b, i // 2])
            q = (byte >> 4) if i % 2 else (byte & 0x0F)
            if zero_points is None:
                z = 8
            else:
                zb = int(zero_points[r, b // 2])
                z = (zb >> 4) if b % 2 else (zb & 0x0F)
            out[r, j] = (q - z) * scales[r, b]
    return out


def test_pack_and_unpack_are_inverse_with_the_low_nibble_first():
    values = np.arange(16, dtype=np.uint8).reshape(2, 8)
    packed = pack4(values)
    assert packed.shape == (2, 4) and packed[0, 0] == 0x10 and packed[0, 1] == 0x32  # element 1 high, element 0 low
    assert np.array_equal(unpack4(packed), values)


@pytest.mark.parametrize("symmetric", [True, False])
def test_blocks_match_the_numpy_reference_and_round_within_half_a_step(symmetric):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, 70)).astype(np.float32)  # 70: a partial last block
    rows[1, 3] = 40.0  # one large weight: only its own block's step grows
    q, scales, zp = quantize4(rows, 32, symmetric)
    assert q.shape == (5, 3, 16) and scales.shape == (5, 3) and (zp is None) == symmetric
    if not symmetric:
        assert zp.shape == (5, 2)  # 3 blocks' zero points, two a byte, padded to whole bytes
    ref = reference_dequantize(q, scales, zp, 70, 32)
    assert np.array_equal(dequantize4(q, scales, zp, 70), ref)
    step = np.repeat(np.abs(scales), 32, axis=1)[:, :70]
    err = np.abs(ref - rows)
    inner = np.abs(rows) <= 7 * step  # symmetric: +8 steps has no level (the extreme maps to -8), so it clips to +7
    assert np.all(err[inner] <= step[inner] / 2 + 1e-6) and np.all(err <= step + 1e-6)
    if symmetric:  # the block's value of largest magnitude maps to -8: all 16 levels used
        assert ref[1, 3] == pytest.approx(40.0) and np.abs(scales[1, 0]) == pytest.approx(5.0)
        assert np.abs(scales[1, 1]) < 1.0  # the other blocks keep their own small steps


def _one_matmul(w: np.ndarray) -> onnx.ModelProto:
    k, n = w.shape
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("symmetric", [True, False])
def test_matmulnbits_reads_the_packed_bytes_as_the_reference_says(symmetric):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(96, 24)).astype(np.float32)  # (K, N)
    x = rng.normal(size=(3, 96)).astype(np.float32)
    proto, info = to_int4(_one_matmul(w), vocab_size=0, options=Int4Options(symmetric=symmetric, accuracy_level=0, outlier_ratio=None))
    assert info["int4_matmuls"] == 1 and [n.op_type for n in proto.graph.node] == ["MatMulNBits"]
    y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    q, scales, zp = quantize4(w.T, 32, symmetric)
    ref = x @ reference_dequantize(q, scales, zp, 96, 32).T
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert np.abs(ref - x @ w).max() > 1e-2  # the check above sees the 4-bit weights, not the float ones


# --------------------------------------------------------------------------- builds


def _check(manifest: dict) -> dict:
    p = manifest["parity"]
    assert p["passed"] and p["tolerance"] == RULE.to_json() and p["top1"] >= RULE.top1, p.get("failures")
    record = manifest["build"]["precision"]
    assert record["precision"] == "int4"
    for q in record["quantization"].values():
        assert q["int4_matmuls"] >= 2 and q["block_size"] == 32 and q["symmetric"], q
    return record


# one of each family with decoder / encoder MatMuls; the rest of the catalog: test_precision's slow cases
FAMILIES = ["gpt2-tiny", "bert-tiny", "t5-tiny"]


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_catalog_models_build_in_int4_and_pass_parity(tmp_path, name):
    folder, manifest, _ = build_artifact(zoo.load(name), tmp_path / name, options=BuildOptions(precision="int4"))
    record = _check(manifest)
    assert record["size_vs_fp32"] < 0.6, record["size_vs_fp32"]
    ops = {n.op_type for f in folder.glob("*.onnx") for n in onnx.load(str(f)).graph.node}
    assert "MatMulNBits" in ops


@pytest.fixture(scope="module")
def trained_llama():
    spec = zoo.load("llama-tiny")
    model = build(spec, seed=0)
    zoo_trained_like(model, spec)
    return spec, model.state_dict()


@pytest.mark.parametrize("target, optimize", [("cpu", False), ("cuda", False), ("cuda", True)])
def test_trained_like_llama_tiny_builds_in_int4_for_each_target(tmp_path, trained_llama, target, optimize):
    """The CUDA build's graphs (MatMulNBits, GatherBlockQuantized, and with --optimize the
    CUDA lowering: all have CPU kernels) are checked by the same parity on the CPU."""
    spec, state = trained_llama
    options = BuildOptions(precision="int4", target=target, optimize=optimize)
    folder, manifest, _ = build_artifact(spec, tmp_path / target, weights=state, options=options)
    _check(manifest)
    assert manifest["build"]["target"] == target
    proto = onnx.load(str(folder / "model.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulNBits") >= 2 * spec.decoder.layers and "GatherBlockQuantized" in ops


@pytest.mark.parametrize("bug", ["nibbles swapped", "scales one block off"])
def test_a_planted_bug_fails_parity(tmp_path, monkeypatch, trained_llama, bug):
    """The rule must be able to fail: a packing with the nibbles the wrong way round, or
    block scales shifted by one block, is refused and no artifact is written."""
    if bug == "nibbles swapped":
        def swapped(values):
            v = values.astype(np.uint8)
            return (v[..., 1::2] | (v[..., 0::2] << 4)).astype(np.uint8)
        monkeypatch.setattr(int4, "pack4", swapped)
    else:
        right = int4.quantize4

        def shifted(rows, block_size, symmetric):
            q, scales, zp = right(rows, block_size, symmetric)
            return q, np.roll(scales, 1, axis=1), zp
        monkeypatch.setattr(int4, "quantize4", shifted)
    spec, state = trained_llama
    with pytest.raises(ParityError) as err:
        build_artifact(spec, tmp_path / "bad", weights=state, options=BuildOptions(precision="int4"))
    assert "int4" in str(err.value) and "fail parity" in str(err.value)
    assert any("top-1" in str(e) for e in getattr(err.value, "others", ())) or "top-1" in str(err.value), err.value
    nothing_written(tmp_path, "bad")


def test_cli_builds_int4_and_refuses_a_float16_spec_in_one_line(tmp_path, capsys):
    code = main(["build", "gpt2-tiny", "--precision", "int4", "-o", str(tmp_path / "int4")])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "int4" / "manifest.json").is_file()
    assert "precision int4" in out and "MatMuls int4" in out and RULE.describe() in out, out
    code, err = zoo_cli(capsys, "build", "gpt2-tiny", "--precision", "int4", "--set", "dtype=float16", "-o", tmp_path / "bad")
    refused(code, err, "--precision int4", "float16")
    nothing_written(tmp_path, "bad")
