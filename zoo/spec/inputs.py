"""Random test inputs that follow the ONNX contract (numpy only): token ids and
attention masks with padding on both sides, for export examples and parity."""

from __future__ import annotations

import numpy as np


def padded_mask(batch: int, seq: int, rng: np.random.Generator) -> np.ndarray:
    """(batch, seq) int64 of 1 (token) / 0 (padding): row 0 full, row 1 padded on
    the right, row 2 on the left, later rows random lengths on a random side;
    every row keeps at least one token."""
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(1, batch):
        n_pad = max(1, seq // 3) if row < 3 else int(rng.integers(0, seq))
        n_pad = min(n_pad, seq - 1)
        left = row == 2 or (row > 2 and bool(rng.integers(0, 2)))
        if n_pad:
            if left:
                mask[row, :n_pad] = 0
            else:
                mask[row, seq - n_pad :] = 0
    return mask


def random_ids(batch: int, seq: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)


def graph_inputs(
    family: str,
    *,
    vocab: int,
    batch: int,
    seq: int,
    src_seq: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Token inputs of every graph of ``family``, by graph name then input name (ids
    and masks; cache tensors come from runtime.session / the encoder's outputs)."""
    rng = np.random.default_rng(seed)
    if family in ("decoder-only", "encoder-only"):
        return {"model": {"input_ids": random_ids(batch, seq, vocab, rng), "attention_mask": padded_mask(batch, seq, rng)}}
    src = src_seq or seq
    src_mask = padded_mask(batch, src, rng)
    return {
        "encoder": {"input_ids": random_ids(batch, src, vocab, rng), "attention_mask": src_mask},
        "decoder": {
            "decoder_input_ids": random_ids(batch, seq, vocab, rng),
            "decoder_attention_mask": padded_mask(batch, seq, rng),
            "encoder_attention_mask": src_mask,
        },
    }
