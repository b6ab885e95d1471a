"""Sentence embeddings: the zoo's runtime.embed on an imported sentence-transformers
checkpoint against SentenceTransformer.encode on the same weights and texts, in one run.

The checkpoint is made here (the hubs are unreachable): a BERT of all-MiniLM-L6-v2's
shape (hidden 384, 6 layers, 12 heads, FFN 1536, vocab 30522; random-init weights) ->
Pooling(mean) -> Normalize, max_seq_length 256, with tests/st_checkpoints.py's WordPiece
tokenizer; imported, built at fp32, loaded. Both sides run on the CPU with the same
thread count, batch size 32, on 128 texts of 5-40 words; the median of ``--reps`` timed
runs after one warm-up. Prints a table, writes JSON.

    python benchmarks/embed.py                 # ~1 min
    python benchmarks/embed.py --threads 2 --layers 12 --hidden 768 --heads 12 --ffn 3072
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--texts", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "embed.json")
    args = ap.parse_args()

    import onnxruntime as ort
    import sentence_transformers
    import torch

    from compiler.importers import import_folder
    from runtime import load
    from runtime.embed import embed
    from runtime.pooling import Pooling
    from tests import st_checkpoints as sc
    from zoo.app.build import build_artifact
    from zoo.app.report import machine_info

    torch.set_num_threads(args.threads)
    sc.BERT.update(vocab_size=30522, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                   intermediate_size=args.ffn, max_position_embeddings=512)
    sc.MAX_SEQ_LENGTH = 256
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(sc.WORDS, int(rng.integers(5, 41)))) for _ in range(args.texts)]
    with tempfile.TemporaryDirectory() as tmp:
        model = sc.sentence_checkpoint(Path(tmp) / "st", "random")
        imported = import_folder(Path(tmp) / "st")
        folder, _, _ = build_artifact(imported.spec, Path(tmp) / "art", weights=imported.state, tokenizer=imported.tokenizer)
        session = load(folder, device="cpu", threads=args.threads)
        pooling = Pooling.from_json(imported.pooling, "pooling")
        want = model.encode(texts, batch_size=args.batch_size)
        got = embed(session, texts, pooling, batch_size=args.batch_size)
        ref_s = timed(lambda: model.encode(texts, batch_size=args.batch_size), args.reps)
        zoo_s = timed(lambda: embed(session, texts, pooling, batch_size=args.batch_size), args.reps)
    result = {
        "sentence_transformers_s": ref_s, "zoo_s": zoo_s, "ratio": zoo_s / ref_s,
        "zoo_texts_per_s": args.texts / zoo_s, "reference_texts_per_s": args.texts / ref_s,
        "max_abs_diff": float(np.abs(got - want).max()),
    }
    print(f"embed: BERT hidden {args.hidden}, {args.layers} layers, {args.heads} heads, FFN {args.ffn}; {args.texts} texts of 5-40 words, "
          f"batch {args.batch_size}, {args.threads} thread(s), median of {args.reps}")
    print(f"{'':<24}{'seconds':>10}{'texts/s':>10}")
    print(f"{'sentence-transformers':<24}{ref_s:>10.3f}{result['reference_texts_per_s']:>10.1f}")
    print(f"{'zoo (onnxruntime)':<24}{zoo_s:>10.3f}{result['zoo_texts_per_s']:>10.1f}")
    print(f"zoo / sentence-transformers time: {result['ratio']:.2f}x; largest difference of the embeddings: {result['max_abs_diff']:.1e}")
    record = {"sizes": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "result": result,
              "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__},
              "machine": machine_info()}
    out = args.out if args.out.is_absolute() else ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
