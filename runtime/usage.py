"""The usage files an artifact carries (zoo.spec.usage): tokenizer_config.json, the chat
template, generation_config.json and the sentence-transformers pooling, parsed on first
use. ``Artifact.usage`` is one of these; each property is None when the artifact does
not carry that file. The files were hashed into the manifest by the build (and checked
when the artifact was loaded with verify); their content is still a checkpoint's, so it
is parsed defensively: a refusal is one ArtifactError line naming the file.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Mapping, Optional

from zoo.spec.errors import ArtifactError
from zoo.spec.usage import USAGE_FILES

# tokenizer_config.json's named special tokens, as transformers passes them to a chat template
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def json_object(raw: bytes, path: Path) -> dict:
    """``raw`` parsed as a JSON object; ArtifactError naming ``path`` otherwise."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{path}: not readable JSON ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: a JSON {type(value).__name__}, not an object")
    return value


class Usage:
    """``files``: the manifest's usage entry (role -> file name inside ``folder``)."""

    def __init__(self, folder: Path, files: Mapping[str, str]):
        self.folder, self.files = Path(folder), dict(files)

    def path(self, role: str) -> Optional[Path]:
        name = self.files.get(role)
        return None if name is None else self.folder / name

    def _bytes(self, role: str) -> Optional[bytes]:
        path = self.path(role)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"{path}: cannot read it ({e.strerror or e})") from None

    def _json(self, role: str) -> Optional[dict]:
        raw = self._bytes(role)
        return None if raw is None else json_object(raw, self.path(role))

    @cached_property
    def tokenizer_config(self) -> Optional[dict]:
        return self._json("tokenizer_config")

    @cached_property
    def generation_config(self) -> Optional[dict]:
        return self._json("generation_config")

    @cached_property
    def pooling(self) -> Optional[dict]:
        return self._json("pooling")

    @cached_property
    def chat_template(self) -> Optional[str]:
        raw = self._bytes("chat_template")
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ArtifactError(f"{self.path('chat_template')}: not UTF-8 text (byte {e.start})") from None

    def special_tokens(self) -> dict[str, str]:
        """The named special tokens of tokenizer_config.json (a string, or an AddedToken
        object's "content"), as transformers' ``special_tokens_map``: what a chat
        template sees as bos_token, eos_token, ..."""
        config = self.tokenizer_config or {}
        out = {}
        for name in SPECIAL_TOKENS:
            value = config.get(name)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                out[name] = value
        return out


def read_usage(raw, path: Path) -> dict[str, str]:
    """The manifest's ``usage`` entry checked: an object of known roles -> file names."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: usage is a {type(raw).__name__}, not an object")
    for role, name in raw.items():
        if role not in USAGE_FILES:
            raise ArtifactError(f"{path}: usage has an unknown role {role!r}; known: {', '.join(USAGE_FILES)}")
        if not isinstance(name, str) or not name:
            raise ArtifactError(f"{path}: usage[{role!r}]: file name {name!r} is not a non-empty string")
    return dict(raw)
