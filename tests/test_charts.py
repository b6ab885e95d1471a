"""zoo.app.charts: PNGs of the right size, missing values skipped, ValueError when nothing is
left, atomic writes, and a clear error (and a report without plots) when matplotlib is missing.
Pixels are read back with Pillow, which matplotlib itself depends on."""

from __future__ import annotations

import importlib.util
import io
import math
import struct
import sys
import zlib

import numpy as np
import pytest

from zoo.app import charts, report
from zoo.spec.errors import ZooError

NAN = float("nan")
needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed")

LATENCY = {
    "gpt2-small": [(128, 3.1), (256, 4.0), (512, 6.2), (1024, 11.5), (2048, 24.0)],
    "llama-tiny": [(128, 2.5), (256, 3.1), (512, 5.0), (1024, 8.1), (2048, 15.2), (4096, 31.0)],
    "bart-base": [(128, 5.0), (256, 7.0), (1024, 18.0), (2048, 40.0)],
}
MEMORY = {"gpt2": {"RSS": 300.0, "ONNX": 50.0}, "llama": {"RSS": 420.0, "ONNX": 61.5}}
# Okabe & Ito (2008): blue, vermillion, bluish green, orange, reddish purple, sky blue, yellow, black
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature and the chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, tag = struct.unpack(">I4s", data[8:16])
    assert tag == b"IHDR" and length == 13
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(data[12 : 16 + length]) & 0xFFFFFFFF == crc, "bad IHDR CRC"
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", "no IEND chunk at the end"
    return struct.unpack(">II", data[16:24])


def pixels(data: bytes) -> np.ndarray:
    """The PNG as a (height, width, 3) uint8 array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def mask(img: np.ndarray, hex_colour: str) -> np.ndarray:
    rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return (img == np.array(rgb, np.uint8)).all(axis=-1)


def colour_runs(columns: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ranges of consecutive True entries."""
    out, start = [], None
    for i, v in enumerate(list(columns) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "value, text",
    [(0, "0"), (1234, "1.23k"), (999.96, "1k"), (-1500, "-1.5k"), (2.5e6, "2.5M"), (7e9, "7G"), (0.5, "0.5"),
     (12.0, "12"), (123.456, "123"), (0.0005, "0.0005"), (1.23e-5, "1.23e-5"), (NAN, "n/a")],
)
def test_format_number(value, text):
    assert charts.format_number(value) == text


# --------------------------------------------------------------------------- drawing


@needs_mpl
@pytest.mark.parametrize("size", [(900, 540), (640, 480), (333, 257), (200, 150)])
def test_every_chart_is_a_png_of_the_asked_size(size):
    w, h = size
    pngs = [
        charts.line_chart(LATENCY, title="Latency", x_label="context", y_label="ms", log_x=True, width=w, height=h),
        charts.bar_chart({"a": 1.0, "b": 2.5}, title="Bars", y_label="MB", width=w, height=h),
        charts.grouped_bar_chart(MEMORY, title="Memory", y_label="MB", annotate=True, width=w, height=h),
    ]
    for png in pngs:
        assert png_size(png) == (w, h)
        assert pixels(png).shape == (h, w, 3)
    assert png_size(charts.line_chart(LATENCY)) == (900, 540)  # the default


@needs_mpl
def test_series_are_drawn_in_okabe_ito_colours():
    img = pixels(charts.line_chart(LATENCY, title="Latency", log_x=True))
    for colour in OKABE_ITO[:3]:
        assert mask(img, colour).sum() > 200, colour
    assert not mask(img, OKABE_ITO[3]).any()  # a fourth series is not there
    img = pixels(charts.grouped_bar_chart(MEMORY))
    assert mask(img, OKABE_ITO[0]).sum() > 1000 and mask(img, OKABE_ITO[1]).sum() > 1000


@needs_mpl
def test_bar_heights_follow_the_values():
    img = pixels(charts.bar_chart({"small": 10, "big": 40}, annotate=False))
    blue = mask(img, OKABE_ITO[0])
    bars = colour_runs(blue.any(axis=0))
    assert len(bars) == 2
    heights = [int(blue[:, x0:x1].any(axis=1).sum()) for x0, x1 in bars]
    assert heights[1] / heights[0] == pytest.approx(4, rel=0.05)


@needs_mpl
def test_different_data_give_different_images_and_the_same_data_the_same():
    a = charts.line_chart({"s": [(1, 1), (2, 4), (3, 9)]})
    assert a == charts.line_chart({"s": [(1, 1), (2, 4), (3, 9)]})
    assert a != charts.line_chart({"s": [(1, 1), (2, 5), (3, 9)]})
    two = {"a": [(0, 0), (10, 10)], "b": [(0, 0), (10, 8)]}
    assert charts.line_chart(two) != charts.line_chart({"c": two["a"], "d": two["b"]})  # the legend names them
    assert charts.bar_chart({"x": 1, "y": 2}) != charts.bar_chart({"x": 1, "y": 3})
    assert charts.grouped_bar_chart(MEMORY) != charts.grouped_bar_chart({**MEMORY, "llama": {"RSS": 100.0}})
    assert charts.line_chart(LATENCY, title="one") != charts.line_chart(LATENCY, title="two")


