"""The graphs of an artifact run once, uncached, on one batch: the sessions, the
empty past each graph's declared cache dtype asks for (what parity, calibration and
measurement share; which attention mask's real positions count for each output is
zoo.spec.families.Family.output_masks)."""

from __future__ import annotations

import numpy as np

from runtime.manifest import Manifest
from zoo.spec.errors import ExportError
from zoo.spec.families import Role

# onnxruntime (and runtime.session) are imported where a graph runs: past_dtype reads a
# manifest without them (zoo.app.triton).


_ORT_FLOATS = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}
_MANIFEST_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


def past_dtype(source, default=np.float32):
    """The dtype a graph declares for its past.* inputs (float16 in an fp16 artifact,
    whatever the spec's dtype); ``default`` when it has none or numpy lacks it (bfloat16).
    ``source``: an onnxruntime session, or an artifact's manifest (runtime.manifest.Manifest:
    the inputs its graphs record, read without a session)."""
    if isinstance(source, Manifest):
        declared = [(t.name, t.dtype) for g in source.graphs.values() for t in g.inputs]
        floats = _MANIFEST_FLOATS
    else:
        declared = [(i.name, i.type) for i in source.get_inputs()]
        floats = _ORT_FLOATS
    for name, dtype in declared:
        if Role.of(name) is Role.PAST:
            return floats.get(dtype, default)
    return default


def run_graphs(sessions: dict, graphs, inputs: dict, cache, batch: int, float_np=None) -> dict[str, np.ndarray]:
    """One uncached pass through ``graphs`` in order: each gets its token inputs, the
    outputs of the graphs before it (the decoder's cross.* from the encoder) and an
    empty past of the dtype the graph declares (``float_np`` where it declares none
    numpy has); returns every output (all of a session's, taps included) by name."""
    from runtime.session import empty_past

    got: dict[str, np.ndarray] = {}
    for graph in graphs:
        feed = dict(inputs[graph.name])
        for t in graph.inputs:
            if t.name in got:
                feed[t.name] = got[t.name]
        if cache is not None and graph.name != "encoder":
            feed.update(empty_past(cache, batch, past_dtype(sessions[graph.name], float_np or np.float32)))
        names = [o.name for o in sessions[graph.name].get_outputs()]
        got.update(zip(names, sessions[graph.name].run(names, feed)))
    return got


def open_sessions(paths: dict, spec, providers: list[str]) -> dict:
    """ONNX Runtime sessions of the graphs at ``paths``; a graph the provider cannot
    run is an ExportError naming the dtype."""
    import onnxruntime as ort

    from runtime.session import session_options

    try:
        return {name: ort.InferenceSession(str(p), sess_options=session_options(), providers=providers) for name, p in paths.items()}
    except Exception as e:  # onnxruntime raises its own types; NOT_IMPLEMENTED means a missing kernel
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = " (bfloat16 needs a provider with bfloat16 kernels, such as CUDA; use float16 or float32 on CPU)" if spec.dtype == "bfloat16" else ""
        raise ExportError(f"{spec.name}: ONNX Runtime ({providers[0]}) cannot run the {spec.dtype} graph: {detail}{hint}") from e
