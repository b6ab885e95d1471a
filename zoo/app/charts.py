"""PNG charts for model-comparison reports, in pure Python (standard library only).

The project may not depend on matplotlib or pillow, so this module carries its own
small raster renderer: an RGB ``Canvas`` (rectangles, thick lines, markers, text in
a built-in 5x7 bitmap font, also rotated for the y label), a PNG encoder, and three
charts that return PNG bytes (and write them when given ``path=``):

- ``line_chart(series, title=, x_label=, y_label=, log_x=, log_y=)``: "latency vs
  context length", "throughput vs batch size";
- ``bar_chart(values, title=, y_label=)``: "memory per model";
- ``grouped_bar_chart(groups, title=, y_label=)``: one bar per series in each category.

None, NaN and infinite values are skipped; a chart with nothing left to draw raises
``ValueError``. Colours come from the Okabe-Ito palette (readable with colour-blindness).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from zoo.spec.files import write_atomic

Color = tuple[int, int, int]

WHITE: Color = (255, 255, 255)
INK: Color = (34, 34, 34)  # text
AXIS: Color = (80, 80, 80)
GRID: Color = (226, 226, 226)
FRAME: Color = (190, 190, 190)  # legend box

# Okabe & Ito (2008), "Color Universal Design"; yellow and black last (weakest on white,
# closest to the ink). Series past the eighth cycle the colours with another marker shape.
PALETTE: tuple[Color, ...] = (
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (0, 158, 115),  # bluish green
    (230, 159, 0),  # orange
    (204, 121, 167),  # reddish purple
    (86, 180, 233),  # sky blue
    (240, 228, 66),  # yellow
    (0, 0, 0),  # black
)
MARKERS = ("circle", "square", "triangle", "diamond")

# --------------------------------------------------------------------------- font

GLYPH_W, GLYPH_H, CAP_H = 5, 9, 7  # cell: 7 rows above the baseline, 2 for descenders
ADVANCE = GLYPH_W + 1  # one blank column between characters

# Printable ASCII, 9 rows a glyph top to bottom, each row one base-32 digit whose 5 bits
# are the columns, most significant bit leftmost ("E" = 01110, "V" = 11111).
# Characters outside the table are drawn as "?".
_FONT: dict[str, str] = {
    ' ': '000000000', '!': '444440400', '"': 'AAA000000', '#': 'AAVAVAA00', '$': '4FKE5U400', '%': 'OP248J300',
    '&': 'CIK8LID00', "'": '444000000', '(': '248884200', ')': '842224800', '*': '04LEL4000', '+': '044V44000',
    ',': '00000CC48', '-': '000V00000', '.': '00000CC00', '/': '11248GG00', '0': 'EHJLPHE00', '1': '4C4444E00',
    '2': 'EH1248V00', '3': 'V2421HE00', '4': '26AIV2200', '5': 'VGU11HE00', '6': '68GUHHE00', '7': 'V12488800',
    '8': 'EHHEHHE00', '9': 'EHHF12C00', ':': '0CC0CC000', ';': '0CC0CC480', '<': '248G84200', '=': '00V0V0000',
    '>': '842124800', '?': 'EH1240400', '@': 'EH1DLLE00', 'A': 'EHHVHHH00', 'B': 'UHHUHHU00', 'C': 'EHGGGHE00',
    'D': 'SIHHHIS00', 'E': 'VGGUGGV00', 'F': 'VGGUGGG00', 'G': 'EHGNHHF00', 'H': 'HHHVHHH00', 'I': 'E44444E00',
    'J': '72222IC00', 'K': 'HIKOKIH00', 'L': 'GGGGGGV00', 'M': 'HRLLHHH00', 'N': 'HHPLJHH00', 'O': 'EHHHHHE00',
    'P': 'UHHUGGG00', 'Q': 'EHHHLID00', 'R': 'UHHUKIH00', 'S': 'FGGE11U00', 'T': 'V44444400', 'U': 'HHHHHHE00',
    'V': 'HHHHHA400', 'W': 'HHHLLLA00', 'X': 'HHA4AHH00', 'Y': 'HHA444400', 'Z': 'V1248GV00', '[': 'E88888E00',
    '\\': 'GG8421100', ']': 'E22222E00', '^': '4AH000000', '_': '0000000V0', '`': '842000000', 'a': '00E1FHF00',
    'b': 'GGMPHHU00', 'c': '00EGGHE00', 'd': '11DJHHF00', 'e': '00EHVGE00', 'f': '698S88800', 'g': '00FHHHF1E',
    'h': 'GGMPHHH00', 'i': '40C444E00', 'j': '2062222IC', 'k': 'GGIKOKI00', 'l': 'C44444E00', 'm': '00QLLLL00',
    'n': '00MPHHH00', 'o': '00EHHHE00', 'p': '00UHHHUGG', 'q': '00FHHHF11', 'r': '00MPGGG00', 's': '00FGE1U00',
    't': '88S889600', 'u': '00HHHJD00', 'v': '00HHHA400', 'w': '00HHLLA00', 'x': '00HA4AH00', 'y': '00HHHHF1E',
    'z': '00V248V00', '{': '244844200', '|': '444444440', '}': '844244800', '~': '008L20000',
}


def _glyph_cells(text: str) -> Iterator[tuple[int, int]]:
    """The (column, row) of each inked font pixel of ``text`` laid out left to right, unscaled."""
    for i, ch in enumerate(text):
        for row, code in enumerate(_FONT.get(ch, _FONT["?"])):
            bits = int(code, 32)
            for col in range(GLYPH_W):
                if bits & (16 >> col):
                    yield i * ADVANCE + col, row


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn at ``scale`` (no trailing blank column)."""
    return (len(text) * ADVANCE - 1) * scale if text else 0


