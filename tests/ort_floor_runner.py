"""Run artifacts with whatever onnxruntime this interpreter has (driver for
tests/test_ort_floor.py; needs only onnxruntime and numpy besides the repository on
PYTHONPATH): per artifact folder given, 6 greedy tokens from a fixed prompt (the
generative families) or the logits of one forward (encoder-only), as JSON on stdout."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime

from runtime.generate import GenerationConfig, Generator
from runtime.session import Session

PROMPT = [[5, 17, 300, 42]]


def run(folder: str) -> dict:
    session = Session(folder, device="cpu")
    if session.family == "encoder-only":
        ids = np.array(PROMPT, dtype=np.int64)
        logits = session.forward({"model": {"input_ids": ids, "attention_mask": np.ones_like(ids)}})["logits"]
        return {"logits": logits[0].tolist()}
    return {"tokens": Generator(session).generate(PROMPT, GenerationConfig(max_new_tokens=6)).tokens[0]}


if __name__ == "__main__":
    print(json.dumps({"onnxruntime": onnxruntime.__version__, "runs": {f: run(f) for f in sys.argv[1:]}}))
