"""Calibration for int8: the fp32 graphs run once in ONNX Runtime on a fixed padded
batch with the A input of every constant-weight MatMul tapped as an extra output;
each tapped activation is reduced to its per-channel ``activation_scores``
(passes.precision.int8), which decide the channels kept in float32."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from passes.files import weight_bytes
from passes.precision.int8 import activation_scores
from passes.precision.matmuls import calibration_taps

CALIBRATION_BATCH, CALIBRATION_SEQ, CALIBRATION_SEED = 4, 32, 4321
IN_MEMORY_LIMIT = 1_800_000_000  # bytes of weights a serialized proto can hold (protobuf: 2 GB)


def _tap_name(graph: str, tensor: str) -> str:
    return f"calibration.{graph}.{tensor}"


def _tapped(proto: onnx.ModelProto, taps: list[str], graph: str) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs each of ``taps`` under ``_tap_name``: the
    graphs of one spec run together, and an encoder and a decoder may name a tensor
    alike (graph outputs are left as they are)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for name in taps:
        copy.graph.node.append(helper.make_node("Identity", [name], [_tap_name(graph, name)]))
        copy.graph.output.append(helper.make_tensor_value_info(_tap_name(graph, name), TensorProto.FLOAT, None))
    return copy


def _session(proto: onnx.ModelProto, folder: Path, name: str):
    import onnxruntime as ort

    from runtime.session import session_options

    opts = session_options()
    if weight_bytes(proto) < IN_MEMORY_LIMIT:
        return ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    path = folder / f"{name}.onnx"
    onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location=f"{name}.onnx.data")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def calibrate(spec, protos: dict[str, onnx.ModelProto], *, batch: int = CALIBRATION_BATCH, seq: int = CALIBRATION_SEQ,
              seed: int = CALIBRATION_SEED, scratch: Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Graph name -> {MatMul input name -> activation_scores} over the real positions
    of a seeded random batch (zoo.spec.inputs), the graphs run in order (the decoder
    takes the encoder's outputs)."""
    from runtime.graphs import run_graphs
    from zoo.spec.families import cache_layout, family, graphs_for

    graphs = graphs_for(spec)
    seq = min(seq, spec.max_seq_len)
    inputs = family(spec).token_inputs(vocab=spec.vocab_size, batch=batch, seq=seq, src_seq=seq, seed=seed)
    taps = {g.name: calibration_taps(protos[g.name]) for g in graphs}
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        sessions = {g.name: _session(_tapped(protos[g.name], taps[g.name], g.name), Path(tmp), g.name) for g in graphs}
        got = run_graphs(sessions, graphs, inputs, cache_layout(spec), batch)
        del sessions
    masks = family(spec).masks(inputs)
    out: dict[str, dict[str, np.ndarray]] = {}
    for g in graphs:
        out[g.name] = {t: activation_scores(_real(got[_tap_name(g.name, t)], masks.get(g.name)))
                       for t in taps[g.name] if _tap_name(g.name, t) in got}
    return out


def _real(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The rows of ``x`` (B, T, ..., K) at real tokens, as (tokens, K); every row when
    the layout does not follow the mask."""
    if mask is not None and x.ndim >= 3 and x.shape[:2] == mask.shape:
        return x[mask.astype(bool)].reshape(-1, x.shape[-1])
    return x.reshape(-1, x.shape[-1])
