"""Encoder artifacts as sentence-transformers and fill-mask pipelines use them
(onnxruntime + numpy): ``embed`` pools the graph's last_hidden_state into one vector
per text (runtime.pooling), ``fill_mask`` ranks the MLM head's tokens at each mask.

Texts are tokenised with the artifact's tokenizer.json, cut at the pooling's
max_seq_length (or the model's max_seq_len) and right-padded per batch: BERT-style
encoders number positions from the first token, so right padding leaves every real
token's position and attention as they are alone."""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from runtime.pooling import POOLERS, Pooling
from runtime.session import Session
from zoo.spec.errors import ArtifactError, InputError

MASK_TOKENS = ("[MASK]", "<mask>", "<MASK>")  # BERT / RoBERTa / others' mask token, when the tokenizer config names none


def artifact_pooling(session: Session) -> Optional[Pooling]:
    """The pooling the artifact carries (its pooling.json, ``artifact.usage.pooling``), or None."""
    usage = session.artifact.usage
    raw = usage.pooling
    return None if raw is None else Pooling.from_json(raw, usage.path("pooling"))


def resolve_pooling(session: Session, pooling=None, normalize: Optional[bool] = None) -> Pooling:
    """``pooling``: None (the artifact's), a Pooling, or a mode name / list of names that
    replaces the artifact's modes (its normalisation and max_seq_length kept);
    ``normalize`` overrides the normalisation."""
    carried = artifact_pooling(session)
    if pooling is None:
        if carried is None:
            raise InputError(
                f"{session.artifact.name} carries no sentence-transformers pooling: give one "
                "(--pooling mean|cls|max|lasttoken; in Python embed(..., pooling='mean'))"
            )
        pooling = carried
    elif isinstance(pooling, str) or (isinstance(pooling, (list, tuple)) and all(isinstance(m, str) for m in pooling)):
        modes = (pooling,) if isinstance(pooling, str) else tuple(pooling)
        base = carried or Pooling(modes)
        pooling = Pooling(modes, base.normalize, max_seq_length=base.max_seq_length, lowercase=base.lowercase)
    elif not isinstance(pooling, Pooling):
        raise InputError(f"pooling must be a mode name ({', '.join(POOLERS)}) or a Pooling, not {type(pooling).__name__}")
    if normalize is not None:
        pooling = Pooling(pooling.modes, bool(normalize), pooling.dimension, pooling.max_seq_length, pooling.lowercase)
    return pooling


def _encoder(session: Session, what: str) -> None:
    if session.family != "encoder-only" or "model" not in session.graphs:
        raise InputError(f"{what} needs an encoder-only artifact; {session.artifact.name} is {session.family}")


def _rows(session: Session, inputs, max_length: int, lowercase: bool) -> list[list[int]]:
    """Texts (tokenised) or token-id rows (lists, or a 2-d array) -> lists of ids."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.dtype.kind in "iu":
        inputs = inputs.tolist()
    if isinstance(inputs, str) or not isinstance(inputs, Sequence) or len(inputs) == 0:
        raise InputError("embed takes a non-empty list of texts or of token-id rows")
    if all(isinstance(t, str) for t in inputs):
        from runtime.tokenizer import Tokenizer

        texts = [t.lower() for t in inputs] if lowercase else list(inputs)
        return Tokenizer(session.artifact).encode_batch(texts, max_length=max_length)
    rows = []
    for i, row in enumerate(inputs):
        if isinstance(row, str) or not isinstance(row, (Sequence, np.ndarray)) or len(row) == 0:
            raise InputError(f"input {i}: not a non-empty row of token ids (give all texts or all id rows)")
        rows.append([int(t) for t in row])  # the ids' range is checked by the session (check_feed)
    return rows


def _padded(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids (B, T) and attention mask (B, T)."""
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)], mask[r, : len(row)] = row, 1
    return ids, mask


