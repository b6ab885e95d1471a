"""Chat: templates rendered in jinja2's sandbox equal transformers' apply_chat_template
(ChatML, Llama 3, Gemma, a system block), the usage files travel from a checkpoint
folder through `zoo import` and `zoo build` into the artifact (hashed in the manifest),
replies equal transformers' generate on the rendered prompt, text streams as whole
characters, and hostile templates or conversations are refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("jinja2")
pytest.importorskip("tokenizers")

from runtime import load  # noqa: E402
from runtime.chat import compile_template, render  # noqa: E402
from runtime.generate import GenerationConfig, Generator  # noqa: E402
from runtime.tokenizer import Tokenizer  # noqa: E402
from runtime.usage import Usage  # noqa: E402
from tests.chat_fixtures import MESSAGES, SYSTEM_MESSAGES, TEMPLATES, byte_level_tokenizer, chat_checkpoint, hf_tokenizer  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from zoo.app import usage_files  # noqa: E402
from zoo.spec.errors import ArtifactError, InputError  # noqa: E402


def zoo(*args, stdin: str | None = None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, env=env, input=stdin)


@pytest.fixture(scope="module")
def chat_artifact(tmp_path_factory):
    """(artifact folder, transformers model, tokenizer): imported and built with the CLI."""
    root = tmp_path_factory.mktemp("chat")
    model, tokenizer = chat_checkpoint(root / "hf", max_positions=128)
    assert zoo("import", root / "hf", "-o", root / "imp").returncode == 0
    built = zoo("build", root / "imp", "-o", root / "art")
    assert built.returncode == 0, built.stderr
    return root / "art", model, tokenizer


def carried(folder, tmp_path) -> Usage:
    """The usage files of ``folder`` as an artifact carries them."""
    out = tmp_path / "carried"
    out.mkdir()
    usage = usage_files.collect(folder)
    usage_files.write(usage, out)
    from zoo.spec.usage import USAGE_FILES

    return Usage(out, {role: USAGE_FILES[role].file for role in usage})


@pytest.mark.parametrize("style", sorted(TEMPLATES))
def test_rendering_equals_apply_chat_template(style, tmp_path):
    tokenizer = hf_tokenizer(TEMPLATES[style])
    tokenizer.save_pretrained(tmp_path / "hf")
    usage = carried(tmp_path / "hf", tmp_path)
    assert usage.chat_template == TEMPLATES[style]
    template = compile_template(usage.chat_template, "t")
    ours = Tokenizer.from_file(tmp_path / "hf" / "tokenizer.json")
    conversations = MESSAGES + ([SYSTEM_MESSAGES] if style != "gemma" else [])
    for messages in conversations:
        want = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        got = render(template, messages, "t", **usage.special_tokens())
        assert got == want, (style, got, want)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ours.encode(got, add_special_tokens=False) == list(ids)
    if style == "gemma":  # the template's own refusal, as one line naming the template line
        with pytest.raises(InputError, match=r"t:1: the chat template refused this conversation: System role not supported"):
            render(template, SYSTEM_MESSAGES, "t", **usage.special_tokens())


def test_template_in_tokenizer_config_and_named_templates(tmp_path):
    """transformers' order: chat_template.jinja, else tokenizer_config.json's (a string, or
    the template named "default" of a list)."""
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": [{"name": "tool_use", "template": "x"},
                                                                                {"name": "default", "template": "{{ 'd' }}"}]}))
    assert usage_files.collect(folder)["chat_template"] == b"{{ 'd' }}"
    (folder / "chat_template.jinja").write_text("{{ 'file' }}")
    assert usage_files.collect(folder)["chat_template"] == b"{{ 'file' }}"
    (folder / "chat_template.jinja").write_text("{% for %}")
    with pytest.raises(ArtifactError, match=r"chat_template.jinja:1: not a chat template jinja2 can read"):
        usage_files.collect(folder)


def test_usage_files_are_hashed_in_the_manifest(chat_artifact):
    folder, model, _ = chat_artifact
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["usage"] == {"tokenizer_config": "tokenizer_config.json", "chat_template": "chat_template.jinja",
                                 "generation_config": "generation_config.json"}
    assert all(name in manifest["files"] for name in manifest["usage"].values())
    usage = load(folder).artifact.usage
    assert usage.generation_config["eos_token_id"] == model.generation_config.eos_token_id
    assert usage.special_tokens()["eos_token"] == "<|im_end|>"


def test_chat_reply_equals_transformers_generate(chat_artifact):
    import torch

    folder, model, tokenizer = chat_artifact
    gen = Generator(folder)
    for messages in MESSAGES:
        streamed = []
        reply = gen.chat(messages, GenerationConfig(max_new_tokens=16), on_text=streamed.append)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        eos = [2, tokenizer.convert_tokens_to_ids("<|im_end|>")]
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=16, do_sample=False, eos_token_id=eos, pad_token_id=2)
        want = out[0, ids["input_ids"].shape[1]:].tolist()
        assert reply.tokens == want
        assert reply.text == "".join(streamed) == tokenizer.decode(want, skip_special_tokens=True)
        assert reply.prompt_tokens == ids["input_ids"].shape[1]


def test_text_stream_never_prints_half_a_character(tmp_path):
    """A byte-level BPE and a byte-fallback (SentencePiece-style) tokenizer: pushing the
    ids of multi-byte text one at a time never emits U+FFFD and joins to the whole text."""
    from runtime.text import TextStream

    text = "Café crème — 日本語のテキスト 😀 👍🏽 Ελληνικά"
    for tok in (byte_level_tokenizer(), byte_fallback_tokenizer()):
        tok.save(str(tmp_path / "t.json"))
        ours = Tokenizer.from_file(tmp_path / "t.json")
        ids = tok.encode(text).ids
        stream = TextStream(ours)
        pieces = [stream.push(i) for i in ids] + [stream.flush()]
        assert not any("\ufffd" in p for p in pieces)
        assert "".join(pieces) == tok.decode(ids) and text in "".join(pieces)
        assert sum(1 for p in pieces if p) > 5  # it streams, not only at the end


def byte_fallback_tokenizer():
    """A Llama-2-style tokenizer: BPE with <0xXX> byte pieces, Metaspace, byte-fallback decoding."""
    import tokenizers
    from tokenizers import decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ("▁", "▁C", "af", "▁cr", "è", "me", "▁—", "▁E", "λ", "▁日"):
        vocab.setdefault(piece, len(vocab))
    tok = tokenizers.Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok


def test_special_tokens_hidden_unless_asked(chat_artifact):
    from runtime.text import TextStream

    folder, _, tokenizer = chat_artifact
    ours = Tokenizer(load(folder).artifact)
    ids = tokenizer.encode("Hello<|im_end|>", add_special_tokens=False)
    assert TextStream(ours).extend(ids) == "Hello"
    shown = TextStream(ours, skip_special_tokens=False)
    assert shown.extend(ids) + shown.flush() == "Hello<|im_end|>"


def test_cli_one_shot_and_interactive_chat(chat_artifact, tmp_path):
    folder, _, _ = chat_artifact
    reply = Generator(folder).chat([{"role": "user", "content": "What is the capital of France?"}], GenerationConfig(max_new_tokens=8))
    one = zoo("generate", folder, "--chat", "What is the capital of France?", "--max-new-tokens", 8)
    assert one.returncode == 0, one.stderr
    assert one.stdout == reply.text + "\n"  # the answer alone: the question is the user's own
    talk = zoo("chat", folder, "--system", "You are terse.", "--max-new-tokens", 6, stdin="Hello\nCafé? 日本\n")
    assert talk.returncode == 0, talk.stderr
    assert len(talk.stdout.splitlines()) == 2 and "Traceback" not in talk.stderr
    quiet = zoo("chat", folder, stdin="")  # Ctrl-D at the first prompt
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_ctrl_c_leaves_the_chat_cleanly(chat_artifact, monkeypatch, capsys):
    import builtins

    from zoo.app.cli import main

    def interrupt(prompt=""):
        raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "input", interrupt)
    assert main(["chat", str(chat_artifact[0])]) == 0
    assert "Traceback" not in capsys.readouterr().err


HOSTILE = {
    "class": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler": "ok\n{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
    "joiner": "{{ joiner.__init__.__globals__ }}",
    "namespace": "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "format": "{{ '{0.__class__}'.format(messages) }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_templates_are_refused(name, chat_artifact, tmp_path):
    path = tmp_path / f"{name}.jinja"
    path.write_text(HOSTILE[name])
    proc = zoo("generate", chat_artifact[0], "--chat", "hi", "--template", path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:" in lines[0] and ("sandbox" in lines[0] or "refused" in lines[0]), lines
    assert "pwned" not in proc.stdout


def test_bad_chats_are_refused_in_one_line(chat_artifact, tiny_artifacts):
    folder = chat_artifact[0]
    long = zoo("generate", folder, "--chat", "hello there " * 80)
    assert long.returncode == 2 and "max_seq_len is 128" in long.stderr and "tokens with the generation prompt" in long.stderr
    assert len(long.stderr.strip().splitlines()) == 1
    none = zoo("generate", tiny_artifacts["gpt2-tiny"], "--chat", "hi")
    assert none.returncode == 2 and "no chat template; pass one with --template FILE" in none.stderr
    empty = zoo("generate", folder, "--chat", "  ")
    assert empty.returncode == 2 and "empty message" in empty.stderr
    with pytest.raises(InputError, match="message 0 has no 'role'"):
        Generator(folder).chat([{"content": "hi"}])


@pytest.mark.parametrize("name, content, message", [
    ("generation_config.json", "[1, 2]", "a JSON list, not an object"),
    ("tokenizer_config.json", '{"chat_template": 7}', "chat_template is a int, not a string"),
    ("chat_template.jinja", "{% if %}", "chat_template.jinja:1: not a chat template jinja2 can read"),
    ("chat_template.jinja", b"\xff\xfe{{ x }}", "not UTF-8 text"),
])
def test_bad_usage_files_are_refused_before_anything_is_written(name, content, message, chat_artifact, tmp_path):
    import shutil

    hf = tmp_path / "hf"
    shutil.copytree(chat_artifact[0].parent / "hf", hf)
    (hf / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if name == "tokenizer_config.json":  # the template of tokenizer_config.json counts only without chat_template.jinja
        (hf / "chat_template.jinja").unlink()
    proc = zoo("import", hf, "-o", tmp_path / "imp")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "imp").exists()
