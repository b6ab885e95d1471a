"""Reduced-precision graphs (issue 8): fp16 for CUDA, int8 dynamic quantization for CPU.

``convert_graphs`` runs after the fp32 export (and the optimizer, when asked): it
rewrites each graph file of the build folder in place, measures the converted graphs
against the fp32 ones in ONNX Runtime on a fixed batch (accuracy, time, size), and
returns that record for ``manifest["build"]["precision"]``. The fp32 files live in a
temporary sub-folder during the measurement and are deleted after: the artifact
holds only the converted graphs.

fp16 (onnxruntime.transformers.float16 with a block list; the ops it keeps in fp32 are
chosen here, by op type and by walking the graph, never by node name, so the pass works
on plain and on optimized graphs alike):

- norms (LayerNormalization, RMSNormalization, the ONNX Runtime fused
  (Skip)(Simplified)LayerNormalization, Group/Instance/BatchNormalization) and the
  decomposed norm (ReduceMean/ReduceSum*/Pow/Sqrt/Reciprocal, and the Add/Div/Mul
  that take a reduction's or a root's result): the variance is a sum of squares,
  which overflows fp16 (65504) once |x| is a few hundred; fused fp16 kernels that
  accumulate it in fp16 return zeros or NaN (onnxruntime issue 29034);
- Softmax and its input scores: walking back from Softmax's input through
  elementwise/shape ops up to and including the Q·Kᵀ MatMul (scale, mask, ALiBi and
  relative-position biases): the masked fill (-3.4e38) and large scores stay finite;
- position math: Sin/Cos (RoPE and sinusoidal tables) and every float computation
  that ends in a cast to an integer (T5's relative-position buckets), walked back
  to their integer inputs: positions past 2048 are not exact in fp16.

IO: the cache tensors (past.*, present.*, cross.*) are float16, which halves the KV
cache; the outputs a person reads (logits, hidden states, pooler) stay float32 (a
Cast at the end). The manifest's graph signatures record it and the runtime feeds
what they declare.

int8 (onnxruntime.quantization.quantize_dynamic): MatMul/Gemm with a constant weight,
int8 weights per output channel (symmetric), uint8 activations quantized at run time
(DynamicQuantizeLinear -> MatMulInteger, which ONNX Runtime fuses). The token
embedding table (vocab_size rows) is quantized too, per row: the Gather reads int8
rows and scales them; a tied output projection (Transpose of the same table) reads the
same int8 tensor, so tied weights stay stored once.
"""

from __future__ import annotations

# Part of an artifact's identity: bump when the conversion change, so earlier builds are not reused.
VERSION = 1

import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zoo.contract import graphs_for
from zoo.errors import ExportError

# --------------------------------------------------------------------------- fp16: what stays fp32

NORM_OPS = (
    "LayerNormalization",
    "RMSNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "BatchNormalization",
)
REDUCTION_OPS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt", "Reciprocal")
SOFTMAX_OPS = ("Softmax", "LogSoftmax")
POSITION_OPS = ("Sin", "Cos")
KEPT_FP32_OPS = NORM_OPS + REDUCTION_OPS + SOFTMAX_OPS + POSITION_OPS
# ops a walk back from an anchor passes through (elementwise, shape, gather)
_PATH_OPS = frozenset(
    "Add Sub Mul Div Where Neg Abs Cast Reshape Unsqueeze Squeeze Transpose Expand Concat Slice Gather "
    "Log Exp Clip Min Max Tile Identity Floor Ceil Round Sign Sin Cos Pow Sqrt Reciprocal ReduceMean ReduceSum".split()
)
_MATMUL_OPS = ("MatMul", "Gemm", "Einsum", "FusedMatMul")
_ELEMENTWISE_AFTER_NORM = ("Add", "Sub", "Mul", "Div")
_INTEGER_TYPES = {
    TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.BOOL,
}
CACHE_PREFIXES = ("past.", "present.", "cross.")


