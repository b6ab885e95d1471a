"""Weights on disk in the safetensors format (written and read here, no pickle):
8-byte little-endian header length, a JSON header (name -> dtype, shape, byte
offsets; ``__metadata__`` of strings), then the raw little-endian tensor bytes."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from zoo.spec.errors import ZooError
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
_DTYPES = {code: dtype for dtype, code in _CODES.items()}
MAX_HEADER = 100 * 1024 * 1024


class WeightsError(ZooError):
    """A weights file that cannot be read, or does not fit the model."""

    exit_code = 2


def _bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically (a temporary file renamed into place)."""
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


def _header(f, path: Path, size: int) -> tuple[dict, int]:
    """The JSON header of the open safetensors file ``f`` (``size`` bytes in all) and
    the offset of its tensor bytes."""
    head = f.read(8)
    if len(head) < 8:
        raise WeightsError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_HEADER, size - 8):
        raise WeightsError(f"{path}: not a safetensors file (header length {n} out of range)")
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{path}: not a safetensors file (bad JSON header)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: not a safetensors file (the header is not a JSON object)")
    return header, 8 + n


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file -> (name -> tensor, metadata). Each tensor is read from the
    file into its own buffer: the file's bytes are held once, never the whole file twice."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _read_body(f, path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights: {e.strerror or e}") from None


def _read_body(f, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    size = os.fstat(f.fileno()).st_size
    header, body = _header(f, path, size)
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            shape = [int(s) for s in info["shape"]]
        except (KeyError, TypeError, ValueError):
            raise WeightsError(f"{path}: tensor {name!r} has an unreadable header entry") from None
        count = 1
        for s in shape:
            count *= s
        if not 0 <= begin <= end <= size - body or end - begin != count * torch.empty((), dtype=dtype).element_size():
            raise WeightsError(f"{path}: tensor {name!r} has byte range [{begin}, {end}) that does not fit its shape")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        buf = bytearray(end - begin)
        f.seek(body + begin)
        if f.readinto(buf) != len(buf):
            raise WeightsError(f"{path}: tensor {name!r}: the file ends before its bytes (truncated while read?)")
        tensors[name] = torch.frombuffer(buf, dtype=dtype).reshape(shape)
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
            t.copy_(tensors[k].to(t.dtype))
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
