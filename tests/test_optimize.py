"""Optimized graphs (passes.optimize, zoo build --optimize): every tiny catalog spec
lowered for CPU and for CUDA passes the build's parity check (fp32, 1e-4, cached
decoding included), the manifest records the lowering per component, and the fused
ops claimed are in the graph.

The default suite optimizes copies of the session's tiny artifacts (no second
export) and runs one full ``zoo build --optimize``; the rest is marked slow."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

import zoo
from tests.conftest import TINY_CATALOG, tiny_spec
from zoo.spec.variants import SCORES
from runtime.session import empty_past
from zoo.spec.families import cache_layout

TOL = 1e-4


def _ops(folder: Path, spec) -> Counter:
    from passes.optimize import op_counts
    from zoo.spec.families import graphs_for

    total = Counter()
    for g in graphs_for(spec):
        total += op_counts(onnx.load(str(folder / g.file)))
    return total


def _optimized_copy(src: Path, dst: Path, spec, target: str, plan=None) -> tuple[dict, dict]:
    """Copy an artifact's graphs, optimize them for ``target``; (lowering, graphs)."""
    from passes.optimize import optimize_graphs

    shutil.copytree(src, dst)
    graphs = json.loads((src / "manifest.json").read_text())["graphs"]
    return optimize_graphs(spec, dst, graphs, target=target, plan=plan), graphs


def _parity(spec, folder: Path) -> dict:
    from compiler.builder import build
    from zoo.app.parity import parity
    from zoo.spec.families import graphs_for

    model = build(spec, seed=0)
    return parity(model, spec, {g.name: folder / g.file for g in graphs_for(spec)})


def _attention_count(spec) -> int:
    n = sum(s.layers for _, s in spec.stacks())
    return n + (spec.stack("decoder").layers if spec.family == "encoder-decoder" else 0)  # cross-attention


def _check(spec, lowering: dict, graphs: dict, ops: Counter, report: dict) -> None:
    assert report["passed"], report
    assert report["max_abs"] <= TOL
    if report["cache"] is not None:
        assert report["cache"]["max_abs"] <= TOL
    att = lowering["attention"]
    scores = {s.attention.score for _, s in spec.stacks()}
    fused = {"onnx:Attention": "Attention", "com.microsoft:MultiHeadAttention": "com.microsoft:MultiHeadAttention"}
    if not any(SCORES[s].fused for s in scores):
        assert att["lowered_as"] == "decomposed" and all(SCORES[s].lowering in att["why"] for s in scores)
        assert not any(k.endswith("Attention") for k in ops)
    else:
        assert att["nodes"] == _attention_count(spec) and not att.get("decomposed")
        assert sum(ops[fused[x]] for x in att["lowered_as"].split("+")) == att["nodes"]
        routers = sum(s.layers for _, s in spec.stacks() if s.ffn.experts is not None)
        assert ops["Softmax"] == routers  # no decomposed attention left (a mixture of experts' router is one)
    for comp in ("rotary", "norm", "gelu"):  # what the record claims is what the graph holds
        claimed = [x.removeprefix("onnx:") for x in lowering[comp]["lowered_as"].split("+") if x not in ("decomposed", "none")]
        assert lowering[comp]["nodes"] == sum(ops[o] for o in claimed), (comp, lowering[comp], ops)
    assert sum(lowering["fusions"].values()) >= att["nodes"]
    for name, g in graphs.items():  # the manifest's record matches the files
        assert sum(c for op, c in ops.items() if op in g["ops"]) >= g["nodes"] > 0
        assert sorted(g["ops"]) == g["ops"] and g["nodes_before_optimize"] > 0


EXPECTED_CPU = {  # component -> (lowered_as, nodes), per tiny catalog spec
    "transformer-tiny": {"attention": ("onnx:Attention", 6), "rotary": ("none", 0), "gelu": ("none", 0)},
    "gpt2-tiny": {"attention": ("onnx:Attention", 2), "norm": ("onnx:LayerNormalization", 5), "gelu": ("onnx:Gelu", 2)},
    "bert-tiny": {"attention": ("onnx:Attention", 2), "norm": ("onnx:LayerNormalization", 6), "gelu": ("onnx:Gelu", 3)},
    "t5-tiny": {"attention": ("onnx:Attention", 6), "norm": ("onnx:RMSNormalization", 12)},
    "llama-tiny": {"attention": ("onnx:Attention", 2), "rotary": ("onnx:RotaryEmbedding", 4), "norm": ("onnx:RMSNormalization", 5)},
    "alibi-tiny": {"attention": ("onnx:Attention", 2), "norm": ("onnx:LayerNormalization", 5)},
}


