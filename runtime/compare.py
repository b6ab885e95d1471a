"""ONNX against torch on the same inputs. The only runtime module that reaches
the compiler (lazily, inside functions): a user who only runs artifacts needs no torch.

Figures per output: ``max_abs`` = max |onnx - torch|; ``max_rel`` = max_abs divided
by the largest |torch| value of that output; for logits also ``top1`` = share of
real (unpadded) positions whose arg-max token agrees.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.inputs import graph_inputs
from runtime.session import choose_providers, empty_past, session_options
from zoo.contract import cache_layout, graphs_for, tolerance_for, within

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
        out["positions"] = int(real.sum())
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


_ORT_FLOATS = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


def past_dtype(session, default=np.float32):
    """The dtype a session's graph declares for its past.* inputs (float16 in an fp16
    artifact, whatever the spec's dtype); ``default`` when it has none or numpy lacks it."""
    for i in session.get_inputs():
        if i.name.startswith("past."):
            return _ORT_FLOATS.get(i.type, default)
    return default


def run_graphs(sessions: dict, graphs, inputs: dict, cache, batch: int, float_np=None) -> dict[str, np.ndarray]:
    """One uncached pass through ``graphs`` in order: each gets its token inputs, the
    outputs of the graphs before it (the decoder's cross.* from the encoder) and an
    empty past of the dtype the graph declares (``float_np`` where it declares none
    numpy has); returns every output (all of a session's, taps included) by name."""
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


def parity(model, spec, paths: dict[str, Path], *, device: str = "auto", runs=PARITY_RUNS, seed: int = 0, precision: str = "fp32") -> dict:
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
    cache = cache_layout(spec)
    float_np = np.float16 if spec.dtype == "float16" else np.float32
    tol = tolerance_for(spec.dtype, precision)
    report_runs = []
    for i, (batch, seq, src) in enumerate(runs):
        seq, src = min(seq, spec.max_seq_len), min(src, spec.max_seq_len)
        inputs = graph_inputs(
            family, vocab=spec.vocab_size, batch=batch, seq=seq, src_seq=src, seed=seed + i
        )
        expected = torch_outputs(model, family, inputs, DTYPES[spec.dtype])
        got = run_graphs(sessions, graphs_for(spec), inputs, cache, batch, float_np)
        mask = inputs["decoder"]["decoder_attention_mask"] if family == "encoder-decoder" else inputs["model"]["attention_mask"]
        outputs = {name: output_errors(got[name], ref, mask if name == "logits" else None) for name, ref in expected.items()}
        report_runs.append({"batch": batch, "seq": seq, **({"src_seq": src} if family == "encoder-decoder" else {}), "outputs": outputs})
    cached = None
    if cache is not None:
        cached = cache_parity(model, spec, sessions, seed=seed)
    max_abs = max(o["max_abs"] for r in report_runs for o in r["outputs"].values())
    max_rel = max(o["max_rel"] for r in report_runs for o in r["outputs"].values())
    failures = [
        f"{name} (batch {r['batch']}, seq {r['seq']})" for r in report_runs for name, o in r["outputs"].items() if not within(o, tol)
    ]
    if cached is not None and not within(cached, tol):
        failures.append("logits of cached decoding")
    checked = [o for r in report_runs for o in r["outputs"].values() if "top1" in o] + ([cached] if cached else [])
    positions = sum(o["positions"] for o in checked)
    top1 = sum(o["top1"] * o["positions"] for o in checked) / positions if positions else None  # pooled over every real position
    if "top1" in tol and top1 is not None and top1 < tol["top1"]:
        failures.append(f"top-1 agreement {top1 * 100:.1f}% < {tol['top1'] * 100:.0f}% over {positions} positions")
    passed = not failures
    return {
        "provider": sessions[next(iter(sessions))].get_providers()[0],
        "dtype": spec.dtype,
        "precision": precision,
        "tolerance": tol,
        "padding": "row 0 none, row 1 right, row 2 left",
        "runs": report_runs,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "cache": cached,
        "top1": top1,
        "failures": failures,
        "passed": bool(passed),
    }


# The cache check: a prompt of CACHE_PROMPT tokens, then CACHE_STEPS tokens one at a
# time through the cache, against one full torch forward over all the tokens.
CACHE_BATCH, CACHE_PROMPT, CACHE_STEPS = 3, 5, 6


