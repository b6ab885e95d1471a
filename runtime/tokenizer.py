"""Text in and out, for artifacts that carry a tokenizer.json. The ``tokenizers``
package is optional (``pip install 'transformer-zoo[tokenizer]'``): without it the
runtime still runs token ids, and asking for text says what to install."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from runtime.artifact import Artifact
from zoo.spec.errors import ArtifactError, InputError

MAX_TOKENIZER_BYTES = 1 << 30  # the largest real tokenizer.json files are a few tens of MB


def check_tokenizer(path: str | Path) -> None:
    """Refuse (ArtifactError, exit 2, one line naming ``path``) a tokenizer.json the
    ``tokenizers`` package cannot load: garbage, JSON that is not a tokenizer, a truncated
    file. Builds and imports call it before carrying the file into an artifact."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such tokenizer file")
    size = path.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        raise ArtifactError(f"{path}: {size:,} bytes, more than a tokenizer.json may have ({MAX_TOKENIZER_BYTES >> 20} MiB); refusing it")
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    if tokenizers is not None:
        try:
            tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for every bad file
            raise ArtifactError(f"{path}: not a tokenizer the 'tokenizers' package can load ({_first_line(e)}); refusing to carry it") from None
        return
    # Without the tokenizers package (it is optional) the file cannot be fully checked here:
    # refuse at least what is not a JSON object with a "model" key, as every tokenizer.json has.
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{path}: not a tokenizer.json (unreadable JSON: {_first_line(e)}); refusing to carry it") from None
    if not isinstance(value, dict) or "model" not in value:
        raise ArtifactError(f"{path}: not a tokenizer.json (not a JSON object with a 'model' key); refusing to carry it")


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


class Tokenizer:
    """The artifact's tokenizer.json (``Tokenizer.from_file(path)`` for any other)."""

    def __init__(self, artifact: Artifact):
        name = artifact.info.tokenizer
        if not name:
            raise InputError(f"{artifact.folder}: the artifact carries no tokenizer; pass token ids (--ids)")
        self._load(artifact.folder / name)

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        self = cls.__new__(cls)
        self._load(Path(path))
        return self

    def _load(self, path: Path) -> None:
        try:
            import tokenizers
        except ImportError:
            raise InputError(
                "text input needs the 'tokenizers' package: pip install 'transformer-zoo[tokenizer]' (or pass token ids with --ids)"
            ) from None
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for every bad file
            raise ArtifactError(f"{path}: the 'tokenizers' package cannot load it ({_first_line(e)})") from None

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """``add_special_tokens=False`` for text that already has them (a rendered chat)."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        if not ids:
            raise InputError(f"text {text!r} encodes to no tokens")
        return ids

    def token(self, token_id: int) -> str:
        return self._tok.decode([token_id], skip_special_tokens=False)

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> Optional[int]:
        """The id of a token of the vocabulary or an added token (None when unknown)."""
        return self._tok.token_to_id(token)

    def encode_batch(self, texts: list[str], *, max_length: int | None = None) -> list[list[int]]:
        """The ids of each text with the tokenizer's special tokens, each row cut to at most
        ``max_length`` ids (special tokens kept, as transformers' ``truncation=True``); no padding."""
        if max_length:
            self._tok.enable_truncation(max_length)
        else:
            self._tok.no_truncation()
        self._tok.no_padding()
        rows = [e.ids for e in self._tok.encode_batch(list(texts))]
        for text, ids in zip(texts, rows):
            if not ids:
                raise InputError(f"text {text!r} encodes to no tokens")
        return rows

    def special_ids(self) -> dict[str, int]:
        """The special added tokens by text ('[CLS]', '[MASK]', '<mask>', ...) -> id."""
        return {t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
