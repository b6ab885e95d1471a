"""Does a decode step's cost grow with the context? Concat cache vs a shared buffer.

Prototype graphs (``onnx.helper``, random weights) with the shapes of a catalog
decoder: per layer the q/k/v and output projections, the attention over the cache,
the FFN matmuls, then the output projection over the vocabulary (norms, biases and
positions left out: they cost the same at every context). Three cache layouts:

* ``concat``: standard ``Attention`` (opset 23) with ``past_key``/``past_value``
  (batch, kv_heads, past, head_dim) returning ``present_*`` of length past + 1: what
  ``--optimize`` emits today. Every step copies the whole cache into a new present.
* ``gqa-share``: ``com.microsoft.GroupQueryAttention`` with one preallocated
  (batch, kv_heads, max_len, head_dim) buffer per K/V, ``seqlens_k`` = context - 1 and
  ``total_sequence_length`` = context; with IO binding each present is bound to the
  same OrtValue as its past, so the kernel writes the new row in place and attends
  over the first ``context`` rows only (onnxruntime-genai's past_present_share_buffer).
* ``scatter-mask``: ``TensorScatter`` (opset 24) writes the new row into the same kind
  of buffer (in place when bound to the past), then ``Attention`` over the whole
  buffer with a boolean mask: no copy, but the attention reads max_len rows.
* ``scatter-bucket``: the same graph over a buffer of ``bucket(context)`` rows (next
  power of two, >= 64): the runtime would copy into a twice-longer buffer when one
  fills (amortised, not timed here); the attention reads at most 2x the context.

The step at each context runs round-robin over layouts and contexts (1 thread,
medians of ``--reps``), and each time is divided by the same layout's step at the
first context. Target (issue 17): ratio at the last context <= 1.15.

    python benchmarks/cache_scaling.py                           # gpt2-small, llama-small
    python benchmarks/cache_scaling.py --reps 30 --contexts 64,256,1024,2048

Writes JSON to ``benchmarks/results/cache_scaling.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cache_scaling.json"
# name: (layers, d_model, heads, kv_heads, ffn hidden, gated, vocab, max_seq_len)
SHAPES = {
    "gpt2-small": (12, 768, 12, 12, 3072, False, 50257, 1024),
    "llama-small": (12, 768, 12, 4, 2048, True, 32000, 2048),
}
LAYOUTS = ("concat", "gqa-share", "scatter-mask", "scatter-bucket")


def bucket(ctx: int) -> int:
    """Buffer length of ``scatter-bucket`` at a context: the next power of two >= ctx, >= 64."""
    return max(64, 1 << (ctx - 1).bit_length())
F32 = TensorProto.FLOAT


def _weights(shape: tuple, rng) -> list:
    """Random initializers for one model: (d, out) matrices, scaled to keep values O(1)."""
    layers, d, heads, kvh, hidden, gated, vocab, _ = shape
    hd = d // heads
    out = []
    for i in range(layers):
        dims = {"q": (d, heads * hd), "k": (d, kvh * hd), "v": (d, kvh * hd), "o": (d, d),
                "up": (d, hidden), "down": (hidden, d)}
        if gated:
            dims["gate"] = (d, hidden)
        for n, s in dims.items():
            w = (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)
            out.append(numpy_helper.from_array(w, f"w{i}.{n}"))
    head = (rng.standard_normal((d, vocab)) / np.sqrt(d)).astype(np.float32)
    out.append(numpy_helper.from_array(head, "w.head"))
    return out


def _attention(layout: str, i: int, heads: int, kvh: int, hd: int) -> tuple[list, list, list]:
    """Nodes of layer i's attention from q/k/v (B, 1, *) to y{i} (B, 1, heads*hd)."""
    q, k, v, pk, pv = f"q{i}", f"k{i}", f"v{i}", f"past.{i}.key", f"past.{i}.value"
    outs = [f"y{i}", f"present.{i}.key", f"present.{i}.value"]
    if layout == "concat":
        return [helper.make_node("Attention", [q, k, v, "", pk, pv], outs,
                                 q_num_heads=heads, kv_num_heads=kvh)], [], []
    if layout == "gqa-share":
        return [helper.make_node("GroupQueryAttention", [q, k, v, pk, pv, "seqlens_k",
                                 "total_sequence_length"], outs, domain="com.microsoft",
                                 num_heads=heads, kv_num_heads=kvh)], [], []
    shape4 = f"shape4.{i}"
    nodes = [helper.make_node("Constant", [], [shape4], value=numpy_helper.from_array(
        np.array([0, 1, kvh, hd], np.int64)))]
    for n, p, o in ((k, pk, outs[1]), (v, pv, outs[2])):
        nodes += [helper.make_node("Reshape", [n, shape4], [n + ".4"]),
                  helper.make_node("Transpose", [n + ".4"], [n + ".t"], perm=[0, 2, 1, 3]),
                  helper.make_node("TensorScatter", [p, n + ".t", "write_indices"], [o],
                                   axis=-2)]
    q4, y4, d3 = f"qshape.{i}", f"y4.{i}", f"yshape.{i}"
    nodes += [helper.make_node("Constant", [], [q4], value=numpy_helper.from_array(
                  np.array([0, 1, heads, hd], np.int64))),
              helper.make_node("Constant", [], [d3], value=numpy_helper.from_array(
                  np.array([0, 1, heads * hd], np.int64))),
              helper.make_node("Reshape", [q, q4], [q + ".4"]),
              helper.make_node("Transpose", [q + ".4"], [q + ".t"], perm=[0, 2, 1, 3]),
              helper.make_node("Attention", [q + ".t", outs[1], outs[2], "mask"], [y4]),
              helper.make_node("Transpose", [y4], [y4 + ".t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", [y4 + ".t", d3], [outs[0]])]
    return nodes, [], []


def make_graph(shape: tuple, layout: str, rng) -> bytes:
    """One decode step (input x (B, 1, d) -> logits (B, 1, vocab), presents) as bytes."""
    layers, d, heads, kvh, hidden, gated, vocab, max_len = shape
    hd = d // heads
    nodes, inputs, outputs = [], [helper.make_tensor_value_info("x", F32, ["B", 1, d])], []
    layout_graph = "scatter-mask" if layout == "scatter-bucket" else layout
    past_len = {"concat": "P", "scatter-bucket": "M"}.get(layout, max_len)
    h = "x"
    for i in range(layers):
        for n in "qkv":
            nodes.append(helper.make_node("MatMul", [h, f"w{i}.{n}"], [f"{n}{i}"]))
        att, _, _ = _attention(layout_graph, i, heads, kvh, hd)
        nodes += att
        nodes += [helper.make_node("MatMul", [f"y{i}", f"w{i}.o"], [f"a{i}"]),
                  helper.make_node("Add", [h, f"a{i}"], [f"h{i}"]),
                  helper.make_node("MatMul", [f"h{i}", f"w{i}.up"], [f"u{i}"])]
        act = f"u{i}"
        if gated:
            nodes += [helper.make_node("MatMul", [f"h{i}", f"w{i}.gate"], [f"g{i}"]),
                      helper.make_node("Sigmoid", [f"g{i}"], [f"gs{i}"]),
                      helper.make_node("Mul", [f"u{i}", f"gs{i}"], [f"act{i}"])]
            act = f"act{i}"
        nodes += [helper.make_node("MatMul", [act, f"w{i}.down"], [f"f{i}"]),
                  helper.make_node("Add", [f"h{i}", f"f{i}"], [f"r{i}"])]
        h = f"r{i}"
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past.{i}.{kind}", F32,
                                                        ["B", kvh, past_len, hd]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", F32, None))
    nodes.append(helper.make_node("MatMul", [h, "w.head"], ["logits"]))
    outputs.insert(0, helper.make_tensor_value_info("logits", F32, None))
    opset = 23
    if layout == "gqa-share":
        inputs += [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["B"]),
                   helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
    if layout.startswith("scatter"):
        opset = 24
        inputs += [helper.make_tensor_value_info("write_indices", TensorProto.INT64, ["B"]),
                   helper.make_tensor_value_info("mask", TensorProto.BOOL, ["B", 1, 1, past_len])]
    graph = helper.make_graph(nodes, layout, inputs, outputs, initializer=_weights(shape, rng))
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=imports, ir_version=10).SerializeToString()


