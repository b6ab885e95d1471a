"""Artifacts are written atomically and verified on load.

A build killed at any stage (tests/killed_build.py, a child process that SIGKILLs
itself at that stage) leaves at the target nothing, the previous artifact intact,
or the new artifact complete; the next build cleans up and succeeds. A flipped
byte in any file, a manifest of another format version or with file names that
lead out of the folder is refused, naming the file, through the API and the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import zoo
from zoo.app.build import build_artifact
from runtime import load
from runtime.artifact import MANIFEST_MAX_BYTES, load_artifact, sha256_file
from tests.conftest import ROOT
from zoo.app.cli import main
from zoo.spec.contract import FORMAT_VERSION
from zoo.spec.errors import ArtifactError, ParityError

KILLED_BUILD = ROOT / "tests" / "killed_build.py"
MARK = "OLD-ARTIFACT"  # a file the manifest does not list: tells the old artifact from a new one


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_artifacts):
    """A copy of the session's gpt2-tiny artifact (tests/conftest.py: the same build, seed 0)."""
    folder = tmp_path_factory.mktemp("art") / "gpt2-tiny"
    shutil.copytree(tiny_artifacts["gpt2-tiny"], folder)
    return folder


def copied_export(source):
    """An export_all for zoo.app.build that copies the graphs of the artifact at ``source``
    (for tests about what happens around the export, not about the export)."""
    graphs = json.loads((source / "manifest.json").read_text())["graphs"]

    def export_all(model, spec, folder, on_graph=None):
        for g in graphs.values():
            for name in g["files"]:
                shutil.copyfile(source / name, folder / name)
        return graphs

    return export_all


