"""Bad generation inputs and the command line (issue 7, point 4): Generator.generate /
stream, GenerationConfig, left_pad, ``zoo run`` and ``zoo generate`` give an
InputError of one line naming what is wrong (the CLI: ``error: ...``, exit code 2),
never a crash inside ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.generate import GenerationConfig, left_pad
from tests.feeds import GENERATIVE, generators, refused, sessions  # noqa: F401 (fixtures)
from zoo.app.cli import main
from zoo.spec.errors import InputError

# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("name", GENERATIVE)
@pytest.mark.parametrize(
    "prompts, message",
    [
        ([1, 2, 3], "prompt 0 is 1, not a list of token ids; prompts are a list of token-id lists, e.g. [[1, 2, 3]]"),
        ("1 2 3", "prompts must be a list of token-id lists"),
        (np.array([1, 2, 3]), "prompts must be a list of token-id lists"),
        (5, "prompts must be a list of token-id lists"),
        ([], "no prompt given"),
        ([[1], []], "prompt 1 is empty; give at least one token"),
        ([[1, True]], "prompt 0: token True at position 1 is not an integer id"),
        ([[1, 2.5]], "prompt 0: token 2.5 at position 1 is not an integer id"),
        ([["a"]], "prompt 0: strings"),
        ([[1, [2]]], "prompt 0: token [2] at position 1 is not an integer id"),
        ([[1], [2, 512]], "prompt 1: token id 512 is outside the vocabulary [0, 512) (at position 1)"),
        ([[-3]], "prompt 0: token id -3 is outside the vocabulary [0, 512) (at position 0)"),
        ([[1] * 129], "prompt 0 has 129 tokens, more than max_seq_len=128"),
    ],
)
def test_bad_prompts(generators, name, prompts, message):
    refused(lambda: generators[name].generate(prompts, GenerationConfig(max_new_tokens=2)), message)


def test_stream_checks_before_the_first_step(generators):
    with pytest.raises(InputError, match="prompt 0 is empty"):
        generators["gpt2-tiny"].stream([[]])  # not only when iterated


@pytest.mark.parametrize("name", GENERATIVE)
def test_prompts_of_other_integer_types_give_the_same_tokens(generators, name):
    gen, config = generators[name], GenerationConfig(max_new_tokens=3, eos=())
    want = gen.generate([[5, 17, 300], [3, 8, 250]], config).tokens
    assert gen.generate(np.array([[5, 17, 300], [3, 8, 250]], dtype=np.int32), config).tokens == want
    assert gen.generate([np.array([5, 17, 300], dtype=np.uint16), (3.0, 8.0, 250.0)], config).tokens == want


def test_decoder_prompts(generators):
    t5 = generators["t5-tiny"]
    refused(lambda: t5.generate([[1, 2]], GenerationConfig(max_new_tokens=2), decoder_prompts=[[0], [0]]), "2 decoder prompts for 1 prompts")
    refused(lambda: t5.generate([[1, 2]], decoder_prompts=[[600]]), "decoder prompt 0: token id 600 is outside the vocabulary [0, 512)")
    refused(lambda: t5.generate([[1, 2]], decoder_prompts=[[]]), "decoder prompt 0 is empty")
    refused(lambda: t5.generate([[1, 2]], decoder_prompts=[[0] * 129]), "decoder prompt 0 has 129 tokens, more than max_seq_len=128")
    refused(lambda: generators["gpt2-tiny"].generate([[1, 2]], decoder_prompts=[[0]]), "decoder_prompts are for encoder-decoder models")


@pytest.mark.parametrize("name", GENERATIVE)
def test_generation_stops_at_max_seq_len(generators, name):
    gen = generators[name]
    long = list(range(1, 126))
    kw = {"decoder_prompts": [long]} if name == "t5-tiny" else {}
    out = gen.generate([[1, 2, 3]] if kw else [long], GenerationConfig(max_new_tokens=10, eos=()), **kw)
    assert out.finish_reasons == ["max_seq_len"] and len(out.tokens[0]) == 4  # 125 + 4 - 1 cached = 128
    out = gen.generate([[1] * 128] if not kw else [[1]], GenerationConfig(max_new_tokens=10, eos=()), **({"decoder_prompts": [[0] * 128]} if kw else {}))
    assert out.finish_reasons == ["max_seq_len"] and len(out.tokens[0]) == 1


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
        ({"top_p": 1.01}, "top_p must be in (0, 1]"),
        ({"top_p": -0.5}, "top_p must be in (0, 1]"),
        ({"top_p": float("nan")}, "top_p must be in (0, 1], got nan"),
        ({"top_p": "0.5"}, "top_p must be in (0, 1]"),
        ({"temperature": -0.1}, "temperature must be a finite number >= 0 (0 means greedy)"),
        ({"temperature": float("nan")}, "temperature must be"),
        ({"temperature": float("inf")}, "temperature must be"),
        ({"temperature": "1"}, "temperature must be"),
        ({"top_k": -1}, "top_k must be an integer >= 0"),
        ({"top_k": 2.5}, "top_k must be an integer >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0 or None"),
        ({"seed": 1.5}, "seed must be an integer >= 0 or None"),
        ({"eos": "2"}, "eos must be token ids"),
        ({"eos": [1, None]}, "eos must be token ids"),
    ],
)
def test_bad_generation_config(kw, message):
    refused(lambda: GenerationConfig(**kw), message)


def test_config_normalises_eos_and_temperature_zero_is_greedy(generators):
    assert GenerationConfig(eos=7).eos == (7,) and GenerationConfig(eos=[1, np.int64(2)]).eos == (1, 2)
    assert GenerationConfig(sample=True, temperature=0).greedy
    gen = generators["llama-tiny"]
    greedy = gen.generate([[5, 17, 300]], GenerationConfig(max_new_tokens=5, eos=())).tokens
    assert gen.generate([[5, 17, 300]], GenerationConfig(max_new_tokens=5, eos=(), sample=True, temperature=0, seed=3)).tokens == greedy
    refused(lambda: gen.generate([[1]], GenerationConfig(eos=512)), "eos id 512 is outside the vocabulary [0, 512)")
    refused(lambda: gen.generate([[1]], {"max_new_tokens": 2}), "config must be a GenerationConfig, got dict")


def test_left_pad():
    ids, mask = left_pad([np.array([1, 2], dtype=np.int32), [3]], pad=0)
    assert ids.dtype == mask.dtype == np.int64 and ids.tolist() == [[1, 2], [0, 3]] and mask.tolist() == [[1, 1], [0, 1]]
    refused(lambda: left_pad([[1], []]), "row 1 is empty; give at least one token")
    refused(lambda: left_pad([]), "no row given")
    refused(lambda: left_pad([[1, -2]]), "row 0: token id -2 is outside the range of token ids")
    refused(lambda: left_pad([[1, 0.5]]), "row 0: token 0.5 at position 1 is not an integer id")


# --------------------------------------------------------------------------- the command line


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, out: str, err: str, message: str) -> None:
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert out == "", out  # nothing printed before the error


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("bert-tiny", ["--ids", "1,600"], "--ids: token id 600 is outside the vocabulary"),
        ("t5-tiny", ["--ids", "1,2", "--decoder-ids", "-1"], "--decoder-ids: token id -1 is outside the vocabulary"),
        ("t5-tiny", ["--ids", "1,2", "--decoder-ids", "0", "--decoder-ids", "0"], "--decoder-ids gives 2 sequences, --ids gives 1"),
        ("gpt2-tiny", ["--ids", ",".join(["1"] * 129)], "exceed max_seq_len=128"),
        ("llama-tiny", ["--batch", "0"], "--batch, --seq and --top must be at least 1"),
    ],
)
def test_zoo_run_bad_inputs(tiny_artifacts, capsys, name, args, message):
    one_line_error(*cli(capsys, "run", tiny_artifacts[name], *args), message)


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("gpt2-tiny", ["--ids", "1,512"], "prompt 0: token id 512 is outside the vocabulary [0, 512)"),
        ("llama-tiny", ["--ids", ",".join(["1"] * 129)], "prompt 0 has 129 tokens, more than max_seq_len=128"),
        ("t5-tiny", ["--ids", "1,2", "--decoder-ids", "600"], "decoder prompt 0: token id 600 is outside the vocabulary"),
        ("t5-tiny", ["--ids", "1,2", "--decoder-ids", "0", "--decoder-ids", "0"], "2 decoder prompts for 1 prompts"),
        ("gpt2-tiny", ["--ids", "1,2", "--top-p", "1.5"], "top_p must be in (0, 1]"),
        ("gpt2-tiny", ["--ids", "1,2", "--top-p", "nan"], "top_p must be in (0, 1]"),
        ("gpt2-tiny", ["--ids", "1,2", "--temperature", "-1"], "temperature must be a finite number >= 0"),
        ("gpt2-tiny", ["--ids", "1,2", "--temperature", "nan"], "temperature must be a finite number >= 0"),
        ("gpt2-tiny", ["--ids", "1,2", "--seed", "-4"], "seed must be an integer >= 0"),
        ("gpt2-tiny", ["--ids", "1,2", "--eos", "512"], "eos id 512 is outside the vocabulary"),
        ("gpt2-tiny", [], "give a prompt"),
    ],
)
def test_zoo_generate_bad_inputs(tiny_artifacts, capsys, name, args, message):
    one_line_error(*cli(capsys, "generate", tiny_artifacts[name], *args), message)


def test_zoo_generate_temperature_zero_is_greedy(tiny_artifacts, capsys):
    code, greedy, _ = cli(capsys, "generate", tiny_artifacts["gpt2-tiny"], "--ids", "5,17", "--max-new-tokens", "4", "--eos", "none")
    assert code == 0
    code, zero, err = cli(capsys, "generate", tiny_artifacts["gpt2-tiny"], "--ids", "5,17", "--max-new-tokens", "4", "--eos", "none", "--temperature", "0")
    assert code == 0 and zero == greedy and "greedy" in err
