"""`zoo import`: a Hugging Face model folder becomes a zoo spec and zoo weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.app.cli.render import field, render


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="import a Hugging Face model folder as OUT/spec.yaml + OUT/weights.safetensors (+ tokenizer and usage files)",
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
    from zoo.app.importing import import_model
    from zoo.app.progress import step

    result = import_model(args.folder, args.out, name=args.name, dtype=args.dtype, force=args.force, step=step)
    render(result, as_json=False, view=_view)
    return 0


def _view(r: dict) -> list[str]:
    spec, *rest = r["written"]
    return [
        field("imported", f"{r['folder']}  ({r['model_type']} -> {r['family']}, {r['parameters']:,} parameters)"),
        field("wrote", spec),
        *(field("", path) for path in rest),
        field("next", f"zoo build {r['out']} -o artifacts/{r['out'].name}   (spec, weights, tokenizer and usage files of the folder)"),
    ]