def _name_nodes(proto: onnx.ModelProto) -> None:
    """Every node gets a unique name (the block list names nodes)."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"zoo_precision_{i}_{node.op_type}"
        seen.add(node.name)


def _value_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value (shape inference; initialisers and graph IO)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # contrib ops can stop it; what it has is still useful
        inferred = proto
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def fp32_nodes(proto: onnx.ModelProto) -> set[str]:
    """Names of the nodes to keep in fp32 (see the module docstring). Op-agnostic:
    decided by op type and by walking the graph from anchors."""
    _name_nodes(proto)
    g = proto.graph
    types = _value_types(proto)
    producer = {o: n for n in g.node for o in n.output}
    keep: set[str] = set()

    def walk(value: str, *, stop_at_matmul: bool) -> None:
        stack = [value]
        while stack:
            v = stack.pop()
            node = producer.get(v)
            if node is None or node.name in keep or types.get(v, TensorProto.FLOAT) != TensorProto.FLOAT:
                continue
            if node.op_type in _MATMUL_OPS:
                keep.add(node.name)
                if not stop_at_matmul:
                    stack.extend(node.input)
                continue
            if node.op_type not in _PATH_OPS:
                continue
            keep.add(node.name)
            if node.op_type == "Cast":  # from an integer (positions) or from a kept value: the walk ends
                continue
            stack.extend(node.input)

    roots = ("Sqrt", "Reciprocal", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2")
    for node in g.node:
        if node.op_type in NORM_OPS or node.op_type in REDUCTION_OPS:
            keep.add(node.name)
        elif node.op_type in SOFTMAX_OPS:
            keep.add(node.name)
            for name in node.input:
                walk(name, stop_at_matmul=True)
        elif node.op_type in POSITION_OPS:
            keep.add(node.name)
            for name in node.input:
                walk(name, stop_at_matmul=False)
        elif node.op_type in ("Cast", "Floor", "Ceil", "Round"):
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if node.op_type != "Cast" or to in _INTEGER_TYPES:  # float math that becomes an index
                if node.op_type != "Cast":
                    keep.add(node.name)
                for name in node.input:
                    walk(name, stop_at_matmul=False)
    # a decomposed norm: the eps Add after the mean of squares, the Div/Mul by the root
    for node in g.node:
        if node.op_type in _ELEMENTWISE_AFTER_NORM and any(producer.get(i) is not None and producer[i].op_type in roots for i in node.input):
            keep.add(node.name)
    return keep


def topological_sort(proto: onnx.ModelProto) -> None:
    """Order the nodes so that each comes after the producers of its inputs (the
    converter appends the casts it inserts at the end; onnx.checker wants order)."""
    g = proto.graph
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    producers: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for o in node.output:
            producers[o] = i
    waiting: dict[int, set[int]] = {}
    users: dict[int, list[int]] = {}
    for i, node in enumerate(g.node):
        deps = {producers[v] for v in node.input if v not in available and v in producers}
        waiting[i] = deps
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = [i for i, d in waiting.items() if not d]
    order: list[int] = []
    while ready:
        ready.sort(reverse=True)  # keep the original order where it is free
        i = ready.pop()
        order.append(i)
        for u in users.get(i, []):
            waiting[u].discard(i)
            if not waiting[u]:
                ready.append(u)
    if len(order) != len(g.node):
        raise ExportError("the converted graph has a cycle")
    nodes = [g.node[i] for i in order]
    del g.node[:]
    g.node.extend(nodes)


def drop_round_trips(proto: onnx.ModelProto) -> int:
    """Remove Cast(fp32 -> fp16) -> Cast(fp16 -> fp32) pairs: the converter casts the
    output of every fp32 node to fp16 and back for the next fp32 node, which would
    send the masked scores (-3.4e38) and large values through fp16 after all. The
    consumers read the fp32 value directly. Returns how many casts were bypassed."""
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    rename: dict[str, str] = {}
    for node in g.node:
        if cast_to(node) != TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or cast_to(first) != TensorProto.FLOAT16:
            continue
        source = first.input[0]
        src_node = producer.get(source)
        src_type = TensorProto.FLOAT if src_node is None or src_node.op_type != "Cast" else cast_to(src_node)
        if src_type == TensorProto.FLOAT and node.output[0] not in outputs:
            rename[node.output[0]] = source
    if not rename:
        return 0
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {i for n in g.node for i in n.input} | outputs
    keep = [n for n in g.node if n.op_type != "Cast" or any(o in used for o in n.output)]
    del g.node[:]
    g.node.extend(keep)
    return len(rename)


def reinfer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the intermediate value types (the converter leaves some stale) and infer them again."""
    del proto.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:  # contrib ops it cannot infer: ONNX Runtime infers at load time
        return proto


