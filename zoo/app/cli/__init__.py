"""The ``zoo`` command line: one module per command group, each with ``register(subparsers)``.

Errors the zoo knows (``ZooError``) become one line on stderr and their exit code;
anything else is an internal error, also one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from zoo import __version__
from zoo.spec.errors import ZooError, one_line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoo",
        description="Transformer Zoo: describe a transformer in YAML, validate it, build it to ONNX, run it.",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from zoo.app.cli import build_cmds, chat_cmd, compare_cmd, generate_cmd, import_cmds, spec_cmds  # none imports torch or onnxruntime at import time

    spec_cmds.register(sub)
    build_cmds.register(sub)
    generate_cmd.register(sub)
    chat_cmd.register(sub)
    compare_cmd.register(sub)
    import_cmds.register(sub)
    from zoo.app.cli import triton_cmd; triton_cmd.register(sub)  # noqa: E702
    from zoo.app.cli import encode_cmd; encode_cmd.register(sub)  # noqa: E702
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZooError as err:
        if args.debug:
            raise
        for e in [err, *getattr(err, "others", [])]:
            print(f"error: {one_line(str(e))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo list | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 - the one place that turns surprises into a line
        if args.debug:
            raise
        print(
            f"internal error: {type(err).__name__}: {one_line(str(err))} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
