"""Nothing unsafe: YAML only through safe loading, no pickle anywhere except
``torch.load(weights_only=True)``, no network access at build or run time."""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = sorted(p for d in ("zoo", "compiler", "runtime", "benchmarks") for p in (ROOT / d).rglob("*.py"))
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def unsafe_uses(path: Path) -> list[str]:
    """Every unsafe construct in one source file, as 'file:line: what'."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = lambda node: f"{path.relative_to(ROOT)}:{node.lineno}"  # noqa: E731
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{where(node)}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where(node)}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in ("Loader", "UnsafeLoader", "FullLoader", "unsafe_load", "full_load"):
            if isinstance(node.value, ast.Name) and node.value.id == "yaml":
                found.append(f"{where(node)}: yaml.{node.attr}")
    for node, owner, name in _calls(tree):
        keywords = {k.arg: k.value for k in node.keywords}
        if owner == "yaml" and name in ("load", "load_all"):
            loader = keywords.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                found.append(f"{where(node)}: yaml.{name} without SafeLoader")
        if owner == "torch" and name == "load":
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where(node)}: torch.load without weights_only=True")
        if owner in ("np", "numpy") and name == "load":
            flag = keywords.get("allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{where(node)}: np.load with allow_pickle")
        if isinstance(node.func, ast.Name) and name in ("eval", "exec"):
            found.append(f"{where(node)}: {name}()")
    return found


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport yaml, torch\nyaml.load(s)\nyaml.load(s, Loader=yaml.Loader)\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\neval('1')\n"
    )
    # relative_to(ROOT) needs the file under ROOT: scan a copy's text under a fake name
    fake = ROOT / "tests" / "_scanner_probe.py"
    fake.write_text(bad.read_text())
    try:
        found = unsafe_uses(fake)
    finally:
        fake.unlink()
    assert len(found) == 7, found


def test_no_pickle_no_unsafe_yaml_no_eval_in_the_zoo():
    assert len(SOURCES) > 30
    found = [line for path in SOURCES for line in unsafe_uses(path)]
    assert not found, "\n".join(found)


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile pytorch_model.bin does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_by_import(tmp_path):
    from compiler.importers import CheckpointError, import_folder

    folder = tmp_path / "hf"
    folder.mkdir()
    config = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64}
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "pwned"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"wte.weight": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: cannot read with torch.load\(weights_only=True\)"):
        import_folder(folder)
    assert not marker.exists()


GUARD = """
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network access is disabled in this test")
for name in ("connect", "connect_ex", "sendto", "sendmsg"):
    setattr(socket.socket, name, refuse)
for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
    setattr(socket, name, refuse)
"""
RUN_COMMANDS = """
from zoo.app.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    codes.append(main(argv))
print("RESULT " + json.dumps({"codes": codes, "attempts": attempts}))
"""


def test_the_guard_catches_a_connection():
    probe = GUARD + "import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com', timeout=5)\nexcept OSError:\n    pass\nprint(len(attempts))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "1", proc.stderr


def test_cli_runs_with_networking_disabled(tmp_path):
    """validate, build, run, generate, parity, import and build from a checkpoint folder,
    all in one process whose sockets refuse to connect or resolve: no attempt is made."""
    import transformers

    hf = tmp_path / "hf"
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=32, max_position_embeddings=32)
    )
    model.save_pretrained(hf)
    art = tmp_path / "art"
    commands = [
        ["validate", "gpt2-tiny"],
        ["build", "gpt2-tiny", "-o", str(art)],
        ["run", str(art), "--ids", "1,2,3"],
        ["generate", str(art), "--ids", "1,2,3", "--max-new-tokens", "4"],
        ["compare", "--parity", str(art)],
        ["import", str(hf), "-o", str(tmp_path / "imported")],
        ["build", str(hf), "-o", str(tmp_path / "art2")],
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(PYTHONPATH=str(ROOT), ZOO_QUIET="1")
    proc = subprocess.run(
        [sys.executable, "-c", GUARD + RUN_COMMANDS, json.dumps(commands)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result, proc.stderr[-2000:]
    outcome = json.loads(result[0][len("RESULT "):])
    assert outcome["attempts"] == [], outcome["attempts"]
    assert outcome["codes"] == [0] * len(commands), (outcome, proc.stderr[-2000:])


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory):
    import transformers

    folder = tmp_path_factory.mktemp("gpt2")
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("config.json", "{not json", "unreadable JSON"),
        ("config.json", "[1, 2]", "not a JSON object"),
        ("config.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("config.json", b"\xff\xfe{}", "unreadable JSON"),
        ("config.json", " " * (17 << 20), "larger than 16 MiB"),
        ("config.json", '{"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 100}', "lacks 'n_positions'"),
        ("config.json", '{"model_type": "gpt2", "n_embd": 1e400, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64}', "d_model"),
        ("config.json", '{"model_type": "gpt2", "n_embd": "wide", "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64}', "invalid at d_model"),
        ("config.json", '{"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": NaN}', "max_seq_len"),
        ("generation_config.json", "{bad", "unreadable JSON"),
    ],
)
def test_hostile_checkpoint_json_is_one_line(tmp_path, gpt2_checkpoint, name, content, message):
    import shutil

    from compiler.importers import CheckpointError, import_folder

    folder = tmp_path / "hf"
    shutil.copytree(gpt2_checkpoint, folder)
    target = folder / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CheckpointError) as info:
        import_folder(folder)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
