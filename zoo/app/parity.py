"""ONNX against torch on the same inputs, judged by the parity rule
(zoo.spec.contract.ParityRule, zoo.app.tolerance.judge). With zoo.app.layer_parity, the one
place that needs torch and ONNX Runtime together (torch loads inside the functions).

``parity`` is the build's check: two padded runs of every graph, cached step-by-step
decoding against one full forward, and the logits' top-1 agreement; a failure names
each failing check on its own line (``failure_lines``) and the first layer beyond the
rule. ``artifact_parity`` is ``zoo compare --parity``: the outputs and the hidden
state after every layer, each judged by the same rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.graphs import open_sessions, past_dtype, run_graphs
from runtime.session import choose_providers, empty_past
from zoo.app.tolerance import judge, pooled_top1
from zoo.spec.contract import parity_rule
from zoo.spec.families import Role, cache_layout, family, graphs_for
from zoo.spec.variants import ROPE_SCALINGS

# (batch, target/sequence length, source length) of the parity runs: two sizes,
# both with padding on the right (row 1) and the left (row 2, 3-row batch).
PARITY_RUNS = ((2, 7, 9), (3, 13, 6))
ROW_PADDING = {0: "no padding", 1: "right padding", 2: "left padding"}


def torch_outputs(model, family_name: str, inputs: dict[str, dict[str, np.ndarray]], dtype) -> dict[str, np.ndarray]:
    """The torch module on the same inputs (by graph, as Family.feeds gives them), as
    numpy (float32 for comparison)."""
    import torch

    fam = family(family_name)

    def t(x: np.ndarray):
        x = torch.from_numpy(x)
        return x.to(dtype) if x.is_floating_point() else x

    with torch.no_grad():
        if fam.crossed:
            enc, dec = inputs[fam.encoder_graph], inputs[fam.step_graph]
            memory = model.encode(t(enc["input_ids"]), t(enc["attention_mask"]))
            logits = model.decode(t(dec[fam.ids]), t(dec[fam.mask]), memory, t(enc["attention_mask"]))
            outs = {"encoder_hidden_states": memory, "logits": logits}
        elif not fam.generates:
            names = ("last_hidden_state", "logits", "pooler_output")
            outs = dict(zip(names, model(**{k: t(v) for k, v in inputs["model"].items()})))
        else:
            outs = {"logits": model(**{k: t(v) for k, v in inputs["model"].items()})}
    return {k: v.float().numpy() for k, v in outs.items()}


def parity(
    model, spec, paths: dict[str, Path], *, device: str = "auto", runs=PARITY_RUNS, seed: int = 0, precision: str = "fp32", rule=None
) -> dict:
    """Run the graphs at ``paths`` (graph name -> .onnx) in ONNX Runtime and the
    torch ``model`` on the same random padded inputs; return the parity report.
    On a failure, ``first_layer_beyond`` names the first layer whose hidden state is
    beyond the rule on the first failing run (None: every layer is within).
    ``rule``: another ParityRule than the artifact's (for measurements)."""
    from compiler.builder import DTYPES

    providers = choose_providers(device)
    sessions = open_sessions(paths, spec, providers)
    cache = cache_layout(spec)
    float_np = np.float16 if spec.dtype == "float16" else np.float32
    rule = rule or parity_rule(spec.dtype, precision)
    fam = family(spec)
    report_runs, run_inputs = [], []
    for i, (batch, seq, src) in enumerate(runs):
        seq, src = min(seq, spec.max_seq_len), min(src, spec.max_seq_len)
        inputs = fam.token_inputs(vocab=spec.vocab_size, batch=batch, seq=seq, src_seq=src, seed=seed + i)
        expected = torch_outputs(model, spec.family, inputs, DTYPES[spec.dtype])
        got = run_graphs(sessions, graphs_for(spec), inputs, cache, batch, float_np)
        masks = fam.output_masks(inputs)
        outputs = {name: judge(got[name], ref, rule, masks.get(name)) for name, ref in expected.items()}
        report_runs.append({"batch": batch, "seq": seq, **({"src_seq": src} if fam.crossed else {}), "outputs": outputs})
        run_inputs.append(inputs)
    cached = cache_parity(model, spec, sessions, rule, seed=seed) if cache is not None else None
    figures = [o for r in report_runs for o in r["outputs"].values()] + ([cached] if cached else [])
    top1, positions = pooled_top1(figures)
    first_layer = None
    failing = next((i for i, r in enumerate(report_runs) if not all(o["within"] for o in r["outputs"].values())), None)
    if failing is not None:
        import onnx

        from zoo.app.layer_parity import first_layer_beyond

        protos = {name: onnx.load(str(p)) for name, p in paths.items()}
        first_layer = first_layer_beyond(model, spec, protos, providers, run_inputs[failing], rule)
    report = {
        "provider": sessions[next(iter(sessions))].get_providers()[0],
        "dtype": spec.dtype,
        "precision": precision,
        "tolerance": rule.to_json(),
        "padding": "row 0 none, row 1 right, row 2 left",
        "runs": report_runs,
        "max_abs": max(o["max_abs"] for o in figures),
        "max_rel": max(o["max_rel"] for o in figures),
        "worst": max(o["worst"] for o in figures),
        "cache": cached,
        "top1": top1,
        "top1_positions": positions,
        "first_layer_beyond": first_layer,
    }
    report["failures"] = failure_lines(report, rule)
    report["passed"] = not report["failures"]
    return report


