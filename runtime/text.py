"""Token ids to text as they come (streaming), never printing half a character.

Decoding one token at a time is wrong for most tokenizers: a byte-level BPE or a
byte-fallback piece may hold part of a UTF-8 character, and SentencePiece-style
decoders drop the space that starts a piece when it starts the decoded text. So the
stream keeps the ids, decodes a short window that starts a little before the new
tokens, and emits only what that window adds to the text it decoded before; while the
window ends in U+FFFD (an incomplete character) nothing is emitted. At the end,
``flush`` gives what is left. The emitted pieces join to ``decode(all ids)``.
"""

from __future__ import annotations

from typing import Iterable


class TextStream:
    """``push(id) -> new text`` (possibly ""); ``flush() -> the rest``. ``tokenizer`` has
    ``decode(ids, skip_special_tokens=...)`` (runtime.tokenizer.Tokenizer)."""

    def __init__(self, tokenizer, *, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.start = 0  # the window decoded for context starts here
        self.done = 0  # text of ids[start:done] was emitted

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.start : self.done])
        now = self._decode(self.ids[self.start :])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""  # nothing new yet, or a character still incomplete
        self.start, self.done = self.done, len(self.ids)
        return now[len(before):]

    def extend(self, ids: Iterable[int]) -> str:
        return "".join(self.push(i) for i in ids)

    def flush(self) -> str:
        """The text not emitted yet (an incomplete character comes out as U+FFFD)."""
        before = self._decode(self.ids[self.start : self.done])
        now = self._decode(self.ids[self.start :])
        self.start = self.done = len(self.ids)
        return now[len(before):] if len(now) > len(before) else ""

    @property
    def text(self) -> str:
        return self._decode(self.ids)
