"""Chat against plain generation: what the chat layer (template, encoding, streamed text
decoding) costs per token, same artifact, same prompt, same run.

A Llama of SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV heads, FFN 1536;
random weights, the byte-level test tokenizer's 400-token vocabulary so the embedding
is small) with a ChatML template is saved as a Hugging Face folder, imported and built
(tests/chat_fixtures.py). Then, round-robin over ``--reps``, greedy, 64 new tokens:

- ``generate``: Generator.generate on the rendered prompt's ids (ids out, no text);
- ``chat``: Generator.chat on the messages: render, encode, generate, text streamed
  through runtime.text.TextStream to a callback.

Both stop at the same ids (the chat's end-of-turn ids given to both), so they produce the
same tokens. Prints a table (medians: time to first token, decode tokens/s, ratio) and
writes JSON (default benchmarks/results/chat.json). Target: chat decode within 5 % of generate.

    python benchmarks/chat.py                  # ~3 min on 2 cores
    python benchmarks/chat.py --layers 4 --reps 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_artifact(work: Path, layers: int) -> Path:
    import torch
    import transformers

    from tests.chat_fixtures import CHATML, hf_tokenizer
    from zoo.app import usage_files
    from zoo.app.build import build_artifact
    from compiler.importers import import_folder

    tokenizer = hf_tokenizer(CHATML)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=576, num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
        intermediate_size=1536, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(work / "hf")
    tokenizer.save_pretrained(work / "hf")
    imported = import_folder(work / "hf")
    folder, _, _ = build_artifact(imported.spec, work / "art", weights=imported.state, tokenizer=imported.tokenizer,
                                  usage=usage_files.collect(work / "hf"))
    return folder


def measure(folder: Path, reps: int, new_tokens: int, threads: int) -> dict:
    from runtime.conversation import Chat
    from runtime.generate import GenerationConfig, Generator

    gen = Generator(folder, threads=threads)
    chat = Chat(gen)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in a few words, please."}]
    config = chat._config(GenerationConfig(max_new_tokens=new_tokens))  # the chat's end-of-turn ids, for both
    ids = chat.prompt(messages)
    runs = {"generate": [], "chat": []}
    tokens = {}
    for _ in range(reps + 1):  # the first round warms up and is dropped
        plain = gen.generate([ids], config)
        pieces: list[str] = []
        reply = chat.reply(messages, config, on_text=pieces.append)
        tokens = {"generate": plain.tokens[0], "chat": reply.tokens}
        runs["generate"].append((plain.time_to_first_token_s, plain.decode_tokens_per_s))
        runs["chat"].append((reply.generation.time_to_first_token_s, reply.generation.decode_tokens_per_s))
    assert tokens["generate"] == tokens["chat"], "chat and generate produced different tokens"
    out = {}
    for name, rows in runs.items():
        rows = rows[1:]
        out[name] = {"ttft_ms": statistics.median(r[0] for r in rows) * 1e3, "decode_tokens_per_s": statistics.median(r[1] for r in rows)}
    out["tokens"] = len(tokens["chat"])
    out["prompt_tokens"] = len(ids)
    out["decode_ratio"] = out["chat"]["decode_tokens_per_s"] / out["generate"]["decode_tokens_per_s"]
    return out


def table(r: dict) -> str:
    lines = [f"{'method':<10} {'ttft ms':>9} {'decode tok/s':>13} {'vs generate':>12}", "-" * 47]
    for name in ("generate", "chat"):
        m = r[name]
        ratio = m["decode_tokens_per_s"] / r["generate"]["decode_tokens_per_s"]
        lines.append(f"{name:<10} {m['ttft_ms']:>9.2f} {m['decode_tokens_per_s']:>13.1f} {ratio:>11.3f}x")
    lines.append(f"{r['tokens']} new tokens per run, prompt {r['prompt_tokens']} tokens; target: chat decode >= 0.95x generate")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "chat.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_artifact(Path(tmp), args.layers)
        result = measure(folder, args.reps, args.new_tokens, args.threads)
    result["settings"] = {"layers": args.layers, "reps": args.reps, "new_tokens": args.new_tokens, "threads": args.threads,
                          "machine": platform.platform(), "python": platform.python_version()}
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0 if result["decode_ratio"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
