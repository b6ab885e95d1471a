"""Precisions side by side: fp32, fp16 and int8 artifacts of one spec, same weights.

    python benchmarks/precision.py                                   # gpt2-tiny, random init, a quick look (~1 min)
    python benchmarks/precision.py --spec llama-135m --weights trained-like              # the figures of docs/precision.md (~20 min)
    python benchmarks/precision.py --spec llama-135m --weights trained-like --candidates # and the int8 candidates (~25 min more)
    python benchmarks/precision.py --device cuda                     # on a GPU: fp16's own speed

Weights: ``random`` (seeded init) or ``trained-like`` (compiler.trained_like: logit std 7,
massive residual channels, outlier features into the matmuls). Each precision is built
with default options (zoo.app.build.build_artifact, the parity check against torch
at the precision's rule included). Then, in this one process, round-robin over the
precisions so that drift hits all alike:

- size: MB of the ONNX files;
- forward: ms of one uncached pass over a batch of 4 x 32 random tokens (median);
- decode: ms per token of greedy generation, batch 1, a 32-token prompt, the KV cache
  (runtime.generate.Generator, median step);
- against fp32: max and mean |logit error| and top-1 agreement on that random batch,
  and teacher-forced top-1 agreement on natural-looking text (the fp32 model's own
  sampled continuations of 3 random 8-token prompts, 128 tokens each, counted from
  token 8; with trained-like weights also on continuations that never draw the
  massive-activation tokens but the first, as real text has them: a BOS, delimiters);
- how many greedy tokens equal fp32's before the first difference;
- ratios to fp32: speed = fp32 ms / ms (> 1 is faster), size = MB / fp32 MB.

``--candidates`` also measures the int8 methods that were weighed (dynamic
quantization, MatMulNBits block sizes and accuracy levels, with and without the float32
outlier channels, embedding kept float32) on the same texts, each graph made from the
fp32 artifact's and timed against it. fp16 on the CPU provider runs through casts ONNX
Runtime inserts: its CPU speed is not its CUDA speed. Prints tables and writes JSON
(default benchmarks/results/precision.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.app.report import machine_info, markdown_table  # noqa: E402
from zoo.spec.families import family  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8", "int4")
TEXT_PROMPT = 8  # tokens of random prompt before the continuation; agreement counts from here


def model_and_weights(spec, weights: str, generator: dict | None = None):
    """The torch module with ``weights`` ("random" or "trained-like", with the
    compiler.trained_like.TrainedLike fields in ``generator``), and the
    massive-activation token ids (trained-like) or None."""
    from compiler.builder import build

    model = build(spec, seed=0)
    if weights == "random":
        return model, None
    from compiler.trained_like import TrainedLike, zoo_trained_like

    stats = zoo_trained_like(model, spec, config=TrainedLike(**(generator or {})))
    return model, np.array(stats["outlier_token_ids"], dtype=np.int64)


def build(spec, model, precisions, root: Path | None) -> dict[str, Path]:
    from zoo.app.build import BuildOptions, build_artifact
    from zoo.app.progress import step

    from zoo.spec.errors import ParityError

    folders = {}
    for p in precisions:
        out = None if root is None else root / f"{spec.name}-{p}"
        options = BuildOptions(precision=p)
        try:
            folders[p], _, _ = build_artifact(spec, out, weights=model.state_dict(), step=step, options=options)
        except ParityError as e:  # measured all the same: the table's parity column says it failed
            print(f"{p}: {e}", *e.others, sep="\n  ", flush=True)
            folders[p], _, _ = build_artifact(spec, out, weights=model.state_dict(), step=step, options=options, check_parity=False)
    return folders


def texts(session, spec, massive, n: int, length: int) -> dict[str, np.ndarray]:
    """Natural-looking token rows (zoo.app.convert.measure.natural_text), from the fp32 artifact."""
    from zoo.app.convert.measure import natural_text

    def logits(ids):
        return session.forward(family(session).feeds(ids, np.ones_like(ids)), check=False)["logits"]

    out = {"own continuations": natural_text(logits, spec.vocab_size, prompts=n, length=length, prompt_len=TEXT_PROMPT)}
    if massive is not None and len(massive):
        out["without massive tokens"] = natural_text(logits, spec.vocab_size, prompts=n, length=length, prompt_len=TEXT_PROMPT,
                                                     exclude=massive, bos=int(massive[0]))
    return out


def teacher_forced(session, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    feeds = family(session).feeds  # the rows are decoder-only text
    return {k: session.forward(feeds(ids, np.ones_like(ids)), check=False)["logits"] for k, ids in rows.items()}


def _agreement(entry: dict, logits: np.ndarray, ref: np.ndarray, mask, tf: dict, tf_ref: dict) -> None:
    from zoo.app.convert.measure import top1_agreement

    diff = np.abs(logits - ref)[mask]
    entry["max_abs_logit_vs_fp32"] = float(diff.max())
    entry["mean_abs_logit_vs_fp32"] = float(diff.mean())
    entry["top1_agreement_vs_fp32"] = float((logits.argmax(-1) == ref.argmax(-1))[mask].mean())
    entry["text_top1_vs_fp32"] = {k: top1_agreement(tf_ref[k], tf[k], start=TEXT_PROMPT) for k in tf}


def measure(folders: dict[str, Path], rows: dict, *, device: str, threads: int | None, reps: int, warmup: int, new_tokens: int,
            batch: int = 4, seq: int = 32, prompt: int = 32, unverified: tuple = ()) -> dict:
    from runtime.generate import GenerationConfig, Generator
    from runtime.session import Session

    sessions = {p: Session(f, device=device, threads=threads, verify=p not in unverified) for p, f in folders.items()}
    first = next(iter(sessions.values()))
    model, fam = first.artifact.info.model, family(first)
    seq, prompt = min(seq, model.max_seq_len), min(prompt, model.max_seq_len // 2)
    inputs = fam.token_inputs(vocab=model.vocab_size, batch=batch, seq=seq, src_seq=seq, seed=7)
    mask = fam.output_masks(inputs)["logits"].astype(bool)
    gens = {p: Generator(s) for p, s in sessions.items()} if fam.generates else {}
    prompts = np.random.default_rng(0).integers(0, model.vocab_size, size=(1, prompt)).tolist()
    config = GenerationConfig(max_new_tokens=new_tokens, eos=())
    forward_ms, decode_ms, tokens, logits = {p: [] for p in sessions}, {p: [] for p in sessions}, {}, {}
    for i in range(warmup + reps):
        for p, s in sessions.items():
            t0 = time.perf_counter()
            out = s.forward(inputs, check=False)
            dt = (time.perf_counter() - t0) * 1e3
            logits.setdefault(p, out["logits"].astype(np.float64))
            if i >= warmup:
                forward_ms[p].append(dt)
            if gens:
                res = gens[p].generate(prompts, config)
                tokens.setdefault(p, res.tokens[0])
                if i >= warmup:
                    decode_ms[p].append(statistics.median(res.step_seconds) * 1e3)
    tf = {p: teacher_forced(s, rows) for p, s in sessions.items()} if rows else {}
    settings = {"batch": batch, "seq": seq, "prompt": prompt, "new_tokens": new_tokens, "reps": reps, "warmup": warmup, "device": device,
                "threads": threads or int(os.environ.get("ZOO_THREADS", "0") or 0) or os.cpu_count(),
                "texts": {k: list(v.shape) for k, v in rows.items()}, "text_agreement_from": TEXT_PROMPT}
    out = {"settings": settings, "precisions": {}}
    for p, s in sessions.items():
        manifest = s.artifact.info
        entry = {
            "artifact": str(folders[p]), "provider": s.provider,
            "size_mb": manifest.graph_bytes() / 1e6,
            "forward_ms": statistics.median(forward_ms[p]),
            "decode_ms_per_token": statistics.median(decode_ms[p]) if decode_ms[p] else None,
            "parity": {k: manifest.parity.get(k) for k in ("max_abs", "max_rel", "worst", "top1", "tolerance", "passed")} if manifest.parity else None,
            "build_record": manifest.build.precision,
        }
        if "fp32" in logits:
            _agreement(entry, logits[p], logits["fp32"], mask, tf.get(p, {}), tf.get("fp32", {}))
            if "fp32" in tokens and p in tokens:  # once one token differs the prefixes differ: count up to there
                same = np.array(tokens[p]) == np.array(tokens["fp32"])
                entry["greedy_tokens_before_first_difference"] = int(np.argmin(same)) if not same.all() else len(same)
        out["precisions"][p] = entry
    _ratios(out["precisions"])
    return out


def _ratios(entries: dict) -> None:
    base = entries.get("fp32")
    if not base:
        return
    for e in entries.values():
        e["size_vs_fp32"] = e["size_mb"] / base["size_mb"]
        if e.get("forward_ms") and base.get("forward_ms"):
            e["forward_speed_vs_fp32"] = base["forward_ms"] / e["forward_ms"]
        if e.get("decode_ms_per_token") and base.get("decode_ms_per_token"):
            e["decode_speed_vs_fp32"] = base["decode_ms_per_token"] / e["decode_ms_per_token"]


def _f(x, fmt):
    return format(x, fmt) if isinstance(x, (int, float)) else "n/a"


def _pct(x):
    return _f(None if x is None else x * 100, ".1f") + ("%" if x is not None else "")


def table(result: dict, key: str = "precisions") -> str:
    kinds = list(result["settings"]["texts"])
    header = ["", "size MB", "forward ms", "decode ms/token", "size vs fp32", "forward speed vs fp32", "decode speed vs fp32",
              "max / mean logit err", "top-1 vs fp32 (random ids)", *[f"top-1 vs fp32 ({k})" for k in kinds]]
    if key == "precisions":
        header += ["parity worst / top-1", "greedy = fp32 for"]
    rows = []
    for p, e in result[key].items():
        row = [p, _f(e["size_mb"], ".1f"), _f(e.get("forward_ms"), ".1f"), _f(e.get("decode_ms_per_token"), ".1f"),
               _f(e.get("size_vs_fp32"), ".2f") + "x", _f(e.get("forward_speed_vs_fp32"), ".2f") + "x", _f(e.get("decode_speed_vs_fp32"), ".2f") + "x",
               f"{_f(e.get('max_abs_logit_vs_fp32'), '.3g')} / {_f(e.get('mean_abs_logit_vs_fp32'), '.3g')}",
               _pct(e.get("top1_agreement_vs_fp32")), *[_pct(e.get("text_top1_vs_fp32", {}).get(k)) for k in kinds]]
        if key == "precisions":
            par = e.get("parity") or {}
            row += [f"{_f(par.get('worst'), '.3g')} / {_pct(par.get('top1'))}",
                    f"{e['greedy_tokens_before_first_difference']}/{result['settings']['new_tokens']}" if "greedy_tokens_before_first_difference" in e else "n/a"]
        rows.append(row)
    return markdown_table(header, rows)


# --------------------------------------------------------------------------- int8 candidates


def _bf16(proto):
    """Every float32 weight rounded to bfloat16's 8 significant bits (to nearest even):
    the noise of an 8-bit weight format, as a reference row (not a candidate)."""
    from onnx import TensorProto, numpy_helper

    for t in proto.graph.initializer:
        if t.data_type == TensorProto.FLOAT and np.prod(t.dims) >= 1024:  # weights, not mask constants
            a = numpy_helper.to_array(t).astype(np.float32).view(np.uint32)
            r = ((a + 0x7FFF + ((a >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
            t.CopyFrom(numpy_helper.from_array(r, t.name))
    return proto


def candidate_graphs(spec, fp32_graph: Path, scratch: Path) -> dict:
    """Name -> function returning the candidate's graph, made from the fp32 graph."""
    import onnx

    from zoo.app.convert.calibrate import calibrate
    from passes.precision.dynamic import to_int8_dynamic
    from passes.precision.graph import name_nodes
    from passes.precision.int8 import Int8Options, outlier_channels, to_int8
    from passes.precision.matmuls import constant_matmuls

    activations = calibrate(spec, {"model": onnx.load(str(fp32_graph))}, scratch=scratch)["model"]

    def nbits(**kw):
        return lambda p: to_int8(p, vocab_size=spec.vocab_size, activations=activations, options=Int8Options(**kw))[0]

    def dynamic(per_channel: bool, outliers_fp32: bool = False):
        def make(p):
            name_nodes(p)
            exclude = []
            if outliers_fp32:  # every matmul with an outlier input channel (activation or weight row) stays float32
                inits = {t.name: t for t in p.graph.initializer}
                for node, w, transposed in constant_matmuls(p):
                    b = onnx.numpy_helper.to_array(inits[w])
                    if outlier_channels(b if transposed else b.T, activations.get(node.input[0]), Int8Options().outlier_ratio):
                        exclude.append(node.name)
            return to_int8_dynamic(p, scratch / "dyn.onnx", vocab_size=spec.vocab_size, per_channel=per_channel,
                                   embeddings=not outliers_fp32, exclude=exclude)[0]
        return make

    return {
        "fp32 weights rounded to bf16 (reference)": _bf16,
        "dynamic, per-tensor weights": dynamic(False),
        "dynamic, per-channel weights (VERSION 1)": dynamic(True),
        "dynamic, outlier-input matmuls fp32": dynamic(True, True),
        "MatMulNBits b16 int8 compute, no fp32 channels": nbits(outlier_ratio=None),
        "MatMulNBits b16 int8 compute + fp32 outlier channels (chosen)": nbits(),
        "MatMulNBits b32 int8 compute + fp32 outlier channels": nbits(block_size=32),
        "MatMulNBits b64 int8 compute + fp32 outlier channels": nbits(block_size=64),
        "MatMulNBits b128 int8 compute + fp32 outlier channels": nbits(block_size=128),
        "MatMulNBits b16 fp32 compute + fp32 outlier channels": nbits(accuracy_level=0),
        "MatMulNBits b16 int8 compute + fp32 outlier channels, embedding fp32": nbits(embedding="fp32"),
    }


