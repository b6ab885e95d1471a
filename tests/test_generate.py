"""Generation with the KV cache (runtime.generate) and ``zoo generate``.

The invariants of issue 5, for every catalog spec at tiny size that can generate:
cached step-by-step logits equal one full forward; greedy tokens from ONNX Runtime
equal greedy tokens from the torch module; a padded batch gives each prompt's own
tokens; the same seed gives the same sampled tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import zoo
from compiler.builder import build
from runtime.generate import GenerationConfig, Generator, left_pad, next_tokens
from runtime.session import Session
from tests.conftest import ROOT, TINY_CATALOG, without_module
from zoo.spec.errors import InputError

GENERATIVE = [n for n in TINY_CATALOG if n != "bert-tiny"]
PROMPTS = [[5, 17, 300, 42, 9, 77, 123], [3, 8, 250], [11, 400, 2, 71, 66]]
TOL = 1e-4  # fp32 max abs


def torch_greedy(name: str, prompt: list[int], n: int, *, decoder_start: int | None = None) -> list[int]:
    """Greedy decoding with the torch module and no cache: a full forward per token."""
    spec = zoo.load(name)
    model = build(spec, seed=0)
    out: list[int] = []
    with torch.no_grad():
        ids = torch.tensor([prompt])
        if spec.family == "encoder-decoder":
            mask = torch.ones_like(ids)
            memory = model.encode(ids, mask)
            dec = [decoder_start]
            for _ in range(n):
                d = torch.tensor([dec])
                logits = model.decode(d, torch.ones_like(d), memory, mask)
                dec.append(int(logits[0, -1].argmax()))
            return dec[1:]
        seq = list(prompt)
        for _ in range(n):
            t = torch.tensor([seq])
            logits = model(t, torch.ones_like(t))
            seq.append(int(logits[0, -1].argmax()))
            out.append(seq[-1])
    return out


def full_forward_logits(session: Session, prompt: list[int], generated: list[int], decoder_start=None) -> np.ndarray:
    """Logits of one uncached pass over prompt + generated, at the positions that
    produced each generated token -> (n, V)."""
    if session.family == "encoder-decoder":
        ids = np.array([prompt])
        dec = np.array([[decoder_start] + generated[:-1]])
        out = session.forward(
            {
                "encoder": {"input_ids": ids, "attention_mask": np.ones_like(ids)},
                "decoder": {"decoder_input_ids": dec, "decoder_attention_mask": np.ones_like(dec), "encoder_attention_mask": np.ones_like(ids)},
            }
        )
        return out["logits"][0]
    seq = np.array([prompt + generated[:-1]])
    out = session.forward({"model": {"input_ids": seq, "attention_mask": np.ones_like(seq)}})
    return out["logits"][0, len(prompt) - 1 :]


@pytest.mark.parametrize("io_binding", [False, True], ids=["run", "iobinding"])
@pytest.mark.parametrize("name", GENERATIVE)
def test_cached_steps_equal_full_forward(tiny_artifacts, name, io_binding):
    gen = Generator(tiny_artifacts[name], io_binding=io_binding)
    prompt = PROMPTS[0]
    result = gen.generate([prompt], GenerationConfig(max_new_tokens=24, eos=()), keep_logits=True)
    tokens = result.tokens[0]
    assert len(tokens) == 24 and result.finish_reasons == ["length"]
    full = full_forward_logits(gen.session, prompt, tokens, decoder_start=gen.tokens.decoder_start)
    stepped = result.logits[0]
    assert stepped.shape == full.shape == (24, 512)
    assert np.abs(stepped - full).max() <= TOL


@pytest.mark.parametrize("name", GENERATIVE)
def test_greedy_onnx_equals_greedy_torch(tiny_artifacts, name):
    gen = Generator(tiny_artifacts[name])
    for prompt in PROMPTS[:2]:
        got = gen.generate([prompt], GenerationConfig(max_new_tokens=16, eos=())).tokens[0]
        want = torch_greedy(name, prompt, 16, decoder_start=gen.tokens.decoder_start)
        assert got == want, (prompt, got, want)


@pytest.mark.parametrize("name", GENERATIVE)
def test_padded_batch_equals_each_prompt_alone(tiny_artifacts, name):
    gen = Generator(tiny_artifacts[name])
    config = GenerationConfig(max_new_tokens=12, eos=())
    batch = gen.generate(PROMPTS, config).tokens
    alone = [gen.generate([p], config).tokens[0] for p in PROMPTS]
    assert batch == alone


@pytest.mark.parametrize("name", GENERATIVE)
def test_same_seed_same_samples(tiny_artifacts, name):
    gen = Generator(tiny_artifacts[name])
    config = GenerationConfig(max_new_tokens=16, sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=7, eos=())
    a = gen.generate(PROMPTS, config).tokens
    b = gen.generate(PROMPTS, config).tokens
    c = gen.generate(PROMPTS, GenerationConfig(**{**config.__dict__, "seed": 8})).tokens
    assert a == b
    assert a != c


def test_encoder_only_cannot_generate(tiny_artifacts):
    with pytest.raises(InputError, match="encoder-only model has no decoder"):
        Generator(tiny_artifacts["bert-tiny"])


# --------------------------------------------------------------------------- the loop


def test_left_pad():
    ids, mask = left_pad([[1, 2, 3], [4]], pad=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_eos_stops_each_row_on_its_own(tiny_artifacts):
    gen = Generator(tiny_artifacts["gpt2-tiny"])
    free = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=8, eos=())).tokens
    stop = free[1][2]  # row 1 stops at its third token; other rows too if they meet it
    result = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=8, eos=(stop,)))
    for row, toks in enumerate(free):
        cut = toks.index(stop) + 1 if stop in toks else len(toks)
        assert result.tokens[row] == toks[:cut]
        assert result.finish_reasons[row] == ("eos" if stop in toks else "length")
    assert len(result.tokens[1]) <= 3


def test_spec_eos_is_the_default(tiny_artifacts):
    gen = Generator(tiny_artifacts["gpt2-tiny"])
    assert gen.tokens.eos == (511,)
    free = gen.generate([PROMPTS[0]], GenerationConfig(max_new_tokens=6, eos=())).tokens[0]
    gen.tokens = dataclasses.replace(gen.tokens, eos=(free[1],))
    cut = free.index(free[1]) + 1
    assert gen.generate([PROMPTS[0]], GenerationConfig(max_new_tokens=6)).tokens[0] == free[:cut]


def test_generation_stops_at_max_seq_len(tiny_artifacts):
    gen = Generator(tiny_artifacts["llama-tiny"])  # max_seq_len 128
    result = gen.generate([list(range(1, 121))], GenerationConfig(max_new_tokens=50, eos=()))
    assert len(result.tokens[0]) == 9 and result.finish_reasons == ["max_seq_len"]  # 120 + 9 - 1 cached = 128
    with pytest.raises(InputError, match="more than max_seq_len=128"):
        gen.generate([list(range(1, 130))], GenerationConfig())


@pytest.mark.parametrize(
    "prompts, message",
    [
        ([[]], "prompt 0 is empty"),
        ([[1, 512]], "token id 512 is outside the vocabulary"),
        ([[1, -3]], "token id -3 is outside the vocabulary"),
        ([[1.5]], "is not an integer id"),
        ([], "no prompt given"),
    ],
)
def test_bad_prompts_are_refused(tiny_artifacts, prompts, message):
    gen = Generator(tiny_artifacts["gpt2-tiny"])
    with pytest.raises(InputError, match=message):
        gen.generate(prompts, GenerationConfig(max_new_tokens=2))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"temperature": -1.0}, "temperature must be"),
        ({"temperature": float("nan")}, "temperature must be"),
        ({"top_k": -2}, "top_k must be"),
        ({"max_new_tokens": 0}, "max_new_tokens must be"),
    ],
)
def test_bad_config_is_refused(kw, message):
    with pytest.raises(InputError, match=message):
        GenerationConfig(**kw)


def test_stream_yields_each_token_as_it_comes(tiny_artifacts):
    gen = Generator(tiny_artifacts["t5-tiny"])
    steps = []
    for step in gen.stream(PROMPTS[:2], GenerationConfig(max_new_tokens=5, eos=())):
        steps.append(step.tokens.copy())
        assert gen.last is None  # the result exists only once the stream ends
    assert len(steps) == 5
    assert np.stack(steps, axis=1).tolist() == gen.last.tokens
    assert gen.last.time_to_first_token_s > 0 and len(gen.last.step_seconds) == 4


# --------------------------------------------------------------------------- sampling


def test_greedy_and_zero_temperature_take_the_argmax():
    logits = np.array([[0.1, 3.0, -1.0], [2.0, 0.0, 1.9]])
    rng = np.random.default_rng(0)
    assert next_tokens(logits, GenerationConfig(), rng).tolist() == [1, 0]
    assert next_tokens(logits, GenerationConfig(sample=True, temperature=0.0), rng).tolist() == [1, 0]


def test_top_k_and_top_p_restrict_the_draw():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    rng = np.random.default_rng(1)
    k2 = next_tokens(logits, GenerationConfig(sample=True, top_k=2), rng)
    assert set(k2.tolist()) == {0, 1}
    assert abs((k2 == 0).mean() - 0.5 / 0.8) < 0.03
    p = next_tokens(logits, GenerationConfig(sample=True, top_p=0.7), rng)  # 0.5 + 0.3 reach 0.7
    assert set(p.tolist()) == {0, 1}
    p_small = next_tokens(logits, GenerationConfig(sample=True, top_p=0.4), rng)  # the top token alone
    assert set(p_small.tolist()) == {0}


def test_sampling_follows_the_distribution_and_temperature():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(np.tile(probs, (20000, 1)))
    rng = np.random.default_rng(2)
    drawn = next_tokens(logits, GenerationConfig(sample=True), rng)
    freq = np.bincount(drawn, minlength=4) / len(drawn)
    assert np.abs(freq - probs).max() < 0.015
    hot = next_tokens(logits, GenerationConfig(sample=True, temperature=100.0), rng)
    assert np.abs(np.bincount(hot, minlength=4) / len(hot) - 0.25).max() < 0.02  # near uniform
    cold = next_tokens(logits, GenerationConfig(sample=True, temperature=0.05), rng)
    assert (cold == 0).mean() > 0.99


# --------------------------------------------------------------------------- CLI and dependencies


def zoo_cli(*args, prefix: str = ""):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = prefix + "import sys\nfrom zoo.app.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_zoo_generate_prints_tokens_and_timings(tiny_artifacts):
    r = zoo_cli("generate", tiny_artifacts["llama-tiny"], "--ids", "1,2,3", "--max-new-tokens", "6")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("[0] 1 2 3 ->") and len(r.stdout.split("->")[1].split()) == 6
    assert "time to first token" in r.stderr and "tokens/s" in r.stderr and "CPUExecutionProvider" in r.stderr


def test_zoo_generate_json_batch_sampled(tiny_artifacts):
    args = ("generate", tiny_artifacts["transformer-tiny"], "--ids", "5,6,7", "--ids", "9", "--max-new-tokens", "5")
    r = zoo_cli(*args, "--top-k", "10", "--seed", "3", "--json", "--eos", "none")
    again = zoo_cli(*args, "--top-k", "10", "--seed", "3", "--json", "--eos", "none")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [len(t) for t in out["tokens"]] == [5, 5] and out["finish_reasons"] == ["length", "length"]
    assert out["time_to_first_token_s"] > 0 and out["decode_tokens_per_s"] > 0
    assert json.loads(again.stdout)["tokens"] == out["tokens"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--top-p", "0"), "top_p must be in (0, 1]"),
        (("--ids", "1,x"), "not a comma-separated list of integers"),
        (("--ids", "1,99999"), "outside the vocabulary"),
        (("--max-new-tokens", "0"), "max_new_tokens must be"),
    ],
)
def test_zoo_generate_bad_input_is_one_line(tiny_artifacts, args, message):
    base = ("generate", tiny_artifacts["gpt2-tiny"])
    if "--ids" not in args:
        args = ("--ids", "1,2") + args
    r = zoo_cli(*base, *args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_zoo_generate_encoder_only_is_refused(tiny_artifacts):
    r = zoo_cli("generate", tiny_artifacts["bert-tiny"], "--ids", "1,2")
    assert r.returncode == 2 and "encoder-only" in r.stderr and r.stderr.count("\n") == 1


def test_generation_needs_no_torch_pydantic_or_yaml(tiny_artifacts):
    """The runtime imports onnxruntime and numpy only: run it with the others blocked."""
    script = without_module("torch", "pydantic", "yaml") + f"""
from runtime.generate import Generator, GenerationConfig
for name in ("gpt2-tiny", "t5-tiny"):
    folder = {json.dumps({k: str(v) for k, v in tiny_artifacts.items()})}[name]
    out = Generator(folder).generate([[1, 2, 3]], GenerationConfig(max_new_tokens=4, eos=()))
    assert len(out.tokens[0]) == 4, out
import sys
assert "torch" not in sys.modules and "pydantic" not in sys.modules and "yaml" not in sys.modules
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = zoo_cli("generate", tiny_artifacts["gpt2-tiny"], "--ids", "1,2", "--max-new-tokens", "3", prefix=without_module("torch"))
    assert r.returncode == 0, r.stderr
