"""Where a decode step's time goes, by op type: ONNX Runtime's profiler on one decoder
step (batch 1, one new token after a past of ``--past``) of each model.onnx given, to
compare the zoo's int4 graph with onnxruntime-genai's int4 graph of the same checkpoint
(benchmarks/results/precision_int4.json, "decode_step_profile"). The profiler adds a
fixed cost per kernel, so small ops look dearer than they are: compare counts and shares.

    python benchmarks/int4_step_profile.py zoo-int4=ART/model.onnx genai-int4=GENAI/model.onnx --threads 2
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def _head_dim(session: ort.InferenceSession, path: str, dim) -> int:
    """A cache's last axis: fixed in the zoo's graphs, named in genai's (its genai_config.json says)."""
    if isinstance(dim, int):
        return dim
    with open(os.path.join(os.path.dirname(path), "genai_config.json")) as fh:
        return json.load(fh)["model"]["decoder"]["head_size"]


def feeds(session: ort.InferenceSession, path: str, past: int) -> dict:
    """A one-token step after ``past`` cached positions (random cache values), for the
    zoo's inputs (input_ids, attention_mask, past.*) and genai's (also position_ids)."""
    rng = np.random.default_rng(0)
    out = {}
    for i in session.get_inputs():
        if i.name == "input_ids":
            out[i.name] = np.array([[5]], np.int64)
        elif "mask" in i.name:
            out[i.name] = np.ones((1, past + 1), np.int64)
        elif "position" in i.name:
            out[i.name] = np.array([[past]], np.int64)
        elif "past" in i.name:
            out[i.name] = rng.normal(size=(1, i.shape[1], past, _head_dim(session, path, i.shape[3]))).astype(np.float32)
        else:
            raise SystemExit(f"an input this script does not know: {i.name}")
    return out


def profile(path: str, *, threads: int, past: int, runs: int, warmup: int = 5) -> dict:
    """Kernel microseconds per step by op type, and kernels per step."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "int4_step_profile")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    f = feeds(session, path, past)
    for _ in range(warmup + runs):
        session.run(None, f)
    trace = session.end_profiling()
    with open(trace) as fh:
        events = json.load(fh)
    os.remove(trace)
    us, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            us[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    n = warmup + runs
    return {"kernels_per_step": sum(count.values()) // n, "kernel_us": round(sum(us.values()) / n),
            **{op: [count[op] // n, round(d / n)] for op, d in us.most_common(10)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="LABEL=PATH", help="model.onnx files to profile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--past", type=int, default=64)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args(argv)
    for item in args.models:
        label, _, path = item.partition("=")
        r = profile(path, threads=args.threads, past=args.past, runs=args.runs)
        print(f"{label}: {r.pop('kernels_per_step')} kernels a step, {r.pop('kernel_us')} us of kernels")
        for op, (n, us) in r.items():
            print(f"  {op:34s} x{n:<5d} {us:8d} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
