"""``zoo embed`` and ``zoo fill-mask``: encoder artifacts on ONNX Runtime (no torch):
sentence embeddings pooled as the sentence-transformers checkpoint says (runtime.embed),
and the masked-LM head's most likely tokens at each mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.app.cli.build_cmds import _parse_ids
from zoo.app.cli.render import Table, field, render
from zoo.spec.errors import InputError
from zoo.spec.pooling import POOLING_MODES

SHOWN = 6  # values of each vector the table prints (--json prints all)


def _common(p) -> None:
    p.add_argument("artifact", type=Path, help="artifact folder (from zoo build or zoo import)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="execution provider (default: CUDA if available)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own choice)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub) -> None:
    e = sub.add_parser(
        "embed",
        help="sentence embeddings from an encoder artifact",
        description="Embed texts with an encoder artifact: the last hidden state pooled (mean, cls, max, ...) and "
        "L2-normalised as the imported sentence-transformers checkpoint says (its 1_Pooling and Normalize modules); "
        "--pooling and --normalize/--no-normalize override it.",
    )
    _common(e)
    e.add_argument("--text", action="append", help="a text to embed (repeat for several)")
    e.add_argument("--ids", action="append", metavar="1,2,3", help="token ids to embed (repeat for several), in place of --text")
    e.add_argument("--pooling", choices=POOLING_MODES, help="pooling mode (default: the artifact's)")
    e.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None, help="L2-normalise the vectors (default: the artifact's)")
    e.add_argument("--batch-size", type=int, default=32, help="texts per encoder run (default 32)")
    e.set_defaults(func=cmd_embed)
    f = sub.add_parser(
        "fill-mask",
        help="the most likely tokens at each mask, from an encoder artifact with an MLM head",
        description="Predict the tokens at each mask token ([MASK], <mask>) of --text with the masked-LM head of an "
        "encoder artifact (imported from a *ForMaskedLM checkpoint).",
    )
    _common(f)
    f.add_argument("--text", required=True, help='text with the mask token, e.g. "the cat [MASK] on the mat"')
    f.add_argument("--top-k", type=int, default=5, help="tokens listed per mask (default 5)")
    f.set_defaults(func=cmd_fill_mask)


def _session(args):
    from runtime.session import Session

    if args.threads < 0:
        raise InputError(f"--threads must be >= 0, got {args.threads}")
    return Session(args.artifact, device=args.device, threads=args.threads or None)


def cmd_embed(args: argparse.Namespace) -> int:
    from runtime.embed import embed, resolve_pooling

    if bool(args.text) == bool(args.ids):
        raise InputError("give the texts to embed with --text (or token ids with --ids), not both")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    session = _session(args)
    pooling = resolve_pooling(session, args.pooling, args.normalize)
    inputs = args.text if args.text else _parse_ids(args.ids, "--ids")
    vectors = embed(session, inputs, pooling, batch_size=args.batch_size)
    labels = args.text or args.ids
    result = {
        "artifact": str(args.artifact), "pooling": pooling.to_json(), "dimension": int(vectors.shape[1]),
        "embeddings": [{"input": label, "embedding": [float(x) for x in v]} for label, v in zip(labels, vectors)],
    }
    render(result, as_json=args.json, view=_embed_view)
    return 0


def _embed_view(r: dict) -> list:
    p = r["pooling"]
    mode = p["mode"] if isinstance(p["mode"], str) else "+".join(p["mode"])
    rows = []
    for e in r["embeddings"]:
        v = e["embedding"]
        shown = " ".join(f"{x:+.4f}" for x in v[:SHOWN]) + (" ..." if len(v) > SHOWN else "")
        rows.append((e["input"], f"{sum(x * x for x in v) ** 0.5:.4f}", shown))
    return [
        field("pooling", f"{mode}{', normalised' if p['normalize'] else ''}"),
        field("dimension", r["dimension"]),
        Table(("input", "norm", f"first {SHOWN} values (--json: all)"), rows, align="lrl"),
    ]


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from runtime.embed import fill_mask

    session = _session(args)
    found = fill_mask(session, args.text, top_k=args.top_k)
    result = {
        "text": args.text,
        "masks": [[{"token": t, "id": i, "probability": p} for t, i, p in ranked] for ranked in found],
    }
    render(result, as_json=args.json, view=_fill_view)
    return 0


def _fill_view(r: dict) -> list:
    blocks: list = [field("text", r["text"])]
    for n, ranked in enumerate(r["masks"]):
        if len(r["masks"]) > 1:
            blocks.append(f"mask {n + 1}")
        blocks.append(Table(("token", "id", "probability"), [(c["token"], c["id"], f"{c['probability']:.4f}") for c in ranked], align="lrr", indent=2))
    return blocks
