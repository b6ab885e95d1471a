"""Bad weights, bad tokenizers and graphs whose external data points out of the
artifact (issue 13, point 6): each is refused with one line naming the file and the
tensor, exit code 2, before anything is exported (or, for a graph, before ONNX
Runtime opens it), and no artifact folder is left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import zoo
from compiler import build, save_weights
from compiler.weights import WeightsError, check_finite, load_tensors, load_weights, save_tensors
from runtime.artifact import Artifact, load_artifact, sha256_file
from tests.conftest import ROOT
from zoo.app.cli import main
from zoo.spec.errors import ArtifactError

POISONED = "decoder.layers.1.ffn.up.weight"


def refused(code: int, err: str, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr, starting with 'error:', holding every fragment."""
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def zoo_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def nothing_written(tmp_path, name: str = "out") -> None:
    assert not (tmp_path / name).exists(), f"{name} left behind"
    assert not list(tmp_path.glob(f".{name}.*")), "a staging folder left behind"


# ---------------------------------------------------------------- weights with NaN or inf


@pytest.fixture(scope="module")
def gpt2_state():
    return dict(build(zoo.load("gpt2-tiny")).state_dict())


def poisoned(state: dict, nan: int = 12, inf: int = 0, name: str = POISONED) -> dict:
    state = {k: v.clone() for k, v in state.items()}
    flat = state[name].view(-1)
    flat[:nan] = float("nan")
    flat[nan : nan + inf] = float("inf")
    return state


def test_weights_file_with_nan_is_refused_by_build_in_a_process(tmp_path, gpt2_state):
    save_tensors(poisoned(gpt2_state, nan=12), tmp_path / "w.safetensors")
    env = dict(os.environ, PYTHONPATH=str(ROOT), ZOO_QUIET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "build", "gpt2-tiny", "--weights", "w.safetensors", "-o", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    line = refused(proc.returncode, proc.stderr, "w.safetensors", POISONED)
    assert line == f"error: w.safetensors: tensor {POISONED} holds 12 NaN and 0 inf values; refusing to build", line
    nothing_written(tmp_path)


def test_weights_file_with_inf_is_refused_even_without_parity(tmp_path, capsys, gpt2_state):
    state = poisoned(gpt2_state, nan=0, inf=3)
    state["embed.weight"][0, 0] = float("-inf")
    save_tensors(state, tmp_path / "w.safetensors")
    code, err = zoo_cli(capsys, "build", "gpt2-tiny", "--weights", tmp_path / "w.safetensors", "-o", tmp_path / "out", "--no-parity")
    refused(code, err, "w.safetensors: tensor ", "inf values", "(and 1 more tensors)", "refusing to build")
    nothing_written(tmp_path)


def test_state_dict_with_nan_is_refused_by_build_artifact(tmp_path, gpt2_state):
    from zoo.app.build import build_artifact

    with pytest.raises(WeightsError) as info:
        build_artifact(zoo.load("gpt2-tiny"), tmp_path / "out", weights=poisoned(gpt2_state, nan=5, inf=2))
    assert str(info.value) == f"weights (a state dict): tensor {POISONED} holds 5 NaN and 2 inf values; refusing to build"
    assert info.value.exit_code == 2
    nothing_written(tmp_path)


def test_values_that_overflow_the_models_dtype_are_refused(tmp_path, gpt2_state):
    state = {k: v.clone() for k, v in gpt2_state.items()}
    state[POISONED].view(-1)[:4] = 1e6  # finite in float32, inf in float16
    save_tensors(state, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=f"tensor {POISONED} holds 0 NaN and 4 inf values once converted to the model's float16"):
        load_weights(build(zoo.load("gpt2-tiny", ["dtype=float16"])), tmp_path / "w.safetensors")


def test_finite_weights_pass_and_integer_tensors_are_not_checked(tmp_path, gpt2_state):
    check_finite({**gpt2_state, "ids": torch.arange(4), "empty": torch.empty(0)}, "x")
    save_weights(build(zoo.load("gpt2-tiny")), tmp_path / "w.safetensors")
    tensors, metadata = load_tensors(tmp_path / "w.safetensors")
    assert metadata == {"format": "pt"} and all(torch.equal(tensors[k], v) for k, v in gpt2_state.items())


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 100)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.save(str(folder / "tokenizer.json"))
    return folder


