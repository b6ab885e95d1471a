"""The int4 candidates of ``benchmarks/precision.py --int4-candidates``: block size,
symmetric or asymmetric, accuracy level, the embedding table and output projection,
the query/key projections, the float32 outlier channels; each graph made from the
fp32 artifact's with passes.precision.int4 and measured against fp32 and the int8
build in one round-robin (decode speed ratios to both, teacher-forced top-1)."""

from __future__ import annotations

from pathlib import Path

DEFAULT = "b32 sym acc4, q/k int8, emb+head int4 shared, outliers above 4x fp32 (default)"


def int4_candidate_graphs(spec, fp32_graph: Path, scratch: Path) -> dict:
    """Name -> function returning the candidate's graph, made from the fp32 graph."""
    import onnx

    from passes.precision.int4 import Int4Options, to_int4
    from zoo.app.convert.calibrate import calibrate

    activations = calibrate(spec, {"model": onnx.load(str(fp32_graph))}, scratch=scratch)["model"]

    def make(**kw):
        return lambda p: to_int4(p, vocab_size=spec.vocab_size, activations=activations, options=Int4Options(**kw))[0]

    return {
        DEFAULT: make(),
        "b16 sym acc4": make(block_size=16),
        "b64 sym acc4": make(block_size=64),
        "b128 sym acc4": make(block_size=128),
        "b32 asym acc4": make(symmetric=False),
        "b32 sym acc0 (fp32 compute)": make(accuracy_level=0),
        "b32 sym acc1": make(accuracy_level=1),
        "q/k int4": make(scores="int4"),
        "q/k fp32": make(scores="fp32"),
        "no fp32 outlier channels": make(outlier_ratio=None),
        "outliers above 8x fp32": make(outlier_ratio=8.0),
        "outliers above 16x fp32 (the first default)": make(outlier_ratio=16.0),
        "head int8": make(head="int8"),
        "embedding fp32, head int4": make(embedding="fp32"),
        "emb+head int8 shared": make(embedding="int8", head="int8"),
        "all int4, no outliers (genai-like)": make(scores="int4", outlier_ratio=None),
    }


def int4_table(result: dict) -> str:
    from zoo.app.report import markdown_table

    kinds = list(result["settings"]["texts"])
    header = ["candidate", "size MB", "decode ms/token", "decode vs fp32", "decode vs int8", *[f"top-1 vs fp32 ({k})" for k in kinds],
              *[f"int8 top-1 ({k})" for k in kinds]]
    rows = []
    for name, e in result["int4_candidates"].items():
        i8 = e.get("int8_in_this_run", {})
        rows.append([name, f"{e['size_mb']:.1f}", _f(e.get("decode_ms_per_token"), ".2f"), _f(e.get("decode_speed_vs_fp32"), ".2f") + "x",
                     _f(e.get("decode_speed_vs_int8"), ".2f") + "x",
                     *[_pct(e.get("text_top1_vs_fp32", {}).get(k)) for k in kinds],
                     *[_pct((i8.get("text_top1_vs_fp32") or {}).get(k)) for k in kinds]])
    return markdown_table(header, rows)


def _f(x, fmt):
    return format(x, fmt) if isinstance(x, (int, float)) else "n/a"


def _pct(x):
    return "n/a" if x is None else f"{x * 100:.1f}%"
