"""Mixture-of-experts formulations in ONNX Runtime CPU: which graph the exporter should get.

One MoE feed-forward (compiler.ffn.MixtureOfExperts: SwiGLU experts, top-k of a softmax
router, renormalised), exported alone with torch.onnx (dynamo, opset 23, dynamic token
axis) once per formulation of compiler.ffn.FORMULATIONS:

* ``dense``: every expert on every token, times the routing weights scattered to (N, E);
* ``gather``: each token's k experts' matrices gathered by id (N, k, h, d), batched matmuls;
* ``per-expert``: each expert on the tokens routed to it (NonZero, Gather, index_add),
  as transformers' eager loop does;

and, for reference, ONNX Runtime's own ``com.microsoft:MoE`` contrib op (interleaved SwiGLU,
the CPU kernel's only gated layout), built by hand from the same weights.

Cases: prefill 128 tokens and one-token decode, batch 1 and 8 (N = 128, 1024, 1, 8 tokens).
Each case times every variant round-robin (same inputs; medians of ``--reps``), checks
each against the dense graph (max abs diff), and prints time and ratio to dense side by side.

    python benchmarks/moe.py                      # d 512, 8 experts, hidden 1024, top-2
    python benchmarks/moe.py --threads 2 --reps 30 --out /tmp/moe.json

Writes JSON to benchmarks/results/moe.json unless ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from compiler.ffn import FORMULATIONS, FeedForward, MixtureOfExperts  # noqa: E402

CASES = {"prefill 1x128": 128, "prefill 8x128": 1024, "decode 1x1": 1, "decode 8x1": 8}


def moe_layer(d: int, hidden: int, experts: int, top_k: int) -> MixtureOfExperts:
    torch.manual_seed(0)
    layer = MixtureOfExperts(
        router=torch.nn.Linear(d, experts, bias=False),
        experts=[FeedForward(d, hidden, activation="silu", gated=True, bias=False, dropout=0.0) for _ in range(experts)],
        top_k=top_k,
        normalize=True,
    )
    for p in layer.parameters():  # unit gain: routing spread over the experts
        torch.nn.init.normal_(p, std=p.shape[-1] ** -0.5)
    return layer.eval()


class _Formulation(torch.nn.Module):
    def __init__(self, layer: MixtureOfExperts, name: str):
        super().__init__()
        self.layer, self.name = layer, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N, d)
        weights, ids = self.layer.routing(x)
        return FORMULATIONS[self.name](self.layer, x, weights, ids)


def export(layer: MixtureOfExperts, name: str, path: Path) -> Path:
    example = torch.randn(5, layer.router.in_features)
    n = torch.export.Dim("n", min=1, max=1 << 16)
    onnx_program = torch.onnx.export(_Formulation(layer, name), (example,), dynamo=True, opset_version=23,
                                     dynamic_shapes=({0: n},), input_names=["x"], output_names=["y"], verbose=False)
    onnx_program.save(str(path))
    return path


def contrib_moe(layer: MixtureOfExperts, path: Path) -> Path:
    """com.microsoft:MoE with fc1 = gate and up interleaved row by row (swiglu_fusion=1)."""
    gate = torch.stack([e.gate.weight for e in layer.experts]).detach().numpy()  # (E, h, d)
    up = torch.stack([e.up.weight for e in layer.experts]).detach().numpy()
    down = torch.stack([e.down.weight for e in layer.experts]).detach().numpy()  # (E, d, h)
    E, h, d = gate.shape
    fc1 = np.stack([gate, up], axis=2).reshape(E, 2 * h, d)  # rows g0 u0 g1 u1 ...
    router = layer.router.weight.detach().numpy().T.copy()  # (d, E)
    nodes = [
        helper.make_node("MatMul", ["x", "router"], ["logits"]),
        helper.make_node("MoE", ["x", "logits", "fc1", "", "fc2"], ["y"], domain="com.microsoft", k=layer.top_k,
                         activation_type="swiglu", swiglu_fusion=1, normalize_routing_weights=int(layer.normalize)),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((router, "router"), (fc1.astype(np.float32), "fc1"), (down, "fc2"))]
    graph = helper.make_graph(nodes, "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(path))
    return path


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(sessions: dict, tokens: int, d: int, reps: int) -> dict:
    x = np.random.default_rng(tokens).standard_normal((tokens, d)).astype(np.float32)
    ref = sessions["dense"].run(None, {"x": x})[0]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    names = list(sessions)
    for name in names:  # warm-up
        sessions[name].run(None, {"x": x})
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:  # the order rotates
            t0 = time.perf_counter()
            sessions[name].run(None, {"x": x})
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in names:
        diff = float(np.abs(sessions[name].run(None, {"x": x})[0] - ref).max())
        out[name] = {"ms": 1e3 * statistics.median(times[name]), "best_ms": 1e3 * min(times[name]), "max_abs_vs_dense": diff}
    for name in names:
        out[name]["ratio"] = out[name]["ms"] / out["dense"]["ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "moe.json")
    args = ap.parse_args()
    layer = moe_layer(args.d, args.hidden, args.experts, args.top_k)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: export(layer, name, Path(tmp) / f"{name}.onnx") for name in FORMULATIONS}
        paths["contrib MoE"] = contrib_moe(layer, Path(tmp) / "contrib.onnx")
        sessions = {name: session(p, args.threads) for name, p in paths.items()}
        results = {case: measure(sessions, n, args.d, args.reps) for case, n in CASES.items()}
    names = list(sessions)
    print(f"MoE d {args.d}, {args.experts} experts, hidden {args.hidden}, top-{args.top_k}, SwiGLU; ORT {ort.__version__} CPU, "
          f"{args.threads} thread(s), median of {args.reps}; ms (ratio to dense)")
    print(f"{'case':<15}" + "".join(f"{n:>22}" for n in names))
    for case, row in results.items():
        print(f"{case:<15}" + "".join(f"{row[n]['ms']:>12.3f} ({row[n]['ratio']:>5.2f}x)" for n in names))
    worst = max(r[n]["max_abs_vs_dense"] for r in results.values() for n in names)
    print(f"largest difference from the dense graph's output: {worst:.2e}")
    record = {"sizes": vars(args) | {"out": str(args.out)}, "cases": CASES, "results": results,
              "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__, "python": platform.python_version()},
              "machine": platform.processor() or platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
