"""`zoo import`: a Hugging Face model folder becomes a zoo spec and zoo weights."""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from pathlib import Path

from zoo.spec.errors import ArtifactError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="import a Hugging Face model folder as OUT/spec.yaml + OUT/weights.safetensors",
        description="Map a local Hugging Face model folder (config.json and model.safetensors, sharded safetensors "
        "or pytorch_model.bin) onto a zoo spec and zoo-named weights. What the zoo cannot reproduce is refused, "
        "every unsupported field listed, exit code 2.",
    )
    p.add_argument("folder", type=Path, help="the model folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder for spec.yaml and weights.safetensors")
    p.add_argument("--name", help="spec name (default: the folder's name)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="dtype of the spec and weights (default float32)")
    p.add_argument("--force", action="store_true", help="replace OUT if it holds an earlier import")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from zoo.app.progress import step

    from zoo.app.build import spec_yaml, swap_into_place, sweep
    from runtime.artifact import staging_name

    out: Path = args.out
    sweep(out)  # what an earlier, killed import left: puts back a folder it had moved away
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        earlier = out.is_dir() and {p.name for p in out.iterdir()} <= {"spec.yaml", "weights.safetensors", "tokenizer.json"}
        if not (earlier and args.force):
            why = "holds an earlier import; --force replaces it" if earlier else "exists and is not an empty folder; refusing to overwrite it"
            raise ArtifactError(f"{out}: {why}")
    from compiler.importers import import_folder
    from compiler.weights import save_tensors

    with step(f"importing {args.folder}"):
        imported = import_folder(args.folder, name=args.name, dtype=args.dtype)
    if imported.tokenizer:
        from runtime.tokenizer import check_tokenizer

        check_tokenizer(imported.tokenizer)  # one the runtime cannot load is refused, not copied
    spec = imported.spec
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / staging_name(out.name, "partial", os.getpid(), uuid.uuid4().hex[:8])
    partial.mkdir()
    try:
        header = f"# imported by `zoo import` from {args.folder.resolve()} (model_type {imported.model_type})\n"
        (partial / "spec.yaml").write_text(header + spec_yaml(spec), encoding="utf-8")
        with step(f"writing {len(imported.state)} tensors"):
            save_tensors(imported.state, partial / "weights.safetensors", {"source": str(args.folder.resolve()), "model_type": imported.model_type})
        if imported.tokenizer:
            shutil.copyfile(imported.tokenizer, partial / "tokenizer.json")
        swap_into_place(partial, out)  # the earlier import stays whole until the new one is in place
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"imported  {args.folder}  ({imported.model_type} -> {spec.family}, {spec.parameter_count():,} parameters)")
    print(f"wrote     {out / 'spec.yaml'}")
    print(f"          {out / 'weights.safetensors'}")
    carry = f" --tokenizer {out / 'tokenizer.json'}" if imported.tokenizer else ""
    if imported.tokenizer:
        print(f"          {out / 'tokenizer.json'}")
    print(f"next      zoo build {out / 'spec.yaml'} --weights {out / 'weights.safetensors'}{carry}")
    return 0
