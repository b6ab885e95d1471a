"""Checking what a person feeds a graph, before ONNX Runtime sees it (numpy only).

``check_feed`` takes one graph's inputs as given (numpy arrays or nested lists)
and returns them as the graph takes them, or raises ``InputError`` with one line
that names the input and says what is wrong. The rules, from the manifest's
record of each graph (names, dtypes, named axes) and the model's vocab_size and
max_seq_len:

- names: every input of the graph, no other (the message lists what it takes);
- token ids (``*input_ids``): any integer dtype (cast to int64), or floats that are
  whole numbers; bool, strings, objects and fractions are refused; each id in
  [0, vocab_size);
- masks (``*attention_mask``): bool or integer (cast to int64), values 0/1, and
  every row has at least one 1 (a row with nothing to attend to gives garbage);
- cache tensors (``past.*``, ``cross.*``): exactly the artifact's float dtype and
  the manifest's fixed sizes (kv_heads, head_dim);
- ranks as recorded; the same axis name has one size across the inputs;
  total_seq = past_seq + seq (the decoder's mask covers cached and new tokens);
- batch, seq and src_seq at least 1; seq, src_seq and past_seq + seq at most
  max_seq_len.

``check_outputs`` refuses a result with NaN or inf in its logits / hidden states
(``OutputError``): a run never hands back garbage silently.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from zoo.spec.errors import InputError, OutputError
from zoo.spec.families import Role

CHECKED_OUTPUTS = ("logits", "last_hidden_state", "encoder_hidden_states")
NONEMPTY_AXES = ("batch", "seq", "src_seq")
LENGTH_AXES = ("seq", "src_seq")


def describe_inputs(graph) -> str:
    """What a graph takes, on one line: ``input_ids (batch, seq) int64, ...,
    past.{0..1}.key/value (batch, 4, past_seq, 16) float32``."""
    parts, seen = [], set()
    for t in graph.inputs:
        axes = "(" + ", ".join(str(a) for a in t.axes) + ")"
        role = Role.of(t.name)
        if role is None:
            parts.append(f"{t.name} {axes} {t.dtype}")
        elif role not in seen:
            seen.add(role)
            layers = sorted({Role.layer_of(u.name) for u in graph.inputs if Role.of(u.name) is role})
            span = f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else str(layers[0])
            parts.append(f"{role.value}.{{{span}}}.key/value {axes} {t.dtype}")
    return ", ".join(parts)


def _shape(a: np.ndarray) -> str:
    return "(" + ", ".join(str(n) for n in a.shape) + (",)" if a.ndim == 1 else ")")


def _where(index: tuple) -> str:
    """(row, position) of a 2-D index, in words."""
    if len(index) == 2:
        return f"row {index[0]}, position {index[1]}"
    if len(index) == 1:
        return f"position {index[0]}"
    return "index " + str(tuple(int(i) for i in index))


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        raise InputError(
            f"{name}: not a rectangular array (rows of different lengths?); pad the rows to one length and mark the padding with 0 in the attention mask"
        ) from None


def as_ids(name: str, value: Any, vocab: int | None) -> np.ndarray:
    """Token ids -> int64 array of the same shape, each in [0, vocab) (vocab None: >= 0); else InputError."""
    a = _as_array(name, value)
    kind = a.dtype.kind
    if kind == "b":
        raise InputError(f"{name}: a bool array; token ids must be integers")
    if kind == "f":
        if a.size:
            whole = np.isfinite(a) & (a == np.round(a))
            if not whole.all():
                at = tuple(int(i) for i in np.argwhere(~whole)[0])
                raise InputError(f"{name}: token {a[at].item()!r} at {_where(at)} is not an integer id")
    elif kind not in "iu":
        what = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers"}.get(kind, f"dtype {a.dtype}")
        raise InputError(f"{name}: {what} (dtype {a.dtype}); token ids must be integers")
    if a.size:
        limit = vocab if vocab is not None else np.iinfo(np.int64).max
        bad = (a < 0) | (a >= limit)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            where = f"the vocabulary [0, {vocab})" if vocab is not None else "the range of token ids [0, 2**63)"
            raise InputError(f"{name}: token id {int(a[at])} is outside {where} (at {_where(at)})")
    return np.ascontiguousarray(a, dtype=np.int64)


def as_mask(name: str, value: Any) -> np.ndarray:
    """An attention mask -> int64 array of 0/1 with at least one 1 per row; else InputError."""
    a = _as_array(name, value)
    kind = a.dtype.kind
    if kind not in "biuf":
        raise InputError(f"{name}: dtype {a.dtype}; a mask holds 1 (token) or 0 (padding), as bool or integers")
    if a.size and kind != "b":
        bad = (a != 0) & (a != 1)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"{name}: value {a[at].item()!r} at {_where(at)}; a mask holds 1 (token) or 0 (padding)")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.ndim == 2 and a.shape[1]:
        empty = ~a.any(axis=1)
        if empty.any():
            raise InputError(
                f"{name}: row {int(np.nonzero(empty)[0][0])} is all 0 (padding); every row needs at least one token to attend to"
            )
    return a


def _fixed(axis) -> bool:
    return isinstance(axis, int) or (isinstance(axis, str) and axis.isdigit())


def _float_dtype(name: str) -> np.dtype | None:
    try:
        return np.dtype(name)
    except TypeError:
        return None  # e.g. bfloat16, which numpy does not name: checked as "a float" only


def check_feed(graph, feed: Mapping[str, Any], model, *, float_dtype=None) -> dict[str, np.ndarray]:
    """Check one graph's inputs (``graph``: a zoo.spec.contract.GraphSpec as the manifest
    records it; ``model``: the manifest's model entry, runtime.manifest.ModelEntry, with
    vocab_size and max_seq_len) and return them as ONNX Runtime takes them. Raises
    InputError, one line."""
    _check_names(graph, feed)
    vocab, max_len = int(model.vocab_size), int(model.max_seq_len)
    out: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, str]] = {}  # axis name -> (size, the input that set it)
    for spec in graph.inputs:
        a = _as_input(spec, feed[spec.name], vocab, float_dtype)
        _check_axes(spec.name, a, tuple(spec.axes), sizes, max_len)
        out[spec.name] = a
    _check_cache_length(sizes, max_len)
    return out


def _check_names(graph, feed) -> None:
    """``feed`` names every input of ``graph`` and nothing else."""
    if not isinstance(feed, Mapping):
        raise InputError(f"the inputs of graph '{graph.name}' are given by name; it takes {describe_inputs(graph)}")
    takes = graph.input_names
    unknown = [n for n in feed if n not in takes]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), takes, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(f"graph '{graph.name}' has no input '{unknown[0]}'{hint}; it takes {describe_inputs(graph)}")
    missing = [n for n in takes if n not in feed]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"graph '{graph.name}' lacks input '{missing[0]}'{more}; it takes {describe_inputs(graph)}")


def _as_input(spec, value, vocab: int, float_dtype) -> np.ndarray:
    """One input as ONNX Runtime takes it: ids or a mask (int64), or a float tensor of
    the dtype the graph declares."""
    name = spec.name
    if spec.dtype.startswith("int"):
        return as_mask(name, value) if name.endswith("attention_mask") else as_ids(name, value, vocab)
    a = _as_array(name, value)
    want = _float_dtype(spec.dtype) if spec.dtype != "float" else (np.dtype(float_dtype) if float_dtype else None)
    if (want is not None and a.dtype != want) or (want is None and a.dtype.kind != "f"):
        raise InputError(
            f"{name}: dtype {a.dtype}, the artifact's {name.split('.')[0]} tensors are {spec.dtype}"
            + (f" (cast with .astype(np.{want}))" if want is not None and a.dtype.kind in "fiub" else "")
        )
    return np.ascontiguousarray(a)


def _check_axes(name: str, a: np.ndarray, axes: tuple, sizes: dict, max_len: int) -> None:
    """Rank, fixed axes, named axes consistent across the inputs (recorded in ``sizes``),
    no empty batch or sequence, no sequence past max_len."""
    if a.ndim != len(axes):
        hint = "; a single sequence is [[1, 2, 3]]" if a.ndim == 1 and len(axes) == 2 else ""
        raise InputError(
            f"{name}: {a.ndim} dimension{'s' if a.ndim != 1 else ''} (shape {_shape(a)}), the graph takes {len(axes)}: "
            f"({', '.join(str(x) for x in axes)}){hint}"
        )
    for k, (axis, n) in enumerate(zip(axes, a.shape)):
        if _fixed(axis) and n != int(axis):
            raise InputError(f"{name}: shape {_shape(a)}, axis {k} must be {int(axis)} (the graph takes ({', '.join(str(x) for x in axes)}))")
    for axis, n in zip(axes, a.shape):
        if _fixed(axis):
            continue
        if axis in sizes and sizes[axis][0] != n:
            size, first = sizes[axis]
            raise InputError(f"{name}: {axis} is {n} (shape {_shape(a)}) but {first} has {axis} {size}")
        sizes.setdefault(axis, (n, name))
        if n == 0 and axis in NONEMPTY_AXES:
            what = "batch is 0; give at least one sequence" if axis == "batch" else f"{axis} is 0; give at least one token"
            raise InputError(f"{name}: {what} (shape {_shape(a)})")
        if axis in LENGTH_AXES and n > max_len:
            raise InputError(f"{name}: {n} tokens, more than max_seq_len={max_len}")


def _check_cache_length(sizes: dict, max_len: int) -> None:
    """The mask of a cached step covers the cached and the new tokens, within max_len."""
    if "total_seq" in sizes and "seq" in sizes:
        total, holder = sizes["total_seq"]
        past = sizes.get("past_seq", (0, None))[0]
        seq = sizes["seq"][0]
        if total != past + seq:
            raise InputError(
                f"{holder}: {total} columns, but it covers the cached and the new tokens: past_seq {past} + seq {seq} = {past + seq}"
            )
        if total > max_len:
            raise InputError(f"past_seq {past} + seq {seq} = {total} tokens, more than max_seq_len={max_len}")


def check_outputs(graph: str, outputs: Mapping[str, np.ndarray], names=CHECKED_OUTPUTS) -> None:
    """OutputError when one of ``names`` in ``outputs`` holds NaN or inf."""
    for name in names:
        a = outputs.get(name)
        if a is None or np.isfinite(a).all():
            continue
        bad = ~np.isfinite(a)
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise OutputError(
            f"graph '{graph}': output {name} has {int(bad.sum())} NaN/inf values (first at {at}); "
            "the inputs (a cache?) or the weights overflow the model's float range"
        )


def check_logits(logits: np.ndarray, step: int) -> None:
    """The generation loop's check, once per step on the last position's logits (B, V)."""
    if not np.isfinite(logits).all():
        row = int(np.nonzero(~np.isfinite(logits).all(axis=-1))[0][0])
        raise OutputError(f"generation step {step}: the logits of row {row} hold NaN/inf; the model's weights overflow its float range")


def prompt_rows(prompts, what: str = "prompt", vocab: Optional[int] = None, max_len: Optional[int] = None) -> list[np.ndarray]:
    """A batch of prompts (lists of token ids of any lengths, or a 2-D array) -> one
    int64 array per row; InputError (one line, naming the row and position) for
    anything else: a flat list, an empty batch or row, ids that are not integers
    (bool, fractions, strings), outside [0, vocab), or rows longer than max_len."""
    if isinstance(prompts, (str, bytes)) or (isinstance(prompts, np.ndarray) and prompts.ndim != 2):
        raise InputError(f"{what}s must be a list of token-id lists, e.g. [[1, 2, 3]]; got {type(prompts).__name__}")
    try:
        rows = list(prompts)
    except TypeError:
        raise InputError(f"{what}s must be a list of token-id lists, e.g. [[1, 2, 3]]; got {type(prompts).__name__}") from None
    if not rows:
        raise InputError(f"no {what} given")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes, dict)) or not hasattr(row, "__len__") and not hasattr(row, "__iter__"):
            raise InputError(f"{what} {i} is {row!r}, not a list of token ids; {what}s are a list of token-id lists, e.g. [[1, 2, 3]]")
        row = row if isinstance(row, np.ndarray) else list(row)
        for j, t in enumerate(row if isinstance(row, list) else ()):
            if isinstance(t, (bool, np.bool_)) or (isinstance(t, (list, tuple, np.ndarray))):
                raise InputError(f"{what} {i}: token {t!r} at position {j} is not an integer id")
        if len(row) == 0:
            raise InputError(f"{what} {i} is empty; give at least one token")
        if max_len is not None and len(row) > max_len:
            raise InputError(f"{what} {i} has {len(row)} tokens, more than max_seq_len={max_len}")
        ids = as_ids(f"{what} {i}", row, vocab)
        if ids.ndim != 1:
            raise InputError(f"{what} {i}: a {ids.ndim}-D array; each {what} is a flat list of token ids")
        out.append(ids)
    return out


def left_pad(rows: Sequence[Sequence[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ids -> (ids, mask) int64 (B, longest), padded on the left. Every row
    needs at least one token (a row of padding only has nothing to attend to)."""
    rows = prompt_rows(rows, "row")
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r) :] = r
            mask[i, width - len(r) :] = 1
    return ids, mask
