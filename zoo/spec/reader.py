"""Reading YAML safely, remembering where every value was written.

PyYAML's ``SafeLoader`` composes the node graph (no object construction happens
there); the values are then built here from the nodes, by hand, so that

- every key path, like ``("decoder", "attention", "heads")``, maps to the
  ``(file, line)`` where it was written (lines 1-based), and
- hostile input is refused with a ``SpecError`` instead of eating the machine:
  files over ``MAX_BYTES``, nesting deeper than ``MAX_DEPTH``, more than
  ``MAX_VALUES`` values (alias "billion laughs" bombs), tags other than the plain
  YAML ones (``!!python/object`` ...), non-string or duplicate keys, bytes that
  are not UTF-8.

No ``yaml.load`` with an unsafe loader anywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from yaml.constructor import SafeConstructor

from zoo.spec.errors import SpecError, one_line

MAX_BYTES = 1 << 20  # 1 MiB: no architecture needs more
MAX_DEPTH = 64
MAX_VALUES = 10_000  # a spec has a few dozen; counted while composing and again while expanding aliases

KeyPath = tuple  # of str (mapping keys) and int (list indices)
Where = tuple  # (file, line): file as displayed, line 1-based or None

_YAML = "tag:yaml.org,2002:"
_SCALARS = {"str", "int", "float", "bool", "null", "timestamp"}


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the current directory when it lies under it, else absolute."""
    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


class LineMap:
    """Where each key path of a spec was written: ``{path: (file, line)}``."""

    def __init__(self, entries: dict[KeyPath, Where] | None = None, file: str | None = None):
        self.entries: dict[KeyPath, Where] = dict(entries or {})
        self.file = file  # the file (or override) the spec as a whole comes from

    def __getitem__(self, path: KeyPath) -> Where:
        return self.entries[tuple(path)]

    def __contains__(self, path: object) -> bool:
        return tuple(path) in self.entries  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"LineMap({len(self.entries)} paths from {self.file})"

    def locate(self, path: Iterable[Any]) -> Where:
        """The place of the longest prefix of ``path`` that was written somewhere."""
        path = tuple(path)
        for n in range(len(path), -1, -1):
            where = self.entries.get(path[:n])
            if where is not None:
                return where
        return (self.file, None)

    def without(self, prefix: KeyPath) -> "LineMap":
        """A copy without ``prefix`` and everything under it."""
        n = len(prefix)
        kept = {p: w for p, w in self.entries.items() if p[:n] != prefix}
        return LineMap(kept, self.file)

    def under(self, prefix: KeyPath) -> dict[KeyPath, Where]:
        n = len(prefix)
        return {p: w for p, w in self.entries.items() if p[:n] == prefix}


