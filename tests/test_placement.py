"""Node placement (runtime.placement): where ONNX Runtime ran each node, and the
attention / matmul nodes that fell back to CPU on a CUDA session (onnxruntime issue
28025). On CPU: a real session's recorded assignment and a real profile (everything
on CPU, no fallback), and a synthesized CUDA profile with an Attention and a MatMul
on CPU (reported; refused under --strict). CUDA-only checks skip without a GPU."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from runtime import placement
from runtime.placement import CPU, CUDA, PlacementError, check_placement, fallback_lines, placement_report
from runtime.session import empty_past
from zoo.spec.errors import InputError
from zoo.spec.families import CacheLayout

HAS_CUDA = CUDA in ort.get_available_providers()


def _feed(n_layers=2, heads=4, hd=16):
    feed = {"input_ids": np.array([[1, 2, 3]]), "attention_mask": np.ones((1, 3), np.int64)}
    feed.update(empty_past(CacheLayout(layers=n_layers, kv_heads=heads, head_dim=hd, cross=False), 1))
    return feed


def _cuda_profile(events_on_cpu=(("Attention", "attn_0"), ("MatMul", "mm_7"))):
    """A profile as a CUDA session writes it: node events with args.provider/op_name,
    most nodes on CUDA, the given ones on CPU (plus the shape nodes ORT keeps on CPU)."""
    events = [{"cat": "Session", "name": "session_initialization", "args": {}}]
    for i, op in enumerate(("MatMul", "Add", "Softmax", "SkipLayerNormalization", "MatMul")):
        events.append({"cat": "Node", "name": f"n{i}_kernel_time", "args": {"op_name": op, "provider": CUDA}})
    events.append({"cat": "Node", "name": "shape_0_kernel_time", "args": {"op_name": "Shape", "provider": CPU}})
    for op, name in events_on_cpu:
        events.append({"cat": "Node", "name": f"{name}_fence_before", "args": {"op_name": op, "provider": CPU}})
        events.append({"cat": "Node", "name": f"{name}_kernel_time", "args": {"op_name": op, "provider": CPU}})
    return events


def test_cpu_session_assignment_has_no_fallback(tiny_artifacts):
    opts = ort.SessionOptions()
    placement.record_options(opts)
    sess = ort.InferenceSession(str(tiny_artifacts["gpt2-tiny"] / "model.onnx"), opts, providers=[CPU])
    report = placement_report(sess)
    assert report["session_provider"] == CPU and report["source"] == "assignment"
    assert set(report) - {"session_provider", "source", "nodes", "fallbacks"} == {CPU}
    assert report[CPU]["MatMul"] > 0 and sum(report[CPU].values()) == report["nodes"]
    assert report["fallbacks"] == [] and fallback_lines(report) == []


def test_cpu_session_without_recording_asks_for_it(tiny_artifacts):
    sess = ort.InferenceSession(str(tiny_artifacts["gpt2-tiny"] / "model.onnx"), providers=[CPU])
    with pytest.raises(ValueError, match="record_options"):
        placement_report(sess)


def test_real_cpu_profile_parsed(tiny_artifacts, tmp_path):
    prof = placement.profile_once(tiny_artifacts["gpt2-tiny"] / "model.onnx", [CPU], _feed())
    report = placement_report(prof["events"])
    assert report["session_provider"] == CPU and report["source"] == "profile"
    assert report[CPU]["MatMul"] > 0 and report["fallbacks"] == []
    # the same profile from a file and as JSON text
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(prof["events"]))
    assert placement_report(path) == report == placement_report(path.read_text())
    # a CPU-only profile read as if its session were CUDA: every matmul is a fallback
    claimed = placement_report(prof["events"], session_provider=CUDA)
    assert {f["op_type"] for f in claimed["fallbacks"]} == {"MatMul", "FusedMatMul"}  # profiles see ORT's fused nodes
    assert len(claimed["fallbacks"]) == report[CPU]["MatMul"] + report[CPU]["FusedMatMul"]


def test_synthesized_cuda_profile_reports_fallbacks():
    report = placement_report(_cuda_profile())
    assert report["session_provider"] == CUDA
    assert report[CUDA]["MatMul"] == 2 and report[CPU] == {"Attention": 1, "MatMul": 1, "Shape": 1}
    assert [(f["op_type"], f["class"], f["node"]) for f in report["fallbacks"]] == [("Attention", "attention", "attn_0"), ("MatMul", "matmul", "mm_7")]
    lines = fallback_lines(report, "model")
    assert len(lines) == 2 and all("\n" not in line and "28025" in line for line in lines)
    assert lines[0].startswith("graph 'model': 1 attention node (Attention x1) run on CPUExecutionProvider in a CUDAExecutionProvider session")
    warned = []
    assert check_placement([("model", report)], warn=warned.append) == lines == warned
    with pytest.raises(PlacementError, match=r"^--strict: graph 'model': 1 attention node .* \(and 1 more\)$") as err:
        check_placement([("model", report)], strict=True)
    assert isinstance(err.value, InputError)  # the CLI prints it as one line, exit code of bad input


def test_only_shape_nodes_on_cpu_is_fine():
    report = placement_report(_cuda_profile(events_on_cpu=(("Gather", "g0"), ("Concat", "c1"))))
    assert report["fallbacks"] == [] and check_placement([("model", report)], strict=True) == []


def test_session_refuses_under_strict_and_warns_otherwise(tiny_artifacts, monkeypatch, capsys):
    """Session wiring: a CPU session never checks; with a report that has fallbacks the
    check warns on stderr, one line per class, or raises under strict."""
    from runtime.session import Session

    sess = Session(tiny_artifacts["gpt2-tiny"], device="cpu")
    assert sess.placement is None  # CPU session: nothing can fall back
    fake = placement_report(_cuda_profile())
    monkeypatch.setattr(placement, "placement_report", lambda *a, **k: fake)
    reports = sess._check_placement([CUDA, CPU], strict=False)
    assert reports["model"] is fake
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("warning: graph 'model': 1 attention node")
    with pytest.raises(PlacementError):
        sess._check_placement([CUDA, CPU], strict=True)


def test_tiny_feed_runs_every_graph(tiny_artifacts):
    """The profiling fallback's one-token inputs are valid for every graph kind."""
    from runtime.session import Session

    for name in ("gpt2-tiny", "transformer-tiny", "bert-tiny"):
        sess = Session(tiny_artifacts[name], device="cpu")
        for graph in sess.graphs:
            feed = sess._tiny_feed(graph)
            assert sess.sessions[graph].run(None, feed)


