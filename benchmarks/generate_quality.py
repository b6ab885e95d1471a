"""Teacher-forced top-1 agreement with fp32, for benchmarks/generate.py: how often a
reduced-precision model (a zoo artifact or an onnxruntime-genai model) picks the same
next token as the zoo's fp32 artifact, position by position, on the same text.

The text is the fp32 artifact's own greedy continuation of a few seeded random prompts
(random ids are not text; a model's own continuation is the most natural text it knows).
Every model then reads the whole text in one forward pass (teacher forcing: each
position sees the true earlier tokens, not its own earlier picks, so one early
difference does not decide the rest) and its arg-max at each continuation position is
compared with fp32's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def reference_text(fp32_artifact: Path, *, prompts: int, prompt_len: int, new_tokens: int, vocab: int, threads: int) -> np.ndarray:
    """(prompts, prompt_len + new_tokens) ids: seeded random prompts and the fp32
    artifact's greedy continuation (runtime.generate, never stopping at an EOS)."""
    from runtime.generate import GenerationConfig, Generator

    rng = np.random.default_rng(1234)
    rows = rng.integers(0, vocab, size=(prompts, prompt_len)).astype(np.int64)
    gen = Generator(fp32_artifact, threads=threads)
    out = gen.generate(rows.tolist(), GenerationConfig(max_new_tokens=new_tokens, eos=()))
    return np.concatenate([rows, np.array(out.tokens, dtype=np.int64)], axis=1)


def zoo_logits(artifact: Path, ids: np.ndarray, threads: int) -> np.ndarray:
    """(B, T, V) logits of a zoo artifact over ``ids`` (B, T), one uncached forward."""
    from runtime.session import Session
    from zoo.spec.families import family

    session = Session(artifact, threads=threads)
    feeds = family(session).feeds(ids, np.ones_like(ids))
    return np.asarray(session.forward(feeds, check=False)["logits"], dtype=np.float32)


def genai_logits(model_folder: Path, ids: np.ndarray, threads: int) -> np.ndarray:
    """(B, T, V) logits of an onnxruntime-genai model over ``ids`` (B, T): its model.onnx
    run directly in ONNX Runtime with an empty cache (its inputs read from the graph)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(Path(model_folder) / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    b, t = ids.shape
    head_dim = json.loads((Path(model_folder) / "genai_config.json").read_text())["model"]["decoder"]["head_size"]
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = ids.astype(np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((b, t), dtype=np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.broadcast_to(np.arange(t, dtype=np.int64), (b, t)).copy()
        elif i.name.startswith("past_key_values"):
            heads, dim = i.shape[1], i.shape[3] if isinstance(i.shape[3], int) else head_dim
            dtype = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = np.zeros((b, heads, 0, dim), dtype=dtype)
        else:
            raise RuntimeError(f"onnxruntime-genai's model takes an input this benchmark does not know: {i.name}")
    return np.asarray(sess.run(["logits"], feeds)[0], dtype=np.float32)


def agreement(reference: np.ndarray, other: np.ndarray, start: int) -> dict:
    """Share of positions from ``start - 1`` on (each predicting a continuation token)
    where the two (B, T, V) logits pick the same token, and how many positions."""
    a, b = reference[:, start - 1 : -1].argmax(-1), other[:, start - 1 : -1].argmax(-1)
    return {"top1": float((a == b).mean()), "positions": int(a.size)}
