"""The generation controls' settings and pieces: GenerationConfig's checks and
GenerationConfig.from_hf (generation_config.json), the logits processors against
transformers' own processors on random scores, and ``zoo generate``'s refusals (one
line, exit 2). Against transformers' generate, and stop strings: tests/test_beam.py."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import processors
from runtime.sampling import GenerationConfig
from zoo.app.cli import main
from zoo.spec.errors import InputError


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_beams=0), "num_beams must be an integer >= 1, got 0"),
        (dict(num_beams=2.0), "num_beams must be an integer >= 1, got 2.0"),
        (dict(repetition_penalty=-1), "repetition_penalty must be a finite number > 0 (1: off), got -1"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be a finite number > 0 (1: off), got 0.0"),
        (dict(stop=("ok", "")), "stop strings must not be empty, got ('ok', '')"),
        (dict(stop=(1,)), "stop must be strings, got (1,)"),
        (dict(early_stopping="sometimes"), "early_stopping must be true, false or 'never', got 'sometimes'"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an integer >= 0 (0: off), got -1"),
        (dict(min_new_tokens=-2), "min_new_tokens must be an integer >= 0, got -2"),
        (dict(length_penalty=float("nan")), "length_penalty must be a finite number, got nan"),
    ],
)
def test_config_refusals_name_the_field_and_value(fields, message):
    with pytest.raises(InputError) as err:
        GenerationConfig(**fields)
    assert str(err.value) == message


def test_from_hf_maps_generation_config_json():
    hf = {
        "max_new_tokens": 20, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "num_beams": 3, "length_penalty": 0.6,
        "early_stopping": "never", "repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "min_new_tokens": 2,
        "eos_token_id": [2, 7], "stop_strings": "###", "transformers_version": "5.25", "max_length": 512, "top_k": None,
    }
    config = GenerationConfig.from_hf(hf)
    assert (config.max_new_tokens, config.sample, config.temperature, config.top_p, config.num_beams) == (20, True, 0.7, 0.9, 3)
    assert (config.length_penalty, config.early_stopping, config.repetition_penalty) == (0.6, "never", 1.2)
    assert (config.no_repeat_ngram_size, config.min_new_tokens, config.eos, config.stop) == (3, 2, (2, 7), ("###",))
    assert config.top_k == 50  # transformers' default where the file samples and leaves top_k out
    assert GenerationConfig.from_hf({"eos_token_id": 5}).eos == (5,)
    assert GenerationConfig.from_hf(None) == GenerationConfig()  # no file: the zoo's defaults (top_k off)
    over = GenerationConfig.from_hf(hf, num_beams=1, top_k=None, eos=(9,), stop=None)
    assert (over.num_beams, over.top_k, over.eos, over.stop) == (1, 50, (9,), ("###",))


@pytest.mark.parametrize(
    "hf, key",
    [({"num_beams": "4"}, "num_beams"), ({"do_sample": 1}, "do_sample"), ({"eos_token_id": [1, "2"]}, "eos_token_id"),
     ({"early_stopping": "yes"}, "early_stopping"), ({"stop_strings": [1]}, "stop_strings"), ({"temperature": True}, "temperature")],
)
def test_from_hf_refuses_wrong_types_naming_the_file_and_key(hf, key):
    with pytest.raises(InputError, match=f"generation_config.json: {key} must be"):
        GenerationConfig.from_hf(hf)
    with pytest.raises(InputError, match="num_beams must be an integer >= 1, got 0"):
        GenerationConfig.from_hf({"num_beams": 0})  # the ranges are GenerationConfig's


def test_processors_equal_transformers_processors():
    """Repetition penalty (padding excepted), no-repeat n-grams and min_new_tokens on
    random scores and histories with repeats, against transformers' classes."""
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")

    gen = np.random.default_rng(0)
    history = gen.integers(0, 12, (6, 9))
    pads = np.array([0, 2, 0, 4, 1, 0])
    scores = gen.normal(size=(6, 12)).astype(np.float32) * 3
    t_hist, t_scores = torch.tensor(history), torch.tensor(scores)
    for penalty in (1.4, 0.6):
        want = lp.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=torch.tensor(pads))(t_hist, t_scores.clone())
        got = processors.repetition_penalty(scores, history, penalty, pads)
        np.testing.assert_array_equal(got, want.numpy())
    for size in (1, 2, 3):
        want = lp.NoRepeatNGramLogitsProcessor(size)(t_hist, t_scores.clone())
        np.testing.assert_array_equal(processors.no_repeat_ngram(scores, history, size), want.numpy())
    for width in (3, 6):
        config = GenerationConfig(min_new_tokens=4)
        want = lp.MinNewTokensLengthLogitsProcessor(width, 4, [3, 5])(t_hist, t_scores.clone())
        got = processors.process(scores, history, config, pads=pads, prompt_width=width, eos=(3, 5))
        np.testing.assert_array_equal(got, want.numpy())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-beams", "0"], "num_beams must be an integer >= 1, got 0"),
        (["--repetition-penalty", "-1"], "repetition_penalty must be a finite number > 0 (1: off), got -1.0"),
        (["--stop", ""], "stop strings must not be empty"),
        (["--stop", "ok", "--stop", ""], "stop strings must not be empty"),
        (["--no-repeat-ngram-size", "-1"], "no_repeat_ngram_size must be an integer >= 0"),
        (["--min-new-tokens", "-3"], "min_new_tokens must be an integer >= 0"),
    ],
)
def test_cli_refuses_bad_controls_in_one_line(args, message, tmp_path, capsys):
    """Checked before the artifact is read (the folder does not even exist)."""
    code = main(["generate", str(tmp_path / "none"), "--ids", "1,2", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
