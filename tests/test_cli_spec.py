"""The spec commands end to end: `zoo validate`, `list`, `schema`, `show`, and error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.spec import catalog
from zoo.app.cli import main
from zoo.spec.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def zoo_cmd(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOO_QUIET": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=full_env, timeout=120
    )


# --------------------------------------------------------------------------- subprocess: the real command


def test_validate_catalog_names_and_files():
    r = zoo_cmd("validate", "gpt2-small", "specs/t5-tiny.yaml")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "ok  gpt2-small  (decoder-only, 124.44M params)",
        "ok  t5-tiny  (encoder-decoder, 197.50K params)",
    ]


def test_validate_bad_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nextends: llama-tiny\ndecoder:\n  attention: {kv_head: 2}\n")
    r = zoo_cmd("validate", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: bad.yaml:4: decoder.attention.kv_head: unknown field 'kv_head'; did you mean 'kv_heads'?"
    ]
    assert "Traceback" not in r.stderr


def test_validate_stops_at_the_first_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\n")
    r = zoo_cmd("validate", "gpt2-tiny", str(tmp_path / "bad.yaml"), "bert-tiny")
    assert r.returncode == 2
    assert r.stdout.splitlines() == ["ok  gpt2-tiny  (decoder-only, 108.03K params)"]
    assert r.stderr.startswith("error: ") and "family: required field is missing" in r.stderr
    assert "bert-tiny" not in r.stdout


def test_validate_with_overrides():
    r = zoo_cmd("validate", "llama-tiny", "--set", "decoder.attention.kv_heads=3")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "error: --set decoder.attention.kv_heads=3: decoder.attention.kv_heads: kv_heads=3 does not divide heads=4"
    )
    assert zoo_cmd("validate", "llama-tiny", "--set", "decoder.layers=3").returncode == 0


def test_several_errors_are_listed_one_per_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nextends: gpt2-tiny\ndecoder: {layers: 0, ffn: {hidden: -1}}\n")
    r = zoo_cmd("validate", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "error: bad.yaml:3: decoder.layers: must be > 0, got 0",
        "error: bad.yaml:3: decoder.ffn.hidden: must be > 0, got -1",
    ]


def test_unknown_catalog_name():
    r = zoo_cmd("validate", "gpt2-smol")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: no spec named 'gpt2-smol' in the catalog; did you mean 'gpt2-small'?"


def test_usage_error_exits_2():
    r = zoo_cmd("validate")
    assert r.returncode == 2 and "usage:" in r.stderr
    assert zoo_cmd().returncode == 2
    assert zoo_cmd("frobnicate").returncode == 2


def test_list_shows_every_catalog_spec():
    r = zoo_cmd("list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:6] == ["name", "family", "params", "d_model", "layers", "positional"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == catalog.names() and len(names) >= 13
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["gpt2-small"][1:6] == ["decoder-only", "124.44M", "768", "12", "learned"]
    assert rows["t5-small"][4:6] == ["6+6", "relative-bias"]
    # aligned: every row starts its second column at the same place
    column = lines[0].index("family")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)


def test_list_shows_a_broken_catalog_file_as_a_row(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nfamily: decoder-only\nd_model: x\n")
    r = zoo_cmd("list", env={"ZOO_SPECS_PATH": str(tmp_path)})
    assert r.returncode == 0
    row = next(line for line in r.stdout.splitlines() if line.startswith("broken"))
    assert "ERROR" in row and "broken.yaml" in row
    assert "Traceback" not in r.stderr and len(r.stdout.splitlines()) == len(catalog.names()) + 2  # header, broken row


def test_schema_is_json_with_the_spec_fields(tmp_path):
    r = zoo_cmd("schema")
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert {"decoder", "encoder", "positional", "extends"} <= set(out["properties"])
    r = zoo_cmd("schema", "-o", str(tmp_path / "schema.json"))
    assert r.returncode == 0 and r.stdout == ""
    assert json.loads((tmp_path / "schema.json").read_text()) == out


def test_show_prints_the_resolved_spec():
    r = zoo_cmd("show", "llama-tiny", "--set", "positional=alibi")
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert list(shown)[:6] == ["name", "description", "family", "vocab_size", "max_seq_len", "d_model"]
    assert shown["positional"] == {"kind": "alibi"}
    assert shown["decoder"]["ffn"] == {"hidden": 128, "activation": "silu", "gated": True, "bias": False, "experts": None}
    assert "extends" not in shown


def test_show_output_loads_back_to_the_same_spec(tmp_path):
    import zoo

    r = zoo_cmd("show", "t5-tiny")
    (tmp_path / "t5-tiny.yaml").write_text(r.stdout)
    assert zoo.load(tmp_path / "t5-tiny.yaml") == zoo.load("t5-tiny")


def test_spec_commands_import_neither_torch_nor_onnxruntime(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from zoo.app.cli import main
for argv in (["validate", "gpt2-tiny", "t5-small"], ["list"], ["schema", "-o", {str(tmp_path / 's.json')!r}],
             ["show", "llama-tiny"]):
    assert main(argv) == 0, argv
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnxruntime", "onnx", "numpy", "compiler", "runtime"))
assert not heavy, heavy
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- in-process: main()'s error handling


def _raising(exc: BaseException):
    def func(args):
        raise exc

    return func


@pytest.fixture
def fake_command(monkeypatch):
    """Make `zoo list` run a function of the test's choosing."""
    from zoo.app.cli import spec_cmds

    def use(func):
        monkeypatch.setattr(spec_cmds, "cmd_list", func)

    return use


def test_zoo_error_is_one_line_with_its_exit_code(fake_command, capsys):
    fake_command(_raising(InputError("token id 99 is outside the vocabulary [0, 10)")))
    assert main(["list"]) == 2
    assert capsys.readouterr().err == "error: token id 99 is outside the vocabulary [0, 10)\n"


def test_internal_error_is_one_line(fake_command, capsys):
    fake_command(_raising(RuntimeError("boom\nsecond line")))
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err == "internal error: RuntimeError: boom second line (run with --debug for the traceback)\n"


def test_debug_reraises(fake_command):
    fake_command(_raising(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        main(["--debug", "list"])


def test_keyboard_interrupt_exits_130(fake_command, capsys):
    fake_command(_raising(KeyboardInterrupt()))
    assert main(["list"]) == 130


def test_build_commands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("validate", "list", "schema", "show"):
        assert command in out
    try:
        import zoo.app.cli.build_cmds  # noqa: F401
    except ImportError:
        return
    assert "build" in out
