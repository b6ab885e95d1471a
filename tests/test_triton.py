"""zoo export-triton: the Triton model repository of an artifact.

Every config.pbtxt is parsed with the ModelConfig protobuf that tritonclient ships (a
malformed config fails here), its fields checked against the artifact's manifest, and
the repository's model.onnx files run the way a Triton client would call them: only the
inputs config.pbtxt names, with its dtypes and dims."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, without_module

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="pip install 'tritonclient[grpc]'")
text_format = pytest.importorskip("google.protobuf.text_format")

from runtime.artifact import load_artifact  # noqa: E402
from zoo.app.triton import TritonOptions, example_sizes, export_triton  # noqa: E402
from zoo.app.cli import main  # noqa: E402
from zoo.spec.families import Role  # noqa: E402

# Triton's DataType -> numpy
NUMPY = {"TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_BOOL": np.bool_}
FAMILIES = {"gpt2-tiny": ["gpt2-tiny"], "bert-tiny": ["bert-tiny"], "t5-tiny": ["t5-tiny_encoder", "t5-tiny_decoder"]}


def parse(path: Path):
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def type_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repos(tiny_artifacts, tmp_path_factory):
    """Each of the three families exported once: name -> (repo, artifact, options)."""
    root = tmp_path_factory.mktemp("triton")
    options = {
        "gpt2-tiny": TritonOptions(max_batch_size=8, instances=2, kind="gpu", max_queue_delay_us=250, warmup=True),
        "bert-tiny": TritonOptions(max_batch_size=16, preferred_batch_sizes=(4, 16), kind="cpu", threads=2),
        "t5-tiny": TritonOptions(max_batch_size=4, kind="auto", graph_optimization="basic", warmup=True),
    }
    out = {}
    for name, opts in options.items():
        art = load_artifact(tiny_artifacts[name])
        result = export_triton(art.folder, root / name, opts)
        assert [m.name for m in result.models] == FAMILIES[name]
        out[name] = (root / name, art, opts)
    return out


# --------------------------------------------------------------------------- config.pbtxt against the manifest


@pytest.mark.parametrize("name", list(FAMILIES))
def test_configs_parse_and_match_the_manifest(repos, name):
    repo, art, opts = repos[name]
    graphs = {g.name: g for g in art.graphs}
    assert sorted(p.name for p in repo.iterdir()) == sorted([*FAMILIES[name], "README.md"])
    for model in FAMILIES[name]:
        graph = graphs["model" if model == name else model.rsplit("_", 1)[1]]
        config = parse(repo / model / "config.pbtxt")
        assert config.name == model
        assert config.backend == "onnxruntime" and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == opts.max_batch_size
        assert config.version_policy.WhichOneof("policy_choice") == "latest"
        assert config.version_policy.latest.num_versions == 1
        for declared, tensors in ((config.input, graph.inputs), (config.output, graph.outputs)):
            assert [t.name for t in declared] == [t.name for t in tensors]
            for d, t in zip(declared, tensors):
                assert type_name(d.data_type) == {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}[t.dtype]
                assert t.axes[0] == "batch"
                assert list(d.dims) == [a if isinstance(a, int) else -1 for a in t.axes[1:]], d.name
        batching = config.dynamic_batching
        assert config.HasField("dynamic_batching")
        assert list(batching.preferred_batch_size) == list(opts.batch_sizes())
        assert all(1 <= b <= opts.max_batch_size for b in batching.preferred_batch_size)
        assert batching.max_queue_delay_microseconds == opts.max_queue_delay_us
        [group] = config.instance_group
        assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == {"gpu": "KIND_GPU", "cpu": "KIND_CPU", "auto": "KIND_AUTO"}[opts.kind]
        assert group.count == opts.instances
        assert config.optimization.graph.level == {"all": 0, "extended": 1, "basic": -1, "off": 2}[opts.graph_optimization]
        assert config.parameters["intra_op_thread_count"].string_value == str(opts.threads)
        assert len(config.model_warmup) == (1 if opts.warmup else 0)


def test_decoder_configs_carry_the_kv_cache(repos):
    for name, model in (("gpt2-tiny", "gpt2-tiny"), ("t5-tiny", "t5-tiny_decoder")):
        repo, art, _ = repos[name]
        cache = art.cache
        config = parse(repo / model / "config.pbtxt")
        inputs = {t.name: list(t.dims) for t in config.input}
        outputs = {t.name: list(t.dims) for t in config.output}
        for i in range(cache.layers):
            for kind in ("key", "value"):
                assert inputs[Role.PAST.name_of(i, kind)] == [cache.kv_heads, -1, cache.head_dim]
                assert outputs[Role.PRESENT.name_of(i, kind)] == [cache.kv_heads, -1, cache.head_dim]
        assert outputs["logits"] == [-1, art.model["vocab_size"]]
    encoder = parse(repos["t5-tiny"][0] / "t5-tiny_encoder" / "config.pbtxt")
    assert {t.name for t in encoder.output} >= {"encoder_hidden_states", "cross.0.key", "cross.0.value"}
    bert = parse(repos["bert-tiny"][0] / "bert-tiny" / "config.pbtxt")
    assert not any(Role.of(t.name) is not None for t in (*bert.input, *bert.output))


def test_config_pbtxt_is_the_model_config_message(repos, tiny_artifacts):
    """A comment header, then ModelConfig in text format that parses back to the same text;
    a tensor with only the batch axis: dims [1] and an empty reshape."""
    from zoo.app.triton import model_config
    from zoo.spec.contract import GraphSpec, TensorSpec

    repo, art, opts = repos["gpt2-tiny"]
    text = (repo / "gpt2-tiny" / "config.pbtxt").read_text(encoding="utf-8")
    header, body = text.split("\n\n", 1)
    assert all(line.startswith("# ") for line in header.splitlines()) and "zoo export-triton" in header
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert text_format.MessageToString(config) == body
    assert (config.name, config.platform, config.backend, config.max_batch_size) == ("gpt2-tiny", "onnxruntime_onnx", "onnxruntime", 8)
    assert [t.name for t in config.input] == art.graphs[0].input_names
    assert [t.name for t in config.output] == [t.name for t in art.graphs[0].outputs]
    declared = {t.name: (list(t.dims), type_name(t.data_type)) for t in (*config.input, *config.output)}
    assert declared["input_ids"] == ([-1], "TYPE_INT64") and declared["logits"] == ([-1, art.model["vocab_size"]], "TYPE_FP32")
    assert declared["past.0.key"] == ([art.cache.kv_heads, -1, art.cache.head_dim], "TYPE_FP32")
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [("zeros", 1)]
    graph = GraphSpec("model", "model.onnx", (TensorSpec("input_ids", "int64", ("batch", "seq")),), (TensorSpec("score", "float32", ("batch",)),))
    scorer = text_format.Parse(model_config("scorer", graph, art, opts), model_config_pb2.ModelConfig())
    assert list(scorer.output[0].dims) == [1] and scorer.output[0].HasField("reshape") and not scorer.output[0].reshape.shape
    assert not scorer.input[0].HasField("reshape")


def test_without_tritonclient_the_export_says_what_to_install(tiny_artifacts, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # its import fails, as if not installed
    assert "pip install 'transformer-zoo[triton]'" in _fails(capsys, str(tiny_artifacts["gpt2-tiny"]), "-o", str(tmp_path / "r"))
    assert not list(tmp_path.iterdir())


def test_options_reach_the_config(tiny_artifacts, tmp_path):
    opts = TritonOptions(max_batch_size=3, kind="gpu", gpus=(0, 1), instances=4, graph_optimization="off", name="g2")
    export_triton(tiny_artifacts["gpt2-tiny"], tmp_path / "r", opts)
    config = parse(tmp_path / "r" / "g2" / "config.pbtxt")
    assert config.name == "g2" and config.max_batch_size == 3
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 3]
    assert list(config.instance_group[0].gpus) == [0, 1] and config.instance_group[0].count == 4
    assert config.optimization.graph.level == 2


def test_graph_files_are_the_artifacts_bytes(repos, tiny_artifacts, tmp_path):
    for name in FAMILIES:
        repo, art, _ = repos[name]
        for model in FAMILIES[name]:
            graph = "model" if model == name else model.rsplit("_", 1)[1]
            source = art.manifest["graphs"][graph]["files"][0]
            copied = repo / model / "1" / "model.onnx"
            assert sha256(copied) == art.manifest["files"][source]["sha256"]
            assert sorted(p.name for p in (repo / model / "1").iterdir()) == ["model.onnx"]
    # --link: the same bytes, hard-linked where the filesystem allows
    result = export_triton(tiny_artifacts["gpt2-tiny"], tmp_path / "linked", TritonOptions(link=True))
    linked = tmp_path / "linked" / "gpt2-tiny" / "1" / "model.onnx"
    assert sha256(linked) == load_artifact(tiny_artifacts["gpt2-tiny"]).manifest["files"]["model.onnx"]["sha256"]
    if result.linked:
        assert linked.stat().st_ino == (tiny_artifacts["gpt2-tiny"] / "model.onnx").stat().st_ino


def test_external_data_is_copied_beside_the_graph(tiny_artifacts, tmp_path):
    """A graph saved with external data: its data file goes next to model.onnx, under its
    own name (the location recorded in the graph), and ONNX Runtime loads it from there."""
    import onnx

    from runtime.artifact import sha256_file

    art = tmp_path / "art"

    shutil.copytree(tiny_artifacts["bert-tiny"], art)
    proto = onnx.load(art / "model.onnx")
    onnx.save_model(proto, art / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=1024)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["graphs"]["model"]["files"] = ["model.onnx", "model.onnx.data"]
    for f in ("model.onnx", "model.onnx.data"):
        manifest["files"][f] = {"sha256": sha256_file(art / f), "bytes": (art / f).stat().st_size}
    (art / "manifest.json").write_text(json.dumps(manifest))
    export_triton(art, tmp_path / "repo")
    version = tmp_path / "repo" / "bert-tiny" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert sha256(version / "model.onnx.data") == manifest["files"]["model.onnx.data"]["sha256"]
    feeds = {"input_ids": np.array([[1, 2, 3]], dtype=np.int64), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    got = _ort(version / "model.onnx").run(["logits"], feeds)[0]
    want = _ort(tiny_artifacts["bert-tiny"] / "model.onnx").run(["logits"], feeds)[0]
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- a Triton-like client


def _ort(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _request(config, art, model_graph, batch: int, sizes: dict[str, int], fill) -> dict[str, np.ndarray]:
    """The inputs a client builds from config.pbtxt alone: names, dtypes, batch + dims,
    each -1 given a concrete size (which one: the manifest's axis name)."""
    axes = {t.name: t.axes for t in model_graph.inputs}
    feeds = {}
    for t in config.input:
        dims = [batch] + [d if d != -1 else sizes[axes[t.name][i + 1]] for i, d in enumerate(t.dims)]
        feeds[t.name] = fill(t.name, dims, NUMPY[type_name(t.data_type)])
    return feeds


def _check_outputs(config, outputs: list[np.ndarray], batch: int) -> None:
    for t, value in zip(config.output, outputs):
        assert value.dtype == NUMPY[type_name(t.data_type)], t.name
        assert value.shape[0] == batch and len(value.shape) == len(t.dims) + 1, (t.name, value.shape)
        assert all(d == -1 or d == s for d, s in zip(t.dims, value.shape[1:])), (t.name, value.shape, list(t.dims))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_triton_like_client_runs_each_model(repos, name):
    repo, art, opts = repos[name]
    graphs = {g.name: g for g in art.graphs}
    rng = np.random.default_rng(0)
    sizes = example_sizes(art.model["max_seq_len"])
    vocab = art.model["vocab_size"]

    def fill(tensor, dims, dtype):
        if "mask" in tensor:
            return np.ones(dims, dtype=dtype)
        if dtype == np.int64:
            return rng.integers(0, vocab, size=dims, dtype=np.int64)
        return rng.standard_normal(dims).astype(dtype)

    for model in FAMILIES[name]:
        graph = graphs["model" if model == name else model.rsplit("_", 1)[1]]
        config = parse(repo / model / "config.pbtxt")
        session = _ort(repo / model / "1" / "model.onnx")
        assert sorted(i.name for i in session.get_inputs()) == sorted(t.name for t in config.input)
        batch = min(3, config.max_batch_size)
        feeds = _request(config, art, graph, batch, sizes, fill)
        outputs = session.run([t.name for t in config.output], feeds)
        _check_outputs(config, outputs, batch)
        for warm in config.model_warmup:  # the warm-up request runs as Triton would send it
            feeds = {k: np.zeros([warm.batch_size, *v.dims], dtype=NUMPY[type_name(v.data_type)]) for k, v in warm.inputs.items()}
            assert set(feeds) == {t.name for t in config.input} and all(v.zero_data for v in warm.inputs.values())
            _check_outputs(config, session.run([t.name for t in config.output], feeds), warm.batch_size)


def _greedy_client(repo: Path, model: str, prompt: list[int], steps: int, fixed=None, ids="input_ids", mask="attention_mask") -> list[int]:
    """The loop a Triton client runs: prefill with an empty past, then one request per
    token, present.* fed back as past.*; every name and dtype from config.pbtxt."""
    config = parse(repo / model / "config.pbtxt")
    session = _ort(repo / model / "1" / "model.onnx")
    dtypes = {t.name: NUMPY[type_name(t.data_type)] for t in config.input}
    past = {t.name: np.zeros((1, t.dims[0], 0, t.dims[2]), dtype=dtypes[t.name]) for t in config.input if Role.of(t.name) is Role.PAST}
    out_names = [t.name for t in config.output]
    tokens, new = [], np.array([prompt], dtype=dtypes[ids])
    attention = np.ones((1, len(prompt)), dtype=dtypes[mask])
    for _ in range(steps):
        result = dict(zip(out_names, session.run(out_names, {ids: new, mask: attention, **past, **(fixed or {})})))
        token = int(result["logits"][0, -1].argmax())
        tokens.append(token)
        past = Role.carried(result)
        new = np.array([[token]], dtype=dtypes[ids])
        attention = np.concatenate([attention, np.ones((1, 1), dtype=dtypes[mask])], axis=1)
    return tokens


def test_client_driven_generation_matches_the_zoo_runtime(repos):
    from runtime.generate import GenerationConfig, Generator

    repo, art, _ = repos["gpt2-tiny"]
    prompt = [5, 17, 42, 7]
    want = Generator(art.folder).generate([prompt], GenerationConfig(max_new_tokens=6, eos=())).tokens[0]
    assert _greedy_client(repo, "gpt2-tiny", prompt, 6) == want

    repo, art, _ = repos["t5-tiny"]
    encoder = _ort(repo / "t5-tiny_encoder" / "1" / "model.onnx")
    src = np.array([prompt], dtype=np.int64)
    names = [t.name for t in parse(repo / "t5-tiny_encoder" / "config.pbtxt").output]
    enc = dict(zip(names, encoder.run(names, {"input_ids": src, "attention_mask": np.ones_like(src)})))
    fixed = Role.CROSS.pick(enc) | {"encoder_attention_mask": np.ones_like(src)}
    start = next((t for t in (art.model["tokens"].get(k) for k in ("decoder_start", "pad", "bos")) if t is not None), 0)
    got = _greedy_client(repo, "t5-tiny_decoder", [start], 5, fixed, ids="decoder_input_ids", mask="decoder_attention_mask")
    want = Generator(art.folder).generate([prompt], GenerationConfig(max_new_tokens=5, eos=())).tokens[0]
    assert got == want


def test_readme_says_how_to_serve_and_who_drives_the_loop(repos):
    text = (repos["gpt2-tiny"][0] / "README.md").read_text()
    assert "tritonserver --model-repository=/models" in text and "-v $REPO:/models" in text
    assert "past.{i}" in text and "present.{i}" in text and "zoo generate" in text
    for t in load_artifact(repos["gpt2-tiny"][1].folder).graphs[0].inputs:
        assert f"`{t.name}`" in text
    t5 = (repos["t5-tiny"][0] / "README.md").read_text()
    assert "t5-tiny_encoder" in t5 and "t5-tiny_decoder" in t5 and "cross.{i}" in t5
    assert "loop" not in (repos["bert-tiny"][0] / "README.md").read_text().split("## Calling it")[1].split("## Scaling")[0]


# --------------------------------------------------------------------------- the command line


def test_cli_writes_the_repository(tiny_artifacts, tmp_path, capsys):
    repo = tmp_path / "models"
    assert main(["export-triton", str(tiny_artifacts["t5-tiny"]), "-o", str(repo), "--json", "--instances", "2", "--kind", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in report["models"]] == ["t5-tiny_encoder", "t5-tiny_decoder"]
    assert parse(repo / "t5-tiny_decoder" / "config.pbtxt").instance_group[0].count == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def _fails(capsys, *argv: str) -> str:
    assert main(["export-triton", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_cli_refuses_bad_input_in_one_line(tiny_artifacts, tmp_path, capsys):
    art = str(tiny_artifacts["gpt2-tiny"])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not an artifact")
    assert "manifest.json" in _fails(capsys, str(plain), "-o", str(tmp_path / "r1"))
    assert "no such artifact folder" in _fails(capsys, str(tmp_path / "missing"), "-o", str(tmp_path / "r2"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert "--force" in _fails(capsys, art, "-o", str(busy))
    assert (busy / "keep.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1
    assert "--max-batch-size" in _fails(capsys, art, "-o", str(tmp_path / "r3"), "--max-batch-size", "0")
    assert "--preferred-batch-sizes" in _fails(capsys, art, "-o", str(tmp_path / "r4"), "--preferred-batch-sizes", "16")
    assert "--gpus" in _fails(capsys, art, "-o", str(tmp_path / "r5"), "--gpus", "0")
    assert "contain" in _fails(capsys, art, "-o", str(Path(art) / "triton"))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_force_replaces_and_an_empty_folder_is_fine(tiny_artifacts, tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(["export-triton", str(tiny_artifacts["bert-tiny"]), "-o", str(repo)]) == 0
    (repo / "stale.txt").write_text("old")
    assert main(["export-triton", str(tiny_artifacts["gpt2-tiny"]), "-o", str(repo), "--force"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "gpt2-tiny"]
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]
    capsys.readouterr()


def test_broken_artifact_is_refused_and_leaves_nothing(tiny_artifacts, tmp_path, capsys):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts["gpt2-tiny"], art)
    data = bytearray((art / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (art / "model.onnx").write_bytes(bytes(data))
    assert "sha256" in _fails(capsys, str(art), "-o", str(tmp_path / "repo"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    (art / "manifest.json").write_text("{not json")
    assert "manifest" in _fails(capsys, str(art), "-o", str(tmp_path / "repo"))


def test_export_needs_no_torch(tiny_artifacts, tmp_path):
    """The export runs where torch is not installed; the zoo/app/triton/ package itself imports
    neither torch nor onnxruntime, and importing it loads no onnxruntime."""
    import ast

    for path in sorted((ROOT / "zoo" / "app" / "triton").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"torch", "onnxruntime", "onnx", "compiler"}, (path.name, imported)
    probe = "import sys, zoo.app.triton\nassert 'onnxruntime' not in sys.modules, 'onnxruntime imported'\n"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    script = without_module("torch", "compiler") + (
        "import sys\nfrom zoo.app.cli import main\n"
        f"code = main(['export-triton', {str(tiny_artifacts['t5-tiny'])!r}, '-o', {str(tmp_path / 'repo')!r}])\n"
        "assert 'torch' not in sys.modules\nsys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "repo" / "t5-tiny_decoder" / "config.pbtxt").is_file()
