"""The memory-bandwidth bound of a decode step, measured with ONNX Runtime itself.

    python benchmarks/bandwidth.py --mb 512 --threads 2     # GB/s of an fp32 GEMV over a 512 MB weight

benchmarks/generate.py runs it as one more method in its round-robin (the ``gemv-bound``
worker), so the bound is measured under the same machine load as the methods it bounds.

At batch 1 a decode step multiplies one activation row by every weight matrix: each
weight byte is read once and used for one multiply-add, so the step is bound by how
fast the weights stream from memory, not by arithmetic. This times the simplest such
step ONNX Runtime can run, one MatMul (1 x K) @ (K x N) whose weight has the model's
size, at the same thread count and provider as the methods it bounds; the weight's
bytes over the median time is the GEMV bandwidth, and a model whose step reads B
bytes of weights cannot decode faster than bandwidth / B tokens per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

K = 4096  # the weight's rows: wide enough that the kernel streams, as a model's matmuls do


def gemv_session(weight_bytes: int, *, threads: int, device: str = "cpu"):
    """An ONNX Runtime session of one fp32 (1 x K) @ (K x N) MatMul whose weight is
    ``weight_bytes`` (rounded down to whole columns) -> (run: a callable doing one GEMV,
    the weight's bytes)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n = max(1, int(weight_bytes) // (4 * K))
    w = np.random.default_rng(0).standard_normal((K, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
    x = np.ones((1, K), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    return (lambda: sess.run(None, {"x": x})), K * n * 4


def gemv_bandwidth(weight_bytes: int, *, threads: int, device: str = "cpu", reps: int = 30) -> dict:
    """Time ``gemv_session``'s GEMV ``reps`` times -> {"gb_per_s", "weight_bytes",
    "median_ms", "spread"} (spread: half the interquartile range over the median)."""
    run, nbytes = gemv_session(weight_bytes, threads=threads, device=device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    q1, _, q3 = statistics.quantiles(times, n=4)
    return {"gb_per_s": nbytes / med / 1e9, "weight_bytes": nbytes, "median_ms": med * 1e3, "spread": (q3 - q1) / 2 / med}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=512.0, help="weight size in MB (default 512)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args(argv)
    r = gemv_bandwidth(int(args.mb * 1e6), threads=args.threads, device=args.device)
    print(f"fp32 GEMV over {r['weight_bytes'] / 1e6:.0f} MB: {r['median_ms']:.2f} ms, {r['gb_per_s']:.1f} GB/s (± {r['spread'] * 100:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
