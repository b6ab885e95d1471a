"""Writing the repository: one model folder per graph (config.pbtxt, 1/model.onnx and its
external data files, checked against the manifest's sha256 as they are copied) and the
README, staged in a hidden sibling folder and renamed into place."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from runtime.artifact import Artifact, load_artifact, staged
from runtime.manifest import FileEntry
from zoo.app.triton.config import NAME, TritonModel, TritonOptions, model_config
from zoo.app.triton.readme import readme
from zoo.spec.errors import ArtifactError, InputError

MODEL_FILE = "model.onnx"
_COPY_CHUNK = 1 << 20


@dataclass
class TritonExport:
    repo: Path
    artifact: Artifact
    models: list[TritonModel] = field(default_factory=list)
    linked: bool = False  # whether the graph files are hard links into the artifact


def plan(artifact: Artifact, options: TritonOptions) -> list[TritonModel]:
    """The models of the repository for ``artifact``, configs rendered (nothing written)."""
    base = options.name or artifact.name
    if not NAME.fullmatch(base):
        raise InputError(f"{artifact.folder}: model name {base!r} is not usable as a Triton model name; give --name")
    graphs = artifact.graphs
    family = artifact.family
    expected = {"decoder-only": ["model"], "encoder-only": ["model"], "encoder-decoder": ["encoder", "decoder"]}.get(family)
    if expected is None:
        raise ArtifactError(f"{artifact.folder}: family {family!r} is not one this exporter knows")
    if sorted(g.name for g in graphs) != sorted(expected):
        raise ArtifactError(f"{artifact.folder}: a {family} artifact with graphs {[g.name for g in graphs]}; expected {expected}")
    models = []
    for graph in graphs:
        name = base if graph.name == "model" else f"{base}_{graph.name}"
        files = artifact.info.graphs[graph.name].files
        if MODEL_FILE in files[1:]:
            raise ArtifactError(f"{artifact.folder}: graph {graph.name!r} has an external data file named {MODEL_FILE}")
        models.append(TritonModel(name, graph, files, model_config(name, graph, artifact, options)))
    return models


def _copy_checked(src: Path, dst: Path, entry: FileEntry, link: bool) -> bool:
    """Copy (or hard-link) ``src`` to ``dst`` and check its sha256 and size against the
    manifest ``entry`` on the way; returns whether it was linked."""
    linked = False
    h = hashlib.sha256()
    if link:
        try:
            os.link(src, dst)
            linked = True
        except OSError:
            linked = False  # another filesystem, or links not allowed: copy instead
    try:
        if linked:
            with open(dst, "rb") as f:
                while block := f.read(_COPY_CHUNK):
                    h.update(block)
        else:
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                while block := fin.read(_COPY_CHUNK):
                    h.update(block)
                    fout.write(block)
            shutil.copystat(src, dst)
    except FileNotFoundError:
        raise ArtifactError(f"{src}: listed in the manifest but missing") from None
    size = dst.stat().st_size
    if entry.bytes is not None and size != entry.bytes:
        raise ArtifactError(f"{src}: {size:,} bytes, the manifest records {entry.bytes:,}; the file is truncated or was changed")
    if h.hexdigest() != entry.sha256:
        raise ArtifactError(f"{src}: sha256 differs from the manifest; the file is corrupted or was changed")
    return linked


def _inside(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b)


def export_triton(artifact: str | Path | Artifact, repo: str | Path, options: TritonOptions = TritonOptions(), *, force: bool = False) -> TritonExport:
    """Write ``repo`` as a Triton model repository serving ``artifact``.

    Written into a hidden sibling folder and renamed into place at the end, so ``repo``
    is either the complete repository or what was there before. A non-empty ``repo`` is
    refused unless ``force`` (it is then replaced, as a whole). The graph files are
    checked against the manifest's sha256 as they are copied."""
    options.check()
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact, verify=False)  # the graphs are hashed as copied
    models = plan(art, options)
    repo = Path(repo)
    if repo.is_symlink():
        raise InputError(f"{repo}: is a symbolic link; give the real folder")
    if repo.exists():
        if not repo.is_dir():
            raise InputError(f"{repo}: exists and is not a folder")
        if any(repo.iterdir()) and not force:
            raise InputError(f"{repo}: exists and is not empty; refusing to overwrite it (--force replaces it)")
    real_repo, real_art = repo.resolve(), art.folder.resolve()
    if _inside(real_art, real_repo) or _inside(real_repo, real_art):
        raise InputError(f"{repo}: the repository and the artifact {art.folder} would contain one another; write it elsewhere")
    result = TritonExport(repo, art, models)
    with staged(repo) as partial:
        linked = []
        for model in models:
            version = partial / model.name / "1"
            version.mkdir(parents=True)
            (partial / model.name / "config.pbtxt").write_text(model.config, encoding="utf-8")
            for i, name in enumerate(model.files):
                entry = art.info.files.get(name)
                if entry is None:
                    raise ArtifactError(f"{art.folder}: graph file {name!r} is not among the manifest's files")
                dst = version / (MODEL_FILE if i == 0 else name)
                dst.parent.mkdir(parents=True, exist_ok=True)
                linked.append(_copy_checked(art.folder / name, dst, entry, options.link))
        result.linked = bool(linked) and all(linked)
        (partial / "README.md").write_text(readme(art, models, options), encoding="utf-8")
    return result
