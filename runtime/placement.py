"""Where ONNX Runtime placed each node of a session, and the nodes that silently fell
back to CPU on a CUDA session.

An execution provider claims the nodes it has kernels for; ONNX Runtime gives the
rest to the CPU provider without an error (only a log line below the default
severity). On a CUDA session an attention or matmul node on CPU means host-device
copies around it and CPU speed for most of the work: the standard Attention op
(opset 23) did exactly that before ONNX Runtime had a CUDA kernel for it
(onnxruntime issue 28025). This module reads the placement from either

- the session itself, where this onnxruntime records it
  (``session.record_ep_graph_assignment_info`` = 1, then
  ``InferenceSession.get_provider_graph_assignment_info()``): no run needed; or
- a profile (``SessionOptions.enable_profiling``, one run, ``end_profiling()``): the
  events of category "Node" carry ``args.provider`` and ``args.op_name``.

``placement_report`` returns counts by provider and op type plus the fallbacks;
``check_placement`` turns fallbacks into one warning line per class, or an error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

from zoo.spec.errors import InputError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
RECORD_KEY = "session.record_ep_graph_assignment_info"

# Op types whose placement on CPU in a GPU session costs the most (attention and the
# matmuls around it); shape arithmetic on CPU is normal (ONNX Runtime puts it there).
CLASSES = {
    "attention": {
        "Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention",
        "DecoderMaskedMultiHeadAttention", "DecoderMaskedSelfAttention", "SparseAttention", "QAttention", "PagedAttention",
    },
    "matmul": {
        "MatMul", "Gemm", "FusedMatMul", "MatMulNBits", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
        "QLinearMatMul", "MatMulBnb4", "GemmFastGelu", "FusedGemm", "Einsum",
    },
}


class PlacementError(InputError):
    """Attention or matmul nodes run on CPU in a session whose provider is not CPU (strict)."""


def op_class(op_type: str) -> Optional[str]:
    return next((name for name, ops in CLASSES.items() if op_type in ops), None)


def record_options(opts) -> None:
    """Ask ONNX Runtime to record the placement in ``opts`` (a SessionOptions), where it can."""
    try:
        opts.add_session_config_entry(RECORD_KEY, "1")
    except Exception:  # an onnxruntime without the key ignores or refuses it: profiling then
        pass


def _from_session(session) -> Optional[list[tuple[str, str, str]]]:
    """(node name, op type, provider) per node from the session's recorded assignment, or None."""
    get = getattr(session, "get_provider_graph_assignment_info", None)
    if get is None:
        return None
    try:
        subgraphs = get()
    except Exception:
        return None
    nodes = []
    for sg in subgraphs or []:
        for n in sg.get_nodes():
            nodes.append((n.name, n.op_type, sg.ep_name))
    return nodes or None


def _from_profile(profile: Any) -> list[tuple[str, str, str]]:
    """(node name, op type, provider) per node from a profile: a path, JSON text, or the
    parsed event list (a dict with "traceEvents" too)."""
    events = profile
    if isinstance(profile, (str, os.PathLike)):
        text = str(profile)
        if not text.lstrip().startswith(("[", "{")):
            text = Path(profile).read_text(encoding="utf-8")
        events = json.loads(text)
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    nodes: dict[str, tuple[str, str, str]] = {}
    for e in events:
        if not isinstance(e, dict) or e.get("cat") != "Node":
            continue
        args = e.get("args") or {}
        name, op, provider = str(e.get("name", "")), args.get("op_name"), args.get("provider")
        if not op or not provider:
            continue
        for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        nodes.setdefault(name, (name, str(op), str(provider)))
    return list(nodes.values())


def placement_report(session_or_profile: Any, *, session_provider: Optional[str] = None) -> dict:
    """Counts of nodes by provider and op type, and the fallbacks: attention / matmul
    nodes on CPUExecutionProvider while the session's first provider is another one
    (CUDA). ``session_or_profile``: an InferenceSession created with the assignment
    recorded (``record_options``), or a profile (path, JSON text, event list).
    ``session_provider`` defaults to the session's first provider; for a profile, to
    the first non-CPU provider seen in it (else CPU)."""
    nodes, source = None, "profile"
    if hasattr(session_or_profile, "get_providers"):
        nodes, source = _from_session(session_or_profile), "assignment"
        session_provider = session_provider or session_or_profile.get_providers()[0]
        if nodes is None:
            raise ValueError("this session did not record its node placement; create it with runtime.placement.record_options, or pass a profile")
    else:
        nodes = _from_profile(session_or_profile)
    if session_provider is None:
        session_provider = next((p for _, _, p in nodes if p != CPU), CPU)
    by_provider: dict[str, Counter] = {}
    for _, op, provider in nodes:
        by_provider.setdefault(provider, Counter())[op] += 1
    fallbacks = []
    if session_provider != CPU:
        for name, op, provider in nodes:
            cls = op_class(op)
            if provider == CPU and cls is not None:
                fallbacks.append({"node": name, "op_type": op, "class": cls, "provider": provider})
    return {
        "session_provider": session_provider,
        "source": source,
        "nodes": len(nodes),
        **{p: dict(sorted(c.items())) for p, c in sorted(by_provider.items())},
        "fallbacks": fallbacks,
    }


def fallback_lines(report: dict, graph: str = "") -> list[str]:
    """One line per class of fallback node: what, how many, which op types."""
    by_class: dict[str, Counter] = {}
    for f in report["fallbacks"]:
        by_class.setdefault(f["class"], Counter())[f["op_type"]] += 1
    where = f"graph '{graph}': " if graph else ""
    lines = []
    for cls, ops in sorted(by_class.items()):
        n = sum(ops.values())
        kinds = ", ".join(f"{op} x{c}" for op, c in sorted(ops.items()))
        lines.append(
            f"{where}{n} {cls} node{'s' if n != 1 else ''} ({kinds}) run on {CPU} in a {report['session_provider']} session "
            f"(no kernel for this provider: host-device copies and CPU speed; see onnxruntime issue 28025)"
        )
    return lines


def profile_once(path: str | os.PathLike, providers: list[str], feed: dict, opts=None) -> dict:
    """Create a profiling session for ``path``, run ``feed`` once and return the parsed
    profile (for onnxruntime versions that do not record the assignment)."""
    import tempfile

    import onnxruntime as ort

    opts = opts or ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="zoo-profile-") as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "placement")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
    return {"events": events, "providers": sess.get_providers()}


def check_placement(reports: Iterable[tuple[str, dict]], *, strict: bool = False, warn=None) -> list[str]:
    """Warn (``warn(line)``, default: stderr) one line per class of fallback, or with
    ``strict`` raise PlacementError (one line) naming them. Returns the lines."""
    import sys

    lines = [line for graph, report in reports for line in fallback_lines(report, graph)]
    if lines and strict:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise PlacementError(f"--strict: {lines[0]}{more}")
    for line in lines:
        (warn or (lambda s: print(f"warning: {s}", file=sys.stderr)))(line)
    return lines
