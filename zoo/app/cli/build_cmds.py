"""`zoo build` and `zoo run`: the commands that reach torch (build) or onnxruntime
(run). Heavy modules are imported inside the command bodies."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.app.cli.render import Block, Table, field, render
from zoo.spec.errors import InputError, SpecError
from zoo.spec.families import family


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build a spec into an ONNX artifact (export, parity check, manifest)",
        description="Build SPEC (a catalog name or a YAML file) into an artifact folder: ONNX graph(s), "
        "spec.yaml and manifest.json, checked against the torch module in ONNX Runtime.",
    )
    p.add_argument("spec", help="catalog name, path to a spec YAML file, a Hugging Face model folder (config.json + weights), "
                   "or a `zoo import` output folder")
    p.add_argument("-o", "--out", type=Path, help="artifact folder (default: artifacts/NAME-ID)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE", help="override a spec field, e.g. decoder.layers=2")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation (default 0)")
    p.add_argument("--weights", type=Path, help="load weights from this safetensors file instead of initialising")
    p.add_argument("--tokenizer", type=Path, help="a tokenizer.json for the artifact to carry (a model folder's own is carried by itself)")
    p.add_argument(
        "--usage", type=Path, metavar="FOLDER",
        help="carry the usage files found in FOLDER: tokenizer_config.json, the chat template, generation_config.json, "
        "sentence-transformers pooling (a model folder's or an import folder's own are carried by themselves)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if an identical artifact is already there")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"), help="execution provider the artifact is for (default cpu)")
    p.add_argument("--optimize", action="store_true", help="fused graphs for --target (attention, norms, rotary, GELU), checked by parity")
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "fp16", "int8", "int4"),
        help="fp32 (default); fp16 for CUDA (norms and softmax kept in fp32); int8 (8-bit weight blocks) for CPU; "
             "int4 (4-bit weight blocks, MatMulNBits) for CPU and CUDA",
    )
    p.add_argument(
        "--kv-cache", default="concat", choices=("concat", "shared"),
        help="concat (default: the cache grows by a copy each step); shared: one preallocated buffer written in place "
        "(GroupQueryAttention, IO binding; implies --optimize; decoder-only, CPU, a float32 cache: fp32, int8, int4)",
    )
    p.set_defaults(func=cmd_build)

    r = sub.add_parser(
        "run",
        help="one forward pass of an artifact in ONNX Runtime",
        description="Run one forward pass of ARTIFACT on given or random token ids; print shapes, timings and the top tokens.",
    )
    r.add_argument("artifact", type=Path, help="artifact folder (from zoo build)")
    r.add_argument("--ids", action="append", metavar="1,2,3", help="token ids of one sequence (repeat for a batch); random if absent")
    r.add_argument("--text", action="append", help="text of one sequence (repeat for a batch), for artifacts that carry a tokenizer")
    r.add_argument("--decoder-ids", action="append", metavar="0", help="encoder-decoder: decoder token ids per sequence (default: 0)")
    r.add_argument("--batch", type=int, default=1, help="random input: batch size (default 1)")
    r.add_argument("--seq", type=int, default=16, help="random input: sequence length (default 16)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random input")
    r.add_argument("--top", type=int, default=5, help="how many top tokens to show (default 5)")
    r.add_argument("--repeat", type=int, default=10, help="timed repetitions after the first run (default 10)")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="execution provider (default: CUDA if available)")
    r.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own choice)")
    r.add_argument(
        "--strict", action="store_true",
        help="refuse to run when attention or matmul nodes fell back to CPU on a CUDA session (default: warn)",
    )
    r.set_defaults(func=cmd_run)


def _located(err: SpecError, args: argparse.Namespace) -> SpecError:
    """``err`` with the file and line where its field was written, when the spec came from YAML."""
    if err.file is not None or not err.field or Path(args.spec).is_dir():
        return err
    from zoo.spec.loader import load_raw

    _, lines = load_raw(args.spec, args.overrides)
    file, line = lines.locate(err.field.split("."))
    return SpecError(err.message, file, line, err.field)


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def cmd_build(args: argparse.Namespace) -> int:
    from zoo.app.progress import step

    spec, weights, tokenizer, usage = _source(args, step)
    from zoo.app.build import BuildOptions, build_artifact  # torch and onnx load here

    options = BuildOptions(target=args.target, optimize=args.optimize or args.kv_cache == "shared", precision=args.precision,
                           kv_cache=args.kv_cache)
    try:
        folder, manifest, built = build_artifact(
            spec,
            args.out,
            seed=args.seed,
            weights=weights,
            force=args.force,
            check_parity=not args.no_parity,
            tokenizer=tokenizer,
            step=step,
            options=options,
            usage=usage,
        )
    except SpecError as err:  # found at build time (too large to fit): point at the spec's line
        raise _located(err, args) from None
    render({"folder": folder, "built": built, "manifest": manifest,
            "model": {"name": spec.name, "family": spec.family, "dtype": spec.dtype}}, as_json=False, view=_build_view)
    return 0


def _source(args: argparse.Namespace, step):
    """(spec, weights, tokenizer, usage files) of what ``zoo build`` was given: a Hugging Face
    folder (imported in memory), a `zoo import` output folder (its spec.yaml, weights,
    tokenizer and usage files), or a spec (catalog name or YAML); --weights, --tokenizer and
    --usage add to or replace what the folder brings."""
    import zoo
    from zoo.app import usage_files

    source, weights, tokenizer = Path(args.spec), args.weights, args.tokenizer
    usage = usage_files.collect(args.usage) if args.usage else {}
    if source.is_dir() and (source / "config.json").is_file():  # a checkpoint folder: import it in memory
        from compiler.importers import import_folder
        from zoo.spec.loader import override

        if args.weights:
            raise InputError("--weights: a model folder brings its own weights")
        usage = {**usage_files.collect(source), **usage}
        with step(f"importing {args.spec}"):
            imported = import_folder(args.spec)
        return override(imported.spec, args.overrides, f"--set on {args.spec}"), imported.state, tokenizer or imported.tokenizer, usage
    if source.is_dir() and (source / "spec.yaml").is_file():  # what `zoo import` wrote
        weights = weights or ((source / "weights.safetensors") if (source / "weights.safetensors").is_file() else None)
        tokenizer = tokenizer or ((source / "tokenizer.json") if (source / "tokenizer.json").is_file() else None)
        return zoo.load(str(source / "spec.yaml"), args.overrides), weights, tokenizer, {**usage_files.collect(source), **usage}
    if source.is_dir():
        raise InputError(f"{source}: a folder with neither config.json (a Hugging Face model) nor spec.yaml (a `zoo import` output)")
    return zoo.load(args.spec, args.overrides), weights, tokenizer, usage


def _build_view(r: dict) -> list[Block]:
    """What ``zoo build`` prints: the artifact's files, parity, optimize and precision records, the times."""
    manifest, model = r["manifest"], r["model"]
    if not r["built"]:
        return [f"{r['folder']}: up to date (artifact {manifest['artifact_id'][:12]}); --force rebuilds it"]
    blocks: list[Block] = [
        field("artifact", r["folder"]),
        field("model", f"{model['name']}  ({model['family']}, {manifest['parameters']['total']:,} parameters, {model['dtype']})"),
        Table(None, [[name, _fmt_bytes(e["bytes"]), f"sha256 {e['sha256'][:12]}"] for name, e in manifest["files"].items()],
              align="lrl", indent=2),
    ]
    build = manifest.get("build") or {}
    blocks += _parity_view(manifest["parity"]) + _lowering_view(build.get("lowering")) + _precision_view(build.get("precision"))
    if isinstance(build.get("kv_cache"), dict):
        kv = build["kv_cache"]
        blocks.append(field("kv cache", f"{kv['buffer']} buffer: {kv.get('op')} x{kv.get('layers')} writes in place (axis {kv.get('axis')})"))
    blocks.append(field("time", ", ".join(f"{k} {v:.1f}s" for k, v in manifest["build_seconds"].items())))
    return blocks