class Stepper:
    """One session and the cache state of one layout at one context: ``step()`` times a run."""

    def __init__(self, sess: ort.InferenceSession, shape: tuple, layout: str, ctx: int, rng):
        layers, d, heads, kvh, _, _, _, max_len = shape
        hd = d // heads
        self.sess, self.binding = sess, sess.io_binding()
        length = {"concat": ctx - 1, "scatter-bucket": bucket(ctx)}.get(layout, max_len)
        x = rng.standard_normal((1, 1, d)).astype(np.float32)
        self.binding.bind_cpu_input("x", x)
        self.keep = [x]
        for i in range(layers):
            for kind in ("key", "value"):
                buf = np.zeros((1, kvh, length, hd), np.float32)
                buf[:, :, :ctx - 1] = rng.standard_normal((1, kvh, ctx - 1, hd))
                val = ort.OrtValue.ortvalue_from_numpy(buf)
                self.keep.append(val)
                self.binding.bind_ortvalue_input(f"past.{i}.{kind}", val)
                if layout == "concat":
                    self.binding.bind_output(f"present.{i}.{kind}", "cpu")
                else:  # the shared buffer: present is the past's OrtValue
                    self.binding.bind_ortvalue_output(f"present.{i}.{kind}", val)
        extra = {}
        if layout == "gqa-share":
            extra = {"seqlens_k": np.array([ctx - 1], np.int32),
                     "total_sequence_length": np.array(ctx, np.int32)}
        if layout.startswith("scatter"):
            mask = np.zeros((1, 1, 1, length), bool)
            mask[..., :ctx] = True
            extra = {"write_indices": np.array([ctx - 1], np.int64), "mask": mask}
        for n, a in extra.items():
            self.keep.append(a)
            self.binding.bind_cpu_input(n, a)
        self.binding.bind_output("logits", "cpu")

    def step(self) -> float:
        """Seconds one decode step takes (the new row is written at the same place each time)."""
        t = time.perf_counter()
        self.sess.run_with_iobinding(self.binding)
        return time.perf_counter() - t


