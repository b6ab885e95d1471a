"""Text in and out, for artifacts that carry a tokenizer.json. The ``tokenizers``
package is optional (``pip install 'transformer-zoo[tokenizer]'``): without it the
runtime still runs token ids, and asking for text says what to install."""

from __future__ import annotations

from runtime.artifact import Artifact
from zoo.errors import InputError


class Tokenizer:
    def __init__(self, artifact: Artifact):
        name = artifact.manifest.get("tokenizer")
        if not name:
            raise InputError(f"{artifact.folder}: the artifact carries no tokenizer; pass token ids (--ids)")
        try:
            import tokenizers
        except ImportError:
            raise InputError(
                "text input needs the 'tokenizers' package: pip install 'transformer-zoo[tokenizer]' (or pass token ids with --ids)"
            ) from None
        self._tok = tokenizers.Tokenizer.from_file(str(artifact.folder / name))

    def encode(self, text: str) -> list[int]:
        ids = self._tok.encode(text).ids
        if not ids:
            raise InputError(f"text {text!r} encodes to no tokens")
        return ids

    def token(self, token_id: int) -> str:
        return self._tok.decode([token_id], skip_special_tokens=False)