def candidates(spec, fp32: Path, rows: dict, *, reps: int, warmup: int, new_tokens: int, threads,
               makers=candidate_graphs, beside: dict | None = None) -> dict:
    """Each candidate of ``makers`` as an artifact folder (the fp32 one with its graph
    replaced), measured against the fp32 artifact like the precisions are, one at a
    time, with the artifacts of ``beside`` (name -> folder, e.g. the int8 build) in the
    same round-robin (their ratios are in ``vs_<name>``)."""
    import onnx

    out = {}
    beside = beside or {}
    with tempfile.TemporaryDirectory(dir=fp32.parent) as tmp:
        for name, make in makers(spec, fp32 / "model.onnx", Path(tmp)).items():
            folder = Path(tmp) / "candidate"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for f in ("manifest.json", "spec.yaml"):
                shutil.copyfile(fp32 / f, folder / f)
            proto = make(onnx.load(str(fp32 / "model.onnx")))
            onnx.save_model(proto, folder / "model.onnx")
            size = (folder / "model.onnx").stat().st_size / 1e6
            del proto
            timed = "reference" not in name
            r = measure({"fp32": fp32, **beside, name: folder}, rows, device="cpu", threads=threads, unverified=(name,),  # the fp32 manifest
                        reps=reps if timed else 1, warmup=warmup if timed else 0, new_tokens=new_tokens if timed else 2)
            entry = r["precisions"][name]
            entry["size_mb"] = size
            if not timed:
                entry["forward_ms"] = entry["decode_ms_per_token"] = None
            _ratios({"fp32": r["precisions"]["fp32"], name: entry})
            for b in beside:
                base = r["precisions"][b]
                if timed and base.get("decode_ms_per_token") and entry.get("decode_ms_per_token"):
                    entry[f"decode_speed_vs_{b}"] = base["decode_ms_per_token"] / entry["decode_ms_per_token"]
                    entry[f"{b}_in_this_run"] = {k: base.get(k) for k in ("decode_ms_per_token", "forward_ms", "text_top1_vs_fp32")}
            out[name] = entry
            print(f"  {name}: text top-1 {entry.get('text_top1_vs_fp32')}, decode {_f(entry.get('decode_speed_vs_fp32'), '.2f')}x", flush=True)
    return out