def test_cli_strict_flags(tiny_artifacts, capsys):
    from zoo.app.cli import main, parser

    assert parser().parse_args(["run", "x", "--strict"]).strict is True
    assert parser().parse_args(["run", "x"]).strict is False
    assert parser().parse_args(["generate", "x", "--strict"]).strict is True
    # on CPU --strict has nothing to refuse
    assert main(["run", str(tiny_artifacts["gpt2-tiny"]), "--strict", "--repeat", "0", "--device", "cpu"]) == 0
    assert main(["generate", str(tiny_artifacts["gpt2-tiny"]), "--ids", "1,2,3", "--max-new-tokens", "2", "--strict", "--device", "cpu"]) == 0


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime with CUDAExecutionProvider and a GPU")
def test_cuda_session_placement(tmp_path):
    """On a GPU: an artifact lowered for CUDA places its attention and matmuls on CUDA."""
    import zoo
    from zoo.app.build import BuildOptions, build_artifact
    from runtime.session import Session

    folder, _, _ = build_artifact(zoo.load("gpt2-tiny"), tmp_path / "a", options=BuildOptions(optimize=True, target="cuda"))
    sess = Session(folder, device="cuda", strict=True)
    report = sess.placement["model"]
    assert report["session_provider"] == CUDA and report["fallbacks"] == []
    assert report[CUDA].get("MultiHeadAttention", 0) == 2
