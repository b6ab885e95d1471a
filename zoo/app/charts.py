"""PNG charts for the comparison reports, drawn with matplotlib (the ``charts`` extra).

``line_chart``, ``bar_chart`` and ``grouped_bar_chart`` return PNG bytes, and write them
atomically (zoo.spec.files) when given ``path=``. None, NaN and infinite values are
skipped; a chart with nothing left to draw raises ``ValueError``. matplotlib is imported
only when a chart is drawn, onto an Agg canvas (no display, no pyplot state); where it
is not installed, drawing raises ``ChartsUnavailable``. Colours come from the Okabe-Ito
palette (readable with colour-blindness).
"""

from __future__ import annotations

import io
import math
import os
from typing import Any, Mapping, Sequence

from zoo.spec.errors import ZooError
from zoo.spec.files import write_atomic

# Okabe & Ito (2008), "Color Universal Design"; yellow and black last (weakest on white,
# closest to the ink). Series past the eighth cycle the colours with another marker shape.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D")
GRID, AXIS = "#E2E2E2", "#505050"
DPI = 100
INSTALL = "pip install 'transformer-zoo[charts]'"


class ChartsUnavailable(ZooError):
    """matplotlib, which draws the charts, is not installed."""


def save(png: bytes, path: str | os.PathLike[str]) -> None:
    """Write ``png`` to ``path`` atomically (zoo.spec.files)."""
    write_atomic(path, png)


_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def format_number(value: float, sig: int = 3) -> str:
    """Compact: ``sig`` significant figures, k/M/G/T suffixes, no trailing zeros.
    1234 -> "1.23k", 2.5e6 -> "2.5M", 0.5 -> "0.5", 0.0005 -> "0.0005", 1.23e-5 -> "1.23e-5"."""
    if not math.isfinite(value):
        return "n/a" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    sig = max(1, sig)
    value = float(f"{value:.{sig - 1}e}")  # round first: 999.96 must become "1k", not "1000"
    size = abs(value)
    if 1e-4 <= size < 1e15:
        unit, suffix = next(((d, s) for d, s in _SUFFIXES if size >= d), (1.0, ""))
        v = value / unit
        decimals = max(0, sig - 1 - math.floor(math.log10(abs(v))))
        text = f"{v:.{decimals}f}"
        return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix
    mantissa, exponent = f"{value:.{sig - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _number(value: object) -> float | None:
    """``value`` as a float; None where it is None, NaN or infinite."""
    if value is None:
        return None
    v = float(value)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- matplotlib