TINY = (2, 32, 4, 2, 64, True, 50, 16)  # the agreement check's shape (GQA: 4 heads, 2 KV heads)


def decode(shape: tuple, layout: str, xs: np.ndarray, shift: int = 0) -> np.ndarray:
    """Logits (steps, B, 1, vocab) of a layout decoding inputs xs (steps, B, 1, d) from empty.

    ``shift`` plants a bug in the shared layouts: from the second step the new row is
    written (and counted) ``shift`` places off.
    """
    layers, d, heads, kvh, _, _, _, max_len = shape
    sess = ort.InferenceSession(make_graph(shape, layout, np.random.default_rng(0)),
                                providers=["CPUExecutionProvider"])
    b, hd, out = xs.shape[1], d // heads, []
    names = [f"past.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    length = 0 if layout == "concat" else max_len
    cache = {n: ort.OrtValue.ortvalue_from_numpy(np.zeros((b, kvh, length, hd), np.float32))
             for n in names}
    for t, x in enumerate(xs):
        pos = t + shift if t else t
        feeds = {"x": x}
        if layout == "gqa-share":
            feeds.update(seqlens_k=np.full(b, pos, np.int32),
                         total_sequence_length=np.array(t + 1, np.int32))
        if layout == "scatter-mask":
            mask = np.zeros((b, 1, 1, max_len), bool)
            mask[..., :t + 1] = True
            feeds.update(write_indices=np.full(b, pos, np.int64), mask=mask)
        binding = sess.io_binding()
        binding.bind_output("logits", "cpu")  # first: get_outputs() follows the binding order
        for n, a in feeds.items():
            binding.bind_cpu_input(n, a)
        for n, v in cache.items():
            binding.bind_ortvalue_input(n, v)
            if layout == "concat":
                binding.bind_output(n.replace("past", "present"), "cpu")
            else:
                binding.bind_ortvalue_output(n.replace("past", "present"), v)
        sess.run_with_iobinding(binding)
        values = binding.get_outputs()
        out.append(values[0].numpy())
        if layout == "concat":
            cache = dict(zip(names, values[1:]))
    return np.stack(out)


def agreement(shift: int = 0, steps: int = 6) -> dict:
    """Max |logits - concat's logits| per shared layout on TINY, batch 2, ``steps`` steps."""
    xs = np.random.default_rng(1).standard_normal((steps, 2, 1, TINY[1])).astype(np.float32)
    ref = decode(TINY, "concat", xs)
    return {lay: float(np.abs(decode(TINY, lay, xs, shift) - ref).max()) for lay in LAYOUTS[1:3]}


def _one_attention(shared: bool) -> ort.InferenceSession:
    """A single attention node (4 heads, 2 KV heads, head_dim 8): concat or GQA shared buffer."""
    names = ["q", "k", "v", "mask", "pk", "pv"]
    if shared:
        names = ["q", "k", "v", "pk", "pv", "sl", "tl", "", "", "", "mask"]
        node = helper.make_node("GroupQueryAttention", names, ["y", "ok", "ov"],
                                domain="com.microsoft", num_heads=4, kv_num_heads=2)
    else:
        node = helper.make_node("Attention", names, ["y", "ok", "ov"], q_num_heads=4, kv_num_heads=2)
    types = {"sl": TensorProto.INT32, "tl": TensorProto.INT32}
    inputs = [helper.make_tensor_value_info(n, types.get(n, F32), [] if n == "tl" else None)
              for n in names if n]
    graph = helper.make_graph([node], "one", inputs,
                              [helper.make_tensor_value_info(n, F32, None) for n in ("y", "ok", "ov")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23),
                              helper.make_opsetid("com.microsoft", 1)], ir_version=10)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def left_padded_agreement(past: int = 5, pad: int = 2, max_len: int = 16) -> float:
    """Max |y| difference, GQA in place vs concat, batch 2 with row 1 left-padded by ``pad``.

    The padding is an additive bias (B, 1, 1, past + 1) over the buffer's first rows
    (GQA's attention_bias input), as runtime/generate.py's left-padded prompts need.
    """
    r = np.random.default_rng(0)
    q = r.standard_normal((2, 1, 32)).astype(np.float32)
    k, v = (r.standard_normal((2, 1, 16)).astype(np.float32) for _ in range(2))
    pk, pv = (r.standard_normal((2, 2, past, 8)).astype(np.float32) for _ in range(2))
    mask = np.zeros((2, 1, 1, past + 1), np.float32)
    mask[1, ..., :pad] = -1e30
    ref = _one_attention(False).run(None, dict(q=q, k=k, v=v, mask=mask, pk=pk, pv=pv))[0]
    sess = _one_attention(True)
    binding, bufs = sess.io_binding(), {}
    binding.bind_output("y", "cpu")  # first: get_outputs() follows the binding order
    for n, p in (("pk", pk), ("pv", pv)):
        buf = np.zeros((2, 2, max_len, 8), np.float32)
        buf[:, :, :past] = p
        bufs[n] = ort.OrtValue.ortvalue_from_numpy(buf)
        binding.bind_ortvalue_input(n, bufs[n])
        binding.bind_ortvalue_output("o" + n[1], bufs[n])
    for n, a in dict(q=q, k=k, v=v, mask=mask, sl=np.full(2, past, np.int32),
                     tl=np.array(past + 1, np.int32)).items():
        binding.bind_cpu_input(n, a)
    sess.run_with_iobinding(binding)
    return float(np.abs(binding.get_outputs()[0].numpy() - ref).max())


