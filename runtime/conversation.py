"""A chat over an artifact: the conversation rendered by its chat template (runtime.chat),
encoded without adding special tokens again (the template writes them, as
``apply_chat_template(tokenize=True)`` encodes), generated with the KV cache, the reply
decoded as it comes (runtime.text) with special tokens hidden unless asked for.

The reply ends at an end-of-sequence id: the generation settings' (the artifact's
generation_config.json or tokens.eos) and the tokenizer's eos_token (a chat model's
end-of-turn marker, e.g. ``<|im_end|>``), as chat front ends stop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

from runtime.chat import check_messages, compile_template, render
from runtime.tokenizer import Tokenizer
from runtime.text import TextStream
from zoo.spec.errors import InputError


@dataclass
class ChatReply:
    text: str  # the reply, special tokens hidden (unless show_special)
    tokens: list[int]  # its token ids, the end-of-turn id included when hit
    finish_reason: str  # "eos", "length", "max_seq_len", "stop"
    prompt_tokens: int
    generation: object  # runtime.generate.Generation: timings


class Chat:
    """``Chat(generator).reply(messages)`` answers a conversation; ``say(text)`` keeps the
    turns itself (multi-turn). ``template``: a Jinja chat template's text, in place of the
    artifact's (``where`` names it in messages); ``system``: a system message to start with."""

    def __init__(self, generator, *, template: Optional[str] = None, where: str = "--template", system: Optional[str] = None):
        self.generator = generator
        artifact = generator.session.artifact
        usage = artifact.usage
        if template is None:
            template, where = usage.chat_template, str(usage.path("chat_template"))
        if template is None:
            raise InputError(
                f"{artifact.folder}: the artifact carries no chat template; pass one with --template FILE "
                "(a Jinja chat template, such as a model's chat_template.jinja), or build from a folder that has one"
            )
        self.where = where
        self.template = compile_template(template, where)
        self.tokenizer = Tokenizer(artifact)
        self.special = usage.special_tokens()
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []

    def prompt(self, messages) -> list[int]:
        """The token ids of ``messages`` with the generation prompt; refused (with the numbers)
        when they leave no room for a reply within max_seq_len."""
        text = render(self.template, check_messages(messages), self.where, add_generation_prompt=True, **self.special)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        limit = self.generator.max_len
        if len(ids) >= limit:
            raise InputError(
                f"the chat is {len(ids)} tokens with the generation prompt and max_seq_len is {limit}: "
                "no room for a reply; start a new chat or shorten it"
            )
        return ids

    def _config(self, config):
        """``config`` with the tokenizer's eos_token added to its end-of-sequence ids."""
        from runtime.sampling import GenerationConfig

        config = config if config is not None else GenerationConfig()
        eos = list(config.eos if config.eos is not None else self.generator.tokens.eos)
        turn = self.special.get("eos_token")
        turn_id = self.tokenizer.token_id(turn) if turn else None
        if turn_id is not None and turn_id not in eos and 0 <= turn_id < self.generator.vocab:
            eos.append(turn_id)
        return dataclasses.replace(config, eos=tuple(eos))

    def reply(self, messages, config=None, *, on_text: Optional[Callable[[str], None]] = None, show_special: bool = False) -> ChatReply:
        """Generate the assistant's answer to ``messages``; ``on_text`` receives each piece of
        text as soon as it is whole (streaming)."""
        ids = self.prompt(messages)
        config = self._config(config)
        stream = TextStream(self.tokenizer, skip_special_tokens=not show_special)
        pieces = []
        emit = on_text or (lambda piece: None)
        for step in self.generator.stream([ids], config):  # one row: the stream ends when it finishes
            piece = stream.push(int(step.tokens[0]))
            if piece:
                pieces.append(piece)
                emit(piece)
        if rest := stream.flush():
            pieces.append(rest)
            emit(rest)
        result = self.generator.last
        return ChatReply("".join(pieces), result.tokens[0], result.finish_reasons[0], len(ids), result)

    def say(self, text: str, config=None, **kw) -> ChatReply:
        """One user turn: the reply is generated from the whole conversation and kept in it."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("an empty message; type some text")
        answer = self.reply([*self.messages, {"role": "user", "content": text}], config, **kw)
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer.text}]
        return answer
