"""``zoo generate``: text generation with the KV cache on ONNX Runtime (no torch)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from zoo.app.cli.build_cmds import _parse_ids
from zoo.app.cli.render import field, render
from zoo.spec.errors import InputError
from zoo.spec.families import family


def register(sub) -> None:
    g = sub.add_parser(
        "generate",
        help="generate tokens from an artifact with a KV cache (greedy or sampled)",
        description="Generate from a decoder-only or encoder-decoder artifact on ONNX Runtime. Greedy unless "
        "--temperature, --top-k, --top-p or --sample is given; --temperature 0 is greedy. Stops at an EOS id "
        "(the spec's tokens.eos, or --eos), a --stop string or after --max-new-tokens. --num-beams N is beam search; "
        "defaults come from the artifact's generation_config.json when it has one, and the flags win.",
    )
    g.add_argument("artifact", type=Path, help="artifact folder (from zoo build)")
    g.add_argument("--ids", action="append", metavar="1,2,3", help="prompt token ids (repeat for a batch)")
    g.add_argument("--text", action="append", help="prompt text (repeat for a batch), for artifacts that carry a tokenizer")
    g.add_argument("--decoder-ids", action="append", metavar="0", help="encoder-decoder: decoder prefix per prompt (default: tokens.decoder_start)")
    g.add_argument("--json", action="store_true", help="print the tokens and timings as JSON")
    g.add_argument("--chat", metavar="MESSAGE", help="one chat turn: MESSAGE as the user's, through the artifact's chat template")
    g.add_argument("--system", help="--chat: a system message before it")
    g.add_argument("--template", type=Path, metavar="FILE", help="--chat: a Jinja chat template in place of the artifact's")
    g.add_argument("--show-special", action="store_true", help="print special tokens (end of turn, ...) in the text")
    add_decoding_flags(g)
    g.set_defaults(func=cmd_generate)


def add_decoding_flags(g) -> None:
    """The flags `zoo generate` and `zoo chat` share: how tokens are picked and where it runs."""
    g.add_argument("--max-new-tokens", type=int, help="most tokens to generate per prompt (default: generation_config.json's, else 32)")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy (implied by the three options below)")
    g.add_argument("--temperature", type=float, help="divide the logits by T before sampling (0: greedy)")
    g.add_argument("--top-k", type=int, help="sample among the K most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, help="sample among the most likely tokens whose probabilities sum to P, in (0, 1]")
    g.add_argument("--seed", type=int, help="seed of the sampler: the same seed gives the same tokens")
    g.add_argument("--eos", metavar="ID[,ID]", help="ids that end a sequence, any of them (default: generation_config.json's, else the spec's tokens.eos); 'none' never stops early")
    _control_flags(g)
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="execution provider (default: CUDA if available)")
    g.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own choice)")
    g.add_argument(
        "--io-binding",
        default="auto",
        choices=("auto", "on", "off"),
        help="keep the cache in ONNX Runtime's memory between steps (auto: on for CUDA)",
    )
    g.add_argument(
        "--strict", action="store_true",
        help="refuse to run when attention or matmul nodes fell back to CPU on a CUDA session (default: warn)",
    )


def _control_flags(g) -> None:
    """Beam search and the logits processors (transformers' meaning; defaults from the
    artifact's generation_config.json where it has one)."""
    g.add_argument("--num-beams", type=int, help="beam search with N beams (1: greedy or sampled)")
    g.add_argument("--length-penalty", type=float, help="beam score = sum(log p) / new_length ** P (default 1; > 0 favours longer)")
    g.add_argument(
        "--early-stopping", choices=("true", "false", "never"),
        help="beam search: stop a row once num_beams hypotheses are finished (true), when no running beam can beat them (false, default), or 'never'",
    )
    g.add_argument("--repetition-penalty", type=float, help="divide the scores of tokens already in the sequence by P (> 0; 1: off)")
    g.add_argument("--no-repeat-ngram-size", type=int, help="never repeat an n-gram of this size (0: off)")
    g.add_argument("--min-new-tokens", type=int, help="no EOS before this many new tokens")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop a row when its text reaches TEXT (repeatable; needs the artifact's tokenizer)")


def _hf_defaults(session):
    """The artifact's generation_config.json as a dict, or None."""
    return session.artifact.usage.generation_config


def _eos(text: str | None):
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    return tuple(_parse_ids([text], "--eos")[0])


def open_generator(args: argparse.Namespace):
    """The Generator of the session flags (--device, --threads, --io-binding, --strict)."""
    from runtime.generate import Generator
    from runtime.session import Session

    if args.threads < 0:
        raise InputError("--threads must be >= 0")
    io_binding = None if args.io_binding == "auto" else args.io_binding == "on"
    session = Session(args.artifact, device=args.device, threads=args.threads or None, strict=args.strict)
    return Generator(session, io_binding=io_binding)


def cmd_generate(args: argparse.Namespace) -> int:
    config = _config(args)  # the flags' own values, checked before the artifact is loaded
    if args.chat is not None:
        from zoo.app.cli.chat_cmd import one_turn

        return one_turn(args, config)
    if args.system or args.template:
        raise InputError("--system and --template go with --chat")
    gen = open_generator(args)
    config = _config(args, _hf_defaults(gen.session))
    prompts, decoder_prompts, tokenizer = _prompts(args, gen.session)
    steps = gen.stream(prompts, config, decoder_prompts=decoder_prompts)  # checks the prompts before anything is printed
    if len(prompts) == 1 and not args.json:
        _stream_row(steps, prompts[0], tokenizer, args.show_special)
    else:
        for _ in steps:
            pass
    result = gen.last
    if args.json:
        render({"tokens": result.tokens, **result.summary(), "threads": args.threads or None}, as_json=True)
        return 0
    if len(prompts) > 1:
        render([line for i, (p, t) in enumerate(zip(prompts, result.tokens)) for line in _row(i, p, t, tokenizer, args.show_special)], as_json=False)
    show_figures(args, gen, result, config, len(prompts))
    return 0


def show_figures(args, gen, result, config, rows: int) -> None:
    figures = {"result": result, "config": config, "io_binding": gen.io_binding, "threads": args.threads or os.cpu_count(), "rows": rows}
    render(figures, as_json=False, view=_figures_view, file=sys.stderr)  # stdout carries the text


def _stream_row(steps, prompt, tokenizer, show_special: bool) -> None:
    """Print the prompt, then the new tokens as they come after '->': text on a line of its
    own, decoded as whole characters (runtime.text); ids on the prompt's line."""
    from runtime.text import TextStream

    print(f"[0] {_prompt(prompt, tokenizer)}" + ("\n -> " if tokenizer else " ->"), end="", flush=True)
    text = TextStream(tokenizer, skip_special_tokens=not show_special) if tokenizer else None
    for step in steps:  # one row: the stream ends when it finishes
        token = int(step.tokens[0])
        print(text.push(token) if text else f" {token}", end="", flush=True)
    print(text.flush() if text else "")


def _row(i: int, prompt, tokens, tokenizer, show_special: bool) -> list[str]:
    if tokenizer is None:
        return [f"[{i}] {_prompt(prompt, tokenizer)} ->" + "".join(f" {t}" for t in tokens)]
    return [f"[{i}] {_prompt(prompt, tokenizer)}", " -> " + tokenizer.decode(tokens, skip_special_tokens=not show_special)]


def _config(args: argparse.Namespace, defaults=None):
    """The GenerationConfig of generation_config.json's ``defaults`` (a dict or None) and
    the flags given, which win; any sampling flag turns sampling on."""
    from runtime.sampling import GenerationConfig

    sampled = args.sample or any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    early = None if args.early_stopping is None else {"true": True, "false": False}.get(args.early_stopping, "never")
    return GenerationConfig.from_hf(
        defaults,
        max_new_tokens=args.max_new_tokens,
        sample=True if sampled else None,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        eos=_eos(args.eos),
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        early_stopping=early,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        min_new_tokens=args.min_new_tokens,
        stop=tuple(args.stop) if args.stop else None,
    )


def _prompts(args: argparse.Namespace, session):
    """(prompts, decoder prompts or None, tokenizer or None) from --text / --ids / --decoder-ids."""
    tokenizer = None
    if args.text:
        from runtime.tokenizer import Tokenizer

        if args.ids:
            raise InputError("give --text or --ids, not both")
        tokenizer = Tokenizer(session.artifact)
        prompts = [tokenizer.encode(t) for t in args.text]
    elif args.ids:
        prompts = _parse_ids(args.ids, "--ids")
    else:
        raise InputError("give a prompt: --ids 1,2,3 (or --text, for an artifact with a tokenizer)")
    decoder_prompts = _parse_ids(args.decoder_ids, "--decoder-ids") if args.decoder_ids else None
    if decoder_prompts is not None and not family(session.family).crossed:
        raise InputError("--decoder-ids is for encoder-decoder artifacts")
    return prompts, decoder_prompts, tokenizer


def _figures_view(f: dict) -> list[str]:
    """Provider, token count and timing (printed on stderr: stdout carries the tokens)."""
    result, config = f["result"], f["config"]
    mode = "sampled" + (f", seed {config.seed}" if config.seed is not None else ", no seed") if not config.greedy else "greedy"
    mode = f"beam search, {config.num_beams} beams" if config.num_beams > 1 else mode
    provider = f"{result.provider}, io binding {'on' if f['io_binding'] else 'off'}" + (f", {f['threads']} threads" if "CPU" in result.provider else "")
    reasons = ", ".join(sorted(set(result.finish_reasons)))
    rate = f"{result.decode_tokens_per_s:.1f} tokens/s" if result.step_seconds else "n/a (one step)"
    batch = f", batch throughput {result.throughput:.1f} tokens/s" if f["rows"] > 1 and result.step_seconds else ""
    return [
        field("provider", provider),
        field("tokens", f"{sum(len(t) for t in result.tokens)} new ({mode}; stopped by {reasons})"),
        field("timing", f"time to first token {result.time_to_first_token_s * 1e3:.1f} ms, decode {rate}{batch}"),
    ]


def _prompt(ids: list[int], tokenizer) -> str:
    if tokenizer is not None:
        return repr(tokenizer.decode(ids, skip_special_tokens=False))
    return " ".join(str(t) for t in ids)
