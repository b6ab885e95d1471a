"""Pydantic validation errors turned into ``SpecError``s a person can act on.

Each error gets the spec's field path (pydantic's tagged-union entries such as
``('positional', 'rope', 'theta')`` dropped: ``positional.theta``), the file and
line where that field (or its closest written parent) was written, and a short
message with the bad value and a "did you mean" where one is close.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Iterable, Literal, Union

from pydantic import BaseModel, ValidationError

from zoo.spec.errors import SpecError, one_line
from zoo.spec.reader import LineMap
from zoo.spec.model import FieldIssue, ModelSpec

ROOT_ONLY_KEYS = ("extends",)  # keys the loader consumes before validation


# --------------------------------------------------------------------------- walking the model by a loc


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of an annotation: Optional/Union/Annotated taken apart, None dropped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [a for a in _unwrap(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def literal_values(annotation: Any) -> tuple[Any, ...]:
    values: list[Any] = []
    for alt in _unwrap(annotation):
        if typing.get_origin(alt) is Literal:
            values.extend(typing.get_args(alt))
    return tuple(values)


def _variant_tags(models: list[type[BaseModel]], discriminator: str) -> dict[Any, type[BaseModel]]:
    tags: dict[Any, type[BaseModel]] = {}
    for model in models:
        field = model.model_fields.get(discriminator)
        if field is not None:
            for value in literal_values(field.annotation):
                tags[value] = model
    return tags


class Place:
    """What sits at a loc inside ModelSpec: the clean path, its annotation, and the
    discriminated-union context met on the way."""

    def __init__(self, path: tuple, annotation: Any, discriminator: str | None, tag: Any):
        self.path, self.annotation, self.discriminator, self.tag = path, annotation, discriminator, tag

    @property
    def models(self) -> list[type[BaseModel]]:
        return _models(self.annotation)


def resolve(loc: Iterable[Any], root: type[BaseModel] = ModelSpec) -> Place:
    """Walk ``root``'s fields along a pydantic ``loc``, dropping union tags."""
    annotation: Any = root
    discriminator: str | None = None
    tag: Any = None
    path: list[Any] = []
    for item in loc:
        models = _models(annotation)
        if len(models) > 1 and discriminator is not None:
            tags = _variant_tags(models, discriminator)
            if item in tags:  # pydantic's tag entry: choose the variant, drop the entry
                annotation, tag, discriminator = tags[item], item, None
                continue
        path.append(item)
        if isinstance(item, int):
            args = [a for alt in _unwrap(annotation) for a in typing.get_args(alt)[:1] if typing.get_origin(alt) is list]
            annotation = args[0] if args else None
            discriminator = None
            continue
        field = models[0].model_fields.get(item) if len(models) == 1 else None
        if field is None:
            annotation, discriminator = None, None
            continue
        annotation = field.annotation
        discriminator = field.discriminator if isinstance(field.discriminator, str) else None
        tag = None
    return Place(tuple(path), annotation, discriminator, tag)


def discriminated_paths(root: type[BaseModel] = ModelSpec, prefix: tuple = ()) -> dict[tuple, str]:
    """``{path: discriminator}`` of every tagged-union field (e.g. ``("positional",): "kind"``)."""
    out: dict[tuple, str] = {}
    for name, field in root.model_fields.items():
        if isinstance(field.discriminator, str):
            out[prefix + (name,)] = field.discriminator
        models = _models(field.annotation)
        if len(models) == 1:
            out.update(discriminated_paths(models[0], prefix + (name,)))
    return out


# --------------------------------------------------------------------------- messages


def shown(value: Any) -> str:
    """A value as a person wrote it, kept short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def suggest(word: Any, choices: Iterable[Any]) -> str:
    """'; did you mean 'x'?' or ''."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "finite_number": "a finite number",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_BOUND_KEYS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def describe(err: dict[str, Any]) -> tuple[tuple, str]:
    """(field path, message) of one pydantic error dict."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    issue = ctx.get("error")
    if isinstance(issue, FieldIssue):
        return tuple(issue.path), issue.message
    place = resolve(err["loc"])
    path = place.path
    if kind == "extra_forbidden":
        key = path[-1] if path else "?"
        parent = resolve(err["loc"][:-1])
        allowed = [n for m in parent.models[:1] for n in m.model_fields]
        if len(path) == 1:
            allowed += list(ROOT_ONLY_KEYS)
        hint = suggest(key, allowed) or ("; allowed: " + ", ".join(allowed) if allowed else "")
        kind_note = f" for kind '{parent.tag}'" if parent.tag is not None else ""
        return path, f"unknown field '{key}'{kind_note}{hint}"
    if kind == "missing":
        return path, "required field is missing"
    if kind == "literal_error":
        options = literal_values(place.annotation) or tuple(
            o.strip(" '") for o in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")
        )
        return path, f"{shown(value)} is not one of {', '.join(map(str, options))}{suggest(value, options)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "'kind'")).strip("'\"")
        tags = list(_variant_tags(place.models, disc))
        if kind == "union_tag_not_found":
            return path + (disc,), f"'{disc}' is required: one of {', '.join(map(str, tags))}"
        tag = ctx.get("tag")
        return path + (disc,), f"{shown(tag)} is not one of {', '.join(map(str, tags))}{suggest(tag, tags)}"
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if expected == "a mapping" and place.discriminator:
            tags = list(_variant_tags(place.models, place.discriminator))
            expected = f"a mapping or one of {', '.join(tags)}"
        return path, f"expected {expected}, got {shown(value)}"
    if kind in _BOUNDS:
        bound = ctx.get(_BOUND_KEYS[kind])
        return path, f"must be {_BOUNDS[kind]} {bound}, got {shown(value)}"
    if kind == "string_too_short":
        return path, "must not be empty" if ctx.get("min_length") == 1 else f"needs at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return path, f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return path, f"{shown(value)} does not match {ctx.get('pattern')}"
    message = str(err.get("msg", kind))
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return path, one_line(message)


def spec_errors(exc: ValidationError, lines: LineMap) -> list[SpecError]:
    """Every error of ``exc`` as a ``SpecError`` located by ``lines``."""
    out: list[SpecError] = []
    for err in exc.errors():
        path, message = describe(err)
        issue = (err.get("ctx") or {}).get("error")
        file, line = lines.locate(getattr(issue, "where", path))
        field = ".".join(str(p) for p in path) or None
        out.append(SpecError(message, file, line, field))
    return out


def first_with_others(errors: list[SpecError]) -> SpecError:
    """The first error, carrying the rest in ``.others``."""
    first = errors[0]
    first.others = list(errors[1:])
    return first