def _figures_line(o: dict) -> str:
    return (
        f"max abs {o['max_abs']:.3g}, max rel {o['max_rel']:.3g}; worst element {o.get('error', 0):.3g} "
        f"where {o.get('allowed', 0):.3g} is allowed (torch {o.get('value', 0):.4g}), {o['worst']:.3g}x the bound"
    )


def failure_lines(report: dict, rule) -> list[str]:
    """Every failing check of a parity report, one line each: the output, the run's
    shape, the padding side of the failing rows, max abs, max rel, what was allowed,
    and the first layer beyond the rule."""
    lines = []
    layer = report.get("first_layer_beyond")
    where = f"; first layer beyond the rule: {layer}" if layer else "; every layer's hidden state is within the rule"
    for run in report["runs"]:
        shape = f"batch {run['batch']} x seq {run['seq']}" + (f" (source {run['src_seq']})" if "src_seq" in run else "")
        for name, o in run["outputs"].items():
            if o["within"]:
                continue
            rows = [i for i, w in enumerate(o.get("rows") or []) if w > 1.0]
            sides = ", ".join(f"row {i} ({ROW_PADDING.get(i, 'padded')})" for i in rows) or "every row"
            lines.append(f"{name}, {shape}, {sides}: {_figures_line(o)}{where}")
    c = report.get("cache")
    if c is not None and not c["within"]:
        full_ok = all(o["within"] for r in report["runs"] for o in r["outputs"].values())
        hint = "; the full forward is within the rule, so the cache path diverges" if full_ok else ""
        lines.append(
            f"logits of cached decoding, batch {c['batch']}, prompt {c['prompt']} + {c['steps']} steps, rows 1 and 2 left-padded: {_figures_line(c)}{hint}"
        )
    if rule.top1 is not None and report["top1"] is not None and report["top1"] < rule.top1:
        lines.append(f"top-1 agreement {report['top1'] * 100:.1f}% < {rule.top1 * 100:.0f}% over {report['top1_positions']} positions")
    return lines


# The cache check: a prompt of CACHE_PROMPT tokens, then CACHE_STEPS tokens one at a
# time through the cache, against one full torch forward over all the tokens.
CACHE_BATCH, CACHE_PROMPT, CACHE_STEPS = 3, 5, 6