def to_fp16(proto: onnx.ModelProto, *, naive: bool = False) -> tuple[onnx.ModelProto, list[str]]:
    """``proto`` with weights and compute in float16, except what ``fp32_nodes``
    keeps; cache IO float16, other float outputs float32. ``naive=True``: every op
    in fp16 (the converter's own block list only), to show what the block list is for.
    Returns the converted proto and the op types of the nodes kept in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    _name_nodes(proto)
    keep_io = [o.name for o in proto.graph.output if not o.name.startswith(CACHE_PREFIXES)]
    ops = set(DEFAULT_OP_BLOCK_LIST)
    nodes: set[str] = set()
    if not naive:
        ops |= set(NORM_OPS) | set(SOFTMAX_OPS) | set(POSITION_OPS)
        nodes = fp32_nodes(proto)
    kept = sorted({n.op_type for n in proto.graph.node if n.name in nodes or n.op_type in KEPT_FP32_OPS}) if not naive else []
    with _quiet_logs():
        converted = convert_float_to_float16(proto, keep_io_types=keep_io, op_block_list=sorted(ops), node_block_list=sorted(nodes))
    drop_round_trips(converted)
    topological_sort(converted)
    return reinfer(converted), kept


# --------------------------------------------------------------------------- int8

INT8_WEIGHT_TYPE = "QInt8"  # measured against QUInt8: see docs/precision.md
INT8_PER_CHANNEL = True
INT8_OPS = ("MatMul", "Gemm")


def to_int8(proto: onnx.ModelProto, out: Path, *, vocab_size: int, weight_type: str = INT8_WEIGHT_TYPE,
            per_channel: bool = INT8_PER_CHANNEL, embeddings: bool = True) -> tuple[onnx.ModelProto, dict]:
    """Dynamic int8 quantization of ``proto``'s MatMul/Gemm weights (and, with
    ``embeddings``, of its token embedding table, tied projection included).
    Returns the quantized proto and what was quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _name_nodes(proto)
    tied = _tied_tables(proto, vocab_size) if embeddings else {}
    # the tied projection's MatMul reads a Transpose, not a constant: quantize_dynamic leaves it; done below
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, _quiet_logs():
        dst = Path(tmp) / "q.onnx"
        big = _weight_bytes(proto) > 1_800_000_000
        quantize_dynamic(
            proto,
            dst,
            op_types_to_quantize=list(INT8_OPS),
            per_channel=per_channel,
            weight_type=getattr(QuantType, weight_type),
            use_external_data_format=big,
            extra_options={"MatMulConstBOnly": True},
        )
        quantized = onnx.load(str(dst))
    n_matmul = sum(1 for n in quantized.graph.node if n.op_type == "MatMulInteger")
    info = {"ops": list(INT8_OPS), "weight_type": weight_type, "per_channel": per_channel,
            "activations": "uint8, per tensor, quantized at run time", "matmuls": n_matmul, "embeddings": []}
    if embeddings:
        for table in _embedding_tables(quantized, vocab_size):
            info["embeddings"].append(_quantize_table(quantized, table, tied=table in tied))
    info["matmuls"] = sum(1 for n in quantized.graph.node if n.op_type == "MatMulInteger")
    topological_sort(quantized)
    return reinfer(quantized), info


def _embedding_tables(proto: onnx.ModelProto, vocab_size: int) -> list[str]:
    """Float initialisers of shape (vocab_size, d) that a Gather reads (token embeddings)."""
    inits = {t.name: t for t in proto.graph.initializer}
    out = []
    for node in proto.graph.node:
        if node.op_type == "Gather" and node.input[0] in inits:
            t = inits[node.input[0]]
            if t.data_type == TensorProto.FLOAT and len(t.dims) == 2 and t.dims[0] == vocab_size and node.input[0] not in out:
                out.append(node.input[0])
    return out


def _tied_tables(proto: onnx.ModelProto, vocab_size: int) -> set[str]:
    tables = set(_embedding_tables(proto, vocab_size))
    return {n.input[0] for n in proto.graph.node if n.op_type == "Transpose" and n.input[0] in tables}


