"""The floors of the code (README, "Layout") and the imports of every module, top-level
and inside functions, read from the source with ast: what tests/test_layers.py checks
and ``python tests/layers.py`` prints (the package import graph)."""

from __future__ import annotations

import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "compiler", "passes", "runtime")

# (prefix, floor, column); the longest prefix that matches a module names its place.
PLACES = (
    ("zoo.__main__", 3, "app"),
    ("zoo.app", 3, "app"),
    ("zoo.spec", 1, "spec"),
    ("zoo", 1, "spec"),  # the package's __init__: the errors and a lazy load()
    ("compiler", 2, "compiler"),
    ("passes", 2, "passes"),
    ("runtime", 2, "runtime"),
)

# Third-party packages each column may import (the standard library is always allowed).
ALLOWED = {
    "spec": {"numpy", "pydantic", "yaml"},
    "compiler": {"numpy", "pydantic", "yaml", "torch", "onnx", "onnxscript", "safetensors", "transformers"},
    "passes": {"numpy", "onnx", "onnx_ir", "onnxscript", "onnxruntime.transformers", "onnxruntime.quantization"},
    "runtime": {"numpy", "onnxruntime", "tokenizers", "jinja2"},  # tokenizers and jinja2 (chat templates): optional extras, imported lazily
    "app": None,  # the top floor may import anything
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module, absolute
    where: str  # file:line


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def place(module: str) -> tuple[int, str] | None:
    for prefix, floor, column in PLACES:
        if module == prefix or module.startswith(prefix + "."):
            return floor, column
    return None


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if not node.level:
        return [node.module or ""]
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return [".".join(base + ([node.module] if node.module else []))]


def imports() -> list[Import]:
    """Every import statement of every module of the four packages."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            module = module_name(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                for target in _targets(node, module, path.name == "__init__.py"):
                    found.append(Import(module, target, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


def _third_party_allowed(target: str, column: str) -> bool:
    allowed = ALLOWED[column]
    top = target.split(".")[0]
    if allowed is None or top in sys.stdlib_module_names or top == "__future__":
        return True
    return any(target == a or target.startswith(a + ".") or top == a for a in allowed if "." not in a) or any(
        target == a or target.startswith(a + ".") for a in allowed if "." in a
    )


def violation(imp: Import) -> str | None:
    """Why ``imp`` goes against the floors, or None."""
    src = place(imp.source)
    dst = place(imp.target) if imp.target.split(".")[0] in PACKAGES else None
    if dst is None:
        if imp.target.split(".")[0] in PACKAGES or _third_party_allowed(imp.target, src[1]):
            return None
        return f"{imp.where}: {imp.source} ({src[1]}) imports {imp.target}, which its floor may not use"
    (sf, sc), (df, dc) = src, dst
    if df > sf or (df == sf and dc != sc):
        return f"{imp.where}: {imp.source} (floor {sf}, {sc}) imports {imp.target} (floor {df}, {dc})"
    return None


def graph(depth: int = 2) -> Counter:
    """(importing package, imported package) -> number of imports, at ``depth`` name parts."""
    edges = Counter()
    for imp in imports():
        if imp.target.split(".")[0] not in PACKAGES:
            continue
        a, b = ".".join(imp.source.split(".")[:depth]), ".".join(imp.target.split(".")[:depth])
        if a != b:
            edges[a, b] += 1
    return edges


if __name__ == "__main__":
    depth = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    for (a, b), n in sorted(graph(depth).items()):
        print(f"{a} -> {b}: {n}")
    bad = [v for v in map(violation, imports()) if v]
    print(f"{len(bad)} import(s) against the floors", *bad, sep="\n")
