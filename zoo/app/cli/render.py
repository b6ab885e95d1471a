"""The one renderer of the command line: a command parses its arguments, calls the
application layer (which returns data) and hands the result here.

``render(result, as_json=True)`` prints the result as JSON on stdout (dataclasses as
dicts, paths as strings); ``render(result, as_json=False, view=...)`` prints what
``view(result)`` makes of it: a list of blocks, each a line of text (``str``) or a
``Table``. Without a view a dict prints as ``key  value`` lines and a list of dicts
as a table. Tables are drawn by rich (rich.table.Table, no borders, two spaces
between columns), never wrapped or cut; text is printed as it is (no markup).
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import PurePath
from typing import Any, Callable, Iterable, Optional, Sequence, TextIO, Union

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

WIDE = 100_000  # the width tables are laid out in: never wrapped or cut


@dataclasses.dataclass
class Table:
    """Rows under a header (``None``: no header). ``align``: one letter per column, ``l``
    left or ``r`` right (missing letters: left); ``indent``: spaces before every line;
    ``rule``: a line under the header."""

    header: Optional[Sequence[str]]
    rows: Sequence[Sequence[Any]]
    align: str = ""
    indent: int = 0
    rule: bool = False


Block = Union[str, Table]


def field(label: str, value: Any) -> str:
    """``label    value``: the labelled lines of the commands (values start in column 11)."""
    return f"{label:<9} {value}"


def plain(value: Any) -> Any:
    """``value`` as JSON data: dataclasses as dicts, tuples as lists, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def table_lines(t: Table, *, styled: bool = False) -> list[str]:
    """``t`` drawn by rich as lines of text (trailing spaces dropped); ``styled``: a bold header (ANSI)."""
    rich_table = RichTable(
        box=box.SIMPLE_HEAD if t.rule else None, show_edge=False, pad_edge=False, padding=(0, 1),
        header_style="bold" if styled else "", show_header=t.header is not None,
    )
    names = t.header if t.header is not None else [""] * max((len(r) for r in t.rows), default=0)
    for i, name in enumerate(names):
        justify = "right" if t.align[i:i + 1] == "r" else "left"
        rich_table.add_column(str(name), justify=justify, no_wrap=True)
    for row in t.rows:
        rich_table.add_row(*(str(cell) for cell in row))
    out = io.StringIO()
    console = Console(file=out, width=WIDE, force_terminal=styled, color_system="standard" if styled else None,
                      highlight=False, markup=False, emoji=False, legacy_windows=False)
    console.print(rich_table)
    pad = " " * t.indent
    return [pad + line.rstrip() if line.strip() else "" for line in out.getvalue().rstrip("\n").split("\n")]


def _default_view(result: Any) -> list[Block]:
    data = plain(result)
    if isinstance(data, dict):
        return [field(str(k), v) for k, v in data.items()]
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        header = list(data[0])
        return [Table(header, [[r.get(k, "") for k in header] for r in data])]
    if isinstance(data, list):
        return [str(v) for v in data]
    return [str(data)]


def _styled(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def render(result: Any, *, as_json: bool, view: Optional[Callable[[Any], Iterable[Block]]] = None,
           file: Optional[TextIO] = None) -> None:
    """Print ``result``: JSON (``json.dumps(..., indent=2)``) or the blocks of ``view`` on
    ``file`` (default stdout; looked up when called, so redirections apply)."""
    file = file or sys.stdout
    if as_json:
        file.write(json.dumps(plain(result), indent=2) + "\n")
        return
    styled = _styled(file)
    lines: list[str] = []
    for block in (view or _default_view)(result):
        lines += table_lines(block, styled=styled) if isinstance(block, Table) else [block]
    if lines:
        file.write("\n".join(lines) + "\n")
    file.flush()