def _quantize_table(proto: onnx.ModelProto, name: str, *, tied: bool) -> dict:
    """Replace the float table ``name`` (V, D) by int8 rows with a scale per row:
    Gather(table, ids) -> Cast(Gather(table_q, ids)) * Gather(scale, ids); a
    Transpose(table) feeding MatMuls (the tied output projection) -> a dynamic
    quantized MatMul on Transpose(table_q) with the row scales as per-column scales.
    Nodes that read the table otherwise keep a float copy."""
    g = proto.graph
    init = next(t for t in g.initializer if t.name == name)
    table = numpy_helper.to_array(init).astype(np.float32)
    scale = np.abs(table).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    q_name, s_name, s_rows, zp_name = f"{name}_int8", f"{name}_row_scale", f"{name}_row_scale_2d", f"{name}_zero_point"
    g.initializer.extend([
        numpy_helper.from_array(q, q_name),
        numpy_helper.from_array(scale.astype(np.float32), s_name),
        numpy_helper.from_array(scale.astype(np.float32)[:, None], s_rows),
    ])
    consumers = [n for n in g.node if name in n.input]
    new_nodes: dict[int, list] = {}
    index = {n.name: i for i, n in enumerate(g.node)}
    projections = 0
    for node in consumers:
        i = index[node.name]
        tag = node.name
        if node.op_type == "Gather" and node.input[0] == name and node.input[1] != name:
            ids, out = node.input[1], node.output[0]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if axis != 0:
                continue
            new_nodes[i] = [
                helper.make_node("Gather", [q_name, ids], [f"{tag}/rows_int8"], name=f"{tag}/int8", axis=0),
                helper.make_node("Cast", [f"{tag}/rows_int8"], [f"{tag}/rows"], name=f"{tag}/cast", to=TensorProto.FLOAT),
                helper.make_node("Gather", [s_rows, ids], [f"{tag}/scales"], name=f"{tag}/scales", axis=0),
                helper.make_node("Mul", [f"{tag}/rows", f"{tag}/scales"], [out], name=f"{tag}/dequantize"),
            ]
        elif tied and node.op_type == "Transpose" and list(next((a.ints for a in node.attribute if a.name == "perm"), [1, 0])) == [1, 0]:
            t_out = node.output[0]
            users = [n for n in g.node if t_out in n.input]
            if not users or any(u.op_type != "MatMul" or u.input[1] != t_out for u in users):
                continue
            if zp_name not in {t.name for t in g.initializer}:
                g.initializer.append(numpy_helper.from_array(np.zeros(table.shape[0], dtype=np.int8), zp_name))
            w_q = f"{tag}/weight_int8"
            new_nodes[i] = [helper.make_node("Transpose", [q_name], [w_q], name=f"{tag}/int8", perm=[1, 0])]
            for u in users:
                j, ut = index[u.name], u.name
                a, y = u.input[0], u.output[0]
                new_nodes[j] = [
                    helper.make_node("DynamicQuantizeLinear", [a], [f"{ut}/a_q", f"{ut}/a_scale", f"{ut}/a_zp"], name=f"{ut}/quantize"),
                    helper.make_node("MatMulInteger", [f"{ut}/a_q", w_q, f"{ut}/a_zp", zp_name], [f"{ut}/int32"], name=f"{ut}/int8"),
                    helper.make_node("Cast", [f"{ut}/int32"], [f"{ut}/float"], name=f"{ut}/cast", to=TensorProto.FLOAT),
                    helper.make_node("Mul", [f"{ut}/a_scale", s_name], [f"{ut}/scales"], name=f"{ut}/scales"),
                    helper.make_node("Mul", [f"{ut}/float", f"{ut}/scales"], [y], name=f"{ut}/dequantize"),
                ]
                projections += 1
    nodes = []
    for i, node in enumerate(g.node):
        nodes.extend(new_nodes.get(i, [node]))
    del g.node[:]
    g.node.extend(nodes)
    still_used = any(name in n.input for n in g.node) or any(o.name == name for o in g.output)
    if not still_used:
        keep = [t for t in g.initializer if t.name != name]
        del g.initializer[:]
        g.initializer.extend(keep)
    return {"table": name, "rows": int(table.shape[0]), "scheme": "int8 per row, symmetric",
            "tied_projections": projections, "float_copy_kept": bool(still_used)}


# --------------------------------------------------------------------------- measuring

ACCURACY_BATCH, ACCURACY_SEQ, ACCURACY_SEED = 4, 32, 1234
TIMING_REPS, TIMING_WARMUP = 10, 2


def _uncached(sessions: dict, graphs, inputs: dict, cache, batch: int) -> dict[str, np.ndarray]:
    from runtime.compare import run_graphs

    return run_graphs(sessions, graphs, inputs, cache, batch)


