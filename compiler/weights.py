"""Weights on disk in the safetensors format (no pickle): 8-byte little-endian header
length, a JSON header (name -> dtype, shape, byte offsets; ``__metadata__`` of
strings), then the raw little-endian tensor bytes. Written here (save_tensors), read
through the safetensors package's memory map (load_tensors)."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from zoo.spec.errors import ZooError, one_line
from zoo.spec.files import atomic_file

_CODES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class WeightsError(ZooError):
    """A weights file that cannot be read, or does not fit the model."""

    exit_code = 2


def _bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, little-endian as stored: a view of its memory when it is
    contiguous on the CPU (no copy), else of a contiguous CPU copy."""
    t = t.detach().contiguous().cpu()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically (a temporary file renamed into place),
    one tensor's bytes at a time from its own memory. Not safetensors.torch.save_file:
    that writes to the path itself (no atomic replace) and refuses tensors sharing
    memory."""
    path = Path(path)
    header: dict = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _CODES:
            raise WeightsError(f"{name}: dtype {t.dtype} cannot be stored")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_file(path) as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in sorted(tensors):
            f.write(_bytes(tensors[name]))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file -> (name -> tensor, metadata) with safetensors.safe_open:
    the tensors are views of a private (copy-on-write) memory map of the file, so its
    bytes are read as touched and held once; writing to a tensor leaves the file as it
    is. safetensors checks the header (length, JSON, dtypes, shapes, byte ranges that
    cover the file exactly) before any tensor is made; a file it refuses, or a dtype the
    zoo does not store, is a one-line WeightsError naming the file. A file truncated in
    place while its tensors live faults on the next touch (SIGBUS): the zoo's writers
    replace files (atomic_file, os.replace), never rewrite them in place."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as e:
        reason = one_line(e).removeprefix("Error while deserializing header: ")
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise WeightsError(f"{path}: not a safetensors file ({reason})") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights: {one_line(e.strerror or e)}") from None
    for name, t in tensors.items():
        if t.dtype not in _CODES:
            raise WeightsError(f"{path}: tensor {name!r} has dtype {str(t.dtype).removeprefix('torch.')}, which the zoo does not read")
    return tensors, metadata


def non_finite(t: torch.Tensor) -> tuple[int, int]:
    """(NaN count, inf count) of a floating tensor; (0, 0) for a finite or non-float one.
    One torch.isfinite pass over the tensor; the counts only when it fails."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0 or bool(torch.isfinite(t).all()):
        return 0, 0
    nan = int(torch.isnan(t).sum())
    return nan, int(torch.isinf(t).sum())


def check_finite(tensors: Mapping[str, torch.Tensor], source: str | Path, *, doing: str = "build", note: str = "") -> None:
    """Refuse weights holding NaN or inf (WeightsError, exit 2): the one check of every
    way weights come in (load_weights, the importers' reading of a checkpoint,
    zoo.app.build.build_artifact's state dict), run before anything is exported.
    The message names ``source`` (the file) and the first bad tensor, in ``tensors``'
    order, and how many others are bad; ``note`` follows the counts."""
    bad = [(name, *counts) for name, t in tensors.items() if isinstance(t, torch.Tensor) and any(counts := non_finite(t))]
    if not bad:
        return
    name, nan, inf = bad[0]
    more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    raise WeightsError(f"{source}: tensor {name} holds {nan} NaN and {inf} inf values{note}{more}; refusing to {doing}")


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save the model's parameters and persistent buffers (tied tensors stored once)."""
    save_tensors(dict(model.state_dict()), path, {"format": "pt", **(metadata or {})})


def load_weights(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load weights into ``model`` strictly: every name present, no extra name,
    every shape equal; dtypes are converted to the model's. Returns the metadata."""
    tensors, metadata = load_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [f"{k} {tuple(tensors[k].shape)} != {tuple(own[k].shape)}" for k in own if k in tensors and tensors[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
    if wrong:
        problems.append(f"shape mismatch {len(wrong)} ({'; '.join(wrong[:3])})")
    if problems:
        raise WeightsError(f"{path}: weights do not fit the model: " + "; ".join(problems))
    check_finite(tensors, path)
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(tensors[k])  # converts to the model's dtype as it copies: no temporary
    converted = {k: t for k, t in own.items() if t.dtype != tensors[k].dtype}
    if converted:  # float32 values past float16's range become inf
        dtype = str(next(iter(converted.values())).dtype).removeprefix("torch.")
        check_finite(converted, path, note=f" once converted to the model's {dtype} (values beyond its range)")
    return metadata


def weights_digest(model: nn.Module) -> str:
    """sha256 over names, dtypes, shapes and bytes of the state dict, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_bytes(t))
    return h.hexdigest()
