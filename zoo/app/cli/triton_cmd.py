"""``zoo export-triton``: an artifact as a Triton Inference Server model repository
(ONNX Runtime backend). Pure file work: imports neither torch nor onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.app.cli.render import field, render
from zoo.spec.errors import InputError


def register(sub) -> None:
    t = sub.add_parser(
        "export-triton",
        help="write a Triton Inference Server model repository (ONNX Runtime backend) for an artifact",
        description="Write REPO as a Triton model repository serving ARTIFACT: REPO/NAME/config.pbtxt and "
        "REPO/NAME/1/model.onnx per graph (decoder-only and encoder-only: NAME; encoder-decoder: NAME_encoder "
        "and NAME_decoder), plus REPO/README.md. Inputs and outputs come from the artifact's manifest. "
        "Each request is one forward pass: for generation the client drives the loop and carries the KV cache.",
    )
    t.add_argument("artifact", type=Path, help="artifact folder (from zoo build)")
    t.add_argument("-o", "--out", type=Path, required=True, metavar="REPO", help="the model repository folder to write")
    t.add_argument("--name", help="Triton model name (default: the artifact's name)")
    t.add_argument("--max-batch-size", type=int, default=8, help="Triton max_batch_size, >= 1 (default 8)")
    t.add_argument("--preferred-batch-sizes", metavar="2,4,8", help="dynamic batching's preferred sizes (default: powers of two up to the max)")
    t.add_argument("--max-queue-delay-us", type=int, default=100, help="how long a request may wait for others to batch with, in µs (default 100)")
    t.add_argument("--instances", type=int, default=1, help="model instances (per GPU for gpu/auto kinds; default 1)")
    t.add_argument("--kind", default="auto", choices=("gpu", "cpu", "auto"), help="instance kind: KIND_GPU, KIND_CPU or KIND_AUTO (default auto)")
    t.add_argument("--gpus", metavar="0,1", help="with --kind gpu: the GPUs to place instances on (default: all)")
    t.add_argument(
        "--graph-optimization", default="all", choices=("all", "extended", "basic", "off"),
        help="ONNX Runtime graph optimization level in Triton (default all)",
    )
    t.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads per instance (default 0: its own choice)")
    t.add_argument("--warmup", action="store_true", help="add a model_warmup request (zeros) that runs when the model loads")
    t.add_argument("--link", action="store_true", help="hard-link the ONNX files instead of copying them (a copy where links cannot be made)")
    t.add_argument("--force", action="store_true", help="replace REPO if it exists and is not empty")
    t.add_argument("--json", action="store_true", help="print what was written as JSON")
    t.set_defaults(func=cmd_export_triton)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"{flag} {text!r}: give comma-separated integers, e.g. 2,4,8") from None
    return values


def cmd_export_triton(args: argparse.Namespace) -> int:
    from zoo.app.triton import TritonOptions, export_triton

    options = TritonOptions(
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=_ints(args.preferred_batch_sizes, "--preferred-batch-sizes"),
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        kind=args.kind,
        gpus=_ints(args.gpus, "--gpus"),
        graph_optimization=args.graph_optimization,
        threads=args.threads,
        warmup=args.warmup,
        name=args.name,
        link=args.link,
    )
    result = export_triton(args.artifact, args.out, options, force=args.force)
    render(_written(result), as_json=args.json, view=_view)
    return 0


def _written(result) -> dict:
    """What ``export_triton`` wrote, as data (the ``--json`` output)."""
    return {
        "repo": str(result.repo),
        "artifact": str(result.artifact.folder),
        "family": result.artifact.family,
        "linked": result.linked,
        "models": [
            {
                "name": m.name,
                "graph": m.graph.name,
                "inputs": m.graph.input_names,
                "outputs": m.graph.output_names,
                "config": str(result.repo / m.name / "config.pbtxt"),
            }
            for m in result.models
        ],
    }


def _view(w: dict) -> list[str]:
    how = "linked" if w["linked"] else "copied"
    lines = [field("model", f"{m['name']}  ({m['graph']}: {len(m['inputs'])} inputs, {len(m['outputs'])} outputs; ONNX {how})")
             for m in w["models"]]
    return lines + [
        field("wrote", f"{w['repo']}  (config.pbtxt per model, README.md)"),
        field("serve", f"docker run --gpus=all -p8000:8000 -p8001:8001 -v {Path(w['repo']).resolve()}:/models "
              "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models"),
    ]
