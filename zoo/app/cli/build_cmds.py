"""`zoo build` and `zoo run`: the commands that reach torch (build) or onnxruntime
(run). Heavy modules are imported inside the command bodies."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zoo.spec.errors import InputError, SpecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build a spec into an ONNX artifact (export, parity check, manifest)",
        description="Build SPEC (a catalog name or a YAML file) into an artifact folder: ONNX graph(s), "
        "spec.yaml and manifest.json, checked against the torch module in ONNX Runtime.",
    )
    p.add_argument("spec", help="catalog name, path to a spec YAML file, or a Hugging Face model folder (config.json + weights)")
    p.add_argument("-o", "--out", type=Path, help="artifact folder (default: artifacts/NAME-ID)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE", help="override a spec field, e.g. decoder.layers=2")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation (default 0)")
    p.add_argument("--weights", type=Path, help="load weights from this safetensors file instead of initialising")
    p.add_argument("--tokenizer", type=Path, help="a tokenizer.json for the artifact to carry (a model folder's own is carried by itself)")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical artifact is already there")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"), help="execution provider the artifact is for (default cpu)")
    p.add_argument("--optimize", action="store_true", help="fused graphs for --target (attention, norms, rotary, GELU), checked by parity")
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "fp16", "int8"),
        help="fp32 (default); fp16 for CUDA (norms and softmax kept in fp32); int8 dynamic quantization for CPU",
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
    import zoo
    from zoo.app.progress import step

    weights, tokenizer = args.weights, args.tokenizer
    if Path(args.spec).is_dir():  # a checkpoint folder: import it in memory, then build
        from compiler.importers import import_folder
        from zoo.spec.loader import override

        if args.weights:
            raise InputError("--weights: a model folder brings its own weights")
        with step(f"importing {args.spec}"):
            imported = import_folder(args.spec)
        spec, weights = override(imported.spec, args.overrides, f"--set on {args.spec}"), imported.state
        tokenizer = tokenizer or imported.tokenizer
    else:
        spec = zoo.load(args.spec, args.overrides)
    from zoo.app.build import BuildOptions, build_artifact  # torch and onnx load here

    options = BuildOptions(target=args.target, optimize=args.optimize, precision=args.precision)
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
        )
    except SpecError as err:  # found at build time (too large to fit): point at the spec's line
        raise _located(err, args) from None
    if not built:
        print(f"{folder}: up to date (artifact {manifest['artifact_id'][:12]}); --force rebuilds it")
        return 0
    print(f"artifact  {folder}")
    print(f"model     {spec.name}  ({spec.family}, {manifest['parameters']['total']:,} parameters, {spec.dtype})")
    for name, entry in manifest["files"].items():
        print(f"  {name:<16} {_fmt_bytes(entry['bytes']):>10}  sha256 {entry['sha256'][:12]}")
    _print_parity(manifest["parity"])
    _print_lowering((manifest.get("build") or {}).get("lowering"))
    _print_precision((manifest.get("build") or {}).get("precision"))
    secs = manifest["build_seconds"]
    print("time      " + ", ".join(f"{k} {v:.1f}s" for k, v in secs.items()))
    return 0


def _print_parity(report) -> None:
    """The build's parity table: every run and output, the cached decoding, the verdict."""
    if not report:
        return
    print(f"parity    ONNX Runtime ({report['provider']}) vs torch, rule {report['tolerance']['rule']}")
    print(f"  {'batch':>5} {'seq':>4}  {'output':<22} {'max abs':>10} {'max rel':>10} {'of bound':>9} {'top-1':>7}")
    for run in report["runs"]:
        for out, e in run["outputs"].items():
            top1 = f"{e['top1'] * 100:.1f}%" if "top1" in e else ""
            print(f"  {run['batch']:>5} {run['seq']:>4}  {out:<22} {e['max_abs']:>10.2e} {e['max_rel']:>10.2e} {e['worst']:>9.2g} {top1:>7}")
    c = report.get("cache")
    if c:
        label = f"logits, cached x{c['steps']}"
        seq = c["prompt"] + c["steps"]
        print(f"  {c['batch']:>5} {seq:>4}  {label:<22} {c['max_abs']:>10.2e} {c['max_rel']:>10.2e} {c['worst']:>9.2g} {c['top1'] * 100:>6.1f}%")
    print(f"  {'passed' if report['passed'] else 'FAILED'}: every check within the rule (largest error {report['worst']:.2g} of its bound)")


def _print_lowering(record) -> None:
    """The optimize lines of ``zoo build --optimize``: what each component became for the target."""
    if not isinstance(record, dict):
        return
    print(f"optimize  for {record['target']}")
    for comp in ("attention", "rotary", "norm", "gelu"):
        e = record.get(comp)
        if e and (e["nodes"] or e.get("decomposed")):
            left = f", {e['decomposed']} left decomposed" if e.get("decomposed") else ""
            print(f"  {comp:<10} {e['lowered_as']} x{e['nodes']}{left}")


