"""The catalog: named specs, one YAML file per architecture.

The catalog is the ``specs/`` folder at the repository root, plus the folders
listed in the environment variable ``ZOO_SPECS_PATH`` (separated by
``os.pathsep``). Those folders come first, like ``PATH``: a file there shadows a
built-in spec of the same name. A spec's name is its file's stem, and the
``name:`` inside the file must equal it (checked by the tests).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Iterator

from zoo.spec.errors import SpecError

BUILTIN = Path(__file__).resolve().parents[2] / "specs"
SUFFIXES = (".yaml", ".yml")


def directories() -> list[Path]:
    """Where specs are looked up, first match wins."""
    extra = [Path(p).expanduser() for p in os.environ.get("ZOO_SPECS_PATH", "").split(os.pathsep) if p.strip()]
    return [*extra, BUILTIN]


def _index() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in directories():
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix in SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return found


def names() -> list[str]:
    """Every catalog name, sorted."""
    return sorted(_index())


def close_names(name: str, n: int = 3) -> list[str]:
    """Catalog names that look like ``name`` (for "did you mean")."""
    return difflib.get_close_matches(name, names(), n=n, cutoff=0.6)


def did_you_mean(name: str) -> str:
    close = close_names(name)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return "see `zoo list`"


def path_of(name: str) -> Path:
    """The file of catalog spec ``name``; ``SpecError`` with suggestions when there is none."""
    path = _index().get(name)
    if path is None:
        raise SpecError(f"no spec named '{name}' in the catalog; {did_you_mean(name)}")
    return path


def entries() -> Iterator[tuple[str, Path, object]]:
    """``(name, path, ModelSpec or SpecError)`` for every catalog spec; a broken file
    yields its error instead of stopping the iteration."""
    from zoo.spec.loader import load_spec

    for name, path in sorted(_index().items()):
        try:
            spec: object = load_spec(path)
        except SpecError as err:
            spec = err
        yield name, path, spec
