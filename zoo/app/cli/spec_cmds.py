"""`zoo validate`, `zoo list`, `zoo schema`, `zoo show`: the commands about specs.

They import zoo modules only, never torch or onnxruntime (a test checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.app.cli.render import Block, Table, render
from zoo.spec.errors import SpecError


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field (value read as YAML), e.g. decoder.layers=2 or positional=alibi; repeatable",
    )


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "validate",
        help="check spec files or catalog names",
        description="Load and validate each SPEC (a catalog name or a YAML file); stop at the first error.",
    )
    v.add_argument("specs", nargs="+", metavar="SPEC", help="catalog name or path to a spec YAML file")
    _add_overrides(v)
    v.set_defaults(func=cmd_validate)

    ls = sub.add_parser("list", help="the catalog as a table", description="List every spec of the catalog.")
    ls.set_defaults(func=cmd_list)

    s = sub.add_parser(
        "schema", help="JSON Schema of spec files", description="Print the JSON Schema of spec files (for editors)."
    )
    s.add_argument("-o", "--out", type=Path, help="write it to this file instead of stdout")
    s.set_defaults(func=cmd_schema)

    sh = sub.add_parser(
        "show",
        help="the fully resolved spec as YAML",
        description="Print SPEC with extends and overrides resolved and defaults filled in, as YAML.",
    )
    sh.add_argument("spec", metavar="SPEC", help="catalog name or path to a spec YAML file")
    _add_overrides(sh)
    sh.set_defaults(func=cmd_show)


def _summary(spec) -> str:  # noqa: ANN001 - a ModelSpec
    from zoo.spec.params import human

    return f"{spec.family}, {human(spec.parameter_count())} params"


def cmd_validate(args: argparse.Namespace) -> int:
    from zoo.spec.loader import load_spec

    for source in args.specs:  # one line per spec as it loads: the first error stops the rest
        spec = load_spec(source, args.overrides)
        render({"name": spec.name, "summary": _summary(spec)}, as_json=False, view=lambda r: [f"ok  {r['name']}  ({r['summary']})"])
    return 0


def layers_text(spec) -> str:  # noqa: ANN001 - a ModelSpec
    return "+".join(str(stack.layers) for _, stack in spec.stacks())


LIST_HEADER = ["name", "family", "params", "d_model", "layers", "positional", "description"]


def _list_view(entries: list) -> list[Block]:
    """The catalog as a table: one row per spec, a spec that fails to load as an ERROR row."""
    from zoo.spec.params import human

    rows = []
    for name, _path, spec in entries:
        if isinstance(spec, SpecError):
            rows.append([name, "ERROR", "", "", "", "", str(spec)])
        else:
            rows.append([name, spec.family, human(spec.parameter_count()), str(spec.d_model), layers_text(spec),
                         spec.positional.kind, spec.description])
    return [Table(LIST_HEADER, rows)]


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.spec.catalog import entries

    listed = list(entries())
    render(listed, as_json=False, view=_list_view)
    broken = sum(isinstance(spec, SpecError) for _, _, spec in listed)
    if broken:
        print(f"{broken} catalog spec(s) failed to load", file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from zoo.spec.model import schema

    if args.out:
        args.out.write_text(json.dumps(schema(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        render(schema(), as_json=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import yaml

    from zoo.spec.loader import load_spec

    spec = load_spec(args.spec, args.overrides)
    sys.stdout.write(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    return 0
