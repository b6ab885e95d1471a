"""``zoo import``'s work: a Hugging Face model folder becomes OUT/spec.yaml, OUT/weights.safetensors,
and, when the folder has them, OUT/tokenizer.json and the usage files (zoo.spec.usage:
tokenizer_config.json, chat_template.jinja, generation_config.json, pooling.json), written
whole or not at all."""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

from zoo.spec.errors import ArtifactError
from zoo.spec.usage import USAGE_FILES

IMPORTED = {"spec.yaml", "weights.safetensors", "tokenizer.json", *(u.file for u in USAGE_FILES.values())}


def import_model(folder: Path, out: Path, *, name: Optional[str] = None, dtype: str = "float32", force: bool = False,
                 step: Optional[Callable] = None) -> dict:
    """Import ``folder`` into ``out`` (an earlier import there is replaced only with ``force``);
    ``step(label)``: progress around the slow parts. Returns what was imported and written."""
    from zoo.app.build import spec_yaml, sweep
    from runtime.artifact import staged

    step = step or (lambda label: nullcontext())
    sweep(out)  # what an earlier, killed import left: puts back a folder it had moved away
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        earlier = out.is_dir() and {p.name for p in out.iterdir()} <= IMPORTED
        if not (earlier and force):
            why = "holds an earlier import; --force replaces it" if earlier else "exists and is not an empty folder; refusing to overwrite it"
            raise ArtifactError(f"{out}: {why}")
    from compiler.importers import import_folder
    from compiler.weights import save_tensors
    from zoo.app import usage_files

    usage = usage_files.collect(folder)  # checked (sizes, JSON, the template compiles) before any weight is read
    with step(f"importing {folder}"):
        imported = import_folder(folder, name=name, dtype=dtype)
    if imported.tokenizer:
        from runtime.tokenizer import check_tokenizer

        check_tokenizer(imported.tokenizer)  # one the runtime cannot load is refused, not copied
    spec = imported.spec
    with staged(out) as partial:  # the earlier import stays whole until the new one is in place
        header = f"# imported by `zoo import` from {folder.resolve()} (model_type {imported.model_type})\n"
        (partial / "spec.yaml").write_text(header + spec_yaml(spec), encoding="utf-8")
        with step(f"writing {len(imported.state)} tensors"):
            save_tensors(imported.state, partial / "weights.safetensors", {"source": str(folder.resolve()), "model_type": imported.model_type})
        if imported.tokenizer:
            shutil.copyfile(imported.tokenizer, partial / "tokenizer.json")
        usage_files.write(usage, partial)
    written = [out / "spec.yaml", out / "weights.safetensors"] + ([out / "tokenizer.json"] if imported.tokenizer else [])
    written += [out / USAGE_FILES[role].file for role in usage]
    return {"folder": folder, "out": out, "model_type": imported.model_type, "family": spec.family,
            "parameters": spec.parameter_count(), "written": written, "tokenizer": bool(imported.tokenizer),
            "usage": sorted(usage)}
