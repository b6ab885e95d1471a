"""Progress on stderr, without dependencies.

``step(label)``: on a terminal a spinner with the elapsed seconds, redrawn by a
small thread; elsewhere (logs, pipes) nothing until the end. Then
``✓ label (3.2s)`` or ``✗ label (3.2s)``.

``bar(iterable, total=None, label="")``: on a terminal a redrawn bar with
percentage, count, elapsed time and ETA; elsewhere one line at the end.

``ZOO_QUIET=1`` silences both.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
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


def _write(stream: TextIO, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
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
    start = time.perf_counter()
    done = threading.Event()

    def spin() -> None:
        i = 0
        while not done.wait(INTERVAL):
            _write(stream, f"\r\033[K{SPINNER[i % len(SPINNER)]} {label} ({time.perf_counter() - start:.1f}s)")
            i += 1

    spinner = threading.Thread(target=spin, daemon=True) if live else None
    if spinner:
        spinner.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        done.set()
        if spinner:
            spinner.join()
        clear = "\r\033[K" if live else ""
        _write(stream, f"{clear}{'✓' if ok else '✗'} {label} ({time.perf_counter() - start:.1f}s)\n")


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
    start = time.perf_counter()
    last_draw = 0.0
    count = 0

    def line() -> str:
        elapsed = time.perf_counter() - start
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

    finished = False
    try:
        for item in iterable:
            yield item
            count += 1
            now = time.perf_counter()
            if live and now - last_draw >= INTERVAL:
                _write(stream, "\r\033[K" + line())
                last_draw = now
        finished = True
    except GeneratorExit:  # the consumer stopped early: not a failure
        finished = True
        raise
    finally:
        clear = "\r\033[K" if live else ""
        _write(stream, f"{clear}{'✓' if finished else '✗'} {line()}\n")