def _parity_view(report) -> list[Block]:
    """The build's parity table: every run and output, the cached decoding, the verdict."""
    if not report:
        return []
    rows = []
    for run in report["runs"]:
        for out, e in run["outputs"].items():
            top1 = f"{e['top1'] * 100:.1f}%" if "top1" in e else ""
            rows.append([run["batch"], run["seq"], out, f"{e['max_abs']:.2e}", f"{e['max_rel']:.2e}", f"{e['worst']:.2g}", top1])
    c = report.get("cache")
    if c:
        rows.append([c["batch"], c["prompt"] + c["steps"], f"logits, cached x{c['steps']}", f"{c['max_abs']:.2e}",
                     f"{c['max_rel']:.2e}", f"{c['worst']:.2g}", f"{c['top1'] * 100:.1f}%"])
    return [
        field("parity", f"ONNX Runtime ({report['provider']}) vs torch, rule {report['tolerance']['rule']}"),
        Table(["batch", "seq", "output", "max abs", "max rel", "of bound", "top-1"], rows, align="rrlrrrr", indent=2),
        f"  {'passed' if report['passed'] else 'FAILED'}: every check within the rule (largest error {report['worst']:.2g} of its bound)",
    ]


def _lowering_view(record) -> list[Block]:
    """The optimize lines of ``zoo build --optimize``: what each component became for the target."""
    if not isinstance(record, dict):
        return []
    rows = []
    for comp in ("attention", "rotary", "norm", "gelu"):
        e = record.get(comp)
        if e and (e["nodes"] or e.get("decomposed")):
            left = f", {e['decomposed']} left decomposed" if e.get("decomposed") else ""
            rows.append([comp, f"{e['lowered_as']} x{e['nodes']}{left}"])
    packing = record.get("packing")
    if packing and packing["groups"]:
        rows.append(["packed", f"{packing['matmuls']} projections into {packing['groups']} matmuls (+ Split)"])
    return [field("optimize", f"for {record['target']}"), *([Table(None, rows, indent=2)] if rows else [])]


