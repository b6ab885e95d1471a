"""The floors hold (issue 14): every import, top-level or inside a function, runs down the
floors (README, "Layout"), the three packages of floor 2 never import each other, and
the runtime runs with neither torch, pydantic, yaml nor onnx installed."""

import subprocess
import sys

import pytest

from tests.layers import ROOT, Import, imports, violation


def test_no_import_against_the_floors():
    bad = [v for v in map(violation, imports()) if v]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "imp",
    [
        Import("runtime.session", "compiler.builder", "planted"),  # sideways on floor 2
        Import("passes.optimize", "runtime.session", "planted"),
        Import("compiler.export", "zoo.app.build", "planted"),  # up
        Import("zoo.spec.model", "runtime.artifact", "planted"),
        Import("runtime.session", "torch", "planted"),  # a package the runtime may not use
        Import("runtime.artifact", "yaml", "planted"),
        Import("passes.files", "onnxruntime", "planted"),
    ],
    ids=lambda i: f"{i.source}->{i.target}",
)
def test_a_planted_import_is_caught(imp):
    assert violation(imp)


def test_allowed_imports_pass():
    for imp in (Import("zoo.app.build", "compiler.builder", "x"), Import("runtime.session", "zoo.spec.errors", "x"),
                Import("passes.precision.fp16", "onnxruntime.transformers.float16", "x"), Import("compiler.export", "torch", "x")):
        assert violation(imp) is None, imp


def test_the_ast_reader_sees_lazy_imports():
    lazy = [i for i in imports() if i.source == "runtime.tokenizer" and i.target == "tokenizers"]
    assert lazy, "the import inside a function is missing from the graph"


def test_the_runtime_runs_without_torch_pydantic_yaml_onnx():
    modules = sorted({i.source for i in imports() if i.source.split(".")[0] == "runtime"})
    code = (
        "import sys\n"
        "for name in ('torch', 'pydantic', 'yaml', 'onnx', 'transformers'): sys.modules[name] = None\n"
        f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
