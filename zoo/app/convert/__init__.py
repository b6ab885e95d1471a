"""Reduced-precision graphs (issues 8 and 13): fp16 for CUDA, int8 for CPU.

``convert_graphs`` runs after the fp32 export (and the optimizer, when asked): it
rewrites each graph file of the build folder in place, measures the converted graphs
against the fp32 ones in ONNX Runtime on a fixed batch (accuracy, time, size), and
returns that record for ``manifest["build"]["precision"]``. The fp32 files live in a
temporary sub-folder during the conversion and the measurement and are deleted
after: the artifact holds only the converted graphs.

- ``fp16`` (passes.precision.fp16): float16 weights and compute; norms, softmax
  with its scores and position math stay float32; float16 cache, float32 logits.
- ``int4`` (passes.precision.int4): weight-only 4-bit blocks (MatMulNBits bits 4), on
  int8's calibration and outlier channels; the token embedding and a tied output
  projection share one 4-bit table (GatherBlockQuantized).
- ``int8`` (passes.precision.int8): weight-only int8 in blocks of 16 (ONNX Runtime's
  MatMulNBits, int8 compute), the outlier input channels of each matmul in float32,
  found by calibration (zoo.app.convert.calibrate); the token embedding and a tied
  output projection share one int8 table. The dynamic quantization of VERSION 1
  (passes.precision.dynamic) is kept to compare with: it breaks on trained weights.

The conversions themselves are graph passes (passes.precision: fp16, int8, dynamic);
this package is the build step, which also runs graphs in ONNX Runtime: the
calibration (calibrate) and the measurement against fp32 (measure).
docs/precision.md has the rules, the choices and the measurements.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from passes.files import graph_record, save_graph
from passes.precision import Int4Options, Int8Options, to_fp16, to_int4, to_int8
from zoo.spec.families import Role, graphs_for
from zoo.spec.errors import ExportError

__all__ = ["Int4Options", "Int8Options", "convert_graphs"]


def _convert(spec, precision: str, protos: dict[str, onnx.ModelProto], scratch: Path, int4: Int4Options | None = None) -> dict[str, tuple]:
    """Graph name -> (converted proto, details) for ``precision``."""
    out = {}
    if precision == "fp16":
        for name, proto in protos.items():
            converted, kept = to_fp16(proto)
            out[name] = converted, {"kept_fp32_ops": kept}
        return out
    from zoo.app.convert.calibrate import calibrate

    activations = calibrate(spec, protos, scratch=scratch)
    for name, proto in protos.items():
        if precision == "int4":
            out[name] = to_int4(proto, vocab_size=spec.vocab_size, activations=activations[name], options=int4 or Int4Options())
        else:
            out[name] = to_int8(proto, vocab_size=spec.vocab_size, activations=activations[name])
    return out


def convert_graphs(spec, model, folder: Path, graphs: dict, options) -> dict:
    """Convert every graph file in ``folder`` to ``options.precision`` in place and
    update ``graphs`` (export_all's record: files, inputs, outputs, nodes, weight
    bytes, ops); returns the precision record for the manifest."""
    from zoo.app.convert.measure import measure

    precision = options.precision
    if precision not in ("fp16", "int8", "int4"):
        raise ExportError(f"{spec.name}: no conversion to {precision!r}")
    folder = Path(folder)
    keep = folder / ".fp32"
    keep.mkdir()
    try:
        fp32_paths, new_paths, protos, sizes = {}, {}, {}, {"fp32": 0, "converted": 0}
        for g in graphs_for(spec):
            for f in graphs[g.name]["files"]:
                sizes["fp32"] += (folder / f).stat().st_size
                os.replace(folder / f, keep / f)
            fp32_paths[g.name], new_paths[g.name] = keep / g.file, folder / g.file
            protos[g.name] = onnx.load(str(keep / g.file))
        producers = {name: p.producer_name for name, p in protos.items()}
        converted = _convert(spec, precision, protos, keep, getattr(options, "int4", None))
        del protos
        details = {}
        for g in graphs_for(spec):
            proto, details[g.name] = converted.pop(g.name)
            proto.producer_name = producers[g.name]
            files = save_graph(proto, folder / g.file)
            sizes["converted"] += sum((folder / f).stat().st_size for f in files)
            graphs[g.name].update(graph_record(proto, files))
            del proto
        figures = measure(spec, fp32_paths, new_paths)
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    return _record(precision, graphs, details, figures, sizes)


def _record(precision: str, graphs: dict, details: dict, figures: dict, sizes: dict) -> dict:
    """The manifest's ``build.precision`` record."""
    record = {"precision": precision, "io": _io_dtypes(graphs)}
    if precision == "fp16":
        record["kept_fp32"] = {
            "ops": sorted({op for d in details.values() for op in d["kept_fp32_ops"]}),
            "rule": "norms with their variance, Softmax with its input scores back to Q·Kᵀ, position math (Sin/Cos, float->int index math)",
            "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
        }
    else:
        record["quantization"] = dict(details)
        record["quantizer"] = {
            "int8": "passes.precision.int8 (MatMulNBits bits 8, outlier channels in float32, calibrated)",
            "int4": "passes.precision.int4 (MatMulNBits bits 4, GatherBlockQuantized embedding, outlier channels in float32, calibrated)",
        }[precision]
    record["accuracy"] = figures["accuracy"]
    record["forward_ms"] = figures["forward_ms"]
    record["speed_vs_fp32"] = figures["forward_ms"]["fp32"] / figures["forward_ms"]["converted"]
    if "decode_ms" in figures:
        record["decode_ms"] = figures["decode_ms"]
        record["decode_speed_vs_fp32"] = figures["decode_ms"]["fp32"] / figures["decode_ms"]["converted"]
    record["bytes"] = dict(sizes)
    record["size_vs_fp32"] = sizes["converted"] / sizes["fp32"] if sizes["fp32"] else None
    record["provider"] = figures["provider"]
    if precision == "fp16" and record["provider"] != "CUDAExecutionProvider":
        record["timing_note"] = (
            f"timed on {record['provider']}, which runs most fp16 ops through inserted casts: "
            "the speed is not what CUDA gives"
        )
    return record


def _io_dtypes(graphs: dict) -> dict:
    """dtype of each kind of graph IO: cache (past/present/cross), and the other float outputs by name."""
    out: dict[str, str] = {}
    for entry in graphs.values():
        for t in entry["inputs"] + entry["outputs"]:
            if t["dtype"].startswith("int"):
                continue
            key = "cache" if Role.of(t["name"]) is not None else t["name"]
            out[key] = t["dtype"]
    return out
