"""Hostile files given to the command line: each gets a one-line error and exit
code 2, in bounded time and memory, and nothing is written.

Every case runs ``zoo validate`` (and some ``zoo build``) as a person would, in a
process of its own; its wall time and peak RSS (from wait4's rusage) are checked,
and recorded for the summary at the end of the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, record_refusal

SECONDS = 5.0  # wall time of the whole `zoo validate` process, Python start-up included
VALIDATE_RSS_MB = 300  # pydantic + yaml + the zoo is ~60 MB; a bomb that expands would blow past this
BUILD_RSS_MB = 1200  # `zoo build` imports torch before it can refuse a spec too large to allocate


# `python -m zoo ARGS` that writes its peak RSS (VmHWM: this process's own memory, which
# wait4's ru_maxrss is not: that one keeps the pytest parent's size across fork and exec)
CHILD = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.environ["ZOO_TEST_PEAK"], "w") as out:
        out.write(str(kb))
atexit.register(_peak)
from zoo.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def zoo_process(*args, cwd: Path) -> tuple[int, str, str, float, float]:
    """``zoo ARGS`` in a child process -> (exit code, stdout, stderr, seconds, peak RSS MB)."""
    with tempfile.TemporaryDirectory() as scratch:
        peak = Path(scratch) / "peak"
        env = dict(os.environ, PYTHONPATH=str(ROOT), ZOO_QUIET="1", ZOO_TEST_PEAK=str(peak))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                stdin=subprocess.DEVNULL, timeout=60,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"zoo {' '.join(map(str, args))} ran over 60 s") from None
        seconds = time.perf_counter() - t0
        rss = int(peak.read_text()) / 1024 if peak.exists() else float("nan")
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"), seconds, rss


BILLION_LAUGHS = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    + ["name: bomb", "family: decoder-only"]
)


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def hostile_case(name: str, tmp: Path) -> tuple[Path, str]:
    """Create the hostile input ``name`` under ``tmp``: (the path to give the zoo, a fragment
    its error must contain)."""
    w = lambda text, file="spec.yaml": _write(tmp, file, text)  # noqa: E731
    texts = _hostile_texts(tmp / "pwned")
    if name in texts:
        text, fragment = texts[name]
        return w(text), fragment
    return _hostile_file(name, tmp, w)


def _hostile_texts(marker: Path) -> dict[str, tuple[str | bytes, str]]:
    """The cases that are one spec file's contents: name -> (contents, error fragment)."""
    return {
        "billion-laughs": (BILLION_LAUGHS, "alias bomb"),
        "recursive-alias": ("name: loop\ndecoder: &d {layers: 1, next: *d}\n", "nesting deeper"),
        "python-object-tag": (f"name: !!python/object/apply:os.system ['touch {marker}']\n", "tag !!python/object/apply:os.system is not allowed"),
        "python-name-tag": ("name: x\nfamily: !!python/name:os.system\n", "is not allowed"),
        "custom-tag": ("name: !Ref x\n", "tag !Ref is not allowed"),
        "huge-integer-literal": ("name: x\nextends: gpt2-tiny\nvocab_size: " + "9" * 6000 + "\n", "cannot read"),
        "huge-number": ("name: x\nextends: gpt2-tiny\nvocab_size: 100000000000000000000000000000000000000\n", "vocab_size: must be <="),
        "float-overflow": ("name: x\nextends: gpt2-tiny\ndecoder: {norm: {eps: 1e999999}}\n", "decoder.norm.eps: expected a finite number"),
        "nan": ("name: x\nextends: gpt2-tiny\npositional: {kind: rope, theta: .nan}\n", "positional.theta: expected a finite number"),
        "deep-flow-nesting": ("name: x\nd: " + "[" * 100_000 + "]" * 100_000 + "\n", "nesting deeper"),
        "deep-block-nesting": ("name: x\n" + "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n", "nesting deeper"),
        "many-values": ("name: x\nd: [" + ",".join(["0"] * 200_000) + "]\n", "holds more than 10000 values"),
        "oversize": ("name: x\n" + "# padding\n" * 200_000, "larger than 1024 KiB"),
        "long-line": ("name: " + "x" * 900_000 + "\n", "name: must be at most 128 characters"),
        "non-utf8": (b"name: caf\xe9\n", "not UTF-8"),
        "utf16": ("name: x\n".encode("utf-16"), "not UTF-8"),
        "nul-byte": (b"name: x\x00y\n", "is not allowed in YAML"),
        "control-character": (b"name: x\x1by\n", "is not allowed in YAML"),
        "empty-file": (b"", "empty spec file"),
        "only-comments": ("# nothing here\n\n", "empty spec file"),
        "top-level-list": ("- name: x\n", "top level must be a mapping"),
        "two-documents": ("name: a\n---\nname: b\n", "single document"),
        "merge-key": ("base: &b {layers: 2}\nname: x\ndecoder: {<<: *b}\n", "merge keys"),
        "missing-extends": ("name: x\nextends: ./nowhere.yaml\n", "no spec file './nowhere.yaml'"),
        "extends-itself": ("name: me\nextends: spec.yaml\n", "extends cycle"),
    }