def _fit_text(text: str, max_px: float, scale: int) -> str:
    """``text``, cut and ended with ".." where it is wider than ``max_px``."""
    if text_width(text, scale) <= max_px:
        return text
    n = max(0, int((max_px + scale) // (ADVANCE * scale)))
    return text[:n] if n <= 3 else text[: n - 2] + ".."


# --------------------------------------------------------------------------- PNG


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (row-major, 3 bytes a pixel), filter 0 on every row."""
    stride = width * 3
    if width <= 0 or height <= 0 or len(rgb) != stride * height:
        raise ValueError(f"encode_png: {len(rgb)} bytes do not make a {width}x{height} RGB image")
    view = memoryview(rgb)
    raw = b"".join(b"\x00" + view[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    # IHDR: width, height, bit depth 8, colour type 2 (RGB), deflate, filter method 0, no interlace
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def save(png: bytes, path: str | os.PathLike[str]) -> None:
    """Write ``png`` to ``path`` atomically (zoo.spec.files)."""
    write_atomic(path, png)


# --------------------------------------------------------------------------- canvas


class Canvas:
    """An RGB raster, (0, 0) at the top left. Coordinates may be floats (rounded) and
    may fall outside: everything is clipped to the canvas."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"Canvas: size must be positive, not {width}x{height}")
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def get(self, x: int, y: int) -> Color:
        i = (y * self.width + x) * 3
        return (self.pixels[i], self.pixels[i + 1], self.pixels[i + 2])

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def fill_rect(self, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
        """Fill [x0, x1) x [y0, y1)."""
        x0, x1 = max(0, round(x0)), min(self.width, round(x1))
        y0, y1 = max(0, round(y0)), min(self.height, round(y1))
        if x0 >= x1 or y0 >= y1:
            return
        row, w = bytes(color) * (x1 - x0), self.width
        for y in range(y0, y1):
            i = (y * w + x0) * 3
            self.pixels[i : i + len(row)] = row

    def outline_rect(self, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
        """A 1-pixel border just inside [x0, x1) x [y0, y1)."""
        self.fill_rect(x0, y0, x1, y0 + 1, color)
        self.fill_rect(x0, y1 - 1, x1, y1, color)
        self.fill_rect(x0, y0, x0 + 1, y1, color)
        self.fill_rect(x1 - 1, y0, x1, y1, color)

    def line(
        self, x0: float, y0: float, x1: float, y1: float, color: Color,
        thickness: int = 1, dash: tuple[int, int] | None = None,
    ) -> None:
        """Bresenham's line, a ``thickness``-wide square stamped at each step; ``dash``:
        (pixels on, pixels off)."""
        x, y, x1, y1 = round(x0), round(y0), round(x1), round(y1)
        dx, dy = abs(x1 - x), -abs(y1 - y)
        sx, sy = (1 if x < x1 else -1), (1 if y < y1 else -1)
        err, step, lo = dx + dy, 0, (thickness - 1) // 2
        while True:
            if dash is None or step % (dash[0] + dash[1]) < dash[0]:
                if thickness <= 1:
                    self.set(x, y, color)
                else:
                    self.fill_rect(x - lo, y - lo, x - lo + thickness, y - lo + thickness, color)
            if x == x1 and y == y1:
                return
            e2, step = 2 * err, step + 1
            if e2 >= dy:
                err, x = err + dy, x + sx
            if e2 <= dx:
                err, y = err + dx, y + sy

    def marker(self, x: float, y: float, color: Color, shape: str = "circle", radius: int = 4) -> None:
        """A filled circle, square, triangle (pointing up) or diamond centred on (x, y)."""
        x, y, r = round(x), round(y), max(1, radius)
        if shape == "square":
            self.fill_rect(x - r + 1, y - r + 1, x + r, y + r, color)
            return
        for dy in range(-r - 1, r + 2):
            if shape == "triangle":
                half = (dy + r) // 2 if -r <= dy <= r else -1
            elif shape == "diamond":
                half = r + 1 - abs(dy)
            else:  # circle; the extra half pixel keeps the top and bottom rows from being a single dot
                half = math.floor(math.sqrt((r + 0.5) ** 2 - dy * dy)) if abs(dy) <= r else -1
            if half >= 0:
                self.fill_rect(x - half, y + dy, x + half + 1, y + dy + 1, color)

    def text(self, x: float, y: float, text: str, color: Color = INK, scale: int = 1, align: str = "left") -> None:
        """``text`` with the top of its capitals at ``y``; ``x`` is its left edge, centre or
        right edge for ``align`` "left", "center" or "right"."""
        x -= {"left": 0, "center": text_width(text, scale) / 2, "right": text_width(text, scale)}[align]
        x, y = round(x), round(y)
        for col, row in _glyph_cells(text):
            self.fill_rect(x + col * scale, y + row * scale, x + (col + 1) * scale, y + (row + 1) * scale, color)

    def text_up(self, x: float, y: float, text: str, color: Color = INK, scale: int = 1) -> None:
        """``text`` rotated 90 degrees anticlockwise (read bottom to top), centred
        vertically on ``y``; ``x`` is the left edge (the top of the capitals)."""
        x, bottom = round(x), round(y + text_width(text, scale) / 2)
        for col, row in _glyph_cells(text):
            # the glyph's x axis runs up the canvas, its y axis to the right
            self.fill_rect(x + row * scale, bottom - (col + 1) * scale, x + (row + 1) * scale, bottom - col * scale, color)

    def to_png(self) -> bytes:
        return encode_png(self.width, self.height, self.pixels)


# --------------------------------------------------------------------------- numbers and ticks

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


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> tuple[list[float], float]:
    """At most ``max_ticks`` evenly spaced values in [lo, hi] on a 1, 2 or 5 x 10^k step,
    and the step."""
    span = hi - lo
    if not span > 0:
        raise ValueError(f"nice_ticks: empty range [{lo}, {hi}]")
    raw = span / max(1, max_ticks - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [i * step for i in range(first, last + 1)], step


def _tick_labels(ticks: list[float], step: float) -> list[str]:
    # as many significant figures as the step needs: 1002 on a step of 2 is "1.002k", not "1k"
    p = math.floor(math.log10(step) + 1e-9)
    return [format_number(t, math.floor(math.log10(abs(t)) + 1e-9) - p + 1) if t else "0" for t in ticks]


@dataclass
class _Axis:
    """A value axis: ``lo`` and ``hi`` are in plotted units (log10 of the value on a log axis)."""

    lo: float
    hi: float
    log: bool
    ticks: list[float]
    labels: list[str]

    def frac(self, value: float) -> float:
        """Where ``value`` falls from 0 (``lo``) to 1 (``hi``)."""
        v = math.log10(value) if self.log else value
        return (v - self.lo) / (self.hi - self.lo)


def _linear_axis(values: list[float], max_ticks: int, from_zero: bool = False, headroom: float = 0.0) -> _Axis:
    """A linear axis over ``values``: padded by 4% and ticked inside; ``from_zero`` (bars)
    includes 0 and ends on ticks, ``headroom`` (a fraction of the span) left above the top
    and below a negative bottom for value labels."""
    lo, hi = min(values), max(values)
    if from_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi)):  # one value, or all equal (all 0 for bars)
        half = abs(lo) * 0.1 or 1.0
        lo, hi = (0.0, 1.0) if from_zero else (lo - half, hi + half)
    if from_zero:  # room for the value labels, then out to the next tick on either side
        span = hi - lo
        hi, lo = (hi + headroom * span if hi > 0 else hi), (lo - headroom * span if lo < 0 else lo)
        step = nice_ticks(lo, hi, max_ticks)[1]
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        lo, hi, ticks = first * step, last * step, [i * step for i in range(first, last + 1)]
    else:
        pad = (hi - lo) * 0.04
        lo, hi = lo - pad, hi + pad
        ticks, step = nice_ticks(lo, hi, max_ticks)
    return _Axis(lo, hi, False, ticks, _tick_labels(ticks, step))


def _log_axis(values: list[float], max_ticks: int) -> _Axis:
    """A log axis over positive ``values``: ticks on powers of 2 where every value is one
    (context lengths, batch sizes), else on powers of 10 (with 2 and 5 x 10^k in a short range)."""
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - math.log10(2), hi + math.log10(2)
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    ticks: list[float] = []
    labels: list[str] = []
    if all(math.log2(v) == round(math.log2(v)) for v in values):
        exps = range(math.ceil(lo / math.log10(2)), math.floor(hi / math.log10(2)) + 1)
        every = max(1, math.ceil(len(exps) / max_ticks))
        ticks = [2.0**e for e in exps if e % every == 0]
        labels = [str(int(t)) if 1 <= t < 1e5 else format_number(t, 3) for t in ticks]
    else:
        exps = range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)
        every = max(1, math.ceil(len(exps) / max_ticks))
        ticks = [10.0**e for e in exps if e % every == 0]
        if len(ticks) < 3:  # less than two decades: 1, 2 and 5 x 10^k
            more = [m * 10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
            more = [t for t in more if lo <= math.log10(t) <= hi]
            ticks = more if len(more) <= max_ticks else ticks
        labels = [format_number(t, 1) for t in ticks]
    if len(ticks) < 2:  # within a factor of 2 or so: plain even steps, placed on the log scale
        ticks, step = nice_ticks(10**lo, 10**hi, max_ticks)
        ticks = [t for t in ticks if t > 0]
        labels = _tick_labels(ticks, step)
    return _Axis(lo, hi, True, ticks, labels)


def _number(value: object) -> float | None:
    """``value`` as a float; None where it is None, NaN or infinite."""
    if value is None:
        return None
    v = float(value)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- chart furniture


def _text_scale(width: int, height: int, who: str) -> int:
    """The text scale of a chart: 2 (10x14-pixel capitals) from 400 pixels up, else 1."""
    if width < 200 or height < 150:
        raise ValueError(f"{who}: a chart needs at least 200x150 pixels, not {width}x{height}")
    return 2 if min(width, height) >= 400 else 1


@dataclass
class _Legend:
    scale: int
    rows: list[tuple[str, Color | None, str]]  # (text, colour or None for "+N more", marker shape)
    width: int
    height: int
    complete: bool  # every name shown in full


def _plan_legend(entries: list[tuple[str, Color, str]], s: int, max_w: float, max_h: float) -> _Legend:
    """Legend rows fitted into max_w x max_h: at a smaller scale where names would lose
    more than 4 characters or the rows overflow, then with names cut and a "+N more" row."""
    longest = max(len(name) for name, _, _ in entries)
    for ls in range(s, 0, -1):
        pad, swatch, row_h = 5 * ls, 18 * ls, (GLYPH_H + 4) * ls
        room = int(max_w) - 2 * pad - swatch - 5 * ls
        fits = max(1, int((max_h - 2 * pad) // row_h))
        if ls == 1 or (longest - room // (ADVANCE * ls) <= 4 and len(entries) <= fits):
            break
    rows: list[tuple[str, Color | None, str]] = [(_fit_text(n, room, ls), c, m) for n, c, m in entries]
    if len(rows) > fits:
        rows = rows[: fits - 1] + [(f"+{len(rows) - fits + 1} more", None, "")]
    w = 2 * pad + swatch + 5 * ls + max(text_width(t, ls) for t, _, _ in rows)
    complete = ls == s and [r[0] for r in rows] == [e[0] for e in entries]
    return _Legend(ls, rows, w, 2 * pad + len(rows) * row_h - 4 * ls, complete)


def _draw_legend(c: Canvas, legend: _Legend, x: int, y: int, *, bars: bool) -> None:
    """The legend box with its top left at (x, y): colour squares for bars, else a line with the marker."""
    ls, pad, swatch = legend.scale, 5 * legend.scale, 18 * legend.scale
    c.fill_rect(x, y, x + legend.width, y + legend.height, WHITE)
    c.outline_rect(x, y, x + legend.width, y + legend.height, FRAME)
    for i, (name, color, shape) in enumerate(legend.rows):
        top = y + pad + i * (GLYPH_H + 4) * ls
        mid = top + CAP_H * ls // 2
        if color is not None and bars:
            c.fill_rect(x + pad + 3 * ls, mid - 4 * ls, x + pad + swatch - 3 * ls, mid + 4 * ls, color)
        elif color is not None:
            c.line(x + pad, mid, x + pad + swatch - 1, mid, color, thickness=ls)
            c.marker(x + pad + swatch // 2, mid, color, shape, radius=2 + ls)
        c.text(x + pad + swatch + 5 * ls, top, name, INK, ls)


def _frame(
    c: Canvas, s: int, *, title: str, x_label: str, y_label: str, y_values: list[float], log_y: bool,
    from_zero: bool, right_room: int, label_rows: int, headroom_px: int,
) -> tuple[tuple[int, int, int, int], _Axis]:
    """Title, y axis (grid, ticks, labels), axis lines and axis titles, with ``right_room``
    pixels kept free on the right and ``label_rows`` rows of x tick labels below. Returns
    the plot box (left, top, right, bottom = the x axis row) and the y axis."""
    W, H, m = c.width, c.height, 8 * s
    top = m
    if title:
        ts = next((k for k in (s + 1, s) if text_width(title, k) <= W - 2 * m), max(1, s - 1))
        c.text(W / 2, top, _fit_text(title, W - 2 * m, ts), INK, ts, "center")
        top += GLYPH_H * ts + 3 * s
    top += CAP_H * s // 2 + 2 * s  # half of the top tick label stands above the box
    bottom = H - m - label_rows * (GLYPH_H * s + 2 * s) - 5 * s
    if x_label:
        bottom -= GLYPH_H * s + 3 * s
    plot_h = bottom - top
    max_ticks = max(3, min(10, plot_h // (GLYPH_H * s * 3)))
    axis = (
        _log_axis(y_values, max_ticks) if log_y
        else _linear_axis(y_values, max_ticks, from_zero, headroom_px / max(1, plot_h))
    )
    left = m + (GLYPH_H * s + 5 * s if y_label else 0) + max((text_width(t, s) for t in axis.labels), default=0) + 7 * s
    right = W - m - right_room
    if right - left < 40 or plot_h < 40:
        raise ValueError(f"chart: {W}x{H} pixels leave no room for the plot; make it larger or the labels shorter")
    for tick, label in zip(axis.ticks, axis.labels):
        y = round(bottom - axis.frac(tick) * plot_h)
        c.fill_rect(left, y, right, y + 1, GRID)
        c.fill_rect(left - 4 * s, y, left, y + 1, AXIS)
        c.text(left - 6 * s, y - CAP_H * s // 2, label, INK, s, "right")
    c.fill_rect(left - 1, top, left, bottom + 1, AXIS)
    c.fill_rect(left - 1, bottom, right, bottom + 1, AXIS)
    if y_label:
        c.text_up(m, (top + bottom) / 2, _fit_text(y_label, plot_h, s), INK, s)
    if x_label:
        c.text((left + right) / 2, H - m - CAP_H * s, _fit_text(x_label, W - 2 * m, s), INK, s, "center")
    return (left, top, right, bottom), axis


def _quiet_corner(c: Canvas, box: tuple[int, int, int, int], legend: _Legend, ink: set[bytes], inset: int) -> tuple[int, int] | None:
    """The top left of a corner of the plot box (top right, top left, bottom right, bottom
    left) where the legend would hide no pixel of a colour in ``ink``; None if there is none."""
    left, top, right, bottom = box
    w, h = legend.width, legend.height
    if w + 2 * inset > right - left or h + 2 * inset > bottom - top:
        return None
    for x, y in ((right - inset - w, top + inset), (left + inset, top + inset),
                 (right - inset - w, bottom - inset - h), (left + inset, bottom - inset - h)):
        clear = True
        for row in range(max(0, y - 3), min(c.height, y + h + 3)):  # 3 pixels of air around the box
            i = (row * c.width + max(0, x - 3)) * 3
            pixels = c.pixels[i : i + (w + 6) * 3]
            if any(bytes(pixels[k : k + 3]) in ink for k in range(0, len(pixels), 3)):
                clear = False
                break
        if clear:
            return x, y
    return None


def _finish(c: Canvas, path: str | os.PathLike[str] | None) -> bytes:
    png = c.to_png()
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
    are several series, in an empty corner of the plot, else on the right. Points with a
    None, NaN or infinite coordinate are skipped, as are points that are not positive on a
    log axis. Returns the PNG (also written to ``path``)."""
    s = _text_scale(width, height, "line_chart")
    if not series:
        raise ValueError("line_chart: no series to draw")
    clean: dict[str, list[tuple[float, float]]] = {}
    for name, points in series.items():
        kept = []
        for x, y in points:
            fx, fy = _number(x), _number(y)
            if fx is not None and fy is not None and (fx > 0 or not log_x) and (fy > 0 or not log_y):
                kept.append((fx, fy))
        clean[str(name)] = sorted(kept)
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    if not xs:
        raise ValueError(
            "line_chart: nothing to draw: every point has a None, NaN or infinite coordinate"
            + (" or is not positive on a log axis" if log_x or log_y else "")
        )
    # colour i of the palette; past its end another marker shape, so that no two series look alike
    styles = [(PALETTE[i % len(PALETTE)], MARKERS[(i + i // len(PALETTE)) % len(MARKERS)]) for i in range(len(clean))]
    entries = [(n if pts else f"{n} (no data)", col, shape) for (n, pts), (col, shape) in zip(clean.items(), styles)]
    inner = _plan_legend(entries, s, width * 0.45, height * 0.45) if len(clean) > 1 else None
    outer = _plan_legend(entries, s, width * 0.34, height * 0.75) if len(clean) > 1 else None
    # first try with the legend inside the plot (full names, full scale), then beside it
    for legend, inside in ((inner, True), (outer, False)):
        if inside and not (legend and legend.complete):
            continue
        c = Canvas(width, height)
        right_room = 3 * ADVANCE * s  # half of a 6-character x tick label at the right end
        if legend and not inside:
            right_room = max(right_room, legend.width + 16 * s)
        box, yaxis = _frame(
            c, s, title=title, x_label=x_label, y_label=y_label, y_values=ys, log_y=log_y, from_zero=False,
            right_room=right_room, label_rows=1, headroom_px=0,
        )
        _plot_lines(c, s, box, yaxis, xs, log_x, list(clean.values()), styles)
        if legend is None:
            break
        spot = _quiet_corner(c, box, legend, {bytes(col) for col, _ in styles}, 6 * s) if inside else (box[2] + 8 * s, box[1])
        if spot:
            _draw_legend(c, legend, *spot, bars=False)
            break
    return _finish(c, path)


def _plot_lines(
    c: Canvas, s: int, box: tuple[int, int, int, int], yaxis: _Axis, xs: list[float], log_x: bool,
    series: list[list[tuple[float, float]]], styles: list[tuple[Color, str]],
) -> None:
    """The x axis (as many ticks as fit without their labels touching), then the series."""
    left, top, right, bottom = box
    for max_ticks in range(10, 1, -1):
        xaxis = _log_axis(xs, max_ticks) if log_x else _linear_axis(xs, max_ticks)
        spots = [(left + xaxis.frac(t) * (right - left), text_width(lab, s)) for t, lab in zip(xaxis.ticks, xaxis.labels)]
        if all(b[0] - a[0] >= (a[1] + b[1]) / 2 + 4 * ADVANCE * s for a, b in zip(spots, spots[1:])):
            break
    for tick, label in zip(xaxis.ticks, xaxis.labels):
        x = round(left + xaxis.frac(tick) * (right - left))
        c.fill_rect(x, top, x + 1, bottom, GRID)
        c.fill_rect(x, bottom, x + 1, bottom + 4 * s, AXIS)
        c.text(x, bottom + 6 * s, label, INK, s, "center")
    radius = 2 + s
    for pts, (color, shape) in zip(series, styles):
        pix = [(left + xaxis.frac(x) * (right - left), bottom - yaxis.frac(y) * (bottom - top)) for x, y in pts]
        for a, b in zip(pix, pix[1:]):
            c.line(*a, *b, color, thickness=s)
        if len(pix) <= (right - left) // (3 * radius):  # dense series: the line alone
            for p in pix:
                c.marker(*p, color, shape, radius)


def bar_chart(
    values: Mapping[str, float | None],
    *, title: str = "", y_label: str = "", x_label: str = "", annotate: bool = True,
    width: int = 900, height: int = 540, path: str | os.PathLike[str] | None = None,
) -> bytes:
    """One bar per category from 0, with its value written above it (``annotate``) and its
    name below (staggered on two rows, smaller, or cut short where names would run into
    each other). None or NaN: no bar ("n/a"). Returns the PNG (also written to ``path``)."""
    return _bars({k: {"": v} for k, v in values.items()}, title=title, y_label=y_label, x_label=x_label,
                 annotate=annotate, width=width, height=height, path=path, who="bar_chart")


def grouped_bar_chart(
    groups: Mapping[str, Mapping[str, float | None]],
    *, title: str = "", y_label: str = "", x_label: str = "", annotate: bool = False,
    width: int = 900, height: int = 540, path: str | os.PathLike[str] | None = None,
) -> bytes:
    """Categories along x (the keys of ``groups``), one bar per series within each (the
    inner keys, in order of first appearance, coloured from the palette, with a legend).
    A missing, None or NaN value leaves a gap. Returns the PNG (also written to ``path``)."""
    return _bars(groups, title=title, y_label=y_label, x_label=x_label, annotate=annotate,
                 width=width, height=height, path=path, who="grouped_bar_chart")


def _bars(
    groups: Mapping[str, Mapping[str, float | None]], *, title: str, y_label: str, x_label: str,
    annotate: bool, width: int, height: int, path: str | os.PathLike[str] | None, who: str,
) -> bytes:
    s = _text_scale(width, height, who)
    cats = [str(k) for k in groups]
    names = list(dict.fromkeys(str(n) for inner in groups.values() for n in inner))
    table = [[_number(inner.get(n)) for n in names] for inner in groups.values()]
    ys = [v for row in table for v in row if v is not None]
    if not cats:
        raise ValueError(f"{who}: no categories to draw")
    if not ys:
        raise ValueError(f"{who}: nothing to draw: every value is missing, None, NaN or infinite")
    legend = None
    if len(names) > 1 or names[0]:
        legend = _plan_legend([(n, PALETTE[i % len(PALETTE)], "") for i, n in enumerate(names)], s, width * 0.34, height * 0.75)
    # category labels on one row, else staggered on two (each label then has two slots),
    # at full scale, else at scale 1, else cut; the box, and so the slot width, depends on the rows
    for rows, ls in sorted({(1, s), (2, s), (1, 1), (2, 1)}, key=lambda rl: (-rl[1], rl[0])):
        c = Canvas(width, height)
        box, yaxis = _frame(
            c, s, title=title, x_label=x_label, y_label=y_label, y_values=ys, log_y=False, from_zero=True,
            right_room=legend.width + 16 * s if legend else 0, label_rows=rows,
            headroom_px=(CAP_H + 5) * s if annotate else 0,
        )
        slot = (box[2] - box[0]) / len(cats)
        room = slot - 2 * s if rows == 1 or len(cats) == 1 else 2 * slot - 3 * s
        if max(text_width(k, ls) for k in cats) <= room:
            break
    left, top, right, bottom = box
    for i, cat in enumerate(cats):
        x = left + (i + 0.5) * slot
        edge_room = 2 * min(x, width - x) - 4  # a label may not run off the canvas
        c.text(x, bottom + 6 * s + (i % rows) * (GLYPH_H * s + 2 * s), _fit_text(cat, min(room, edge_room), ls), INK, ls, "center")
    if legend:
        _draw_legend(c, legend, right + 8 * s, top, bars=True)

    group_w = slot * (0.7 if len(names) == 1 else 0.8)
    bar_w = group_w / len(names)
    gap = 1 if bar_w >= 6 else 0  # a white line between the bars of a group
    zero = bottom - yaxis.frac(0.0) * (bottom - top)
    if yaxis.lo < 0:
        c.fill_rect(left, round(zero), right, round(zero) + 1, AXIS)
    labels = [[(format_number(v) if v is not None else "n/a") for v in row] for row in table]
    label_room = bar_w + (slot - group_w) / len(names)
    # one scale for every value label: full where all fit, else 1 (where one does not fit even then, none)
    vs = s if all(text_width(t, s) <= label_room for row in labels for t in row) else 1
    for i, row in enumerate(table):
        for j, v in enumerate(row):
            x0 = left + i * slot + (slot - group_w) / 2 + j * bar_w
            y = zero if v is None else bottom - yaxis.frac(v) * (bottom - top)
            if v is not None:
                c.fill_rect(x0, min(y, zero), x0 + bar_w - gap, max(y, zero) + (v < 0), PALETTE[j % len(PALETTE)])
            label = labels[i][j]
            if annotate and (v is not None or len(names) == 1) and text_width(label, vs) <= label_room:
                below = v is not None and v < 0
                c.text(x0 + bar_w / 2, y + 3 * vs if below else y - (CAP_H + 3) * vs, label, INK, vs, "center")
    return _finish(c, path)
