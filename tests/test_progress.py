"""zoo.app.progress (drawn by rich): quiet off a terminal until the end, redrawn on one, silent under ZOO_QUIET."""

from __future__ import annotations

import io
import time

import pytest

from zoo.app import progress


ERASE = "\r\033[2K"  # rich's redraw: back to the line's start, erase the line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stream(monkeypatch):
    monkeypatch.delenv("ZOO_QUIET", raising=False)

    def use(kind=io.StringIO):
        out = kind()
        monkeypatch.setattr(progress, "_stream", lambda: out)
        return out

    return use


def test_step_off_a_terminal_prints_one_line_at_the_end(stream):
    out = stream()
    with progress.step("exporting"):
        assert out.getvalue() == ""
    assert out.getvalue().startswith("✓ exporting (") and out.getvalue().endswith("s)\n")


def test_step_failure_is_marked_and_reraised(stream):
    out = stream()
    with pytest.raises(ValueError):
        with progress.step("parity"):
            raise ValueError("off")
    assert out.getvalue().startswith("✗ parity")


def test_step_on_a_terminal_spins(stream, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.01)
    out = stream(Terminal)
    with progress.step("building"):
        time.sleep(0.1)
    text = out.getvalue()
    assert ERASE in text and any(c in text for c in progress.SPINNER)
    assert text.endswith("✓ building (0.1s)\n") or "✓ building (" in text.splitlines()[-1]


def test_bar_counts_and_finishes(stream):
    out = stream()
    assert list(progress.bar(range(7), label="layers")) == list(range(7))
    line = out.getvalue()
    assert line.startswith("✓ layers [") and "100% 7/7" in line and line.count("\n") == 1


def test_bar_on_a_terminal_redraws(stream, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    out = stream(Terminal)
    for _ in progress.bar(iter(range(4)), total=4):
        pass
    assert out.getvalue().count(ERASE) >= 4 and "4/4" in out.getvalue()


def test_bar_without_total(stream):
    out = stream()
    list(progress.bar(x for x in range(3)))
    assert out.getvalue().startswith("✓ 3 (")


def test_quiet(stream, monkeypatch):
    out = stream()
    monkeypatch.setenv("ZOO_QUIET", "1")
    with progress.step("x"):
        pass
    assert list(progress.bar([1, 2])) == [1, 2]
    assert out.getvalue() == ""