def _hostile_file(name: str, tmp: Path, w) -> tuple[Path, str]:
    """The cases that are files of another kind, or several files (extends)."""
    if name == "directory":
        (tmp / "specdir").mkdir()
        return tmp / "specdir", "is a directory"
    if name == "fifo":
        os.mkfifo(tmp / "pipe.yaml")
        return tmp / "pipe.yaml", "not a regular file"
    if name == "device":
        return Path("/dev/zero"), "not a regular file"
    if name == "symlink-loop":
        (tmp / "loop.yaml").symlink_to(tmp / "loop.yaml")
        return tmp / "loop.yaml", "cannot read"
    if name == "missing-file":
        return tmp / "nowhere.yaml", "no such file"
    if name == "extends-cycle":
        w("name: b\nextends: a.yaml\n", "b.yaml")
        return w("name: a\nextends: b.yaml\n", "a.yaml"), "extends cycle"
    if name == "extends-directory":
        (tmp / "d.yaml").mkdir()
        return w("name: x\nextends: d.yaml\n"), "no spec file 'd.yaml'"
    if name == "extends-chain-too-long":
        for i in range(40):
            w(f"name: s{i}\nextends: s{i + 1}.yaml\n", f"s{i}.yaml")
        w("name: s40\nextends: gpt2-tiny\n", "s40.yaml")
        return tmp / "s0.yaml", "extends chain longer than 32"
    if name == "extends-hostile-parent":
        w(BILLION_LAUGHS, "parent.yaml")
        return w("name: child\nextends: parent.yaml\n"), "parent.yaml:1: the spec expands"
    raise KeyError(name)


CASES = [
    "billion-laughs", "recursive-alias", "python-object-tag", "python-name-tag", "custom-tag", "huge-integer-literal",
    "huge-number", "float-overflow", "nan", "deep-flow-nesting", "deep-block-nesting", "many-values", "oversize",
    "long-line", "non-utf8", "utf16", "nul-byte", "control-character", "empty-file", "only-comments",
    "top-level-list", "two-documents", "merge-key", "directory", "fifo", "device", "symlink-loop", "missing-file",
    "missing-extends", "extends-cycle", "extends-itself", "extends-directory", "extends-chain-too-long",
    "extends-hostile-parent",
]


def check_refusal(code: int, out: str, err: str, fragment: str, path: Path) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    assert len(lines[0]) < 400, f"error line of {len(lines[0])} characters"
    assert fragment in err, err
    assert re.match(r"error: [^ :]+(:\d+)?: ", lines[0]), lines[0]  # FILE[:LINE]: first


@pytest.mark.parametrize("case", CASES)
def test_hostile_spec_is_refused_by_validate(case, tmp_path):
    path, fragment = hostile_case(case, tmp_path)
    code, out, err, seconds, rss = zoo_process("validate", path, cwd=tmp_path)
    if seconds >= SECONDS:  # timed again: a hostile file is slow every time, a busy shared machine once
        code, out, err, seconds, rss = zoo_process("validate", path, cwd=tmp_path)
    record_refusal("hostile file: zoo validate (process)", seconds)
    check_refusal(code, out, err, fragment, path)
    assert seconds < SECONDS, f"{case}: refused after {seconds:.1f} s"
    assert rss < VALIDATE_RSS_MB, f"{case}: peak RSS {rss:.0f} MB"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["billion-laughs", "python-object-tag", "huge-number", "fifo", "extends-cycle"])
def test_hostile_spec_is_refused_by_build_and_writes_nothing(case, tmp_path):
    path, fragment = hostile_case(case, tmp_path)
    out_dir = tmp_path / "out"
    code, out, err, seconds, rss = zoo_process("build", path, "-o", out_dir, cwd=tmp_path)
    record_refusal("hostile file: zoo build (process)", seconds)
    check_refusal(code, out, err, fragment, path)
    assert rss < BUILD_RSS_MB, f"{case}: peak RSS {rss:.0f} MB"
    assert not out_dir.exists() and not list(tmp_path.glob(".out.*"))
    assert not (tmp_path / "pwned").exists()


def test_spec_too_large_for_memory_is_refused_before_allocating(tmp_path):
    """Valid, but 4 TB of weights: refused at build with the field's line, in bounded memory."""
    path = _write(tmp_path, "big.yaml", "name: big\nextends: gpt2-tiny\nvocab_size: 16000000\nd_model: 65536\n")
    code, _, err, seconds, rss = zoo_process("build", path, "-o", tmp_path / "out", cwd=tmp_path)
    record_refusal("hostile file: zoo build (process)", seconds)
    assert code == 2, err
    assert err.startswith("error: big.yaml:3: vocab_size: big has 1,082,") and "GiB" in err, err
    assert rss < BUILD_RSS_MB and not (tmp_path / "out").exists()


def test_memory_check_names_the_largest_part():
    import zoo
    from zoo.app.build import check_memory
    from zoo.spec.errors import SpecError

    spec = zoo.load("gpt2-tiny", ["decoder.layers=3000"])
    with pytest.raises(SpecError) as info:
        check_memory(spec, available=10 * 2**20)
    assert info.value.field == "decoder.layers" and "10.0 MiB" not in str(info.value)
    check_memory(zoo.load("gpt2-tiny"), available=10 * 2**20)  # 0.3 M parameters fit in 10 MiB