def _print_precision(record) -> None:
    """The precision lines of ``zoo build``: what was converted and its measured cost against fp32."""
    if not isinstance(record, dict):
        return
    io = ", ".join(f"{k} {v}" for k, v in record.get("io", {}).items())
    print(f"precision {record['precision']}  (IO: {io})")
    if "kept_fp32" in record:
        print(f"  kept in fp32: {', '.join(record['kept_fp32']['ops'])}")
    for graph, q in (record.get("quantization") or {}).items():
        tables = ", ".join(f"{e['table']} ({'tied, ' if e['tied_projections'] else ''}{e.get('scheme', 'per row')})" for e in q.get("embeddings", []))
        kept = f"; float32: {q['fp32_matmuls']} q/k MatMuls, outlier channels in {q['weights_with_kept_channels']} weights" if "fp32_matmuls" in q else ""
        print(f"  {graph}: {q['matmuls']} MatMuls int8 ({q['weight_type']})" + kept + (f"; embeddings {tables}" if tables else ""))
    a = record["accuracy"]
    print(
        f"  vs fp32 (batch {a['batch']} x {a['seq']}, {a['positions']} positions): max logit error {a['max_abs_logit']:.2e}, "
        f"mean {a['mean_abs_logit']:.2e}, top-1 agreement {a['top1_agreement'] * 100:.1f}%"
    )
    speed = f"forward {record['speed_vs_fp32']:.2f}x"
    if record.get("decode_speed_vs_fp32"):
        speed += f", decode step {record['decode_speed_vs_fp32']:.2f}x"
    print(f"  speed vs fp32: {speed} (x > 1 faster; {record['provider']}); size {record['size_vs_fp32']:.2f}x of fp32")
    if record.get("timing_note"):
        print(f"  note: {record['timing_note']}")


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
    import numpy as np

    from runtime.session import Session

    if args.batch < 1 or args.seq < 1 or args.repeat < 0 or args.top < 1:
        raise InputError("--batch, --seq and --top must be at least 1, --repeat at least 0")
    t0 = time.perf_counter()
    session = Session(args.artifact, device=args.device, threads=args.threads or None, strict=args.strict)
    load_s = time.perf_counter() - t0
    inputs, last_mask, tokenizer = _run_inputs(args, session)
    t0 = time.perf_counter()
    outputs = session.forward(inputs)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):  # the same inputs, checked by the first call: time the forward alone
        t0 = time.perf_counter()
        session.forward(inputs, check=False)
        times.append(time.perf_counter() - t0)
    timing = f"timing    session load {load_s * 1e3:.1f} ms, first run {first_s * 1e3:.2f} ms"
    if times:
        timing += f", median of {len(times)} runs {float(np.median(times)) * 1e3:.2f} ms"
    _print_run(session, inputs, outputs, timing, last_mask, tokenizer, args.top)
    return 0


def _run_inputs(args: argparse.Namespace, session):
    """The feeds of ``zoo run`` (--text, --ids or random ids), the mask whose last real
    position is shown, and the tokenizer (with --text)."""
    import numpy as np

    from zoo.spec.inputs import padded_mask

    vocab, max_len = session.artifact.model["vocab_size"], session.artifact.model["max_seq_len"]
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
    if session.family != "encoder-decoder":
        return {"model": {"input_ids": ids, "attention_mask": mask}}, mask, tokenizer
    dec_rows = _parse_ids(args.decoder_ids, "--decoder-ids") if args.decoder_ids else [[0]] * len(ids)
    if len(dec_rows) != len(ids):
        raise InputError(f"--decoder-ids gives {len(dec_rows)} sequences, --ids gives {len(ids)}")
    dec_ids, dec_mask = _pad(dec_rows)
    _check_ids(dec_ids, vocab, max_len, "--decoder-ids")
    inputs = {
        "encoder": {"input_ids": ids, "attention_mask": mask},
        "decoder": {"decoder_input_ids": dec_ids, "decoder_attention_mask": dec_mask, "encoder_attention_mask": mask},
    }
    return inputs, dec_mask, tokenizer


def _print_run(session, inputs: dict, outputs: dict, timing: str, last_mask, tokenizer, top_n: int) -> None:
    """What ``zoo run`` prints: the artifact, provider, feeds, outputs, timing and the top tokens."""
    import numpy as np

    manifest = session.artifact.manifest
    print(f"artifact  {session.artifact.folder}  ({manifest['name']}, {manifest['family']})")
    print(f"provider  {session.provider}")
    for graph in session.artifact.graphs:
        feed = inputs[graph.name]
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feed.items())
        if graph.name != "encoder" and session.artifact.cache is not None:
            shapes += " (and an empty cache)"
        print(f"inputs    [{graph.name}] {shapes}")
    cached = [k for k in outputs if k.startswith(("present.", "cross."))]
    shown_out = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in outputs.items() if k not in cached)
    print("outputs   " + shown_out + (f", and {len(cached)} cache tensors" if cached else ""))
    print(timing)
    logits = outputs["logits"].astype(np.float64)
    print(f"top {top_n} tokens at the last position of each sequence (probability):")
    for row in range(logits.shape[0]):
        last = int(np.nonzero(last_mask[row])[0][-1])
        z = logits[row, last]
        p = np.exp(z - z.max())
        p /= p.sum()
        top = np.argsort(-p)[:top_n]
        shown = (lambda t: f"{int(t)} {tokenizer.token(int(t))!r}") if tokenizer else (lambda t: str(int(t)))
        print(f"  [{row}] " + "  ".join(f"{shown(t)} ({p[t]:.3g})" for t in top))