def killed_build(spec: str, target, stage: str, *, source=None, force=False, parity=False) -> subprocess.CompletedProcess:
    """Run tests/killed_build.py: a child process that builds and SIGKILLs itself at ``stage``."""
    cmd = [sys.executable, str(KILLED_BUILD), spec, str(target), stage]
    cmd += ["--source", str(source)] if source is not None else []
    cmd += ["--force"] if force else []
    cmd += [] if parity else ["--no-parity"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def assert_killed(proc: subprocess.CompletedProcess, stage: str) -> None:
    assert proc.returncode == -signal.SIGKILL, f"stage {stage}: not killed there (exit {proc.returncode}): {proc.stderr[-3000:]}"


def leftovers(target) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def cli_error(capsys, *argv) -> str:
    """Run the CLI in this process on a broken artifact: exit code 2, one line ``error: ...``."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (argv, code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return err


def assert_cli_refuses(capsys, folder, *needles: str) -> None:
    for argv in (["run", str(folder), "--repeat", "0"], ["generate", str(folder), "--ids", "1,2"]):
        err = cli_error(capsys, *argv)
        for needle in needles:
            assert needle in err, (argv, needle, err)


def test_identical_rebuild_is_up_to_date(built):
    folder, manifest, was_built = build_artifact(zoo.load("gpt2-tiny"), built)
    assert not was_built and folder == built


# --- killed builds ------------------------------------------------------------------


def test_first_build_killed_at_each_stage_leaves_nothing_and_rebuild_works(built, tmp_path, capsys):
    target = tmp_path / "gpt2-tiny"
    for stage in ("export", "parity", "manifest", "manifest-tmp", "swap"):
        assert_killed(killed_build("gpt2-tiny", target, stage, source=built, parity=stage == "parity"), stage)
        assert not target.exists(), stage
        [partial] = leftovers(target)  # the earlier killed build's partial folder was swept by this one
        assert partial.startswith(".gpt2-tiny.partial-"), stage
        with pytest.raises(ArtifactError, match="no such artifact folder: its build did not finish"):
            load_artifact(target)
    assert (tmp_path / partial / "manifest.json").is_file()  # killed with everything written, before the rename
    assert_cli_refuses(capsys, target, f"{target}: no such artifact folder")
    folder, manifest, was_built = build_artifact(zoo.load("gpt2-tiny"), target)
    assert was_built and manifest["parity"]["passed"]
    load_artifact(target)
    assert leftovers(target) == []


def test_rebuild_killed_at_each_stage_keeps_the_old_artifact_or_puts_the_new_one_in_place(built, tmp_path, capsys):
    target = tmp_path / "gpt2-tiny"
    shutil.copytree(built, target)
    (target / MARK).write_text("the previous artifact")
    old_id = load_artifact(target).manifest["artifact_id"]
    for stage in ("export", "manifest-tmp", "swap"):
        assert_killed(killed_build("gpt2-tiny", target, stage, source=built, force=True), stage)
        assert load_artifact(target).manifest["artifact_id"] == old_id, stage  # complete, verified
        assert (target / MARK).is_file(), stage

    # killed between the two renames: the old artifact is only in .gpt2-tiny.old-PID-TAG
    assert_killed(killed_build("gpt2-tiny", target, "between-renames", source=built, force=True), "between-renames")
    assert not target.exists()
    [old] = [name for name in leftovers(target) if name.startswith(".gpt2-tiny.old-")]
    assert (tmp_path / old / MARK).is_file()
    with pytest.raises(ArtifactError, match=f"interrupted while replacing it left the previous artifact in .*{old}"):
        load_artifact(target)
    assert_cli_refuses(capsys, target, f"{target}: no such artifact folder", old)
    # the next build puts it back: an identical build finds the old artifact up to date
    folder, manifest, was_built = build_artifact(zoo.load("gpt2-tiny"), target)
    assert not was_built and manifest["artifact_id"] == old_id and (target / MARK).is_file()
    assert leftovers(target) == []
    # and re-running the interrupted build succeeds
    folder, manifest, was_built = build_artifact(zoo.load("gpt2-tiny"), target, force=True)
    assert was_built and not (target / MARK).exists()
    load_artifact(target)
    assert leftovers(target) == []

    # killed after the swap, before the old artifact is deleted: the new one is in place, complete
    (target / MARK).write_text("the previous artifact")
    assert_killed(killed_build("gpt2-tiny", target, "delete-old", source=built, force=True), "delete-old")
    load_artifact(target)
    assert not (target / MARK).exists()
    [old] = leftovers(target)
    assert old.startswith(".gpt2-tiny.old-") and (tmp_path / old / MARK).is_file()
    folder, manifest, was_built = build_artifact(zoo.load("gpt2-tiny"), target)
    assert not was_built
    assert leftovers(target) == []  # the orphaned old artifact was deleted: a complete one is in place


@pytest.fixture(scope="module")
def t5_built(tmp_path_factory):
    """t5-tiny killed while exporting its second graph, then built again: the folder and what was seen."""
    target = tmp_path_factory.mktemp("t5") / "t5-tiny"
    proc = killed_build("t5-tiny", target, "second-graph")
    seen = {"proc": proc, "exists": target.exists(), "leftovers": leftovers(target)}
    seen["partial files"] = sorted(p.name for p in (target.parent / seen["leftovers"][0]).iterdir()) if seen["leftovers"] else []
    try:
        load_artifact(target)
        seen["load"] = "loaded"
    except ArtifactError as e:
        seen["load"] = str(e)
    seen["built"] = build_artifact(zoo.load("t5-tiny"), target)[2]
    seen["leftovers after"] = leftovers(target)
    return target, seen


def test_encoder_decoder_build_killed_between_its_graphs(t5_built):
    target, seen = t5_built
    assert_killed(seen["proc"], "second-graph")
    assert not seen["exists"]
    assert seen["partial files"] == ["encoder.onnx"]  # one graph written, the other not
    assert "no such artifact folder" in seen["load"]
    assert seen["built"] and seen["leftovers after"] == []
    load_artifact(target)


FAILED_REPORT = {"passed": False, "precision": "fp32", "tolerance": {"rule": "a rule"}, "failures": ["logits: beyond"]}


def test_failed_build_leaves_nothing(built, tmp_path, monkeypatch):
    import zoo.app.build as art

    monkeypatch.setattr(art, "export_all", copied_export(built))
    monkeypatch.setattr(art, "parity", lambda *a, **k: FAILED_REPORT)
    with pytest.raises(ParityError, match="no artifact written"):
        build_artifact(zoo.load("gpt2-tiny"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_failed_rebuild_keeps_the_old_artifact(built, tmp_path, monkeypatch):
    import zoo.app.build as art

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    monkeypatch.setattr(art, "export_all", copied_export(built))
    monkeypatch.setattr(art, "parity", lambda *a, **k: FAILED_REPORT)
    with pytest.raises(ParityError):
        build_artifact(zoo.load("gpt2-tiny"), copy, force=True)
    load_artifact(copy)  # still complete and intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_refuses_to_overwrite_a_folder_that_is_not_an_artifact(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("user data")
    with pytest.raises(ArtifactError, match="holds no zoo artifact"):
        build_artifact(zoo.load("gpt2-tiny"), precious)
    assert (precious / "notes.txt").read_text() == "user data"


def test_sweep_touches_only_its_own_folders_of_dead_builds(built, tmp_path, monkeypatch):
    import zoo.app.build as art

    monkeypatch.setattr(art, "export_all", copied_export(built))
    target = tmp_path / "gpt2-tiny"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    keep = [
        f".gpt2-tiny.partial-{os.getppid()}-0123abcd",  # a live process: another build in flight
        f".gpt2-tiny.old-{os.getppid()}-0123abcd",
        f".gpt2-tiny.partial-{dead_pid}-notahex!",  # not the exact naming
        f".gpt2-tiny.partial-{dead_pid}",
        f".gpt2-tiny-2.partial-{dead_pid}-0123abcd",  # another target's
        f"gpt2-tiny.partial-{dead_pid}-0123abcd",  # not hidden
        "notes",
    ]
    for name in keep:
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").write_text("user data")
    swept = tmp_path / f".gpt2-tiny.partial-{dead_pid}-0123abcd"
    swept.mkdir()
    build_artifact(zoo.load("gpt2-tiny"), target, check_parity=False)
    assert not swept.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "gpt2-tiny"])
    assert all((tmp_path / name / "data").read_text() == "user data" for name in keep)


# --- damaged artifacts ----------------------------------------------------------------

FILES = {"gpt2-tiny": ("model.onnx", "spec.yaml"), "t5-tiny": ("encoder.onnx", "decoder.onnx", "spec.yaml")}


@pytest.mark.parametrize("spec,name", [(spec, name) for spec, names in FILES.items() for name in names])
def test_flipped_byte_in_any_file_is_refused_naming_the_file(spec, name, request, tmp_path, capsys):
    source = request.getfixturevalue("built") if spec == "gpt2-tiny" else request.getfixturevalue("t5_built")[0]
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    assert sorted(load_artifact(copy).manifest["files"]) == sorted(FILES[spec])  # every file listed is tested
    raw = bytearray((copy / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=f"{name}: sha256 differs"):
        load(copy)
    load_artifact(copy, verify=False)  # unverified, it opens
    assert_cli_refuses(capsys, copy, f"{name}: sha256 differs")


def _rename_graph_file(m, folder, new):
    m["files"][new] = m["files"].pop("model.onnx")
    m["graphs"]["model"]["files"] = [new]


def _link_outside(m, folder):
    outside = folder.parent / "outside.onnx"
    shutil.copyfile(folder / "model.onnx", outside)
    (folder / "linked.onnx").symlink_to(outside)
    _rename_graph_file(m, folder, "linked.onnx")


BROKEN = {
    "newer format version": (
        lambda m, f: m.update(format_version=FORMAT_VERSION + 1),
        [f"format version {FORMAT_VERSION + 1} is newer", f"needs format version {FORMAT_VERSION}", "upgrade the zoo"],
    ),
    "older format version": (
        lambda m, f: m.update(format_version=FORMAT_VERSION - 1),
        [f"format version {FORMAT_VERSION - 1} is older", f"needs format version {FORMAT_VERSION}", "rebuild the artifact with this zoo"],
    ),
    "no format version": (lambda m, f: m.pop("format_version"), ["format version None", f"needs format version {FORMAT_VERSION}"]),
    "absolute file name": (lambda m, f: _rename_graph_file(m, f, str(f / "model.onnx")), ["model.onnx' is an absolute path"]),
    "'..' in a file name": (lambda m, f: _rename_graph_file(m, f, "../copy/model.onnx"), ["files['../copy/model.onnx']", "'..' component"]),
    "'..' in a graph's files": (
        lambda m, f: m["graphs"]["model"].update(files=["sub/../../model.onnx"]),
        ["graphs['model'] file", "sub/../../model.onnx", "'..' component"],
    ),
    "absolute graph file": (lambda m, f: m["graphs"]["model"].update(files=["/etc/passwd"]), ["graphs['model'] file", "'/etc/passwd' is an absolute path"]),
    "graph file not hashed": (lambda m, f: m["files"].pop("model.onnx"), ["'model.onnx' is not among the manifest's files"]),
    "link out of the folder": (_link_outside, ["'linked.onnx' is a link to", "outside.onnx, outside the artifact folder"]),
    "entry not an object": (lambda m, f: m["files"].update({"model.onnx": "abc"}), ["files['model.onnx'] is a str"]),
    "entry without sha256": (lambda m, f: m["files"]["model.onnx"].pop("sha256"), ["files['model.onnx'] has no sha256"]),
    "files not an object": (lambda m, f: m.update(files=["model.onnx"]), ["manifest 'files' is a list"]),
    "tokenizer out of the folder": (lambda m, f: m.update(tokenizer="../tokenizer.json"), ["tokenizer: file name '../tokenizer.json'"]),
    "truncated file": (
        lambda m, f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:1000]),
        ["model.onnx: 1,000 bytes, the manifest records"],
    ),
    "missing file": (lambda m, f: (f / "spec.yaml").unlink(), ["file spec.yaml listed in the manifest is missing"]),
    "manifest too big": (None, ["manifest.json: 17,", "more than a manifest may have (16 MiB)"]),
    "manifest not an object": (None, ["manifest is not a JSON object"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_manifest_is_refused_naming_the_entry(case, built, tmp_path, capsys):
    break_it, needles = BROKEN[case]
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if case == "manifest too big":
        text = json.dumps(manifest) + " " * (MANIFEST_MAX_BYTES + (1 << 20))
    elif case == "manifest not an object":
        text = json.dumps([manifest])
    else:
        break_it(manifest, copy)
        text = json.dumps(manifest)
    (copy / "manifest.json").write_text(text)
    with pytest.raises(ArtifactError) as err:
        load_artifact(copy)
    assert all(needle in str(err.value) for needle in needles), (needles, str(err.value))
    assert_cli_refuses(capsys, copy, *needles)


def test_link_inside_the_folder_is_accepted(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    (copy / "linked.onnx").symlink_to("model.onnx")
    manifest = json.loads((copy / "manifest.json").read_text())
    _rename_graph_file(manifest, copy, "linked.onnx")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_artifact(copy).path("model") == copy / "linked.onnx"
    assert sha256_file(copy / "linked.onnx") == manifest["files"]["linked.onnx"]["sha256"]
