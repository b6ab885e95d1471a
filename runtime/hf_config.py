"""A Hugging Face generation_config.json mapped onto runtime.sampling.GenerationConfig
(numpy-free, no transformers): the file is untrusted, so each key's type is checked and
a wrong one is refused in one line naming generation_config.json and the key; unknown
keys are ignored (the file has dozens this runtime does not use).

Where the file is given, a key it leaves out takes transformers' default
(GenerationConfig._get_default_generation_params in transformers 5): notably top_k 50
when do_sample is set, early_stopping False, length_penalty 1. Two departures, both
because the zoo counts new tokens, not total length: ``max_length`` is not read (it
counts the prompt), and without ``max_new_tokens`` the zoo's 32 holds. Without a file
(None) the zoo's own defaults hold (top_k 0: off).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from zoo.spec.errors import InputError

FILE = "generation_config.json"
TRANSFORMERS_TOP_K = 50  # transformers' default top_k, which sampling uses when the file leaves it out


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _ids(x) -> bool:
    return _int(x) or (isinstance(x, list) and all(_int(e) for e in x))


def _strings(x) -> bool:
    return isinstance(x, str) or (isinstance(x, list) and all(isinstance(e, str) for e in x))


# HF key -> (zoo field, type check, what the type should be)
KEYS: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "max_new_tokens": ("max_new_tokens", _int, "an integer"),
    "do_sample": ("sample", lambda x: isinstance(x, bool), "true or false"),
    "temperature": ("temperature", _num, "a number"),
    "top_k": ("top_k", _int, "an integer"),
    "top_p": ("top_p", _num, "a number"),
    "num_beams": ("num_beams", _int, "an integer"),
    "length_penalty": ("length_penalty", _num, "a number"),
    "early_stopping": ("early_stopping", lambda x: isinstance(x, bool) or x == "never", 'true, false or "never"'),
    "repetition_penalty": ("repetition_penalty", _num, "a number"),
    "no_repeat_ngram_size": ("no_repeat_ngram_size", _int, "an integer"),
    "min_new_tokens": ("min_new_tokens", _int, "an integer"),
    "eos_token_id": ("eos", _ids, "a token id or a list of ids"),
    "stop_strings": ("stop", _strings, "a string or a list of strings"),
}


def hf_fields(config: Optional[dict]) -> dict:
    """generation_config.json's dict -> GenerationConfig keyword arguments (InputError
    for a value of the wrong type; the GenerationConfig checks the ranges)."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InputError(f"{FILE}: must be a JSON object, got {type(config).__name__}")
    fields: dict = {}
    for key, (name, check, want) in KEYS.items():
        value = config.get(key)
        if value is None:  # absent or null: transformers' default
            continue
        if not check(value):
            raise InputError(f"{FILE}: {key} must be {want}, got {value!r:.80}")
        fields[name] = value
    if "eos" in fields:
        fields["eos"] = (fields["eos"],) if _int(fields["eos"]) else tuple(fields["eos"])
    if "stop" in fields:
        fields["stop"] = (fields["stop"],) if isinstance(fields["stop"], str) else tuple(fields["stop"])
    if fields.get("sample") and "top_k" not in fields:
        fields["top_k"] = TRANSFORMERS_TOP_K
    return fields