def measure(spec, fp32_paths: dict[str, Path], new_paths: dict[str, Path], *, device: str = "auto",
            batch: int = ACCURACY_BATCH, seq: int = ACCURACY_SEQ, seed: int = ACCURACY_SEED,
            reps: int = TIMING_REPS, warmup: int = TIMING_WARMUP) -> dict:
    """The converted graphs against the fp32 ones in ONNX Runtime, same process, same
    inputs (seeded, padded): logits error and top-1 agreement over real positions,
    median forward time of each (interleaved runs) and, for graphs with a cache, the
    median time of one decode step after a ``seq``-token prefill."""
    import onnxruntime as ort

    from runtime.inputs import graph_inputs
    from runtime.session import choose_providers, session_options
    from zoo.contract import cache_layout

    providers = choose_providers(device)
    graphs = graphs_for(spec)
    cache = cache_layout(spec)
    seq = min(seq, spec.max_seq_len)
    inputs = graph_inputs(spec.family, vocab=spec.vocab_size, batch=batch, seq=seq, src_seq=seq, seed=seed)
    opts = session_options()
    s32 = {g.name: ort.InferenceSession(str(fp32_paths[g.name]), sess_options=opts, providers=providers) for g in graphs}
    s_new = {g.name: ort.InferenceSession(str(new_paths[g.name]), sess_options=opts, providers=providers) for g in graphs}
    a = _uncached(s32, graphs, inputs, cache, batch)["logits"].astype(np.float64)
    b = _uncached(s_new, graphs, inputs, cache, batch)["logits"].astype(np.float64)
    mask = (inputs["decoder"]["decoder_attention_mask"] if spec.family == "encoder-decoder" else inputs["model"]["attention_mask"]).astype(bool)
    diff = np.abs(a - b)[mask]
    finite = bool(np.isfinite(b).all())
    accuracy = {
        "max_abs_logit": float(diff.max()) if finite else float("inf"),
        "mean_abs_logit": float(diff.mean()) if finite else float("inf"),
        "max_rel_logit": (float(diff.max()) / (float(np.abs(a[mask]).max()) or 1.0)) if finite else float("inf"),
        "top1_agreement": float((a.argmax(-1) == b.argmax(-1))[mask].mean()),
        "logit_scale": float(np.abs(a[mask]).max()),
        "finite": finite,
        "batch": batch,
        "seq": seq,
        "positions": int(mask.sum()),
        "seed": seed,
        "reference": "the fp32 graphs in ONNX Runtime",
    }
    forward = _interleaved({"fp32": lambda: _uncached(s32, graphs, inputs, cache, batch),
                            "converted": lambda: _uncached(s_new, graphs, inputs, cache, batch)}, reps, warmup)
    out = {"accuracy": accuracy, "forward_ms": {**forward, "batch": batch, "seq": seq, "reps": reps}}
    if cache is not None:
        out["decode_ms"] = {**_interleaved({"fp32": _decode_step(s32, spec, graphs, cache, seq, seed),
                                            "converted": _decode_step(s_new, spec, graphs, cache, seq, seed)}, reps, warmup),
                            "batch": 1, "context": seq, "reps": reps}
    out["provider"] = next(iter(s_new.values())).get_providers()[0]
    return out


