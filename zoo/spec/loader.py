"""Loading a spec: catalog name or file -> ``extends`` resolved -> ``--set`` overrides
applied -> validated ``ModelSpec``; every error a ``SpecError`` with file, line, field.

Merge rules (for ``extends`` and for overrides alike): mappings merge key by key;
scalars and lists replace; a mapping at a tagged-union field (``positional``)
whose ``kind`` differs from the parent's replaces the parent's mapping whole, so
``{kind: rope, theta: ...}`` -> ``{kind: alibi}`` keeps no ``theta``. The
shorthand ``positional: alibi`` replaces like any scalar; a mapping without
``kind`` merged onto the shorthand ``positional: rope`` extends ``{kind: rope}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from zoo.spec import catalog
from zoo.spec.diagnostics import discriminated_paths, first_with_others, spec_errors
from zoo.spec.errors import SpecError
from zoo.spec.reader import LineMap, display_path, parse_text, read_file
from zoo.spec.model import ModelSpec

MAX_EXTENDS = 32  # longest chain of extends

_UNIONS = discriminated_paths()  # {("positional",): "kind"}


# --------------------------------------------------------------------------- merging


def _merge(base: Any, overlay: Any, path: tuple, replaced: list[tuple]) -> Any:
    disc = _UNIONS.get(path)
    if disc and isinstance(base, str) and isinstance(overlay, dict) and disc not in overlay:
        base = {disc: base}  # `positional: rope` then `positional: {theta: ...}`
    if isinstance(base, dict) and isinstance(overlay, dict):
        if not (disc and disc in overlay and overlay[disc] != base.get(disc)):
            out = dict(base)
            for key, value in overlay.items():
                out[key] = _merge(base[key], value, path + (key,), replaced) if key in base else value
            return out
    replaced.append(path)
    return overlay


def merge(base: dict, base_lines: LineMap, overlay: dict, overlay_lines: LineMap) -> tuple[dict, LineMap]:
    """``overlay`` deep-merged onto ``base``; the line map follows each value to where it came from."""
    replaced: list[tuple] = []
    data = _merge(base, overlay, (), replaced)
    lines = LineMap(base_lines.entries, base_lines.file)
    for path in replaced:
        lines = lines.without(path)
    lines.entries.update(overlay_lines.entries)
    lines.file = overlay_lines.file
    return data, lines


# --------------------------------------------------------------------------- sources


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text


def source_path(source: str | os.PathLike) -> Path:
    """The file a source names: a path as given, or a catalog spec's file."""
    if isinstance(source, os.PathLike):
        return Path(source)
    text = str(source)
    if _looks_like_path(text):
        return Path(text)
    if text in catalog.names():
        return catalog.path_of(text)
    if Path(text).exists():
        return Path(text)
    return catalog.path_of(text)  # raises with "did you mean"


def _extends_target(target: Any, child: Path, where: tuple) -> Path:
    file, line = where
    if not isinstance(target, str) or not target.strip():
        raise SpecError(f"expected a catalog name or a file path, got {target!r}", file, line, "extends")
    if _looks_like_path(target):
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = child.parent / path
        if not path.is_file():
            stem = Path(target).stem
            close = catalog.close_names(stem)
            hint = ("; catalog names like it: " + ", ".join(close)) if close else ""
            raise SpecError(f"no spec file '{target}' (looked at {display_path(path)}){hint}", file, line, "extends")
        return path
    try:
        return catalog.path_of(target)
    except SpecError as err:
        raise SpecError(err.message, file, line, "extends") from None


def _load_file(path: Path, chain: list[Path]) -> tuple[dict, LineMap]:
    data, lines = read_file(path)
    if "extends" not in data:
        return data, lines
    target = data.pop("extends")
    where = lines[("extends",)]
    lines = lines.without(("extends",))
    if target is None:  # `extends: null`: a spec of its own
        return data, lines
    parent = _extends_target(target, path, where)
    here = [*chain, path.resolve()]
    if parent.resolve() in here:
        cycle = here[here.index(parent.resolve()):] + [parent.resolve()]
        shown = " -> ".join(display_path(p) for p in cycle)
        raise SpecError(f"extends cycle: {shown}", where[0], where[1], "extends")
    if len(here) > MAX_EXTENDS:
        raise SpecError(f"extends chain longer than {MAX_EXTENDS} specs", where[0], where[1], "extends")
    if "name" not in data:
        raise SpecError("a spec that extends another must set its own name", where[0], where[1], "name")
    base, base_lines = _load_file(parent, here)
    return merge(base, base_lines, data, lines)


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[dict, LineMap]:
    """``"decoder.layers=2"`` -> ``({"decoder": {"layers": 2}}, line map)``; the value is YAML."""
    label = f"--set {text}"
    if not isinstance(text, str) or "=" not in text:
        raise SpecError(f"no '=' in {text!r}: expected PATH=VALUE, like decoder.layers=2", label)
    dotted, _, raw = text.partition("=")
    keys = tuple(k.strip() for k in dotted.strip().split("."))
    if not all(keys):
        raise SpecError(f"bad field path {dotted.strip()!r}: expected names joined by dots, like decoder.layers", label)
    if keys[0] == "extends":
        raise SpecError("extends cannot be overridden; load the other spec instead", label, None, "extends")
    try:
        value, value_lines = parse_text(raw, label, require_mapping=False)
    except SpecError as err:  # a line number inside a one-line value says nothing
        raise SpecError(err.message, label, None, ".".join(keys)) from None
    entries = {keys: (label, None)}
    entries.update({keys + p: (label, None) for p in value_lines.entries})
    for key in reversed(keys):
        value = {key: value}
    return value, LineMap(entries, label)


def apply_overrides(data: dict, lines: LineMap, overrides: Iterable[str]) -> tuple[dict, LineMap]:
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        overlay, overlay_lines = parse_override(text)
        file = lines.file
        data, lines = merge(data, lines, overlay, overlay_lines)
        lines.file = file
    return data, lines


# --------------------------------------------------------------------------- entry points


def load_raw(source: str | os.PathLike, overrides: Iterable[str] = ()) -> tuple[dict, LineMap]:
    """The resolved mapping of a spec (``extends`` merged, overrides applied), not yet
    validated, and where each of its values was written."""
    data, lines = _load_file(source_path(source), [])
    return apply_overrides(data, lines, overrides)


def validate(data: dict, lines: LineMap) -> ModelSpec:
    """``ModelSpec`` of ``data``; ``SpecError`` (first error, the rest in ``.others``)."""
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        errors = spec_errors(exc, lines)
    raise first_with_others(errors or [SpecError("invalid spec", lines.file)])


def load_spec(source: str | os.PathLike, overrides: Iterable[str] = ()) -> ModelSpec:
    """Load and validate a spec: a catalog name or a YAML path, with ``PATH=VALUE`` overrides."""
    return validate(*load_raw(source, overrides))


def override(spec: ModelSpec, overrides: Iterable[str], source: str) -> ModelSpec:
    """``spec`` with ``--set`` overrides applied and validated again (for specs that
    come from elsewhere than a YAML file, such as an imported checkpoint)."""
    if not overrides:
        return spec
    data, lines = apply_overrides(spec.model_dump(mode="json"), LineMap({}, source), overrides)
    return validate(data, lines)