# --------------------------------------------------------------------------- composing


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing (the composer recurses)."""

    def __init__(self, stream: str, label: str):
        super().__init__(stream)
        self._label = label
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", self._label, mark.line + 1)
            if self._nodes > MAX_VALUES:  # stop reading a huge document early: parsing is the slow part
                mark = self.peek_event().start_mark
                raise SpecError(f"the file holds more than {MAX_VALUES} values; a spec has a few dozen", self._label, mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.2 floats without a dot (1e-5) are floats, not strings as YAML 1.1 says.
_Loader.add_implicit_resolver(
    _YAML + "float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _dotted(path: KeyPath) -> str | None:
    return ".".join(str(p) for p in path) or None


def _tag_text(tag: str) -> str:
    return "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag


def _yaml_error(err: yaml.YAMLError, label: str) -> SpecError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    if isinstance(err, yaml.reader.ReaderError):
        return SpecError(f"character {err.character!r} is not allowed in YAML", label, line)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    message = f"{context}: {problem}" if context else problem
    return SpecError(f"invalid YAML: {one_line(message)}", label, line)


# --------------------------------------------------------------------------- constructing


class _Builder:
    """Turns a composed node graph into plain dicts/lists/scalars plus a line map."""

    def __init__(self, label: str):
        self.label = label
        self.lines: dict[KeyPath, Where] = {}
        self.count = 0
        self.scalars = SafeConstructor()

    def build(self, node: yaml.Node, path: KeyPath, depth: int = 0) -> Any:
        line = node.start_mark.line + 1
        self.count += 1
        if self.count > MAX_VALUES:
            raise SpecError(
                f"the spec expands to more than {MAX_VALUES} values (an alias bomb?); refused", self.label, line
            )
        if depth > MAX_DEPTH:
            raise SpecError(f"nesting deeper than {MAX_DEPTH} levels (through aliases?)", self.label, line)
        tag = node.tag
        if isinstance(node, yaml.MappingNode) and tag == _YAML + "map":
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode) and tag == _YAML + "seq":
            items = []
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = (self.label, item.start_mark.line + 1)
                items.append(self.build(item, path + (i,), depth + 1))
            return items
        if isinstance(node, yaml.ScalarNode) and tag.startswith(_YAML) and tag[len(_YAML):] in _SCALARS:
            kind = tag[len(_YAML):]
            if kind == "timestamp":  # a date is just text to a spec
                return node.value
            try:
                return getattr(self.scalars, f"construct_yaml_{kind}")(node)
            except (ValueError, yaml.YAMLError):
                raise SpecError(f"cannot read {node.value[:40]!r} as {kind}", self.label, line, _dotted(path)) from None
        if tag == _YAML + "merge":
            raise SpecError("merge keys '<<' are not supported; use 'extends:' instead", self.label, line)
        raise SpecError(f"tag {_tag_text(tag)} is not allowed", self.label, line, _dotted(path))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _YAML + "merge":
                raise SpecError("merge keys '<<' are not supported; use 'extends:' instead", self.label, line)
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("keys must be plain strings, not lists or mappings", self.label, line)
            key = self.build(key_node, path, depth + 1)
            if not isinstance(key, str):
                raise SpecError(
                    f"key {key_node.value!r} is read by YAML as {key!r}, not a string; quote it", self.label, line
                )
            if key in out:
                raise SpecError(
                    f"duplicate key '{key}' at lines {first_line[key]} and {line}",
                    self.label,
                    line,
                    ".".join(str(p) for p in path + (key,)),
                )
            first_line[key] = line
            self.lines[path + (key,)] = (self.label, line)
            out[key] = self.build(value_node, path + (key,), depth + 1)
        return out


# --------------------------------------------------------------------------- entry points


def parse_text(text: str, label: str, *, require_mapping: bool = True) -> tuple[Any, LineMap]:
    """Parse one YAML document from ``text``; ``label`` names it in errors."""
    loader = None
    try:
        loader = _Loader(text, label)  # PyYAML checks the characters here already
        node = loader.get_single_node()
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, max(0, err.position)) + 1
        raise SpecError(f"character {chr(err.character)!r} is not allowed in YAML", label, line) from None
    except yaml.YAMLError as err:
        raise _yaml_error(err, label) from None
    except RecursionError:
        raise SpecError("nesting too deep", label) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        if require_mapping:
            raise SpecError("empty spec file: expected a mapping of fields like 'name: ...'", label)
        return None, LineMap({}, label)
    builder = _Builder(label)
    value = builder.build(node, ())
    if require_mapping and not isinstance(value, dict):
        what = type(value).__name__ if value is not None else "null"
        what = {"list": "a list", "str": "a string", "int": "a number", "float": "a number"}.get(what, what)
        raise SpecError(f"the top level must be a mapping of fields, got {what}", label, node.start_mark.line + 1)
    builder.lines[()] = (label, 1)
    return value, LineMap(builder.lines, label)


def read_file(path: str | os.PathLike) -> tuple[dict[str, Any], LineMap]:
    """Read a spec file: size, encoding and YAML checked; returns (mapping, line map)."""
    path = Path(path)
    label = display_path(path)
    if path.is_dir():
        raise SpecError("is a directory, not a spec file", label)
    if path.exists() and not path.is_file():  # a FIFO would block, /dev/zero never ends
        raise SpecError("not a regular file (a device, pipe or socket); a spec is a YAML file", label)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("no such file", label) from None
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror or err}", label) from None
    if len(data) > MAX_BYTES:
        raise SpecError(f"file is larger than {MAX_BYTES // 1024} KiB; not a spec", label)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise SpecError(f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})", label, line) from None
    if not text.strip():
        raise SpecError("empty spec file", label)
    return parse_text(text, label)