def cache_parity(model, spec, sessions: dict, *, seed: int = 0) -> dict:
    """Logits of cached step-by-step decoding in ONNX Runtime against the torch
    module's logits from one full forward over the same tokens (rows 1 and 2 padded
    on the left, as the generation loop pads). Figures over real positions only."""
    from compiler.builder import DTYPES

    cache = cache_layout(spec)
    rng = np.random.default_rng(seed + 100)
    total = min(CACHE_PROMPT + CACHE_STEPS, spec.max_seq_len)
    prompt = min(CACHE_PROMPT, total - 1)
    ids = rng.integers(0, spec.vocab_size, size=(CACHE_BATCH, total), dtype=np.int64)
    mask = np.ones_like(ids)
    for row in range(1, CACHE_BATCH):
        mask[row, : min(row * 2, prompt - 1)] = 0  # left padding inside the prompt
    float_np = np.float16 if spec.dtype == "float16" else np.float32
    fixed: dict[str, np.ndarray] = {}
    if spec.family == "encoder-decoder":
        src = min(7, spec.max_seq_len)
        src_ids = rng.integers(0, spec.vocab_size, size=(CACHE_BATCH, src), dtype=np.int64)
        src_mask = np.ones_like(src_ids)
        src_mask[1, -2:] = 0
        enc_names = [o.name for o in sessions["encoder"].get_outputs()]
        enc = dict(zip(enc_names, sessions["encoder"].run(enc_names, {"input_ids": src_ids, "attention_mask": src_mask})))
        fixed = {k: v for k, v in enc.items() if k.startswith("cross.")}
        fixed["encoder_attention_mask"] = src_mask
        sess, id_name, mask_name = sessions["decoder"], "decoder_input_ids", "decoder_attention_mask"
        reference = torch_outputs(
            model,
            spec.family,
            {"encoder": {"input_ids": src_ids, "attention_mask": src_mask}, "decoder": {"decoder_input_ids": ids, "decoder_attention_mask": mask}},
            DTYPES[spec.dtype],
        )["logits"]
    else:
        sess, id_name, mask_name = sessions["model"], "input_ids", "attention_mask"
        reference = torch_outputs(model, spec.family, {"model": {"input_ids": ids, "attention_mask": mask}}, DTYPES[spec.dtype])["logits"]
    names = [o.name for o in sess.get_outputs()]
    past = empty_past(cache, CACHE_BATCH, past_dtype(sess, float_np))
    pieces, start = [], 0
    for end in [prompt] + list(range(prompt + 1, total + 1)):
        out = sess.run(names, {id_name: ids[:, start:end], mask_name: mask[:, :end], **fixed, **past})
        pieces.append(out[0])
        past = {n.replace("present.", "past.", 1): v for n, v in zip(names[1:], out[1:])}
        start = end
    real = mask.astype(bool)  # padding positions hold no token: their logits mean nothing
    stepped = np.concatenate(pieces, axis=1)[real][None]  # (1, real positions, V)
    errors = output_errors(stepped, reference[real][None], np.ones(stepped.shape[:2], dtype=np.int64))
    return {"batch": CACHE_BATCH, "prompt": prompt, "steps": total - prompt, "padding": "rows 1, 2 left", **errors}


# --------------------------------------------------------------------------- zoo compare --parity

_LAYER_SCOPE = re.compile(r"(?:^|\.)((?:encoder|decoder)\.layers\.(\d+))$")


def _layer_outputs(proto) -> dict[str, list[str]]:
    """Per layer ("decoder.layers.3") the values its nodes produce that nodes outside
    it consume: the layer's output is among them (found from the exporter's
    pkg.torch.onnx.name_scopes metadata on each node)."""
    scope_of: dict[int, str] = {}
    for i, node in enumerate(proto.graph.node):
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = ast.literal_eval(prop.value)
                except (ValueError, SyntaxError):
                    continue
                for s in scopes:
                    m = _LAYER_SCOPE.search(s)
                    if m:
                        scope_of[i] = m.group(1)
    produced: dict[str, str] = {}
    for i, node in enumerate(proto.graph.node):
        if i in scope_of:
            for out in node.output:
                produced[out] = scope_of[i]
    graph_outputs = {o.name for o in proto.graph.output}
    leaving: dict[str, list[str]] = {}
    for i, node in enumerate(proto.graph.node):
        for name in node.input:
            layer = produced.get(name)
            if layer is not None and scope_of.get(i) != layer and name not in graph_outputs:
                if name not in leaving.setdefault(layer, []):
                    leaving[layer].append(name)
    return leaving


