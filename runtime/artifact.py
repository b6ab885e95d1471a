"""Reading an artifact folder: manifest.json, format version, file hashes.

An artifact is complete only when its manifest.json exists (written last, the
folder renamed into place after), the format version is one this runtime reads,
and every file listed has the recorded size and sha256. File names in the manifest
must be plain relative names inside the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator, Optional

from runtime.manifest import FileEntry, Manifest
from runtime.usage import Usage
from zoo.spec.contract import GraphSpec
from zoo.spec.errors import ArtifactError
from zoo.spec.families import CacheLayout

MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 16 << 20  # a manifest is a few KiB; refuse to parse anything this big


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# The hidden siblings a build of TARGET works in (zoo.app.build): ``.TARGET.partial-PID-TAG``
# (the folder being written) and ``.TARGET.old-PID-TAG`` (the artifact being replaced,
# between the two renames of the swap). PID is the building process, TAG 8 hex digits.
_STAGING_SUFFIX = re.compile(r"(partial|old)-([0-9]{1,10})-([0-9a-f]{8})")


def staging_name(target: str, kind: str, pid: int, tag: str) -> str:
    return f".{target}.{kind}-{pid}-{tag}"


def swap_into_place(partial: Path, target: Path) -> None:
    """Rename the finished ``partial`` folder to ``target``. A target already there is
    first moved to ``.NAME.old-PID-TAG`` and removed only once the new one is in place;
    a kill in between leaves it there for the next build's sweep to put back."""
    old = None
    if target.exists():
        old = target.parent / staging_name(target.name, "old", os.getpid(), uuid.uuid4().hex[:8])
        os.replace(target, old)
    try:
        os.replace(partial, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A hidden ``.NAME.partial-PID-TAG`` folder beside ``target`` to write into: when
    the block ends it replaces ``target`` (swap_into_place); on any error, a kill's
    KeyboardInterrupt included, it is removed and ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / staging_name(target.name, "partial", os.getpid(), uuid.uuid4().hex[:8])
    partial.mkdir()
    try:
        yield partial
        swap_into_place(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def staging_folders(target: Path) -> list[tuple[Path, str, int]]:
    """``(folder, kind, pid)`` for each hidden build folder of ``target`` in its parent:
    exactly ``.NAME.partial-PID-TAG`` / ``.NAME.old-PID-TAG``, real folders (no links);
    anything else there is left alone."""
    target = Path(target)
    prefix = f".{target.name}."
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    found = []
    for p in entries:
        if not p.name.startswith(prefix):
            continue
        m = _STAGING_SUFFIX.fullmatch(p.name[len(prefix):])
        if m and p.is_dir() and not p.is_symlink():
            found.append((p, m[1], int(m[2])))
    return found


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (in doubt: yes, so that nothing of a live build is touched)."""
    if os.name == "nt" or pid <= 0:  # os.kill(pid, 0) is not a probe on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # exists, owned by another user; or not a pid
        return True
    return True


def changed_at(p: Path) -> float:
    """When ``p`` was last renamed or changed (0 if it is gone)."""
    try:
        return p.stat().st_ctime
    except OSError:
        return 0.0


def _missing(folder: Path) -> ArtifactError:
    """The error for a folder that is not there, saying where an interrupted build left things."""
    olds = [(p, pid) for p, kind, pid in staging_folders(folder) if kind == "old"]
    if olds:
        old, pid = max(olds, key=lambda o: changed_at(o[0]))
        if pid != os.getpid() and pid_alive(pid):
            return ArtifactError(
                f"{folder}: no such artifact folder right now: a build (process {pid}) is replacing it; "
                f"the previous artifact is in {old}"
            )
        return ArtifactError(
            f"{folder}: no such artifact folder: a build interrupted while replacing it left the previous "
            f"artifact in {old}; building {folder} again puts it back (or rename {old.name} to {folder.name})"
        )
    partials = [pid for _, kind, pid in staging_folders(folder) if kind == "partial"]
    if any(pid != os.getpid() and pid_alive(pid) for pid in partials):
        return ArtifactError(f"{folder}: no such artifact folder yet: a build is writing it; try again when it has finished")
    if partials:
        return ArtifactError(f"{folder}: no such artifact folder: its build did not finish (only a partial folder is there); build it again")
    return ArtifactError(f"{folder}: no such artifact folder")


def _file_in(folder: Path, name, where: str, path: Path, rule: str = "the manifest names files inside the artifact folder") -> Path:
    """``folder / name`` for a manifest file name that is a plain relative name inside
    the folder (no absolute path, no '..', no link that leads out of it); ``rule`` ends
    the message of a refusal."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"{path}: {where}: file name {name!r} is not a non-empty string")
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or name.startswith(("/", "\\")):
        raise ArtifactError(f"{path}: {where}: file name {name!r} is an absolute path; {rule}")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ArtifactError(f"{path}: {where}: file name {name!r} has a '..' component; {rule}")
    if "\\" in name or "\0" in name or any(p in ("", ".") for p in parts):
        raise ArtifactError(f"{path}: {where}: file name {name!r} is not a plain relative name")
    file = folder / name
    try:
        inside = file.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as e:  # a link loop
        raise ArtifactError(f"{path}: {where}: {name!r} cannot be resolved: {e}") from None
    if not inside:
        raise ArtifactError(f"{path}: {where}: {name!r} is a link to {file.resolve()}, outside the artifact folder; refusing it")
    return file


def _read_manifest(folder: Path, path: Path) -> dict:
    _file_in(folder, MANIFEST, MANIFEST, path)
    size = path.stat().st_size
    if size > MANIFEST_MAX_BYTES:
        raise ArtifactError(f"{path}: {size:,} bytes, more than a manifest may have ({MANIFEST_MAX_BYTES >> 20} MiB); refusing to parse it")
    with open(path, "rb") as f:
        raw = f.read(MANIFEST_MAX_BYTES + 1)
    if len(raw) > MANIFEST_MAX_BYTES:
        raise ArtifactError(f"{path}: more than a manifest may have ({MANIFEST_MAX_BYTES >> 20} MiB); refusing to parse it")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{path}: unreadable manifest: {e}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: manifest is not a JSON object")
    return manifest


def _check_manifest(folder: Path, path: Path, raw: dict) -> tuple[Manifest, dict[str, tuple[Path, FileEntry]]]:
    """The typed manifest (runtime.manifest checks every field's presence and type) and
    its file names checked against the folder; returns it with file name -> (path,
    entry) for every listed file."""
    manifest = Manifest.from_json(raw, path)
    files = {name: (_file_in(folder, name, f"files[{name!r}]", path), entry) for name, entry in manifest.files.items()}
    if "spec.yaml" not in files:
        raise ArtifactError(f"{path}: manifest lists no spec.yaml among its files")
    for graph, g in manifest.graphs.items():
        where = f"graphs[{graph!r}]"
        for name in g.files:
            _file_in(folder, name, f"{where} file", path)
            if name not in files:
                raise ArtifactError(f"{path}: {where} file {name!r} is not among the manifest's files (no sha256 to check it against)")
    tokenizer = manifest.tokenizer
    if tokenizer is not None:
        _file_in(folder, tokenizer, "tokenizer", path)
        if tokenizer not in files:
            raise ArtifactError(f"{path}: tokenizer {tokenizer!r} is not among the manifest's files (no sha256 to check it against)")
    for role, name in manifest.usage.items():
        _file_in(folder, name, f"usage[{role!r}]", path)
        if name not in files:
            raise ArtifactError(f"{path}: usage[{role!r}] file {name!r} is not among the manifest's files (no sha256 to check it against)")
    return manifest, files


def _verify(folder: Path, files: dict[str, tuple[Path, FileEntry]]) -> None:
    for name, (file, entry) in files.items():
        if not file.is_file():
            raise ArtifactError(f"{folder}: file {name} listed in the manifest is missing")
        size = file.stat().st_size
        if entry.bytes is not None and size != entry.bytes:
            raise ArtifactError(f"{file}: {size:,} bytes, the manifest records {entry.bytes:,}; the file is truncated or was changed")
        if sha256_file(file) != entry.sha256:
            raise ArtifactError(f"{file}: sha256 differs from the manifest; the file is corrupted or was changed")


_INSIDE = "a graph's external data must be a file inside the artifact folder"


def check_external_data(folder: Path, manifest: Manifest) -> None:
    """Refuse (ArtifactError) a graph whose tensors keep their bytes in a file outside
    ``folder`` (an absolute path, a '..', a link leading out) or in one the manifest does
    not list (no sha256), before ONNX Runtime opens it; reads the graph files'
    external_data locations without onnx (runtime.external_data)."""
    from runtime.external_data import MalformedGraph, external_references

    for graph, g in manifest.graphs.items():
        path = folder / g.files[0]
        try:
            refs = external_references(path)
        except OSError as e:
            raise ArtifactError(f"{path}: cannot read graph {graph!r}: {e.strerror or e}") from None
        except MalformedGraph as e:
            raise ArtifactError(f"{path}: not a readable ONNX graph ({e})") from None
        for ref in refs:
            where = f"tensor {ref.tensor!r} external data"
            if ref.location is None:
                if not ref.external:
                    continue  # entries without a location, bytes inside: nothing is opened
                raise ArtifactError(f"{path}: {where} names no location; {_INSIDE}")
            _file_in(folder, ref.location, where, path, _INSIDE)
            if ref.location not in manifest.files:
                raise ArtifactError(f"{path}: {where} file {ref.location!r} is not among the manifest's files (no sha256 to check it against)")


@dataclass(frozen=True)
class Artifact:
    """An artifact folder and its manifest: ``info`` typed (runtime.manifest.Manifest,
    what the runtime and the application read), ``manifest`` the JSON object as read
    (kept for callers that still index it by key; the zoo.app.cli commands)."""

    folder: Path
    manifest: dict
    info: Optional[Manifest] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.info is None:  # an Artifact made by hand: type its manifest here
            object.__setattr__(self, "info", Manifest.from_json(self.manifest, Path(self.folder) / MANIFEST))

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def graphs(self) -> tuple[GraphSpec, ...]:
        """The graphs as the manifest records them (names, dtypes, axes)."""
        return self.info.graph_specs()

    @property
    def model(self) -> dict:
        """The manifest's model entry as JSON (vocab_size, max_seq_len, d_model, tokens);
        typed: ``info.model``."""
        return self.manifest["model"]

    @property
    def cache(self) -> CacheLayout | None:
        """The decoder graph's KV cache (None for encoder-only)."""
        kv = self.info.kv_cache
        if kv is None:
            return None
        return CacheLayout(layers=kv.layers, kv_heads=kv.kv_heads, head_dim=kv.head_dim, cross=bool(kv.cross), refill_at=kv.refill_at,
                           shared=bool(kv.buffer))

    def path(self, graph: str) -> Path:
        return self.folder / self.info.graphs[graph].files[0]

    @cached_property
    def usage(self) -> Usage:
        """The usage files it carries (tokenizer_config, chat_template, generation_config, pooling)."""
        return Usage(self.folder, self.info.usage)


def load_artifact(folder: str | Path, *, verify: bool = True) -> Artifact:
    """Open an artifact folder; ``verify`` checks every file's size and sha256. The
    manifest's structure and file names, and the graphs' external data locations
    (check_external_data), are checked either way."""
    folder = Path(folder)
    if not folder.exists():
        raise _missing(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: not a folder (an artifact is a folder with {MANIFEST})")
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST}; not an artifact, or a build that did not finish")
    raw = _read_manifest(folder, path)
    manifest, files = _check_manifest(folder, path, raw)
    if verify:
        _verify(folder, files)
    check_external_data(folder, manifest)  # before ONNX Runtime opens a graph
    return Artifact(folder, raw, manifest)