@pytest.mark.parametrize("name", TINY_CATALOG)
def test_tiny_catalog_optimized_for_cpu_passes_parity(name, tiny_artifacts, tmp_path):
    spec = zoo.load(name)
    lowering, graphs = _optimized_copy(tiny_artifacts[name], tmp_path / name, spec, "cpu")
    ops = _ops(tmp_path / name, spec)
    _check(spec, lowering, graphs, ops, _parity(spec, tmp_path / name))
    assert lowering["target"] == "cpu"
    for comp, (op, n) in EXPECTED_CPU.get(name, {}).items():  # pinned for these; _check holds for every spec
        assert (lowering[comp]["lowered_as"], lowering[comp]["nodes"]) == (op, n), (comp, lowering[comp])
    assert not any(k.startswith("com.microsoft:") for k in ops)  # CPU: standard ops only (measured faster)
    assert "measured" in lowering["attention"]["why"]


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_cuda_lowering_recorded_and_checked_on_cpu(name, tiny_artifacts, tmp_path):
    """--target cuda: contrib ops with CUDA kernels; every one also has a CPU kernel,
    so the same parity check runs here."""
    spec = zoo.load(name)
    lowering, graphs = _optimized_copy(tiny_artifacts[name], tmp_path / name, spec, "cuda")
    ops = _ops(tmp_path / name, spec)
    _check(spec, lowering, graphs, ops, _parity(spec, tmp_path / name))
    assert lowering["target"] == "cuda"
    if name == "gpt2-tiny":  # kv_heads = heads: MultiHeadAttention; residual adds and GELU bias folded
        assert lowering["attention"]["lowered_as"] == "com.microsoft:MultiHeadAttention"
        assert ops["com.microsoft:MultiHeadAttention"] == 2
        assert lowering["norm"]["lowered_as"] == "com.microsoft:SkipLayerNormalization+onnx:LayerNormalization"
        assert (ops["com.microsoft:SkipLayerNormalization"], ops["LayerNormalization"]) == (4, 1)  # the first norm has no residual
        assert (lowering["gelu"]["lowered_as"], ops["com.microsoft:FastGelu"]) == ("com.microsoft:FastGelu", 2)
    else:  # GQA: the standard Attention op; rotary: the contrib op
        assert lowering["attention"]["lowered_as"] == "onnx:Attention"
        assert lowering["rotary"]["lowered_as"] == "com.microsoft:RotaryEmbedding"
        assert ops["com.microsoft:RotaryEmbedding"] == 4
        assert "GroupQueryAttention" in lowering["attention"]["why"]  # why it was not chosen
        assert (ops["com.microsoft:SkipSimplifiedLayerNormalization"], ops["RMSNormalization"]) == (4, 1)