def _cache_reference(model, spec, sessions, ids, mask, rng):
    """(step graph's session, ids name, mask name, fixed feeds, torch logits of the full forward)."""
    from compiler.builder import DTYPES

    fam = family(spec)
    step = sessions[fam.step_graph], fam.ids, fam.mask
    if not fam.crossed:
        reference = torch_outputs(model, spec.family, fam.feeds(ids, mask), DTYPES[spec.dtype])["logits"]
        return (*step, {}, reference)
    src = min(7, spec.max_seq_len)
    src_ids = rng.integers(0, spec.vocab_size, size=(CACHE_BATCH, src), dtype=np.int64)
    src_mask = np.ones_like(src_ids)
    src_mask[1, -2:] = 0
    inputs = fam.feeds(ids, mask, src_ids=src_ids, src_mask=src_mask)
    encoder = sessions[fam.encoder_graph]
    enc_names = [o.name for o in encoder.get_outputs()]
    enc = dict(zip(enc_names, encoder.run(enc_names, inputs[fam.encoder_graph])))
    fixed = {**Role.CROSS.pick(enc), "encoder_attention_mask": src_mask}
    reference = torch_outputs(model, spec.family, inputs, DTYPES[spec.dtype])["logits"]
    return (*step, fixed, reference)


def cache_limit(spec) -> int:
    """Tokens up to which cached decoding equals a full forward: past a LongRoPE switch the
    cache holds keys rotated with the short frequencies, a full forward rotates them all
    with the long ones (transformers' cache does the same), so the check stays below it."""
    scaling = getattr(spec.positional, "scaling", None)
    limit = ROPE_SCALINGS[scaling.kind].switch_at(scaling) if scaling is not None else None
    return limit if limit is not None else spec.max_seq_len


def _stepper(sess, cache, fixed: dict, dtype, total: int):
    """feeds -> logits of the new positions, the cache kept between calls: the past of each
    step is the last one's present, or (a --kv-cache shared graph) one buffer of ``total``
    slots bound as both through runtime.shared_cache, as generation runs it."""
    from runtime.shared_cache import SharedRunner, is_shared

    if is_shared(sess):
        runner = SharedRunner(sess, cache, total)
        runner.start(CACHE_BATCH, fixed, dtype, capacity=total)
        return runner.run
    names, state = [o.name for o in sess.get_outputs()], {"past": empty_past(cache, CACHE_BATCH, dtype)}

    def step(feeds: dict) -> np.ndarray:
        out = sess.run(names, {**feeds, **fixed, **state["past"]})
        state["past"] = Role.carried(dict(zip(names, out)))
        return out[0]

    return step


def cache_parity(model, spec, sessions: dict, rule, *, seed: int = 0) -> dict:
    """Logits of cached step-by-step decoding in ONNX Runtime against the torch
    module's logits from one full forward over the same tokens (rows 1 and 2 padded
    on the left, as the generation loop pads), judged by ``rule`` over real positions."""
    cache = cache_layout(spec)
    rng = np.random.default_rng(seed + 100)
    total = min(CACHE_PROMPT + CACHE_STEPS, spec.max_seq_len, cache_limit(spec))
    prompt = min(CACHE_PROMPT, total - 1)
    ids = rng.integers(0, spec.vocab_size, size=(CACHE_BATCH, total), dtype=np.int64)
    mask = np.ones_like(ids)
    for row in range(1, CACHE_BATCH):
        mask[row, : min(row * 2, prompt - 1)] = 0  # left padding inside the prompt
    float_np = np.float16 if spec.dtype == "float16" else np.float32
    sess, id_name, mask_name, fixed, reference = _cache_reference(model, spec, sessions, ids, mask, rng)
    step = _stepper(sess, cache, fixed, past_dtype(sess, float_np), total)
    pieces, start = [], 0
    for end in [prompt] + list(range(prompt + 1, total + 1)):
        pieces.append(step({id_name: ids[:, start:end], mask_name: mask[:, :end]}))
        start = end
    stepped = np.concatenate(pieces, axis=1)  # (B, total, V); padding positions hold no token
    return {"batch": CACHE_BATCH, "prompt": prompt, "steps": total - prompt, "padding": "rows 1, 2 left", **judge(stepped, reference, rule, mask)}


# --------------------------------------------------------------------------- zoo compare --parity


