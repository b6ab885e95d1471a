"""zoo.app.charts: the PNGs are decoded by a small reader written here (chunks, CRCs, zlib,
filter 0) and then looked at pixel by pixel."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest

from zoo.app import charts
from zoo.app.charts import FRAME, INK, PALETTE, WHITE, Canvas

NAN = float("nan")


# --------------------------------------------------------------------------- a PNG reader


def read_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB, non-interlaced PNG whose rows all use filter 0, as a (height, width, 3)
    array; every chunk's CRC is checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == crc, f"bad CRC in chunk {tag!r}"
        chunks.append((tag, body))
        pos += 12 + length
    assert pos == len(data), "trailing bytes after the last chunk"
    tags = [tag for tag, _ in chunks]
    assert tags[0] == b"IHDR" and tags[-1] == b"IEND" and b"IDAT" in tags
    width, height, depth, colour_type, compression, filter_method, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour_type, compression, filter_method, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all(), "a row with a filter other than 0"
    return rows[:, 1:].reshape(height, width, 3)


def mask(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Where ``img`` is exactly ``color``: a (height, width) bool array."""
    return (img == np.array(color, np.uint8)).all(axis=-1)


def bbox(m: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), half-open, of the True pixels of ``m``."""
    ys, xs = np.nonzero(m)
    assert len(xs), "no such pixel"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def runs(columns: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ranges of consecutive True entries."""
    out, start = [], None
    for i, v in enumerate(list(columns) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


def legend_box(img: np.ndarray) -> tuple[int, int, int, int]:
    return bbox(mask(img, FRAME))


LATENCY = {
    "gpt2-small": [(128, 3.1), (256, 4.0), (512, 6.2), (1024, 11.5), (2048, 24.0)],
    "llama-tiny": [(128, 2.5), (256, 3.1), (512, 5.0), (1024, 8.1), (2048, 15.2), (4096, 31.0)],
    "bart-base": [(128, 5.0), (256, 7.0), (1024, 18.0), (2048, 40.0)],
}


# --------------------------------------------------------------------------- PNG and canvas


def test_png_encoder_round_trip():
    c = Canvas(3, 2)
    c.set(0, 0, (255, 0, 0))
    c.set(2, 1, (1, 2, 3))
    c.set(5, 5, (9, 9, 9))  # outside: clipped, no error
    img = read_png(c.to_png())
    assert img.shape == (2, 3, 3)
    expected = np.full((2, 3, 3), 255, np.uint8)
    expected[0, 0], expected[1, 2] = (255, 0, 0), (1, 2, 3)
    assert (img == expected).all()
    with pytest.raises(ValueError, match="do not make a 3x2 RGB image"):
        charts.encode_png(3, 2, b"\x00" * 17)


def test_fill_rect_and_lines_clip_and_cover():
    c = Canvas(20, 10)
    c.fill_rect(-5, -5, 3, 2, (1, 1, 1))
    assert c.get(0, 0) == c.get(2, 1) == (1, 1, 1) and c.get(3, 1) == WHITE and c.get(2, 2) == WHITE
    c.line(0, 9, 19, 9, (2, 2, 2))  # horizontal, 1 pixel
    assert all(c.get(x, 9) == (2, 2, 2) for x in range(20))
    c.line(0, 0, 19, 9, (3, 3, 3), thickness=3)  # a thick diagonal, both ends drawn
    assert c.get(19, 9) == (3, 3, 3) and c.get(10, 5) == (3, 3, 3)
    c.line(-100, 5, 100, 5, (4, 4, 4), dash=(2, 2))
    row = [c.get(x, 5) == (4, 4, 4) for x in range(20)]
    assert 6 <= sum(row) <= 14  # dashed: about half of it


def test_text_puts_ink_where_it_is_drawn():
    c = Canvas(40, 20)
    c.text(2, 3, "Hi", INK)
    ink = mask(read_png(c.to_png()), INK)
    x0, y0, x1, y1 = bbox(ink)
    assert (x0, y0) == (2, 3) and x1 <= 2 + charts.text_width("Hi") and y1 <= 3 + charts.GLYPH_H
    assert all(ink[3 + r, 2] for r in range(7))  # the left stroke of the H
    assert ink.sum() > 20
    f = Canvas(7, 11)
    f.text(1, 1, "F", INK)
    drawn = ["".join("#" if f.get(x, y) == INK else "." for x in range(1, 6)) for y in range(1, 8)]
    assert drawn == ["#####", "#....", "#....", "####.", "#....", "#....", "#...."]
    # scale 2 doubles everything; centred text is centred
    big = Canvas(60, 30)
    big.text(30, 5, "Hi", INK, scale=2, align="center")
    x0, y0, x1, y1 = bbox(mask(read_png(big.to_png()), INK))
    assert charts.text_width("Hi", 2) == 22 and abs((x0 + x1) / 2 - 30) <= 1 and y1 - y0 == 14


def test_vertical_text_reads_bottom_to_top():
    c = Canvas(20, 40)
    c.text_up(2, 20, "Hi", INK)
    ink = mask(read_png(c.to_png()), INK)
    x0, y0, x1, y1 = bbox(ink)
    w = charts.text_width("Hi")
    assert x0 == 2 and x1 <= 2 + charts.GLYPH_H and abs((y0 + y1) / 2 - 20) <= 1 and y1 - y0 <= w
    # the H's left stroke is now the bottom row, its 7 pixels running left to right
    assert all(ink[y1 - 1, 2 + r] for r in range(7))


def test_font_covers_printable_ascii_and_falls_back_to_question_mark():
    for code in range(33, 127):
        c = Canvas(8, 12)
        c.text(1, 1, chr(code), INK)
        assert INK in {c.get(x, y) for x in range(8) for y in range(12)}, f"{chr(code)!r} draws nothing"
    a, b = Canvas(10, 12), Canvas(10, 12)
    a.text(1, 1, "\u00e9", INK)
    b.text(1, 1, "?", INK)
    assert a.pixels == b.pixels


def test_markers_are_filled_and_centred():
    for shape in charts.MARKERS:
        c = Canvas(21, 21)
        c.marker(10, 10, (7, 7, 7), shape, radius=4)
        m = mask(read_png(c.to_png()), (7, 7, 7))
        x0, y0, x1, y1 = bbox(m)
        assert m[10, 10] and 7 <= x1 - x0 <= 11 and 5 <= y1 - y0 <= 11, shape


# --------------------------------------------------------------------------- numbers and ticks


@pytest.mark.parametrize(
    "value, text",
    [(0, "0"), (1234, "1.23k"), (999.96, "1k"), (-1500, "-1.5k"), (2.5e6, "2.5M"), (7e9, "7G"), (0.5, "0.5"),
     (12.0, "12"), (123.456, "123"), (0.0005, "0.0005"), (1.23e-5, "1.23e-5"), (NAN, "n/a")],
)
def test_format_number(value, text):
    assert charts.format_number(value) == text


def test_nice_ticks_use_1_2_5_steps():
    assert charts.nice_ticks(0, 10, 6) == ([0, 2, 4, 6, 8, 10], 2)
    for lo, hi in [(0, 1), (-3.3, 7.1), (0.0012, 0.0047), (100, 4100), (5e8, 9.9e9), (-1, -0.2)]:
        ticks, step = charts.nice_ticks(lo, hi, 6)
        mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
        assert round(mantissa, 6) in (1, 2, 5), (lo, hi, step)
        assert 2 <= len(ticks) <= 6 and lo - 1e-12 <= ticks[0] and ticks[-1] <= hi + 1e-12
    with pytest.raises(ValueError):
        charts.nice_ticks(1, 1)


def test_log_axes_tick_on_powers_of_two_or_ten():
    assert charts._log_axis([128, 256, 4096], 10).labels == ["128", "256", "512", "1024", "2048", "4096"]
    assert charts._log_axis([1, 2, 1e6], 10).labels == ["1", "10", "100", "1k", "10k", "100k", "1M"]
    assert len(charts._log_axis([2.0**e for e in range(21)], 6).ticks) <= 6
    assert len(charts._log_axis([3.0, 4.5], 6).ticks) >= 2  # within a factor of 2: still ticked


# --------------------------------------------------------------------------- line chart


def test_line_chart_size_colours_and_legend():
    img = read_png(charts.line_chart(LATENCY, title="Latency", x_label="context", y_label="ms", log_x=True))
    assert img.shape == (540, 900, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= 6  # not blank
    assert mask(img, INK).sum() > 500  # title, labels, tick labels
    lx0, ly0, lx1, ly1 = legend_box(img)
    for color in PALETTE[:3]:
        m = mask(img, color)
        m[ly0:ly1, lx0:lx1] = False
        assert m[100:460, 100:800].sum() > 200, color  # its line and markers, in the plot
        assert mask(img, color)[ly0:ly1, lx0:lx1].sum() > 10, color  # its legend entry
    assert mask(img, INK)[ly0:ly1, lx0:lx1].sum() > 50  # the names


def test_line_chart_series_colour_lies_where_the_data_is():
    # y = x: the line runs from the bottom left to the top right of the plot
    img = read_png(charts.line_chart({"diag": [(0, 0), (10, 10)]}, title="t", x_label="x", y_label="y"))
    m = mask(img, PALETTE[0])
    ys, xs = np.nonzero(m)
    assert np.corrcoef(xs, -ys)[0, 1] > 0.99
    x0, y0, x1, y1 = bbox(m)
    assert x1 - x0 > 600 and y1 - y0 > 350  # across the plot
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    assert not m[y0 : cy - 5, x0 : cx - 5].any() and not m[cy + 5 : y1, cx + 5 : x1].any()
    assert not mask(img, FRAME).any()  # one series: no legend


def test_legend_moves_out_of_the_plot_when_every_corner_holds_data():
    x_shape = {"a": [(0, 0), (10, 10)], "b": [(0, 10), (10, 0)]}
    img = read_png(charts.line_chart(x_shape, title="X"))
    lx0, ly0, lx1, ly1 = legend_box(img)
    lines = mask(img, PALETTE[0]) | mask(img, PALETTE[1])
    lines[ly0:ly1, lx0:lx1] = False
    assert bbox(lines)[2] < lx0  # every line pixel is left of the legend
    # rising lines leave the top left corner free: the legend goes there, inside the plot
    img = read_png(charts.line_chart({"a": [(0, 0), (10, 10)], "b": [(0, 0), (10, 8)]}, title="up"))
    lx0, ly0, lx1, ly1 = legend_box(img)
    assert lx1 < 450 and ly1 < 270


def test_single_point_and_constant_series():
    img = read_png(charts.line_chart({"one": [(3, 7)]}, title="single"))
    x0, y0, x1, y1 = bbox(mask(img, PALETTE[0]))
    assert 5 <= x1 - x0 <= 12 and 5 <= y1 - y0 <= 12  # just the marker
    img = read_png(charts.line_chart({"flat": [(0, 5), (1, 5), (2, 5)]}, title="flat"))
    x0, y0, x1, y1 = bbox(mask(img, PALETTE[0]))
    assert x1 - x0 > 600 and y1 - y0 <= 12  # a horizontal line with its markers
    charts.line_chart({"zero": [(0, 0), (1, 0)], "neg": [(5, -1e-9)]})


def test_missing_points_are_skipped():
    holes = {"s": [(1, 1), (2, None), (None, 3), (3, NAN), (3.5, math.inf), (4, 4)]}
    assert charts.line_chart(holes) == charts.line_chart({"s": [(1, 1), (4, 4)]})
    # points are sorted by x; not positive on a log axis: skipped
    assert charts.line_chart({"s": [(4, 4), (1, 1)]}) == charts.line_chart({"s": [(1, 1), (4, 4)]})
    assert charts.line_chart({"s": [(0, 5), (1, 1), (4, 4)]}, log_x=True) == charts.line_chart(
        {"s": [(1, 1), (4, 4)]}, log_x=True
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: charts.line_chart({}), "no series"),
        (lambda: charts.line_chart({"a": [], "b": [(None, 1), (NAN, NAN)]}), "nothing to draw"),
        (lambda: charts.line_chart({"a": [(0, 1), (-1, 2)]}, log_x=True), "not positive on a log axis"),
        (lambda: charts.line_chart({"a": [(1, 1)]}, width=100, height=50), "at least 200x150"),
        (lambda: charts.bar_chart({}), "no categories"),
        (lambda: charts.bar_chart({"a": None, "b": NAN}), "nothing to draw"),
        (lambda: charts.grouped_bar_chart({"g": {}}), "nothing to draw"),
    ],
)
def test_nothing_to_draw_is_a_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_many_series_cycle_the_palette_and_fit_the_legend():
    series = {f"model-{i}": [(b, (i + 1) * b + 10) for b in (1, 2, 4, 8, 16)] for i in range(12)}
    img = read_png(charts.line_chart(series, title="many", log_x=True, log_y=True))
    lx0, ly0, lx1, ly1 = legend_box(img)
    for color in PALETTE:
        assert mask(img, color)[ly0:ly1, lx0:lx1].any(), color
    assert ly1 <= img.shape[0]
    # beyond the palette a series gets another marker shape
    assert charts.MARKERS[(0 + 0 // 8) % 4] != charts.MARKERS[(8 + 8 // 8) % 4]
    long = {f"series {i}": [(0, i), (1, i + 1)] for i in range(60)}
    img = read_png(charts.line_chart(long, title="sixty"))  # "+N more" at the end, no overflow
    assert legend_box(img)[3] < img.shape[0]


# --------------------------------------------------------------------------- bar charts


def bar_runs(img: np.ndarray, color: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(x0, x1, height) of each bar of ``color``, left to right."""
    m = mask(img, color)
    heights = m.sum(axis=0)
    return [(x0, x1, int(heights[x0:x1].max())) for x0, x1 in runs(heights > 0)]


def test_bar_heights_follow_the_values():
    img = read_png(charts.bar_chart({"small": 10, "big": 40, "mid": 20}, title="Memory", y_label="MB"))
    assert img.shape == (540, 900, 3)
    bars = bar_runs(img, PALETTE[0])
    assert len(bars) == 3
    small, big, mid = (h for _, _, h in bars)
    assert big > mid > small > 0
    assert big / small == pytest.approx(4, rel=0.03) and mid / small == pytest.approx(2, rel=0.03)
    widths = {x1 - x0 for x0, x1, _ in bars}
    assert max(widths) - min(widths) <= 1


def test_bar_values_are_written_on_top():
    values = {"a": 1234, "b": 5e6}
    for annotate in (True, False):
        img = read_png(charts.bar_chart(values, title="t", annotate=annotate))
        ink = mask(img, INK)
        for x0, x1, _ in bar_runs(img, PALETTE[0]):
            top = bbox(mask(img, PALETTE[0])[:, x0:x1])[1]
            assert ink[top - 25 : top, x0:x1].any() == annotate


def test_bars_negative_missing_and_long_labels():
    values = {f"a-rather-long-model-name-{i}": (i - 3) * 100.0 for i in range(14)}
    values["a-rather-long-model-name-5"] = None
    img = read_png(charts.bar_chart(values, title="t", y_label="delta"))
    bars = bar_runs(img, PALETTE[0])
    assert len(bars) == 12  # no bar for 0 and for None
    ink = mask(img, INK)
    assert not ink[:, 0].any() and not ink[:, -1].any()  # no label runs off the canvas


def test_grouped_bars_have_one_colour_per_series_and_a_legend():
    groups = {"batch 1": {"ort": 120, "torch": 95, "genai": 140}, "batch 8": {"ort": 800, "torch": 700}}
    img = read_png(charts.grouped_bar_chart(groups, title="Throughput", y_label="tok/s", annotate=True))
    lx0, ly0, lx1, ly1 = legend_box(img)
    counts = []
    for color in PALETTE[:3]:
        assert mask(img, color)[ly0:ly1, lx0:lx1].any()
        plot = mask(img, color)
        plot[ly0:ly1, lx0:lx1] = False
        counts.append(len(runs(plot.sum(axis=0) > 0)))
    assert counts == [2, 2, 1]  # genai has no value at batch 8


# --------------------------------------------------------------------------- writing files


def test_save_writes_a_file_that_decodes(tmp_path):
    png = charts.bar_chart({"x": 1.0, "y": 2.0}, title="saved")
    target = tmp_path / "chart.png"
    target.write_bytes(b"old")
    charts.save(png, target)
    assert target.read_bytes() == png and read_png(target.read_bytes()).shape == (540, 900, 3)
    assert charts.line_chart(LATENCY, path=tmp_path / "line.png") == (tmp_path / "line.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png", "line.png"]  # no temporary left
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "line.png").stat().st_mode == (tmp_path / "plain").stat().st_mode  # the umask's mode


def test_failed_save_leaves_no_temporary(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):
        charts.save(b"png", tmp_path / "folder")  # a directory cannot be replaced by a file
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
