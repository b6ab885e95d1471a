"""Beam search and the generation controls against transformers' ``generate``, token for
token and score for score, on imported tiny checkpoints (hidden 32, 2 layers, vocab 100):
GPT-2, Llama, BART, Marian and T5 with trained-like weights (logits far from ties), and
GPT-2 and BART with random-init weights; a left-padded batch of three prompts of 5, 8
and 3 tokens (encoder-decoder: the encoder batch, right-padded for transformers).

Settings: greedy and 4 beams, length_penalty 0.5 / 2 / -1 with early_stopping True,
False and "never", repetition_penalty, no_repeat_ngram_size, min_new_tokens, several eos
ids (picked from the model's own greedy output, so that rows do end on them), and stop
strings with a real tokenizer.json (StopStringCriteria's meaning: a string that ends in
the newest token, which may begin in earlier ones). sequence_scores agree within 1e-4
relative.
Default suite: the five trained-like (about 30 s); the random-init ones are slow."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from compiler.importers import import_folder  # noqa: E402
from runtime import load  # noqa: E402
from runtime.generate import GenerationConfig, Generator  # noqa: E402
from zoo.app.cli import main  # noqa: E402
from tests.hf_trained_like import prepare  # noqa: E402
from zoo.app.build import build_artifact  # noqa: E402

V = 100
NEW = 12
SEQ2SEQ = dict(
    vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=64, decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=1, decoder_start_token_id=2,
    eos_token_id=3, bos_token_id=0, forced_eos_token_id=None,
)
SMALL = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=V, n_positions=64, bos_token_id=5, eos_token_id=5, pad_token_id=0)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_key_value_heads=2, rope_theta=500.0, bos_token_id=1, eos_token_id=2, pad_token_id=0, **SMALL)),
    "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(scale_embedding=True, **SEQ2SEQ)),
    "marian": lambda: transformers.MarianMTModel(transformers.MarianConfig(activation_function="swish", scale_embedding=True, **SEQ2SEQ)),
    # equal encoder and decoder depth: transformers' T5 cache fails in generate with unequal ones
    "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=V, feed_forward_proj="relu",
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
}
DEFAULT = {(kind, "trained") for kind in ("gpt2", "llama", "bart", "marian", "t5")}  # random weights: slow
CASES = {
    "greedy": dict(num_beams=1),
    "beams": dict(num_beams=4),
    "beams-lp0.5-early": dict(num_beams=4, length_penalty=0.5, early_stopping=True),
    "beams-lp2-never": dict(num_beams=4, length_penalty=2.0, early_stopping="never"),
    "beams-lp-1-false": dict(num_beams=4, length_penalty=-1.0, early_stopping=False),
    "beams-penalties": dict(num_beams=4, repetition_penalty=1.3, no_repeat_ngram_size=2),
    "greedy-penalties-min": dict(num_beams=1, repetition_penalty=0.7, no_repeat_ngram_size=3, min_new_tokens=5),
    "beams3-min-early": dict(num_beams=3, min_new_tokens=3, early_stopping=True),
}


def _cases():
    out = []
    for kind in MODELS:
        for weights in ("trained", "random"):
            if weights == "random" and kind not in ("gpt2", "bart"):
                continue
            marks = () if (kind, weights) in DEFAULT else (pytest.mark.slow,)
            out.append(pytest.param(kind, weights, marks=marks, id=f"{kind}-{weights}"))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(kind, weights) -> (transformers model, zoo Generator), each built once per module."""
    cache: dict = {}

    def get(kind: str, weights: str):
        if (kind, weights) not in cache:
            folder = tmp_path_factory.mktemp(f"{kind}-{weights}")
            tokenizer = None
            if kind == "gpt2":  # GPT-2 carries a tokenizer.json, for the stop strings
                word_tokenizer().save(str(folder / "tokenizer.json"))
                tokenizer = folder / "tokenizer.json"
            cache[kind, weights] = make(kind, weights, folder, tokenizer)
        return cache[kind, weights]

    return get


