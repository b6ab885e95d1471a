"""manifest.json typed on both sides: the build's pydantic model (zoo.app.manifest) and
the runtime's dataclasses (runtime.manifest) name the same fields; every field a built
artifact's manifest has is read back with its value; a field of the wrong type or a
required one missing is refused in one line naming manifest.json and the field."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import pytest
from pydantic import BaseModel, ValidationError

import runtime.manifest as reader
import zoo.app.manifest as writer
from runtime.artifact import load_artifact
from zoo.spec.errors import ArtifactError

PAIRS = [
    (writer.ArtifactManifest, reader.Manifest),
    (writer.GraphEntry, reader.GraphEntry),
    (writer.TensorEntry, reader.TensorEntry),
    (writer.FileEntry, reader.FileEntry),
    (writer.Parameters, reader.Parameters),
    (writer.Tokens, reader.Tokens),
    (writer.ModelEntry, reader.ModelEntry),
    (writer.CacheEntry, reader.CacheEntry),
    (writer.BuildEntry, reader.BuildEntry),
]


@pytest.mark.parametrize("model, dataclass", PAIRS, ids=[w.__name__ for w, _ in PAIRS])
def test_writer_and_reader_name_the_same_fields(model, dataclass):
    assert list(model.model_fields) and dataclasses.is_dataclass(dataclass)
    assert set(model.model_fields) == {f.name for f in dataclasses.fields(dataclass)}


def test_every_writer_model_has_a_reader():
    models = {c for c in vars(writer).values() if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == writer.__name__}
    assert models - {writer._Closed} == {w for w, _ in PAIRS}


def _plain(value):
    """A read manifest as JSON values: dataclasses as objects, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(read, raw, where="manifest"):
    """Every field of ``raw`` (the JSON) is read with its value; what is not in it is null."""
    if isinstance(raw, dict) and isinstance(read, dict):
        for key in raw:
            assert key in read, f"{where}.{key} is written but not read"
            _same(read[key], raw[key], f"{where}.{key}")
        for key in set(read) - set(raw):
            assert read[key] in (None, False, "fp32", [], {}), f"{where}.{key} is read but not written: {read[key]!r}"
    else:
        assert read == raw or (read != read and raw != raw), where  # NaN is itself


def test_a_built_manifest_is_read_field_by_field(tiny_artifacts):
    for name, folder in tiny_artifacts.items():
        art = load_artifact(folder)
        assert isinstance(art.info, reader.Manifest)
        _same(_plain(art.info), art.manifest)


def test_the_writer_model_reproduces_a_built_manifest(tiny_artifacts):
    for name, folder in tiny_artifacts.items():
        raw = json.loads((folder / "manifest.json").read_text())
        assert writer.ArtifactManifest.model_validate(raw).to_json() == raw, name


def test_an_optimized_int8_manifest_is_read_field_by_field(tmp_path):
    import zoo
    from zoo.app.build import BuildOptions, build_artifact

    folder, manifest, _ = build_artifact(zoo.load("gpt2-tiny"), tmp_path / "a", options=BuildOptions(optimize=True, precision="int8"))
    art = load_artifact(folder)
    assert art.info.precision == "int8" and art.info.build.lowering and art.info.graphs["model"].nodes_before_optimize
    _same(_plain(art.info), manifest)
    assert writer.ArtifactManifest.model_validate(manifest).to_json() == manifest


# --------------------------------------------------------------------------- refusals

WRONG = {
    "name": (lambda m: m.update(name=3), "manifest 'name' is a int, not a string"),
    "model.vocab_size": (lambda m: m["model"].update(vocab_size="61"), "model 'vocab_size' is a str, not an integer"),
    "model.tokens.eos": (lambda m: m["model"]["tokens"].update(eos=["2"]), "model.tokens 'eos' is not a list of integers"),
    "kv_cache.layers": (lambda m: m["kv_cache"].update(layers=2.0), "kv_cache 'layers' is a float, not an integer"),
    "graphs.nodes": (lambda m: m["graphs"]["model"].update(nodes="93"), "graphs['model'] 'nodes' is a str, not an integer"),
    "graphs.inputs": (lambda m: m["graphs"]["model"]["inputs"][0].update(shape="batch"), "graphs['model'] 'inputs' is not a list of {name, dtype, shape}"),
    "seed": (lambda m: m.update(seed=True), "manifest 'seed' is a bool, not an integer"),
    "parity": (lambda m: m.update(parity=[1]), "manifest 'parity' is a list, not an object"),
    "build.optimize": (lambda m: m["build"].update(optimize="no"), "build 'optimize' is a str, not a boolean"),
    "build.precision": (lambda m: m["build"].update(precision=16), "build 'precision' is a int, not a string or an object"),
    "packages": (lambda m: m["packages"].update(torch=2), "manifest 'packages' ['torch'] is a int, not a string"),
    "build_seconds": (lambda m: m["build_seconds"].update(export="1s"), "manifest 'build_seconds' ['export'] is a str, not a number"),
    "files.bytes": (lambda m: m["files"]["model.onnx"].update(bytes="1"), "files['model.onnx']: bytes '1' is not a size"),
}
MISSING = {
    "family": (lambda m: m.pop("family"), "manifest lacks 'family'"),
    "model": (lambda m: m.pop("model"), "manifest lacks 'model'"),
    "model.max_seq_len": (lambda m: m["model"].pop("max_seq_len"), "model lacks 'max_seq_len'"),
    "kv_cache.head_dim": (lambda m: m["kv_cache"].pop("head_dim"), "kv_cache lacks 'head_dim'"),
    "parameters.total": (lambda m: m["parameters"].pop("total"), "parameters lacks 'total'"),
    "files.sha256": (lambda m: m["files"]["model.onnx"].pop("sha256"), "files['model.onnx'] has no sha256"),
    "graphs.files": (lambda m: m["graphs"]["model"].pop("files"), "graphs['model'] has no list of files"),
}


@pytest.fixture(scope="module")
def gpt2_manifest(tiny_artifacts):
    return json.loads((tiny_artifacts["gpt2-tiny"] / "manifest.json").read_text())


@pytest.mark.parametrize("case", [*WRONG, *MISSING])
def test_a_wrong_or_missing_field_is_refused_in_one_line(case, gpt2_manifest, tmp_path):
    break_it, needle = {**WRONG, **MISSING}[case]
    m = copy.deepcopy(gpt2_manifest)
    break_it(m)
    with pytest.raises(ArtifactError) as err:
        reader.Manifest.from_json(m, tmp_path / "manifest.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'manifest.json'}: "), message
    assert needle in message, (needle, message)


def test_load_artifact_refuses_a_mistyped_field(tiny_artifacts, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts["gpt2-tiny"], art)
    m = json.loads((art / "manifest.json").read_text())
    m["kv_cache"]["kv_heads"] = "2"
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"manifest\.json: kv_cache 'kv_heads' is a str, not an integer$"):
        load_artifact(art)


@pytest.mark.parametrize("change", ["misspelt", "mistyped", "missing"])
def test_the_writer_refuses_a_misspelt_mistyped_or_missing_field(change, gpt2_manifest):
    m = copy.deepcopy(gpt2_manifest)
    if change == "misspelt":
        m["kv_cache"]["kv_head"] = m["kv_cache"].pop("kv_heads")
    elif change == "mistyped":
        m["graphs"]["model"]["nodes"] = "93"
    else:
        del m["build"]["target"]
    with pytest.raises(ValidationError):
        writer.ArtifactManifest.model_validate(m)