def main(argv=None) -> int:
    import zoo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="gpt2-tiny", help="catalog name or spec file (default gpt2-tiny)")
    ap.add_argument("--weights", default="random", choices=("random", "trained-like"))
    ap.add_argument("--generator", default="{}", help='trained-like generator settings, JSON (e.g. \'{"score_gain": 1.0}\')')
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated (default fp32,fp16,int8,int4)")
    ap.add_argument("--candidates", action="store_true", help="also measure the int8 candidates (decoder-only specs)")
    ap.add_argument("--int4-candidates", action="store_true",
                    help="also measure the int4 candidates (block size, symmetry, accuracy level, embedding, head, q/k, outliers), int8 in the same runs")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--texts", type=int, default=3, help="natural-looking rows to teacher-force (0: none)")
    ap.add_argument("--text-length", type=int, default=128)
    ap.add_argument("--artifacts", type=Path, default=None, help="folder for the artifacts (default: artifacts/NAME-ID, reused when up to date)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "precision.json")
    args = ap.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")  # the reference of every ratio
    spec = zoo.load(args.spec)
    t0 = time.perf_counter()
    model, massive = model_and_weights(spec, args.weights, json.loads(args.generator))
    folders = build(spec, model, precisions, args.artifacts)
    build_s = time.perf_counter() - t0
    from runtime.session import Session

    decoder = spec.is_causal_lm
    length = min(args.text_length, spec.max_seq_len)
    rows = texts(Session(folders["fp32"], device=args.device), spec, massive, args.texts, length) if decoder and args.texts else {}
    result = measure(folders, rows, device=args.device, threads=args.threads or None, reps=args.reps, warmup=args.warmup, new_tokens=args.new_tokens)
    result = {"spec": args.spec, "weights": args.weights, "generator": json.loads(args.generator), "machine": machine_info(), "build_seconds": build_s, **result}
    print(f"{args.spec} ({args.weights} weights): precisions against fp32 ({result['settings']['reps']} reps, medians; speed > 1x is faster)")
    print(table(result))
    if args.candidates and decoder:
        result["int8_candidates"] = candidates(spec, folders["fp32"], rows, reps=args.reps, warmup=args.warmup,
                                               new_tokens=args.new_tokens, threads=args.threads or None)
        print("\nint8 candidates, each against fp32 in its own round-robin")
        print(table(result, "int8_candidates"))
    if args.int4_candidates and decoder:
        from benchmarks.int4_candidates import int4_candidate_graphs, int4_table

        beside = {"int8": folders["int8"]} if "int8" in folders else {}
        result["int4_candidates"] = candidates(spec, folders["fp32"], rows, reps=args.reps, warmup=args.warmup, new_tokens=args.new_tokens,
                                               threads=args.threads or None, makers=int4_candidate_graphs, beside=beside)
        print("\nint4 candidates, each against fp32 (and int8) in its own round-robin")
        print(int4_table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