def _compare_inputs(spec, rng, padding: str, batch: int = 2) -> tuple[dict, np.ndarray]:
    """Inputs of one ``zoo compare --parity`` run: row 1 padded on ``padding``'s side."""
    seq = min(9, spec.max_seq_len)
    mask = np.ones((batch, seq), dtype=np.int64)
    pad = max(1, seq // 3) if seq > 1 else 0
    if pad:
        if padding == "right":
            mask[1, seq - pad :] = 0
        else:
            mask[1, :pad] = 0
    ids = rng.integers(0, spec.vocab_size, size=(batch, seq), dtype=np.int64)
    fam = family(spec)
    # an encoder-decoder's decoder reads the source reversed
    return fam.feeds(ids[:, ::-1].copy() if fam.crossed else ids, mask, src_ids=ids, src_mask=mask), mask


def _module_for(folder, manifest, weights):
    """The artifact's torch module: rebuilt from spec.yaml and its seed, or ``weights``
    (``manifest``: the artifact's runtime.manifest.Manifest)."""
    from compiler.builder import build
    from compiler.weights import load_weights, weights_digest
    from zoo.spec.errors import ArtifactError
    from zoo.spec.loader import load_spec

    spec = load_spec(str(Path(folder) / "spec.yaml"))
    model = build(spec, seed=manifest.seed or 0)
    if weights is not None:
        load_weights(model, weights)
    if weights_digest(model) != manifest.weights_sha256:
        raise ArtifactError(
            f"{folder}: the torch module's weights differ from the artifact's "
            + ("(wrong --weights file)" if weights else f"(it was not built from the seeded init, seed {manifest.seed}); give --weights FILE, the safetensors it was built from")
        )
    return spec, model


def artifact_parity(folder, *, weights=None, device: str = "auto", seed: int = 0) -> dict:
    """An artifact's ONNX graphs against its torch module (rebuilt from spec.yaml and
    the seeded init, or ``weights``), with right and with left padding: per output
    and per layer (the hidden state after it) the rule's figures, the first layer
    beyond the rule, and ``passed`` only when every output, every layer and the top-1
    floor are within it."""
    import onnx

    from runtime.artifact import load_artifact
    from zoo.app.layer_parity import layer_figures, layer_order, tapped_sessions, torch_layers

    artifact = load_artifact(folder)
    manifest = artifact.info
    spec, model = _module_for(folder, manifest, weights)
    precision = manifest.precision
    rule = parity_rule(spec.dtype, precision)
    sessions, taps = tapped_sessions({g.name: onnx.load(str(artifact.path(g.name))) for g in artifact.graphs}, choose_providers(device))
    float_np = np.float16 if spec.dtype == "float16" else np.float32
    rng = np.random.default_rng(seed)
    runs, layers = [], {}
    for padding in ("right", "left"):
        inputs, mask = _compare_inputs(spec, rng, padding)
        expected, captured = torch_layers(model, spec, inputs)
        got = run_graphs(sessions, artifact.graphs, inputs, cache_layout(spec), mask.shape[0], float_np)
        masks = family(spec).output_masks(inputs)
        runs.append({"padding": padding, "batch": mask.shape[0], "seq": mask.shape[1], "outputs": {n: judge(got[n], ref, rule, masks.get(n)) for n, ref in expected.items()}})
        for entry in layer_figures(got, taps, captured, family(spec).masks(inputs), rule, layer_order(model)):
            prev = layers.get(entry["layer"])
            layers[entry["layer"]] = entry if prev is None or entry["worst"] > prev["worst"] else prev
    layers = [layers[name] for name in layer_order(model) if name in layers]
    figures = [e for r in runs for e in r["outputs"].values()]
    top1, _ = pooled_top1(figures)
    first = next((entry["layer"] for entry in layers if not entry["within"]), None)
    top1_ok = top1 is None or rule.top1 is None or top1 >= rule.top1
    return {
        "name": manifest.name,
        "dtype": spec.dtype,
        "precision": precision,
        "provider": next(iter(sessions.values())).get_providers()[0],
        "tolerance": rule.to_json(),
        "runs": runs,
        "layers": layers,
        "max_abs": max(e["max_abs"] for e in figures),
        "worst": max(e["worst"] for e in figures + layers),
        "top1": top1,
        "passed": all(e["within"] for e in figures + layers) and top1_ok,
        "first_divergent_layer": first,
    }