@torch.no_grad()
def make(kind: str, weights: str, folder, tokenizer=None):
    torch.manual_seed(0)
    hf = MODELS[kind]().eval()
    if weights == "trained":
        prepare(hf, "trained")
    else:  # random init, every parameter perturbed (Marian's sinusoids stay exact)
        gen = torch.Generator().manual_seed(1)
        for name, p in hf.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    if hasattr(hf, "final_logits_bias"):
        hf.final_logits_bias.copy_(torch.randn(hf.final_logits_bias.shape, generator=torch.Generator().manual_seed(1)))
    hf.save_pretrained(folder / "hf")
    imported = import_folder(folder / "hf")
    art, manifest, _ = build_artifact(imported.spec, folder / "art", weights=imported.state, tokenizer=tokenizer)
    assert manifest["parity"]["passed"]
    return hf, Generator(load(art))


def prompts(seed: int = 11) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(4, V, (n,), generator=gen).tolist() for n in (5, 8, 3)]


def theirs(hf, rows, eos, **kw) -> tuple[list[list[int]], list[float] | None]:
    """transformers' generate on ``rows`` as one batch: decoder-only left-padded, an
    encoder batch right-padded; the new tokens of each row up to its first eos."""
    width, pad = max(map(len, rows)), hf.config.pad_token_id
    crossed = hf.config.is_encoder_decoder
    ids = [p + [pad] * (width - len(p)) if crossed else [pad] * (width - len(p)) + p for p in rows]
    mask = [[1] * len(p) + [0] * (width - len(p)) if crossed else [0] * (width - len(p)) + [1] * len(p) for p in rows]
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=NEW, do_sample=False,
                          eos_token_id=list(eos), pad_token_id=pad, return_dict_in_generate=True, output_scores=True, **kw)
    start = 1 if crossed else width
    tokens = []
    for row in out.sequences[:, start:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        tokens.append(row[:cut])
    scores = getattr(out, "sequences_scores", None)
    return tokens, (scores.tolist() if scores is not None else None)


def eos_ids(gen: Generator, rows) -> tuple[int, ...]:
    """Two ids the model itself says often (so rows end on them), and the checkpoint's."""
    free = gen.generate(rows, GenerationConfig(max_new_tokens=NEW, eos=())).tokens
    common = [t for t, _ in Counter(t for row in free for t in row[1:]).most_common(2)]
    return tuple(dict.fromkeys([*common, gen.tokens.eos[0]]))


def compare(hf, gen, rows, eos, **kw) -> None:
    ours = gen.generate(rows, GenerationConfig(max_new_tokens=NEW, eos=eos, **kw))
    want, scores = theirs(hf, rows, eos, **kw)
    print(f"{kw} eos {eos}: zoo {ours.tokens} {ours.finish_reasons}, transformers {want}")
    assert ours.tokens == want, (ours.tokens, want)
    if kw.get("num_beams", 1) > 1:
        np.testing.assert_allclose(ours.sequence_scores, scores, rtol=1e-4, atol=1e-6)
    for row, reason in zip(ours.tokens, ours.finish_reasons):
        assert reason == ("eos" if row[-1] in eos else "length")


@pytest.mark.parametrize("kind, weights", _cases())
def test_generate_equals_transformers(kind, weights, models):
    """Every case of CASES with several eos ids; plain beams also with the checkpoint's eos alone."""
    hf, gen = models(kind, weights)
    rows = prompts()
    several = eos_ids(gen, rows)
    compare(hf, gen, rows, gen.tokens.eos, num_beams=4)
    for name, kw in CASES.items():
        compare(hf, gen, rows, several, **kw)


def test_one_row_and_io_binding(models):
    """A single prompt, and IO binding on (the cache reordered through OrtValues)."""
    hf, _ = models("gpt2", "trained")
    gen = models("gpt2", "trained")[1]
    bound = Generator(gen.session, io_binding=True)
    rows = prompts(5)
    eos = eos_ids(gen, rows)
    compare(hf, bound, rows, eos, num_beams=4, length_penalty=0.8)
    compare(hf, gen, rows[:1], eos, num_beams=5)


def test_stream_yields_the_beam_result_at_the_end(models):
    _, gen = models("gpt2", "trained")
    rows = prompts()
    steps = list(gen.stream(rows, GenerationConfig(max_new_tokens=6, eos=(), num_beams=3)))
    got = np.stack([s.tokens for s in steps], axis=1).tolist()
    assert got == gen.last.tokens and steps[-1].finished.all() and len(gen.last.sequence_scores) == 3


# --------------------------------------------------------------------------- stop strings

V = 100
LETTERS = "abcdefghij"


def word_tokenizer():
    """A WordLevel tokenizer whose tokens are two letters (ids 2..99) that decode
    glued together (Fuse), so a stop string can straddle tokens; id 1 is "abcdef",
    which transformers' StopStringCriteria needs to read the vocabulary."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<pad>": 0, "abcdef": 1, **{LETTERS[i // 10] + LETTERS[i % 10]: i for i in range(2, V)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.Fuse()
    return tok


@pytest.fixture(scope="module")
def with_tokenizer(models, tmp_path_factory):
    """The trained-like GPT-2 (it carries word_tokenizer()): (hf model, hf tokenizer, Generator, artifact folder)."""
    hf, gen = models("gpt2", "trained")
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(gen.session.artifact.folder / "tokenizer.json"), pad_token="<pad>")
    return hf, hf_tok, gen, gen.session.artifact.folder


def test_stop_strings_equal_transformers(with_tokenizer):
    """A stop string that straddles two tokens of a row's own text, greedy and with beams."""
    hf, hf_tok, gen, _ = with_tokenizer
    rows = prompts()
    from runtime.tokenizer import Tokenizer

    tok = Tokenizer(gen.session.artifact)
    for beams in (1, 4):
        free = gen.generate(rows, GenerationConfig(max_new_tokens=NEW, eos=(1,), num_beams=beams)).tokens
        stop = tok.decode(free[0], skip_special_tokens=False)[9:12]  # from the 5th token's second letter into the 6th
        # eos 1 ("abcdef", never said): transformers' beam search needs an eos id when pad is 0
        ours = gen.generate(rows, GenerationConfig(max_new_tokens=NEW, eos=(1,), num_beams=beams, stop=(stop, "zz")))
        want, _ = theirs(hf, rows, (1,), num_beams=beams, stop_strings=[stop, "zz"], tokenizer=hf_tok)
        fill = 0 if beams == 1 else 1  # a stopped row is padded with pad 0 (beams: eos[0], pad 0 being falsy)
        want = [row[: len(np.trim_zeros(np.array(row) - fill, "b"))] for row in want]
        print(f"stop {stop!r}, {beams} beams: zoo {ours.tokens} {ours.finish_reasons}, transformers {want}")
        assert ours.tokens == want
        assert beams > 1 or "stop" in ours.finish_reasons  # beams: a longer hypothesis may score better
        for row, reason in zip(ours.tokens, ours.finish_reasons):
            assert (reason == "stop") == (len(row) < NEW or stop in hf_tok.decode(row)), (row, reason)


def test_cli_stop_and_beams(with_tokenizer, capsys):
    *_, folder = with_tokenizer
    code = main(["generate", str(folder), "--text", "bc de fg", "--num-beams", "3", "--max-new-tokens", "6", "--eos", "none", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and '"sequence_scores"' in out, out
    every_letter = [a for letter in LETTERS for a in ("--stop", letter)]  # the first new token ends it
    code = main(["generate", str(folder), "--text", "bc de fg", *every_letter, "--eos", "none"])
    captured = capsys.readouterr()
    assert code == 0 and "1 new" in captured.err and "stopped by stop" in captured.err, captured
