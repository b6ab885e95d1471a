"""ONNX against torch on the same inputs. The only runtime module that reaches
the compiler (lazily, inside functions): a user who only runs artifacts needs no torch.

Figures per output: ``max_abs`` = max |onnx - torch|; ``max_rel`` = max_abs divided
by the largest |torch| value of that output; for logits also ``top1`` = share of
real (unpadded) positions whose arg-max token agrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.inputs import graph_inputs
from runtime.session import choose_providers, session_options
from zoo.contract import TOLERANCE, graphs_for

# (batch, target/sequence length, source length) of the parity runs: two sizes,
# both with padding on the right (row 1) and the left (row 2, 3-row batch).
PARITY_RUNS = ((2, 7, 9), (3, 13, 6))


def output_errors(onnx_out: np.ndarray, torch_out: np.ndarray, mask: np.ndarray | None = None) -> dict:
    a, b = onnx_out.astype(np.float64), torch_out.astype(np.float64)
    if a.shape != b.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "shape": [list(a.shape), list(b.shape)]}
    diff = np.abs(a - b)
    finite = bool(np.isfinite(a).all())
    max_abs = float(diff.max()) if finite else float("inf")
    scale = float(np.abs(b).max()) or 1.0
    out = {"max_abs": max_abs, "max_rel": max_abs / scale}
    if mask is not None and a.ndim == 3:
        real = mask.astype(bool)
        out["top1"] = float((a.argmax(-1) == b.argmax(-1))[real].mean())
    return out


def torch_outputs(model, family: str, inputs: dict[str, dict[str, np.ndarray]], dtype) -> dict[str, np.ndarray]:
    """The torch module on the same inputs, as numpy (float32 for comparison)."""
    import torch

    def t(x: np.ndarray):
        x = torch.from_numpy(x)
        return x.to(dtype) if x.is_floating_point() else x

    with torch.no_grad():
        if family == "encoder-decoder":
            enc = inputs["encoder"]
            memory = model.encode(t(enc["input_ids"]), t(enc["attention_mask"]))
            dec = inputs["decoder"]
            logits = model.decode(
                t(dec["decoder_input_ids"]), t(dec["decoder_attention_mask"]), memory, t(enc["attention_mask"])
            )
            outs = {"encoder_hidden_states": memory, "logits": logits}
        elif family == "encoder-only":
            names = ("last_hidden_state", "logits", "pooler_output")
            outs = dict(zip(names, model(**{k: t(v) for k, v in inputs["model"].items()})))
        else:
            outs = {"logits": model(**{k: t(v) for k, v in inputs["model"].items()})}
    return {k: v.float().numpy() for k, v in outs.items()}


def parity(model, spec, paths: dict[str, Path], *, device: str = "auto", runs=PARITY_RUNS, seed: int = 0) -> dict:
    """Run the graphs at ``paths`` (graph name -> .onnx) in ONNX Runtime and the
    torch ``model`` on the same random padded inputs; return the parity report."""
    from compiler.builder import DTYPES

    providers = choose_providers(device)
    try:
        sessions = {name: ort.InferenceSession(str(p), sess_options=session_options(), providers=providers) for name, p in paths.items()}
    except Exception as e:  # onnxruntime raises its own types; NOT_IMPLEMENTED means a missing kernel
        from zoo.errors import ExportError

        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = " (bfloat16 needs a provider with bfloat16 kernels, such as CUDA; use float16 or float32 on CPU)" if spec.dtype == "bfloat16" else ""
        raise ExportError(f"{spec.name}: ONNX Runtime ({providers[0]}) cannot run the {spec.dtype} graph: {detail}{hint}") from e
    family = spec.family
    float_np = np.float16 if spec.dtype == "float16" else np.float32
    tol = TOLERANCE[spec.dtype]
    report_runs = []
    for i, (batch, seq, src) in enumerate(runs):
        seq, src = min(seq, spec.max_seq_len), min(src, spec.max_seq_len)
        inputs = graph_inputs(
            family, vocab=spec.vocab_size, d_model=spec.d_model, batch=batch, seq=seq, src_seq=src, seed=seed + i, float_dtype=float_np
        )
        expected = torch_outputs(model, family, inputs, DTYPES[spec.dtype])
        got: dict[str, np.ndarray] = {}
        for graph in graphs_for(spec):
            feed = dict(inputs[graph.name])
            if graph.name == "decoder":
                feed["encoder_hidden_states"] = got["encoder_hidden_states"]
            names = graph.output_names
            got.update(zip(names, sessions[graph.name].run(names, feed)))
        mask = inputs["decoder"]["decoder_attention_mask"] if family == "encoder-decoder" else inputs["model"]["attention_mask"]
        outputs = {name: output_errors(got[name], ref, mask if name == "logits" else None) for name, ref in expected.items()}
        report_runs.append({"batch": batch, "seq": seq, **({"src_seq": src} if family == "encoder-decoder" else {}), "outputs": outputs})
    max_abs = max(o["max_abs"] for r in report_runs for o in r["outputs"].values())
    max_rel = max(o["max_rel"] for r in report_runs for o in r["outputs"].values())
    return {
        "provider": sessions[next(iter(sessions))].get_providers()[0],
        "dtype": spec.dtype,
        "tolerance": {"max_abs": tol},
        "padding": "row 0 none, row 1 right, row 2 left",
        "runs": report_runs,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "passed": bool(max_abs <= tol),
    }