def _figure(width: int, height: int, who: str) -> tuple[Any, Any]:
    """A ``width`` x ``height`` pixel figure on an Agg canvas and its one axes."""
    if width < 200 or height < 150:
        raise ValueError(f"{who}: a chart needs at least 200x150 pixels, not {width}x{height}")
    try:
        import matplotlib  # noqa: F401  (first: a missing or blocked package fails here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ChartsUnavailable(f"the charts need matplotlib, which is not installed: {INSTALL}") from e
    # half a pixel more: the canvas truncates the size in pixels, and 5.4 * 100 may be 539.99..
    fig = Figure(figsize=((width + 0.5) / DPI, (height + 0.5) / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _style(ax: Any, title: str, x_label: str, y_label: str) -> None:
    ax.set_title(title, fontsize="large")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _plain(value: float, _pos: object = None) -> str:
    return str(int(value)) if 1 <= value < 1e5 else format_number(value)


def _log_scale(ax: Any, which: str, values: list[float]) -> None:
    """A log scale on axis ``which`` ("x" or "y"): base 2 with plain labels where every
    value is a power of 2 (context lengths, batch sizes), else base 10."""
    from matplotlib.ticker import FuncFormatter

    set_scale, axis = (ax.set_xscale, ax.xaxis) if which == "x" else (ax.set_yscale, ax.yaxis)
    if all(math.log2(v) == round(math.log2(v)) for v in values):
        set_scale("log", base=2)
        axis.set_major_formatter(FuncFormatter(_plain))
    else:
        set_scale("log")


def _finish(fig: Any, path: str | os.PathLike[str] | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    png = buf.getvalue()
    if path is not None:
        save(png, path)
    return png


# --------------------------------------------------------------------------- charts


def line_chart(
    series: Mapping[str, Sequence[tuple[float | None, float | None]]],
    *, title: str = "", x_label: str = "", y_label: str = "", log_x: bool = False, log_y: bool = False,
    width: int = 900, height: int = 540, path: str | os.PathLike[str] | None = None,
) -> bytes:
    """One line with markers per series of (x, y) points, sorted by x; a legend when there
    are several series. Points with a None, NaN or infinite coordinate are skipped, as are
    points that are not positive on a log axis. Returns the PNG (also written to ``path``)."""
    if not series:
        raise ValueError("line_chart: no series to draw")
    clean: dict[str, list[tuple[float, float]]] = {}
    for name, points in series.items():
        kept = [(_number(x), _number(y)) for x, y in points]
        clean[str(name)] = sorted(
            (x, y) for x, y in kept
            if x is not None and y is not None and (x > 0 or not log_x) and (y > 0 or not log_y)
        )
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    if not xs:
        raise ValueError(
            "line_chart: nothing to draw: every point has a None, NaN or infinite coordinate"
            + (" or is not positive on a log axis" if log_x or log_y else "")
        )
    fig, ax = _figure(width, height, "line_chart")
    for i, (name, pts) in enumerate(clean.items()):
        ax.plot(
            [x for x, _ in pts], [y for _, y in pts],
            color=PALETTE[i % len(PALETTE)], linewidth=2, markersize=5,
            marker=MARKERS[(i + i // len(PALETTE)) % len(MARKERS)] if len(pts) <= 60 else None,
            label=name if pts else f"{name} (no data)",
        )
    if log_x:
        _log_scale(ax, "x", xs)
    if log_y:
        _log_scale(ax, "y", ys)
    _style(ax, title, x_label, y_label)
    if len(clean) > 1:
        ax.legend(loc="best", fontsize="small", framealpha=0.9)
    return _finish(fig, path)


def bar_chart(
    values: Mapping[str, float | None],
    *, title: str = "", y_label: str = "", x_label: str = "", annotate: bool = True,
    width: int = 900, height: int = 540, path: str | os.PathLike[str] | None = None,
) -> bytes:
    """One bar per category from 0, with its value written at its end (``annotate``) and
    its name below. None, NaN or inf: no bar ("n/a"). Returns the PNG (also written to ``path``)."""
    return _bars({k: {"": v} for k, v in values.items()}, title=title, y_label=y_label, x_label=x_label,
                 annotate=annotate, width=width, height=height, path=path, who="bar_chart")


def grouped_bar_chart(
    groups: Mapping[str, Mapping[str, float | None]],
    *, title: str = "", y_label: str = "", x_label: str = "", annotate: bool = False,
    width: int = 900, height: int = 540, path: str | os.PathLike[str] | None = None,
) -> bytes:
    """Categories along x (the keys of ``groups``), one bar per series within each (the
    inner keys, in order of first appearance, coloured from the palette, with a legend).
    A missing, None, NaN or infinite value leaves a gap. Returns the PNG (also written to ``path``)."""
    return _bars(groups, title=title, y_label=y_label, x_label=x_label, annotate=annotate,
                 width=width, height=height, path=path, who="grouped_bar_chart")


def _bars(
    groups: Mapping[str, Mapping[str, float | None]], *, title: str, y_label: str, x_label: str,
    annotate: bool, width: int, height: int, path: str | os.PathLike[str] | None, who: str,
) -> bytes:
    cats = [str(k) for k in groups]
    names = list(dict.fromkeys(str(n) for inner in groups.values() for n in inner))
    table = [[_number(inner.get(n)) for n in names] for inner in groups.values()]
    if not cats:
        raise ValueError(f"{who}: no categories to draw")
    if all(v is None for row in table for v in row):
        raise ValueError(f"{who}: nothing to draw: every value is missing, None, NaN or infinite")
    fig, ax = _figure(width, height, who)
    group_w = 0.7 if len(names) == 1 else 0.8
    bar_w = group_w / len(names)
    for j, name in enumerate(names):
        column = [row[j] for row in table]
        bars = ax.bar(
            [i - group_w / 2 + (j + 0.5) * bar_w for i in range(len(cats))],
            [0.0 if v is None else v for v in column],
            width=bar_w * 0.92, color=PALETTE[j % len(PALETTE)], label=name,
        )
        if annotate:
            gap = "n/a" if len(names) == 1 else ""
            ax.bar_label(bars, labels=[gap if v is None else format_number(v) for v in column],
                         padding=2, fontsize="small")
    long = sum(len(c) + 3 for c in cats) * 7 > width * 0.8  # names would run into each other
    ax.set_xticks(range(len(cats)), cats, rotation=30 if long else 0, ha="right" if long else "center",
                  rotation_mode="anchor")
    ax.axhline(0.0, color=AXIS, linewidth=0.8)
    ax.margins(y=0.1)  # room for the value labels
    _style(ax, title, x_label, y_label)
    ax.grid(False, axis="x")
    if len(names) > 1 or names[0]:
        ax.legend(loc="best", fontsize="small", framealpha=0.9)
    return _finish(fig, path)