def test_zoo_build_optimize_end_to_end(tmp_path, capsys):
    """The real path: zoo build --optimize --target cpu re-checks parity, writes the
    lowering into the manifest; the artifact generates the same tokens as the plain one."""
    from runtime.generate import GenerationConfig, Generator
    from zoo.app.cli import main

    out = tmp_path / "llama-opt"
    assert main(["build", "llama-tiny", "--optimize", "--target", "cpu", "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    build = manifest["build"]
    assert build["optimize"] is True and build["target"] == "cpu"
    low = build["lowering"]
    assert {"attention", "rotary", "norm", "gelu", "fusions", "target"} <= set(low)
    assert (low["attention"]["lowered_as"], low["attention"]["nodes"]) == ("onnx:Attention", 2)
    assert manifest["parity"]["passed"] and manifest["parity"]["cache"]["max_abs"] <= TOL
    ops = manifest["graphs"]["model"]["ops"]
    assert "Attention" in ops and "RotaryEmbedding" in ops and "Softmax" not in ops
    from runtime.artifact import load_artifact

    load_artifact(out, verify=True)  # sha256 of the rewritten files recorded
    plain = tmp_path / "llama-plain"
    from zoo.app.build import build_artifact

    build_artifact(zoo.load("llama-tiny"), plain, check_parity=False)
    prompts = [[5, 6, 7, 8], [9, 10]]
    cfg = GenerationConfig(max_new_tokens=6, eos=())
    a = Generator(out, device="cpu").generate(prompts, cfg)
    b = Generator(plain, device="cpu").generate(prompts, cfg)
    assert a.tokens == b.tokens


def test_additive_score_stays_decomposed_and_correct(tmp_path):
    """No fused kernel computes v.tanh(Wq q + Wk k): that attention keeps its exported
    subgraph, the rest of the graph is still lowered, parity holds."""
    from zoo.app.build import build_artifact

    spec = tiny_spec("decoder-only", score="additive", positional="rope")
    folder, _, _ = build_artifact(spec, tmp_path / "plain")
    lowering, graphs = _optimized_copy(folder, tmp_path / "opt", spec, "cpu")
    ops = _ops(tmp_path / "opt", spec)
    _check(spec, lowering, graphs, ops, _parity(spec, tmp_path / "opt"))
    assert lowering["attention"]["lowered_as"] == "decomposed" and lowering["attention"]["decomposed"] == 2
    assert "additive" in lowering["attention"]["why"]
    assert lowering["rotary"]["nodes"] == 4  # the rest still fuses


def test_partial_rotary_keeps_the_unrotated_dims(tmp_path):
    """RoPE on half of each head (positional.fraction 0.5): RotaryEmbedding with
    rotary_embedding_dim, the other half passed through."""
    from zoo.app.build import build_artifact

    spec = zoo.load("llama-tiny", ["positional.fraction=0.5", "decoder.layers=1"])
    folder, _, _ = build_artifact(spec, tmp_path / "plain")
    for target in ("cpu", "cuda"):
        lowering, graphs = _optimized_copy(folder, tmp_path / target, spec, target)
        ops = _ops(tmp_path / target, spec)
        _check(spec, lowering, graphs, ops, _parity(spec, tmp_path / target))
        assert lowering["rotary"]["nodes"] == 2
        model = onnx.load(str(tmp_path / target / "model.onnx"))
        dims = {a.i for n in model.graph.node if n.op_type == "RotaryEmbedding" for a in n.attribute if a.name == "rotary_embedding_dim"}
        assert dims == {spec.rotary_dim("decoder")}


def test_unmatched_subgraph_is_left_alone():
    """A softmax outside any attention module (a router's, here a bare one) is no attention: the
    graph stays as it was and the record says no attention was lowered."""
    from onnx import TensorProto, helper

    from passes.optimize import optimize_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    before = model.SerializeToString()
    record = optimize_model(model, tiny_spec("decoder-only"), target="cpu")
    assert record["attention"]["lowered_as"] == "none"
    assert model.SerializeToString() == before


def test_padding_rows_match_torch_exactly(tiny_artifacts, tmp_path):
    """A left-padded prompt's padding rows are fully masked: torch averages V there, the
    fused kernel alone would return 0; the rewrite keeps torch's numbers at every slot."""
    import onnxruntime as ort

    spec = zoo.load("gpt2-tiny")
    _optimized_copy(tiny_artifacts["gpt2-tiny"], tmp_path / "opt", spec, "cpu")
    feed = {"input_ids": np.array([[3, 4, 5, 6, 7], [0, 0, 0, 8, 9]]), "attention_mask": np.array([[1] * 5, [0, 0, 0, 1, 1]])}
    feed.update(empty_past(cache_layout(spec), 2))  # 2 layers, kv_heads 4, head_dim 16
    plain = ort.InferenceSession(str(tiny_artifacts["gpt2-tiny"] / "model.onnx"), providers=["CPUExecutionProvider"])
    opt = ort.InferenceSession(str(tmp_path / "opt" / "model.onnx"), providers=["CPUExecutionProvider"])
    a, b = plain.run(["logits"], feed)[0], opt.run(["logits"], feed)[0]
    assert np.abs(a - b).max() <= TOL


# --------------------------------------------------------------------------- slow: the rest


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in TINY_CATALOG if n not in ("gpt2-tiny", "llama-tiny")])
def test_cuda_lowering_every_tiny_spec(name, tiny_artifacts, tmp_path):
    spec = zoo.load(name)
    lowering, graphs = _optimized_copy(tiny_artifacts[name], tmp_path / name, spec, "cuda")
    _check(spec, lowering, graphs, _ops(tmp_path / name, spec), _parity(spec, tmp_path / name))


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY_CATALOG)
def test_build_artifact_optimize_every_tiny_spec(name, tmp_path):
    """The build path itself (export, parity, optimize, parity again) for each spec."""
    from zoo.app.build import BuildOptions, build_artifact

    spec = zoo.load(name)
    folder, manifest, built = build_artifact(spec, tmp_path / name, options=BuildOptions(optimize=True, target="cpu"))
    assert built and manifest["parity"]["passed"]
    _check(spec, manifest["build"]["lowering"], manifest["graphs"], _ops(folder, spec), manifest["parity"])


VARIANTS = [
    ("decoder-only", "bilinear", "alibi", {}),
    ("decoder-only", "dot", "relative-bias", {}),
    ("decoder-only", "scaled-dot", "rope", {"attention": {"heads": 4, "kv_heads": 2, "window": 3}}),
    ("decoder-only", "scaled-dot", "rope", {"attention": {"heads": 4, "kv_heads": 1}, "norm": {"kind": "rmsnorm", "placement": "post"}}),
    ("encoder-only", "scaled-dot", "alibi", {"ffn": {"hidden": 64, "activation": "gelu-tanh"}}),
    ("encoder-decoder", "scaled-dot", "rope", {}),
    ("encoder-decoder", "additive", "sinusoidal", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("family,score,positional,extra", VARIANTS)
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_spec_variants(family, score, positional, extra, target, tmp_path):
    """Scores, biases, windows, MQA, post-norm, every family: lowered where a fused
    form exists, decomposed where not, parity either way."""
    from zoo.app.build import build_artifact

    spec = tiny_spec(family, score=score, positional=positional, **extra)
    folder, _, _ = build_artifact(spec, tmp_path / "plain")
    lowering, graphs = _optimized_copy(folder, tmp_path / "opt", spec, target)
    _check(spec, lowering, graphs, _ops(tmp_path / "opt", spec), _parity(spec, tmp_path / "opt"))


@pytest.mark.slow
def test_benchmark_script_runs(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "optimize.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "optimize.py"), "--spec", "gpt2-tiny", "--reps", "2", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["specs"][0]["results"]
    assert {r["case"] for r in rows} == {"prefill", "decode"}
    assert all("optimized" in r["ratio"] and r["max_abs_vs_plain"]["optimized"] <= TOL for r in rows)
