"""What every checkpoint importer shares: reading a Hugging Face model folder
(config.json; safetensors, sharded or not; pytorch_model.bin through
``torch.load(weights_only=True)``), refusing what cannot be mapped, and applying a
family's weight table.

A family module declares three tables (see gpt2.py for the shape):
- ``CONFIG``: spec path <- function of the HF config (one row per spec field);
- ``SUPPORTED``: HF config field -> the values the zoo reproduces; any other value
  is refused before any work, all refusals listed in one message;
- ``WEIGHTS``: zoo parameter name <- HF tensor name(s) and a transform.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

from zoo.spec.errors import ZooError


class CheckpointError(ZooError):
    """A model folder that cannot be read or mapped onto a zoo spec (exit code 2)."""

    exit_code = 2


# ---------------------------------------------------------------- reading the folder


MAX_JSON_BYTES = 16 << 20  # config, generation config and shard index are a few KB


def read_json(path: Path, kind: type = dict, what: str = "a config"):
    """A JSON value of type ``kind`` (an object by default; modules.json is a list) from a
    checkpoint folder; anything else is a one-line CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes; larger than {MAX_JSON_BYTES >> 20} MiB, not {what}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable JSON: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply") from None
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: not a JSON object" if kind is dict else f"{path}: a {type(value).__name__}, not {what}")
    return value


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json; not a Hugging Face model folder")
    return read_json(path)


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    """One weights file of a checkpoint, refused if a tensor holds NaN or inf."""
    from compiler.weights import WeightsError, check_finite

    state = _read_file(path)
    try:
        check_finite(state, path, doing="import")
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    return state


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from compiler.weights import WeightsError, load_tensors

        try:
            return load_tensors(path)[0]
        except WeightsError as e:
            raise CheckpointError(str(e)) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as e:  # torch raises several types for bad or unsafe files
        raise CheckpointError(f"{path}: cannot read with torch.load(weights_only=True): {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, model.safetensors.index.json (shards), pytorch_model.bin or
    pytorch_model.bin.index.json, in that order of preference."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return _read_one(folder / single)
        if (folder / index).is_file():
            weight_map = read_json(folder / index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise CheckpointError(f"{folder / index}: no readable weight_map")
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if "/" in shard or "\\" in shard or not (folder / shard).is_file():
                    raise CheckpointError(f"{folder / index}: shard {shard!r} is missing")
                state.update(_read_one(folder / shard))
            return state
    raise CheckpointError(f"{folder}: no weights (model.safetensors, pytorch_model.bin or a sharded index)")


# ---------------------------------------------------------------- config mapping


def unsupported(config: dict, supported: dict[str, tuple], model_type: str) -> list[str]:
    """Every field whose value the zoo does not reproduce, as 'field=value (supported: ...)'."""
    problems = []
    for field, allowed in supported.items():
        value = config.get(field, allowed[0])
        if value not in allowed:
            shown = ", ".join(json.dumps(a) for a in allowed)
            problems.append(f"{field}={json.dumps(value)} (supported: {shown})")
    return problems


def refuse(folder: Path, model_type: str, problems: list[str]) -> None:
    if problems:
        raise CheckpointError(f"{folder}: {model_type} checkpoint uses what the zoo cannot reproduce: " + "; ".join(problems))


def set_path(data: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def build_spec_dict(config: dict, table: Iterable[tuple[str, Callable[[dict], Any]]]) -> dict:
    spec: dict = {}
    for path, get in table:
        value = get(config)
        if value is not None:
            set_path(spec, path, value)
    return spec


ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu-tanh", "gelu_pytorch_tanh": "gelu-tanh", "silu": "silu", "swish": "silu"}


def rope_theta(config: dict) -> float:
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def rope_params(config: dict) -> dict:
    """The RoPE parameters, new format (rope_parameters) or old (rope_scaling, rope_theta)."""
    return {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}


def rope_type(config: dict) -> Optional[str]:
    """None for plain RoPE; the scaling type otherwise."""
    params = rope_params(config)
    kind = params.get("rope_type", params.get("type", "default"))
    return None if kind in ("default", None) else kind


def partial_rotary(config: dict) -> float:
    """The share of head_dim that RoPE rotates (``positional.fraction``): partial_rotary_factor,
    in rope_parameters (transformers 5) or at the top level (older configs)."""
    return float(rope_params(config).get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))


def unsupported_partial_rotary(config: dict) -> list[str]:
    """transformers rotates int(head_dim * factor) dimensions, with frequencies over that
    count: the zoo matches it when the count is even and at least 2."""
    factor = partial_rotary(config)
    head_dim = config.get("head_dim") or int(config.get("hidden_size") or 0) // max(int(config.get("num_attention_heads") or 1), 1)
    rotated = int(head_dim * factor)
    if not 0 < factor <= 1 or rotated % 2 or rotated < 2:
        return [f"partial_rotary_factor={factor} (rotates int(head_dim={head_dim} x {factor}) = {rotated} dimensions; supported: an even count >= 2)"]
    return []


ROPE_SCALING_FIELDS = {  # zoo scaling kind -> (zoo field, HF field) pairs
    "linear": (("factor", "factor"),),
    "llama3": (("factor", "factor"), ("low_freq_factor", "low_freq_factor"), ("high_freq_factor", "high_freq_factor"),
               ("original_max_seq_len", "original_max_position_embeddings")),
    "yarn": (("factor", "factor"), ("original_max_seq_len", "original_max_position_embeddings"), ("beta_fast", "beta_fast"),
             ("beta_slow", "beta_slow"), ("attention_factor", "attention_factor"), ("mscale", "mscale"),
             ("mscale_all_dim", "mscale_all_dim"), ("truncate", "truncate")),
}


def rope_scaling(config: dict) -> Optional[dict]:
    """The zoo's positional.scaling for a HF config's rope type (None: plain RoPE or one
    the zoo does not reproduce, which ``unsupported_rope`` names)."""
    kind = rope_type(config)
    if kind not in ROPE_SCALING_FIELDS:
        return None
    params = rope_params(config)
    out = {"kind": kind, **{z: params[h] for z, h in ROPE_SCALING_FIELDS[kind] if params.get(h) is not None}}
    if kind == "yarn" and "original_max_seq_len" not in out:
        out["original_max_seq_len"] = config.get("max_position_embeddings")
    return out


def unsupported_rope(config: dict) -> list[str]:
    kind = rope_type(config)
    if kind is None or kind in ROPE_SCALING_FIELDS:
        return []
    return [f"rope_type={kind!r} (supported: 'default', {', '.join(repr(k) for k in ROPE_SCALING_FIELDS)})"]


# ---------------------------------------------------------------- weight mapping


@dataclass(frozen=True)
class W:
    """One row of a weight table: zoo name <- HF name, through ``transform``.
    ``{i}`` in both names runs over the layers of ``stack``."""

    zoo: str
    hf: str
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    stack: Optional[str] = None  # "encoder" / "decoder": which layer count {i} runs over


def apply_table(
    folder: Path,
    state: dict[str, torch.Tensor],
    table: list[W],
    layers: dict[str, int],
    wanted: set[str],
    derived: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """HF state dict -> zoo state dict by ``table``; only rows whose zoo name the
    model has (``wanted``) are used. Missing tensors are errors, and so are unused
    ones unless they match a ``derived`` pattern (buffers the zoo recomputes, or
    copies of a tied matrix): nothing is silently dropped."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing = []
    for row in table:
        for i in range(layers.get(row.stack, 1)) if row.stack else [None]:
            zoo_name = row.zoo.format(i=i)
            if zoo_name not in wanted:
                continue
            hf_name = row.hf.format(i=i)
            if hf_name not in state:
                missing.append(hf_name)
                continue
            t = state[hf_name]
            out[zoo_name] = row.transform(t) if row.transform else t
            used.add(hf_name)
    unused = sorted(n for n in set(state) - used if not any(re.fullmatch(p, n) for p in derived))
    if missing:
        raise CheckpointError(f"{folder}: checkpoint lacks {len(missing)} tensors the model needs ({', '.join(missing[:4])})")
    if unused:
        raise CheckpointError(f"{folder}: checkpoint has {len(unused)} tensors the zoo does not map ({', '.join(unused[:4])}); refusing to drop them")
    return out


def split(parts: int, index: int, dim: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Take part ``index`` of ``parts`` equal chunks along ``dim``."""
    return lambda t: t.chunk(parts, dim=dim)[index].contiguous()
