"""Random test inputs that follow the ONNX contract (numpy only): token ids and
attention masks with padding on both sides, for export examples and parity (each
family's graphs get theirs from zoo.spec.families.Family.token_inputs)."""

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