def _precision_view(record) -> list[Block]:
    """The precision lines of ``zoo build``: what was converted and its measured cost against fp32."""
    if not isinstance(record, dict):
        return []
    io = ", ".join(f"{k} {v}" for k, v in record.get("io", {}).items())
    lines = [field("precision", f"{record['precision']}  (IO: {io})")]
    if "kept_fp32" in record:
        lines.append(f"  kept in fp32: {', '.join(record['kept_fp32']['ops'])}")
    for graph, q in (record.get("quantization") or {}).items():
        tables = ", ".join(f"{e['table']} ({'tied, ' if e['tied_projections'] else ''}{e.get('scheme', 'per row')})" for e in q.get("embeddings", []))
        kept = f"; float32: {q['fp32_matmuls']} q/k MatMuls, outlier channels in {q['weights_with_kept_channels']} weights" if "fp32_matmuls" in q else ""
        bits = f" ({q['int8_matmuls']} of them int8)" if q.get("int8_matmuls") else ""
        lines.append(f"  {graph}: {q['matmuls']} MatMuls {record['precision']}{bits} ({q['weight_type']})" + kept + (f"; embeddings {tables}" if tables else ""))
    a = record["accuracy"]
    lines.append(
        f"  vs fp32 (batch {a['batch']} x {a['seq']}, {a['positions']} positions): max logit error {a['max_abs_logit']:.2e}, "
        f"mean {a['mean_abs_logit']:.2e}, top-1 agreement {a['top1_agreement'] * 100:.1f}%"
    )
    speed = f"forward {record['speed_vs_fp32']:.2f}x"
    if record.get("decode_speed_vs_fp32"):
        speed += f", decode step {record['decode_speed_vs_fp32']:.2f}x"
    lines.append(f"  speed vs fp32: {speed} (x > 1 faster; {record['provider']}); size {record['size_vs_fp32']:.2f}x of fp32")
    if record.get("timing_note"):
        lines.append(f"  note: {record['timing_note']}")
    return lines


def _parse_ids(texts: list[str], what: str) -> list[list[int]]:
    rows = []
    for text in texts:
        try:
            row = [int(tok) for tok in text.replace(" ", ",").split(",") if tok != ""]
        except ValueError:
            raise InputError(f"{what}: {text!r} is not a comma-separated list of integers") from None
        if not row:
            raise InputError(f"{what}: empty sequence")
        rows.append(row)
    return rows


def _pad(rows: list[list[int]]):
    """Right-pad rows to one length -> (ids, mask) int64 arrays."""
    import numpy as np

    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def _check_ids(ids, vocab: int, max_len: int, what: str) -> None:
    if ids.shape[1] > max_len:
        raise InputError(f"{what}: {ids.shape[1]} tokens exceed max_seq_len={max_len}")
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.size:
        raise InputError(f"{what}: token id {int(bad[0])} is outside the vocabulary [0, {vocab})")