def _with_outputs(proto, names: list[str]):
    """A copy of ``proto`` that also returns the values ``names``."""
    import copy

    from onnx import TensorProto, helper

    model = copy.deepcopy(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
    return model


def artifact_parity(folder, *, weights=None, device: str = "auto", seed: int = 0) -> dict:
    """An artifact's ONNX graphs against its torch module (rebuilt from spec.yaml and
    the seeded init, or ``weights``), with right and with left padding: per output
    max abs / rel error and top-1 agreement, and the hidden state after every layer,
    naming the first layer beyond tolerance."""
    import onnx
    import torch

    from compiler.builder import DTYPES, build
    from compiler.weights import load_weights, weights_digest
    from runtime.artifact import load_artifact
    from zoo.errors import ArtifactError
    from zoo.loader import load_spec

    artifact = load_artifact(folder)
    manifest = artifact.manifest
    spec = load_spec(str(Path(folder) / "spec.yaml"))
    model = build(spec, seed=int(manifest.get("seed") or 0))
    if weights is not None:
        load_weights(model, weights)
    if weights_digest(model) != manifest["weights_sha256"]:
        raise ArtifactError(
            f"{folder}: the torch module's weights differ from the artifact's "
            + ("(wrong --weights file)" if weights else f"(it was not built from the seeded init, seed {manifest.get('seed')}); give --weights FILE, the safetensors it was built from")
        )
    precision = artifact_precision(manifest)
    tol = tolerance_for(spec.dtype, precision)
    providers = choose_providers(device)
    protos = {g.name: onnx.load(str(artifact.path(g.name))) for g in artifact.graphs}
    taps = {name: _layer_outputs(p) for name, p in protos.items()}
    sessions = {
        name: ort.InferenceSession(
            _with_outputs(p, [v for vals in taps[name].values() for v in vals]).SerializeToString(),
            sess_options=session_options(),
            providers=providers,
        )
        for name, p in protos.items()
    }
    stacks = [(part, getattr(model, part)) for part in ("encoder", "decoder") if hasattr(model, part)]
    float_np = np.float16 if spec.dtype == "float16" else np.float32
    cache = cache_layout(spec)
    runs, layer_err, layer_scale = [], {}, {}
    rng = np.random.default_rng(seed)
    batch, seq = 2, min(9, spec.max_seq_len)
    for padding in ("right", "left"):
        mask = np.ones((batch, seq), dtype=np.int64)
        pad = max(1, seq // 3) if seq > 1 else 0
        if pad:
            if padding == "right":
                mask[1, seq - pad :] = 0
            else:
                mask[1, :pad] = 0
        ids = rng.integers(0, spec.vocab_size, size=(batch, seq), dtype=np.int64)
        if spec.family == "encoder-decoder":
            inputs = {
                "encoder": {"input_ids": ids, "attention_mask": mask},
                "decoder": {"decoder_input_ids": ids[:, ::-1].copy(), "decoder_attention_mask": mask, "encoder_attention_mask": mask},
            }
        else:
            inputs = {"model": {"input_ids": ids, "attention_mask": mask}}
        captured: dict[str, torch.Tensor] = {}
        hooks = []
        for part, stack in stacks:
            for i, layer in enumerate(stack.layers):
                key = f"{part}.layers.{i}"
                hooks.append(layer.register_forward_hook(lambda mod, a, out, key=key: captured.__setitem__(key, out[0].detach())))
        try:
            expected = torch_outputs(model, spec.family, inputs, DTYPES[spec.dtype])
        finally:
            for h in hooks:
                h.remove()
        got = run_graphs(sessions, artifact.graphs, inputs, cache, batch, float_np)
        outputs = {name: output_errors(got[name], ref, mask if name == "logits" else None) for name, ref in expected.items()}
        for e in outputs.values():
            e["within"] = within(e, tol)
        runs.append({"padding": padding, "batch": batch, "seq": seq, "outputs": outputs})
        real = mask.astype(bool)
        for g in artifact.graphs:
            for layer, candidates in taps[g.name].items():
                ref = captured.get(layer)
                if ref is None:
                    continue
                ref = ref.float().numpy()
                shaped = [got[c] for c in candidates if got[c].shape == ref.shape]
                if not shaped:
                    continue
                err = min(float(np.abs(v.astype(np.float64) - ref)[real].max()) for v in shaped)
                layer_err[layer] = max(layer_err.get(layer, 0.0), err)
                layer_scale[layer] = max(layer_scale.get(layer, 0.0), float(np.abs(ref)[real].max()))
    order = [f"{part}.layers.{i}" for part, stack in stacks for i in range(len(stack.layers))]
    layers = []
    for name in order:
        if name in layer_err:
            entry = {"layer": name, "max_abs": layer_err[name], "max_rel": layer_err[name] / (layer_scale[name] or 1.0)}
            entry["within"] = within(entry, tol)
            layers.append(entry)
    max_abs = max(e["max_abs"] for r in runs for e in r["outputs"].values())
    checked = [e for r in runs for e in r["outputs"].values() if "top1" in e]
    positions = sum(e["positions"] for e in checked)
    top1 = sum(e["top1"] * e["positions"] for e in checked) / positions if positions else None
    first = next((entry["layer"] for entry in layers if not entry["within"]), None)
    return {
        "name": manifest["name"],
        "dtype": spec.dtype,
        "precision": precision,
        "provider": next(iter(sessions.values())).get_providers()[0],
        "tolerance": tol["max_abs"],
        "tolerance_rule": tol,
        "runs": runs,
        "layers": layers,
        "max_abs": max_abs,
        "top1": top1,
        "passed": all(e["within"] for r in runs for e in r["outputs"].values()) and not (top1 is not None and top1 < tol.get("top1", 0.0)),
        "first_divergent_layer": first,
    }


def artifact_precision(manifest: dict) -> str:
    """fp32, fp16 or int8: how the artifact's graphs were built (manifest["build"])."""
    record = (manifest.get("build") or {}).get("precision", "fp32")
    return record.get("precision", "fp32") if isinstance(record, dict) else str(record or "fp32")