def measure(name: str, contexts: list[int], reps: int, threads: int) -> dict:
    """Median step ms per layout x context (round-robin) and ratios to the first context."""
    shape = SHAPES[name]
    contexts = [c for c in contexts if c <= shape[-1]]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    rng = np.random.default_rng(0)
    steppers = {}
    for layout in LAYOUTS:
        sess = ort.InferenceSession(make_graph(shape, layout, np.random.default_rng(0)), opts,
                                    providers=["CPUExecutionProvider"])
        for c in contexts:
            steppers[layout, c] = Stepper(sess, shape, layout, c, rng)
    times = {k: [] for k in steppers}
    for r in range(reps + 2):
        order = list(steppers) if r % 2 == 0 else list(steppers)[::-1]
        for k in order:
            dt = steppers[k].step()
            if r >= 2:  # two warm-up rounds
                times[k].append(dt)
    table, ref = {}, statistics.median(times["concat", contexts[0]])
    for layout in LAYOUTS:
        base = statistics.median(times[layout, contexts[0]])
        table[layout] = {str(c): {"ms": round(1e3 * statistics.median(times[layout, c]), 3),
                                  "ratio": round(statistics.median(times[layout, c]) / base, 3),
                                  "ratio_to_concat_first": round(
                                      statistics.median(times[layout, c]) / ref, 3)}
                         for c in contexts}
    layers, d, heads, kvh = shape[:4]
    cache_mb = {str(c): round(2 * layers * kvh * c * (d // heads) * 4 / 1e6, 1) for c in contexts}
    return {"cache_mb_fp32": cache_mb, "shape": dict(zip(("layers", "d_model", "heads", "kv_heads", "ffn_hidden", "gated",
                               "vocab", "max_seq_len"), shape)), "layouts": table}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=list(SHAPES), help=f"of {sorted(SHAPES)}")
    ap.add_argument("--contexts", default="64,256,1024,2048")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="only check that the shared layouts give concat's logits (tiny shape)")
    ap.add_argument("--plant-shift", type=int, default=0, help="with --check: plant an off-by-n write")
    a = ap.parse_args(argv)
    if a.check:
        diffs = agreement(a.plant_shift)
        diffs["gqa-share-left-padded"] = left_padded_agreement()
        print(json.dumps(diffs))
        return 0 if max(diffs.values()) <= 1e-5 else 1
    contexts = [int(c) for c in a.contexts.split(",")]
    unknown = sorted(set(a.specs) - set(SHAPES))
    if unknown:
        ap.error(f"specs {unknown} not among {sorted(SHAPES)}")
    result = {"machine": platform.processor() or platform.machine(), "threads": a.threads,
              "reps": a.reps, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
              "specs": {}}
    for name in a.specs:
        result["specs"][name] = r = measure(name, contexts, a.reps, a.threads)
        print(f"{name}: step ms (ratio to the layout's context {contexts[0]} step; to concat's)")
        for layout, row in r["layouts"].items():
            cells = "  ".join(f"{c}: {v['ms']:6.2f} ({v['ratio']:.2f}x; {v['ratio_to_concat_first']:.2f}x)"
                              for c, v in row.items())
            print(f"  {layout:13s} {cells}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
