"""``zoo chat`` (interactive, multi-turn) and ``zoo generate --chat`` (one turn): the
conversation goes through the artifact's chat template (runtime.conversation), the reply
is printed as it is generated, whole characters only, special tokens hidden."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.app.cli.generate_cmd import _config, _hf_defaults, add_decoding_flags, open_generator, show_figures
from zoo.spec.errors import InputError


def register(sub) -> None:
    c = sub.add_parser(
        "chat",
        help="chat with an artifact through its chat template (interactive, streamed)",
        description="A multi-turn chat on ONNX Runtime: each line you type is a user turn; the reply streams "
        "as it is generated. The conversation is rendered by the artifact's chat template (or --template FILE) "
        "in a sandbox. Ctrl-D or Ctrl-C (or /exit) leaves; /reset starts a new conversation.",
    )
    c.add_argument("artifact", type=Path, help="artifact folder (from zoo build), with a tokenizer")
    c.add_argument("--system", help="a system message to start the conversation with")
    c.add_argument("--template", type=Path, metavar="FILE", help="a Jinja chat template in place of the artifact's")
    c.add_argument("--show-special", action="store_true", help="print special tokens (end of turn, ...) in the replies")
    add_decoding_flags(c)
    c.set_defaults(func=cmd_chat)


def _template(args: argparse.Namespace):
    """(template text or None, where) of --template FILE."""
    if args.template is None:
        return None, None
    from zoo.app.usage_files import read_template

    return read_template(args.template), str(args.template)


def _chat(args: argparse.Namespace):
    from runtime.conversation import Chat

    gen = open_generator(args)
    template, where = _template(args)
    return gen, Chat(gen, template=template, where=where or "--template", system=args.system)


def one_turn(args: argparse.Namespace, config) -> int:
    """``zoo generate ART --chat MESSAGE``: the reply alone on stdout, figures on stderr."""
    if args.ids or args.text or args.decoder_ids:
        raise InputError("--chat is the prompt: give it without --ids, --text or --decoder-ids")
    if not args.chat.strip():
        raise InputError("--chat: an empty message")
    gen, chat = _chat(args)
    config = _config(args, _hf_defaults(gen.session))  # generation_config.json's defaults, the flags winning
    reply = chat.say(args.chat, config, on_text=_print, show_special=args.show_special)
    if args.json:
        from zoo.app.cli.render import render

        print()
        render({"text": reply.text, "tokens": reply.tokens, "prompt_tokens": reply.prompt_tokens, **reply.generation.summary()}, as_json=True)
        return 0
    print()
    show_figures(args, gen, reply.generation, config, 1)
    return 0


def _print(piece: str) -> None:
    print(piece, end="", flush=True)


def cmd_chat(args: argparse.Namespace) -> int:
    _config(args)  # the flags checked before the artifact loads
    gen, chat = _chat(args)
    config = _config(args, _hf_defaults(gen.session))
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {gen.session.artifact.name} ({gen.provider}); Ctrl-D or /exit leaves, /reset starts again", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            chat.messages = chat.messages[:1] if chat.messages[:1] and chat.messages[0]["role"] == "system" else []
            continue
        if not line.strip():
            continue
        try:
            chat.say(line, config, on_text=_print, show_special=args.show_special)
        except KeyboardInterrupt:  # Ctrl-C while a reply streams: leave cleanly
            print(file=sys.stderr)
            return 0
        print(flush=True)