@needs_mpl
def test_missing_values_are_skipped():
    holes = {"s": [(1, 1), (2, None), (None, 3), (3, NAN), (3.5, math.inf), (4, 4)]}
    assert charts.line_chart(holes) == charts.line_chart({"s": [(1, 1), (4, 4)]})
    assert charts.line_chart({"s": [(4, 4), (1, 1), (2, 3)]}) == charts.line_chart({"s": [(1, 1), (2, 3), (4, 4)]})
    assert charts.bar_chart({"a": 1, "b": None}) == charts.bar_chart({"a": 1, "b": NAN}) == charts.bar_chart(
        {"a": 1, "b": -math.inf}
    )
    gap = {"g1": {"s1": 1.0, "s2": NAN}, "g2": {"s1": 2.0, "s2": 3.0}}
    missing = {"g1": {"s1": 1.0}, "g2": {"s1": 2.0, "s2": 3.0}}
    assert charts.grouped_bar_chart(gap, annotate=True) == charts.grouped_bar_chart(missing, annotate=True)
    charts.line_chart({"zero": [(0, 0), (1, 0)], "neg": [(5, -1e-9)]})  # flat and single points draw


@needs_mpl
def test_log_axes_are_accepted_and_drop_points_that_are_not_positive():
    pts = {"s": [(1, 1.5), (2, 3), (4, 7), (8, 20), (16, 33)]}
    linear = charts.line_chart(pts)
    log_x, log_y = charts.line_chart(pts, log_x=True), charts.line_chart(pts, log_y=True)
    both = charts.line_chart(pts, log_x=True, log_y=True)
    assert len({linear, log_x, log_y, both}) == 4
    assert png_size(both) == (900, 540)
    charts.line_chart({"s": [(3.0, 1.2), (4.5, 1.3)]}, log_x=True, log_y=True)  # less than a decade
    charts.line_chart({"s": [(2.0**e, e + 1) for e in range(21)]}, log_x=True)
    with_zero = {"s": [(0, 5), (1, 1), (4, 4)], "t": [(2, -1), (2, 2)]}
    assert charts.line_chart(with_zero, log_x=True, log_y=True) == charts.line_chart(
        {"s": [(1, 1), (4, 4)], "t": [(2, 2)]}, log_x=True, log_y=True
    )


@needs_mpl
def test_many_series_and_long_names_draw():
    series = {f"model-{i}": [(b, (i + 1) * b + 10) for b in (1, 2, 4, 8, 16)] for i in range(12)}
    img = pixels(charts.line_chart(series, title="many", log_x=True, log_y=True))
    for colour in OKABE_ITO:
        assert mask(img, colour).any(), colour
    long = {f"a rather long variant name {i}": 1000.0 * (i + 1) for i in range(14)}
    assert png_size(charts.bar_chart(long, title="long names", y_label="tokens per second")) == (900, 540)


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
        (lambda: charts.grouped_bar_chart({"g": {"s": math.inf}}), "nothing to draw"),
    ],
)
def test_nothing_to_draw_is_a_value_error(call, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- writing files


@needs_mpl
def test_path_writes_the_same_bytes_atomically(tmp_path):
    target = tmp_path / "line.png"
    target.write_bytes(b"old")
    png = charts.line_chart(LATENCY, log_x=True, path=target)
    assert target.read_bytes() == png
    assert charts.bar_chart({"x": 1.0}, path=tmp_path / "bar.png") == (tmp_path / "bar.png").read_bytes()
    assert charts.grouped_bar_chart(MEMORY, path=tmp_path / "g.png") == (tmp_path / "g.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bar.png", "g.png", "line.png"]  # no temporary left


def test_failed_save_leaves_no_temporary(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):
        charts.save(b"png", tmp_path / "folder")  # a directory cannot be replaced by a file
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


# --------------------------------------------------------------------------- without matplotlib


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError


@pytest.mark.parametrize(
    "draw",
    [
        lambda path: charts.line_chart(LATENCY, log_x=True, path=path),
        lambda path: charts.bar_chart({"a": 1.0}, path=path),
        lambda path: charts.grouped_bar_chart(MEMORY, annotate=True, path=path),
    ],
)
def test_without_matplotlib_drawing_says_how_to_install_it(no_matplotlib, draw, tmp_path):
    with pytest.raises(charts.ChartsUnavailable) as info:
        draw(tmp_path / "chart.png")
    assert isinstance(info.value, ZooError)
    message = str(info.value)
    assert "pip install 'transformer-zoo[charts]'" in message and "matplotlib" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def report_models() -> list[dict]:
    def model(label: str, scale: float) -> dict:
        return {
            "label": label,
            "decode_ms_by_context": {"64": {"median": 2.0 * scale}, "128": {"median": 2.5 * scale}},
            "decode_tokens_per_s": {"1": {"median": 400 / scale}, "8": {"median": 2000 / scale}},
            "peak_rss_mb": 300.0 * scale,
            "onnx_bytes": 40e6 * scale,
            "kv_cache_bytes_per_token": 4096 * scale,
        }

    return [model("gpt2-tiny", 1.0), model("llama-tiny", 1.5)]


@needs_mpl
def test_the_report_draws_its_three_plots(tmp_path):
    plots = report.write_plots(report_models(), tmp_path)
    assert sorted(plots.values()) == ["latency_vs_context.png", "memory.png", "throughput_vs_batch.png"]
    for name in plots.values():
        assert png_size((tmp_path / name).read_bytes()) == (900, 540)


def test_without_matplotlib_the_report_skips_its_plots_with_a_note(no_matplotlib, tmp_path, capsys):
    assert report.write_plots(report_models(), tmp_path) == {}
    assert list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plots skipped" in err and "pip install 'transformer-zoo[charts]'" in err