def checkpoint_copy(src, dst, fmt: str = "safetensors"):
    shutil.copytree(src, dst)
    state, _ = load_tensors(dst / "model.safetensors")
    name = next(k for k in state if k.endswith("h.1.mlp.c_fc.weight"))
    state = poisoned(state, nan=7, inf=1, name=name)
    if fmt == "bin":
        (dst / "model.safetensors").unlink()
        torch.save(state, dst / "pytorch_model.bin")
    else:
        save_tensors(state, dst / "model.safetensors")
    return dst, name


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_checkpoint_with_nan_is_refused_by_import_and_build(tmp_path, capsys, gpt2_checkpoint, fmt):
    folder, name = checkpoint_copy(gpt2_checkpoint, tmp_path / "hf", fmt)
    file = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    expect = f"{folder / file}: tensor {name} holds 7 NaN and 1 inf values; refusing to import"
    code, err = zoo_cli(capsys, "import", folder, "-o", tmp_path / "out")
    assert refused(code, err) == "error: " + expect
    nothing_written(tmp_path)
    code, err = zoo_cli(capsys, "build", folder, "-o", tmp_path / "out")
    assert refused(code, err) == "error: " + expect
    nothing_written(tmp_path)


def test_checkpoint_that_overflows_float16_is_refused_by_import(tmp_path, capsys, gpt2_checkpoint):
    folder = tmp_path / "hf"
    shutil.copytree(gpt2_checkpoint, folder)
    state, _ = load_tensors(folder / "model.safetensors")
    name = next(k for k in state if k.endswith("h.0.attn.c_attn.bias"))
    state[name][:2] = 1e9
    save_tensors(state, folder / "model.safetensors")
    code, err = zoo_cli(capsys, "import", folder, "-o", tmp_path / "out", "--dtype", "float16")
    refused(code, err, str(folder), "holds 0 NaN and 2 inf values once converted to float16", "refusing to import")
    nothing_written(tmp_path)


# ---------------------------------------------------------------- tokenizer.json the tokenizers package cannot load