def cmd_run(args: argparse.Namespace) -> int:
    from zoo.app.forward import forward, open_session

    if args.batch < 1 or args.seq < 1 or args.repeat < 0 or args.top < 1:
        raise InputError("--batch, --seq and --top must be at least 1, --repeat at least 0")
    session, load_s = open_session(args.artifact, device=args.device, threads=args.threads or None, strict=args.strict)
    inputs, last_mask, tokenizer = _run_inputs(args, session)
    result = forward(session, inputs, last_mask=last_mask, tokenizer=tokenizer, repeat=args.repeat, top=args.top,
                     load_seconds=load_s)
    render(result, as_json=False, view=_run_view)
    return 0


def _run_inputs(args: argparse.Namespace, session):
    """The feeds of ``zoo run`` (--text, --ids or random ids), the mask whose last real
    position is shown, and the tokenizer (with --text)."""
    import numpy as np

    from zoo.spec.inputs import padded_mask

    vocab, max_len = session.artifact.info.model.vocab_size, session.artifact.info.model.max_seq_len
    rng = np.random.default_rng(args.seed)
    tokenizer = None
    if args.text:
        from runtime.tokenizer import Tokenizer

        if args.ids:
            raise InputError("give --text or --ids, not both")
        tokenizer = Tokenizer(session.artifact)
        ids, mask = _pad([tokenizer.encode(t) for t in args.text])
    elif args.ids:
        ids, mask = _pad(_parse_ids(args.ids, "--ids"))
    else:
        seq = min(args.seq, max_len)
        ids = rng.integers(0, vocab, size=(args.batch, seq), dtype=np.int64)
        mask = padded_mask(args.batch, seq, rng)
    _check_ids(ids, vocab, max_len, "--ids")
    fam = family(session.family)
    if not fam.crossed:
        return fam.feeds(ids, mask), mask, tokenizer
    dec_rows = _parse_ids(args.decoder_ids, "--decoder-ids") if args.decoder_ids else [[0]] * len(ids)
    if len(dec_rows) != len(ids):
        raise InputError(f"--decoder-ids gives {len(dec_rows)} sequences, --ids gives {len(ids)}")
    dec_ids, dec_mask = _pad(dec_rows)
    _check_ids(dec_ids, vocab, max_len, "--decoder-ids")
    inputs = fam.feeds(dec_ids, dec_mask, src_ids=ids, src_mask=mask)
    return inputs, dec_mask, tokenizer


def _shape(dims: list[int]) -> str:
    return str(tuple(dims))


def _run_view(r: dict) -> list[Block]:
    """What ``zoo run`` prints: the artifact, provider, feeds, outputs, timing and the top tokens."""
    lines = [field("artifact", f"{r['artifact']}  ({r['name']}, {r['family']})"), field("provider", r["provider"])]
    for feed in r["inputs"]:
        shapes = ", ".join(f"{k} {_shape(v)}" for k, v in feed["shapes"].items())
        lines.append(field("inputs", f"[{feed['graph']}] {shapes}" + (" (and an empty cache)" if feed["empty_cache"] else "")))
    shown = ", ".join(f"{k} {_shape(v['shape'])} {v['dtype']}" for k, v in r["outputs"].items())
    lines.append(field("outputs", shown + (f", and {r['cache_tensors']} cache tensors" if r["cache_tensors"] else "")))
    t = r["timing"]
    timing = f"session load {t['load_ms']:.1f} ms, first run {t['first_ms']:.2f} ms"
    if t["median_ms"] is not None:
        timing += f", median of {t['runs']} runs {t['median_ms']:.2f} ms"
    lines += [field("timing", timing), f"top {r['top_n']} tokens at the last position of each sequence (probability):"]
    for row, tokens in enumerate(r["top"]):
        shown_tokens = (f"{t['id']} {t['token']!r}" if t["token"] is not None else str(t["id"]) for t in tokens)
        lines.append(f"  [{row}] " + "  ".join(f"{tok} ({t['p']:.3g})" for tok, t in zip(shown_tokens, tokens)))
    return lines
