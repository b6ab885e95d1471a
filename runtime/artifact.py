"""Reading an artifact folder: manifest.json, format version, file hashes.

An artifact is complete only when its manifest.json exists (written last, the
folder renamed into place after), the format version is one this runtime reads,
and every file listed has the recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from zoo.contract import FORMAT_VERSION, CacheLayout, GraphSpec, TensorSpec
from zoo.errors import ArtifactError

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    folder: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def graphs(self) -> tuple[GraphSpec, ...]:
        """The graphs as the manifest records them (names, dtypes, axes)."""

        def tensors(values: list[dict]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(v["name"], v["dtype"], tuple(v["shape"])) for v in values)

        return tuple(
            GraphSpec(name, g["files"][0], tensors(g["inputs"]), tensors(g["outputs"]))
            for name, g in self.manifest["graphs"].items()
        )

    @property
    def model(self) -> dict:
        """vocab_size, max_seq_len, d_model and the special token ids."""
        return self.manifest["model"]

    @property
    def cache(self) -> CacheLayout | None:
        """The decoder graph's KV cache (None for encoder-only)."""
        kv = self.manifest.get("kv_cache")
        if not kv:
            return None
        return CacheLayout(layers=kv["layers"], kv_heads=kv["kv_heads"], head_dim=kv["head_dim"], cross=bool(kv["cross"]))

    @property
    def spec(self) -> dict:
        """The resolved spec (spec.yaml) as plain data: vocab_size, max_seq_len, ..."""
        import yaml

        return yaml.safe_load((self.folder / "spec.yaml").read_text(encoding="utf-8"))

    def path(self, graph: str) -> Path:
        return self.folder / self.manifest["graphs"][graph]["files"][0]


def load_artifact(folder: str | Path, *, verify: bool = True) -> Artifact:
    """Open an artifact folder; ``verify`` checks every file's sha256."""
    folder = Path(folder)
    if not folder.exists():
        raise ArtifactError(f"{folder}: no such artifact folder")
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: not a folder (an artifact is a folder with {MANIFEST})")
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST}; not an artifact, or a build that did not finish")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable manifest: {e}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: manifest is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {version!r}, this runtime reads version {FORMAT_VERSION}; rebuild it with this zoo"
        )
    for key in ("name", "family", "graphs", "files", "model"):
        if key not in manifest:
            raise ArtifactError(f"{path}: manifest lacks '{key}'")
    if verify:
        for name, entry in manifest["files"].items():
            file = folder / name
            if not file.is_file():
                raise ArtifactError(f"{folder}: file {name} listed in the manifest is missing")
            if sha256_file(file) != entry["sha256"]:
                raise ArtifactError(f"{file}: sha256 differs from the manifest; the file is corrupted or was changed")
    return Artifact(folder, manifest)