def bad_tokenizer(kind: str, good: bytes) -> bytes:
    return {
        "garbage": b"\x00\xff\xfe not json at all",
        "not-a-tokenizer": b'{"vocab": {"a": 0}, "hello": "world"}',
        "truncated": good[: len(good) // 2],
        "list": b"[1, 2, 3]",
    }[kind]


@pytest.mark.parametrize("kind", ["garbage", "not-a-tokenizer", "truncated", "list"])
def test_bad_tokenizer_is_refused_by_build(tmp_path, capsys, gpt2_checkpoint, kind):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(bad_tokenizer(kind, (gpt2_checkpoint / "tokenizer.json").read_bytes()))
    code, err = zoo_cli(capsys, "build", "gpt2-tiny", "--tokenizer", path, "-o", tmp_path / "out", "--no-parity")
    refused(code, err, f"{path}: not a tokenizer the 'tokenizers' package can load (", "refusing to carry it")
    nothing_written(tmp_path)


@pytest.mark.parametrize("command", ["import", "build"])
def test_bad_tokenizer_in_a_checkpoint_is_refused(tmp_path, capsys, gpt2_checkpoint, command):
    folder = tmp_path / "hf"
    shutil.copytree(gpt2_checkpoint, folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0', encoding="utf-8")
    code, err = zoo_cli(capsys, command, folder, "-o", tmp_path / "out", "--no-parity" if command == "build" else "--force")
    refused(code, err, f"{folder / 'tokenizer.json'}: not a tokenizer", "refusing to carry it")
    nothing_written(tmp_path)


def test_without_tokenizers_a_json_object_with_a_model_key_is_required(tmp_path, monkeypatch, gpt2_checkpoint):
    from runtime.tokenizer import check_tokenizer

    monkeypatch.setitem(sys.modules, "tokenizers", None)  # `import tokenizers` raises ImportError
    check_tokenizer(gpt2_checkpoint / "tokenizer.json")
    for kind, why in (("garbage", "unreadable JSON"), ("not-a-tokenizer", "'model' key"), ("list", "'model' key")):
        path = tmp_path / f"{kind}.json"
        path.write_bytes(bad_tokenizer(kind, b""))
        with pytest.raises(ArtifactError, match=why) as info:
            check_tokenizer(path)
        assert str(info.value).startswith(f"{path}: not a tokenizer.json") and info.value.exit_code == 2


# ---------------------------------------------------------------- external data pointing out of the artifact


@pytest.fixture(scope="module")
def tiny_artifact(tiny_artifacts):
    """The session's gpt2-tiny artifact (tests/conftest.py); each test edits a copy of it."""
    return tiny_artifacts["gpt2-tiny"]


TENSOR = "model.embed.weight"


def externalize(folder, location: str, data_path=None, listed: bool = False) -> None:
    """Move TENSOR of folder/model.onnx to external data at ``location`` (its bytes
    written to ``data_path``), and rewrite the manifest's sizes and hashes to match."""
    import onnx
    from onnx.external_data_helper import set_external_data

    proto = onnx.load(str(folder / "model.onnx"))
    tensor = next(t for t in proto.graph.initializer if t.name == TENSOR)
    if data_path is not None:
        data_path.write_bytes(tensor.raw_data)
    set_external_data(tensor, location, offset=0, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(proto, str(folder / "model.onnx"))
    manifest = json.loads((folder / "manifest.json").read_text())
    names = ["model.onnx"] + ([location] if listed else [])
    for name in names:
        manifest["files"][name] = {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
    if listed:
        manifest["graphs"]["model"]["files"].append(location)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def outside_cases(tmp_path, art):
    outside = tmp_path / "outside.bin"
    return {
        "dotdot": ("../outside.bin", outside, "has a '..' component"),
        "absolute": (str(outside), outside, "is an absolute path"),
        "symlink": ("weights.bin", outside, "is a link to"),
        "unlisted": ("extra.bin", art / "extra.bin", "is not among the manifest's files"),
    }


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "unlisted"])
def test_external_data_outside_the_artifact_is_refused_before_onnxruntime(tmp_path, capsys, tiny_artifact, case):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    location, data_path, why = outside_cases(tmp_path, art)[case]
    if case == "symlink":
        (art / "weights.bin").symlink_to(data_path)
    externalize(art, location, data_path)
    code, err = zoo_cli(capsys, "run", art, "--ids", "1,2,3", "--repeat", "0")
    line = refused(code, err, f"{art / 'model.onnx'}: tensor '{TENSOR}' external data", why)
    assert "the artifact folder" in line or case == "unlisted", line
    with pytest.raises(ArtifactError, match=why):
        load_artifact(art, verify=False)
    from runtime.session import Session

    manifest = json.loads((art / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match=why):  # an Artifact made by hand: Session checks it itself
        Session(Artifact(art, manifest), device="cpu")


def test_external_data_inside_the_artifact_loads_and_runs(tmp_path, tiny_artifact):
    from runtime.session import Session

    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    ids = np.array([[1, 2, 3]])
    feed = {"model": {"input_ids": ids, "attention_mask": np.ones_like(ids)}}
    before = Session(art, device="cpu").forward(feed)["logits"]
    externalize(art, "model.onnx.data", art / "model.onnx.data", listed=True)
    after = Session(load_artifact(art), device="cpu").forward(feed)["logits"]
    np.testing.assert_array_equal(before, after)


def test_truncated_graph_is_refused_as_unreadable(tmp_path, capsys, tiny_artifact):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    graph = art / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = {"sha256": sha256_file(graph), "bytes": graph.stat().st_size}
    (art / "manifest.json").write_text(json.dumps(manifest))
    code, err = zoo_cli(capsys, "run", art, "--ids", "1,2", "--repeat", "0")
    refused(code, err, f"{graph}: not a readable ONNX graph (")


def test_the_walk_finds_external_data_everywhere_onnx_keeps_tensors(tmp_path):
    """Initializers, sparse initializers, Constant attributes, subgraphs of If, functions."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    from runtime.external_data import MalformedGraph, external_references

    def ext(name, location):
        t = numpy_helper.from_array(np.ones(4, np.float32), name)
        set_external_data(t, location)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        return t

    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    branch = helper.make_graph([helper.make_node("Identity", ["b"], ["y"])], "then", [], [out], initializer=[ext("b", "/abs/b")])
    nodes = [
        helper.make_node("Constant", [], ["c"], value=ext("c", "../c")),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
    ]
    sparse = helper.make_sparse_tensor(ext("sv", "sv.bin"), numpy_helper.from_array(np.array([0], np.int64), "si"), [4])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [out],
                              initializer=[ext("w", "w.bin"), numpy_helper.from_array(np.zeros(3, np.float32), "inside")],
                              sparse_initializer=[sparse])
    func = helper.make_function("local", "f", [], ["z"], [helper.make_node("Constant", [], ["z"], value=ext("fz", "f.bin"))], [])
    onnx.save_model(helper.make_model(graph, functions=[func]), str(tmp_path / "m.onnx"))
    refs = {r.tensor: r.location for r in external_references(tmp_path / "m.onnx")}
    assert refs == {"w": "w.bin", "sv": "sv.bin", "c": "../c", "b": "/abs/b", "fz": "f.bin"}, refs
    (tmp_path / "junk.onnx").write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # graph field, length past the end
    with pytest.raises(MalformedGraph):
        external_references(tmp_path / "junk.onnx")


def test_the_walk_skips_the_weights_of_a_large_graph_quickly(tmp_path):
    """48 MB of initializers and 2,000 nodes: the walk reads the structure, not the bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from runtime.external_data import external_references

    inits = [numpy_helper.from_array(np.zeros(1 << 18, np.float32), f"w{i}") for i in range(48)]
    nodes = [helper.make_node("Add", [f"x{i}", f"w{i % 48}"], [f"x{i + 1}"], name=f"n{i}") for i in range(2000)]
    io = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1 << 18])  # noqa: E731
    onnx.save_model(helper.make_model(helper.make_graph(nodes, "g", [io("x0")], [io("x2000")], initializer=inits)), str(tmp_path / "big.onnx"))
    t0 = time.perf_counter()
    assert external_references(tmp_path / "big.onnx") == []
    assert time.perf_counter() - t0 < 0.5