def _interleaved(fns: dict, reps: int, warmup: int) -> dict[str, float]:
    """Median ms of each function, runs alternating so that drift hits both alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _decode_step(sessions: dict, spec, graphs, cache, context: int, seed: int):
    """A function that runs one decode step (batch 1) on a ``context``-token cache."""
    from runtime.inputs import graph_inputs

    context = max(1, min(context, spec.max_seq_len - 1))
    inputs = graph_inputs(spec.family, vocab=spec.vocab_size, batch=1, seq=context, src_seq=context, seed=seed)
    for part in inputs.values():
        for k in part:
            if k.endswith("attention_mask"):
                part[k][:] = 1
    got = _uncached(sessions, graphs, inputs, cache, 1)
    dec = graphs[-1].name
    sess = sessions[dec]
    feed = {k: v for k, v in got.items() if k.startswith("cross.")}
    if spec.family == "encoder-decoder":
        feed["encoder_attention_mask"] = inputs["encoder"]["attention_mask"]
        ids_name, mask_name = "decoder_input_ids", "decoder_attention_mask"
    else:
        ids_name, mask_name = "input_ids", "attention_mask"
    feed.update({k.replace("present.", "past.", 1): v for k, v in got.items() if k.startswith("present.")})
    feed[ids_name] = np.array([[1]], dtype=np.int64)
    feed[mask_name] = np.ones((1, context + 1), dtype=np.int64)
    names = ["logits"]
    return lambda: sess.run(names, feed)


# --------------------------------------------------------------------------- the build step

def _weight_bytes(proto: onnx.ModelProto) -> int:
    from compiler.export import weight_bytes

    return weight_bytes(proto)


def _save(proto: onnx.ModelProto, path: Path) -> list[str]:
    """Save (external data past the protobuf limit) and check; the file names written."""
    from compiler.export import PROTOBUF_LIMIT, save_graph

    try:
        return save_graph(proto, path)
    except ExportError:
        if any(op.domain not in ("", "ai.onnx") for op in proto.opset_import):  # contrib ops: the full check does not know them
            external = _weight_bytes(proto) > PROTOBUF_LIMIT
            files = [path.name]
            if external:
                onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=1024)
                files.append(path.name + ".data")
            else:
                onnx.save_model(proto, path)
            onnx.checker.check_model(str(path))
            return files
        raise


def convert_graphs(spec, model, folder: Path, graphs: dict, options) -> dict:
    """Convert every graph file in ``folder`` to ``options.precision`` in place and
    update ``graphs`` (export_all's record: files, inputs, outputs, nodes, weight
    bytes, ops); returns the precision record for the manifest."""
    from compiler.export import signature, weight_bytes

    precision = options.precision
    if precision not in ("fp16", "int8"):
        raise ExportError(f"{spec.name}: no conversion to {precision!r}")
    folder = Path(folder)
    keep = folder / ".fp32"
    keep.mkdir()
    try:
        fp32_paths, new_paths, details = {}, {}, {}
        bytes32 = bytes_new = 0
        for g in graphs_for(spec):
            entry = graphs[g.name]
            for f in entry["files"]:
                bytes32 += (folder / f).stat().st_size
                os.replace(folder / f, keep / f)
            fp32_paths[g.name], new_paths[g.name] = keep / g.file, folder / g.file
            proto = onnx.load(str(keep / g.file))
            if precision == "fp16":
                converted, kept = to_fp16(proto)
                details[g.name] = {"kept_fp32_ops": kept}
            else:
                converted, details[g.name] = to_int8(proto, folder / g.file, vocab_size=spec.vocab_size)
            converted.producer_name = proto.producer_name
            files = _save(converted, folder / g.file)
            bytes_new += sum((folder / f).stat().st_size for f in files)
            entry.update(
                files=files,
                inputs=signature(converted.graph.input),
                outputs=signature(converted.graph.output),
                nodes=len(converted.graph.node),
                weight_bytes=weight_bytes(converted),
                ops=sorted({n.op_type for n in converted.graph.node}),
            )
        figures = measure(spec, fp32_paths, new_paths)
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    record = {"precision": precision, "io": _io_dtypes(graphs)}
    if precision == "fp16":
        record["kept_fp32"] = {
            "ops": sorted({op for d in details.values() for op in d["kept_fp32_ops"]}),
            "rule": "norms with their variance, Softmax with its input scores back to Q·Kᵀ, position math (Sin/Cos, float->int index math)",
            "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
        }
    else:
        record["quantization"] = {name: d for name, d in details.items()}
        record["quantizer"] = "onnxruntime.quantization.quantize_dynamic"
    record["accuracy"] = figures["accuracy"]
    record["forward_ms"] = figures["forward_ms"]
    record["speed_vs_fp32"] = figures["forward_ms"]["fp32"] / figures["forward_ms"]["converted"]
    if "decode_ms" in figures:
        record["decode_ms"] = figures["decode_ms"]
        record["decode_speed_vs_fp32"] = figures["decode_ms"]["fp32"] / figures["decode_ms"]["converted"]
    record["bytes"] = {"fp32": bytes32, "converted": bytes_new}
    record["size_vs_fp32"] = bytes_new / bytes32 if bytes32 else None
    record["provider"] = figures["provider"]
    if precision == "fp16" and record["provider"] != "CUDAExecutionProvider":
        record["timing_note"] = (
            f"timed on {record['provider']}, which runs most fp16 ops through inserted casts: "
            "the speed is not what CUDA gives"
        )
    return record


def _io_dtypes(graphs: dict) -> dict:
    """dtype of each kind of graph IO: cache (past/present/cross), and the other float outputs by name."""
    out: dict[str, str] = {}
    for entry in graphs.values():
        for t in entry["inputs"] + entry["outputs"]:
            if t["dtype"].startswith("int"):
                continue
            key = "cache" if t["name"].startswith(CACHE_PREFIXES) else t["name"]
            out[key] = t["dtype"]
    return out


class _quiet_logs:
    """The converter and the quantizer log warnings of their own (pre-processing advice)."""

    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)
        return False
