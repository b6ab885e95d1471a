"""Progress on stderr, drawn by rich.

``step(label)``: on a terminal a spinner with the elapsed seconds (a rich Progress,
redrawn by rich's refresh thread); elsewhere (logs, pipes) nothing until the end.
Then ``✓ label (3.2s)`` or ``✗ label (3.2s)``.

``bar(iterable, total=None, label="")``: on a terminal a redrawn bar with
percentage, count, elapsed time and ETA; elsewhere one line at the end.

``ZOO_QUIET=1`` silences both.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TextIO, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.spinner import Spinner

T = TypeVar("T")

SPINNER_NAME = "dots"
SPINNER = "".join(Spinner(SPINNER_NAME).frames)  # ⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏
INTERVAL = 0.1  # seconds between redraws
WIDTH = 24  # of the bar


def _stream() -> TextIO:
    return sys.stderr


def quiet() -> bool:
    return os.environ.get("ZOO_QUIET", "").strip() not in ("", "0", "false", "no")


def _live(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _console(stream: TextIO, live: bool) -> Console:
    """A rich console on ``stream`` (stderr unless a test swaps it), a terminal when ``live``."""
    return Console(file=stream, force_terminal=live, highlight=False, markup=False,
                   emoji=False, soft_wrap=True)


def _progress(console: Console, *columns) -> Progress:
    return Progress(*columns, console=console, transient=True, auto_refresh=False,
                    redirect_stdout=False, redirect_stderr=False)


def _safely(call, *args, **kwargs) -> bool:
    """Run a drawing call; False when the stream is closed or broken (that must not break the work)."""
    try:
        call(*args, **kwargs)
        return True
    except (OSError, ValueError):
        return False


def _write(console: Console, text: str) -> None:
    try:
        console.print(text, soft_wrap=True)
    except (OSError, ValueError):  # a closed or broken stderr must not break the work
        pass


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


@contextmanager
def step(label: str) -> Iterator[None]:
    """Show ``label`` while the block runs, then its outcome and duration."""
    stream = _stream()
    if quiet():
        yield
        return
    live = _live(stream)
    console = _console(stream, live)
    start = time.perf_counter()
    spinner = None
    if live:
        spinner = Progress(SpinnerColumn(SPINNER_NAME), TextColumn("{task.description}", markup=False),
                           TextColumn("({task.elapsed:.1f}s)"), console=console, transient=True,
                           refresh_per_second=1 / max(INTERVAL, 0.001), redirect_stdout=False, redirect_stderr=False)
        spinner.add_task(label, total=None)
        spinner = spinner if _safely(spinner.start) else None
    ok = False
    try:
        yield
        ok = True
    finally:
        if spinner:
            _safely(spinner.stop)
        _write(console, f"{'✓' if ok else '✗'} {label} ({time.perf_counter() - start:.1f}s)")


def _line(label: str, count: int, total: int | None, elapsed: float) -> str:
    """The bar's last line: ``label [████····]  42% 5/12 0:03 eta 0:04`` (no total: ``label 5 (0:03)``)."""
    head = f"{label} " if label else ""
    if not total:
        return f"{head}{count} ({_clock(elapsed)})"
    frac = min(count / total, 1.0)
    filled = int(frac * WIDTH)
    eta = elapsed / count * (total - count) if count else 0.0
    return (
        f"{head}[{'█' * filled}{'·' * (WIDTH - filled)}] {frac * 100:3.0f}% "
        f"{count}/{total} {_clock(elapsed)} eta {_clock(eta)}"
    )


def _bar_progress(console: Console, total: int | None) -> Progress:
    label = TextColumn("{task.description}", markup=False)
    if not total:
        return _progress(console, label, TextColumn("{task.completed}"), TimeElapsedColumn())
    return _progress(console, label, BarColumn(bar_width=WIDTH), TaskProgressColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())


def bar(iterable: Iterable[T], total: int | None = None, label: str = "") -> Iterator[T]:
    """Yield from ``iterable``, drawing how far it got."""
    stream = _stream()
    if quiet():
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    live = _live(stream)
    console = _console(stream, live)
    drawn = _bar_progress(console, total) if live else None
    task = drawn.add_task(label, total=total or None) if drawn else None
    if drawn and not _safely(drawn.start):
        drawn = None
    start = last_draw = time.perf_counter()
    count, finished = 0, False
    try:
        for item in iterable:
            yield item
            count += 1
            now = time.perf_counter()
            if drawn and now - last_draw >= INTERVAL:
                _safely(drawn.update, task, completed=count, refresh=True)
                last_draw = now
        finished = True
    except GeneratorExit:  # the consumer stopped early: not a failure
        finished = True
        raise
    finally:
        if drawn:
            _safely(drawn.stop)
        _write(console, f"{'✓' if finished else '✗'} {_line(label, count, total, time.perf_counter() - start)}")