def embed(session: Session, inputs, pooling=None, *, normalize: Optional[bool] = None, batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings (N, len(modes) * d_model) float32 of N texts (or token-id rows),
    pooled as ``pooling`` says (resolve_pooling: default the artifact's)."""
    _encoder(session, "embed")
    pooling = resolve_pooling(session, pooling, normalize)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    model = session.artifact.info.model
    max_length = min(pooling.max_seq_length or model.max_seq_len, model.max_seq_len)
    rows = _rows(session, inputs, max_length, pooling.lowercase)
    if "last_hidden_state" not in session.output_names["model"]:
        raise ArtifactError(f"{session.artifact.name}: its graph has no last_hidden_state output to pool")
    pad = model.tokens.pad if model.tokens.pad is not None else 0
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # similar lengths share a batch
    out: list[Optional[np.ndarray]] = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = _padded([rows[i] for i in chunk], pad)
        hidden = session.run("model", input_ids=ids, attention_mask=mask)["last_hidden_state"]  # (B, T, D)
        if pooling.dimension is not None and hidden.shape[-1] != pooling.dimension:
            raise ArtifactError(
                f"{session.artifact.name}: the pooling's dimension {pooling.dimension} differs from the graph's hidden width {hidden.shape[-1]}"
            )
        for i, vec in zip(chunk, pooling.pool(hidden, mask)):
            out[i] = vec
    return np.stack(out)


_HEAD_FIELD = re.compile(r"^  (output_transform|output_bias): true\s*$", re.M)
MAX_SPEC_BYTES = 1 << 20


def has_mlm_head(session: Session) -> bool:
    """Whether the encoder's logits come from a masked-LM head (the spec's
    embedding.output_transform or output_bias: BERT's / RoBERTa's head transform, the vocab
    bias), not from a base model's tied embedding alone (BertModel: logits = hidden @ E^T,
    meaningless for fill-mask). Read as text from the ``embedding:`` block of the verified
    spec.yaml: the runtime has no yaml."""
    if "logits" not in session.output_names.get("model", ()):
        return False
    path = session.artifact.folder / "spec.yaml"
    try:
        text = path.read_bytes()[:MAX_SPEC_BYTES].decode("utf-8", "replace")
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read it: {e.strerror or e}") from None
    block = re.search(r"^embedding:\n((?:[ \t].*\n?)*)", text, re.M)
    return bool(block and _HEAD_FIELD.search(block.group(1)))


def mask_token(session: Session, tokenizer) -> tuple[str, int]:
    """The mask token and its id: tokenizer_config.json's mask_token when the artifact
    carries it, else the tokenizer's special added token [MASK] / <mask>."""
    special = tokenizer.special_ids()
    named = session.artifact.usage.special_tokens().get("mask_token")
    for token in ([named] if named else []) + list(MASK_TOKENS):
        if token in special:
            return token, special[token]
    raise InputError(f"{session.artifact.name}: its tokenizer has no mask token ({', '.join(MASK_TOKENS)}); fill-mask needs one")


def fill_mask(session: Session, text: str, top_k: int = 5) -> list[list[tuple[str, int, float]]]:
    """For each mask token of ``text``, in order: the ``top_k`` most likely tokens as
    (token text, id, probability), most likely first (softmax of the MLM head's logits)."""
    from runtime.tokenizer import Tokenizer

    _encoder(session, "fill-mask")
    if not has_mlm_head(session):
        raise InputError(f"{session.artifact.name} has no masked-LM head (its logits are the tied embedding's); fill-mask needs a *ForMaskedLM checkpoint")
    vocab = session.artifact.info.model.vocab_size
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab:
        raise InputError(f"--top-k must be an integer in [1, {vocab}] (the vocabulary), got {top_k!r}")
    if not isinstance(text, str):
        raise InputError(f"fill-mask takes one text, not {type(text).__name__}")
    tokenizer = Tokenizer(session.artifact)
    token, mask_id = mask_token(session, tokenizer)
    ids = tokenizer.encode(text)
    where = [i for i, t in enumerate(ids) if t == mask_id]
    if not where:
        raise InputError(f"text {text!r} has no mask token: put {token} where a token is to be predicted")
    logits = session.run("model", input_ids=np.array([ids]), attention_mask=np.ones((1, len(ids)), dtype=np.int64))["logits"]
    out = []
    for pos in where:
        z = logits[0, pos].astype(np.float64)  # (V,)
        p = np.exp(z - z.max())
        p /= p.sum()
        best = np.argsort(-p, kind="stable")[:top_k]
        out.append([(tokenizer.token(int(i)), int(i), float(p[i])) for i in best])
    return out
