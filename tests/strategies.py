"""Hypothesis strategies over the spec language.

``valid_specs()`` draws spec mappings (what a person writes in YAML) across every
option of the language at tiny sizes; each one must build, export and pass parity.
``invalid_specs()`` takes a valid mapping and breaks it in one way — a wrong type,
an out-of-range number, an impossible combination, an unknown key — and says
which field the error must name.

The mappings are plain data, written to YAML by the tests and loaded through the
same path as a user's file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypothesis import strategies as st

from zoo.spec.model import POSITIONAL_KINDS, SCORES
from zoo.spec.variants import ACTIVATIONS, LAYER_ATTENTION, LAYER_POSITIONS, NORMS, PLACEMENTS, POSITIONAL, RESIDUALS, ROPE_LAYOUTS, ROPE_SCALINGS

FAMILIES = ("decoder-only", "encoder-only", "encoder-decoder")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def stacks(draw, d_model: int, rope: bool, crossed: bool = False) -> dict:
    """One encoder or decoder stack whose heads divide d_model (even head_dim under RoPE)."""
    heads = draw(st.sampled_from([h for h in _divisors(d_model) if h <= 8 and (not rope or (d_model // h) % 2 == 0)]))
    attention: dict = {"heads": heads, "score": draw(st.sampled_from(SCORES))}
    kv = draw(st.sampled_from([None, *_divisors(heads)]))
    if kv is not None:
        attention["kv_heads"] = kv
    if draw(st.booleans()):
        attention["bias"] = draw(st.sampled_from([True, False, "qkv"]))
    if draw(st.integers(0, 3)) == 0:
        attention["window"] = draw(st.integers(1, 6))
    if draw(st.integers(0, 3)) == 0:  # an explicit head_dim, not d_model / heads
        attention["head_dim"] = draw(st.sampled_from([2, 4, 6, 8, 12] if rope else [1, 3, 4, 6, 8, 12]))
    if draw(st.integers(0, 4)) == 0:
        attention["softcap"] = draw(st.sampled_from([2.0, 30.0]))
    if attention["score"] in ("scaled-dot", "dot") and draw(st.integers(0, 4)) == 0:
        attention["scale"] = draw(st.sampled_from([0.05, 0.5]))
    if draw(st.integers(0, 3)) == 0:
        attention["qk_norm"] = {"kind": draw(st.sampled_from(NORMS.keys())), "over": draw(st.sampled_from(["head", "all"]))}
    ffn = {
        "hidden": draw(st.integers(4, 48)),
        "activation": draw(st.sampled_from(ACTIVATIONS.keys())),
        "gated": draw(st.booleans()),
        "bias": draw(st.booleans()),
    }
    if draw(st.integers(0, 4)) == 0:  # a mixture of experts of that feed-forward
        count = draw(st.integers(1, 4))
        ffn["experts"] = {"count": count, "top_k": draw(st.integers(1, count)), "normalize": draw(st.booleans())}
        if draw(st.booleans()):
            ffn["experts"]["shared"] = {"hidden": draw(st.integers(4, 24)), "gate": draw(st.booleans())}
    norm: dict = {
        "kind": draw(st.sampled_from(NORMS.keys())),
        "placement": draw(st.sampled_from(PLACEMENTS.keys())),
        "eps": draw(st.sampled_from([1e-5, 1e-6, 1e-3])),
    }
    final = draw(st.sampled_from([None, True, False]))
    if final is not None:
        norm["final"] = final
    out = {"layers": draw(st.integers(1, 2)), "attention": attention, "ffn": ffn, "norm": norm}
    if draw(st.integers(0, 4)) == 0:
        out["residual_multiplier"] = draw(st.sampled_from([0.25, 2.0]))
    if norm["placement"] == "pre" and not crossed:  # parallel layers: pre-norm, no cross-attention (the spec's rules)
        out["residual"] = draw(st.sampled_from(RESIDUALS.keys()))
    return out


@st.composite
def layer_types(draw, stack: dict, kind: str) -> list:
    """A period of stack.layer_types (sliding / full, NoPE unless positions are absolute, a
    per-layer RoPE base under rope); stack's layers grow to hold it, its window is kept consistent."""
    absolute = POSITIONAL[kind].hook == "absolute"
    out = []
    for _ in range(draw(st.integers(1, 2))):
        entry: dict = {"attention": draw(st.sampled_from(LAYER_ATTENTION.keys()))}
        if not absolute and draw(st.booleans()):
            entry["positions"] = draw(st.sampled_from(LAYER_POSITIONS.keys()))
        if kind == "rope" and entry.get("positions", "model") == "model" and draw(st.booleans()):
            entry["rope"] = {"theta": draw(st.sampled_from([50.0, 1e6]))}
        out.append(entry)
    stack["layers"] = max(stack["layers"], len(out))
    if any(e["attention"] == "sliding" for e in out):
        stack["attention"].setdefault("window", draw(st.integers(1, 6)))
    else:
        stack["attention"].pop("window", None)
    return out


@st.composite
def positionals(draw, kind: str, d_model: int) -> dict | str:
    if kind == "sinusoidal":
        return {"kind": kind, "layout": draw(st.sampled_from(["interleaved", "halves"]))}
    if kind == "learned":
        return {"kind": kind, "offset": draw(st.integers(0, 2))}
    if kind == "rope":
        out = {
            "kind": kind,
            "theta": draw(st.sampled_from([10000.0, 500.0, 1e6])),
            "fraction": draw(st.sampled_from([1.0, 0.5])),
            "layout": draw(st.sampled_from(ROPE_LAYOUTS.keys())),
        }
        scaling = draw(st.sampled_from([None, *ROPE_SCALINGS.keys()]))
        if scaling is not None:  # every registered scaling, trained at a context of 4
            out["scaling"] = {"kind": scaling, "factor": draw(st.sampled_from([2.0, 8.0]))}
            if scaling != "linear":
                out["scaling"]["original_max_seq_len"] = 4
            if scaling == "longrope":  # factor lists sized once the stacks are drawn (valid_specs)
                out["scaling"].update(short_factor=[], long_factor=[])
        return out
    if kind == "relative-bias":
        buckets = draw(st.integers(4, 16))
        return {"kind": kind, "buckets": buckets, "max_distance": draw(st.integers(buckets // 2 + 1, 64))}
    return draw(st.sampled_from([kind, {"kind": kind}]))  # the shorthand or the mapping


def _size_longrope(draw, spec: dict, d_model: int) -> None:
    """LongRoPE's factor lists: one per rotated pair, so the stacks must rotate alike (a
    different head_dim per stack is refused by the spec): else the decoder's head_dim is made the encoder's."""
    stacks_ = [s for s in (spec.get("encoder"), spec.get("decoder")) if s]
    for s in stacks_[1:]:
        s["attention"]["head_dim"] = stacks_[0]["attention"].get("head_dim", d_model // stacks_[0]["attention"]["heads"])
    head_dim = stacks_[0]["attention"].get("head_dim", d_model // stacks_[0]["attention"]["heads"])
    rot = int(head_dim * spec["positional"]["fraction"])
    pairs = (rot - rot % 2) // 2
    factors = st.lists(st.sampled_from([1.0, 1.5, 4.0, 16.0]), min_size=pairs, max_size=pairs)
    spec["positional"]["scaling"].update(short_factor=draw(factors), long_factor=draw(factors))


@st.composite
def valid_specs(draw) -> dict:
    """A spec mapping that the zoo must accept, build and run."""
    family = draw(st.sampled_from(FAMILIES))
    kind = draw(st.sampled_from(POSITIONAL_KINDS))
    rope = kind == "rope"
    d_model = draw(st.sampled_from([8, 12, 16, 24, 32]))
    vocab = draw(st.integers(5, 80))
    spec: dict = {
        "name": f"fuzz-{family}-{kind}",
        "family": family,
        "vocab_size": vocab,
        "max_seq_len": draw(st.integers(4, 24)),
        "d_model": d_model,
        "positional": draw(positionals(kind, d_model)),
    }
    if family != "decoder-only":
        spec["encoder"] = draw(stacks(d_model, rope))
    if family != "encoder-only":
        spec["decoder"] = draw(stacks(d_model, rope, crossed=family == "encoder-decoder"))
    for part in ("encoder", "decoder"):
        if part in spec and draw(st.integers(0, 3)) == 0:
            spec[part]["layer_types"] = draw(layer_types(spec[part], kind))
    if rope and spec["positional"]["fraction"] < 1:
        head_dims = [s["attention"].get("head_dim", d_model // s["attention"]["heads"]) for s in (spec.get("encoder"), spec.get("decoder")) if s]
        if min(head_dims) < 4:  # half of a 2-wide head rotates nothing
            spec["positional"]["fraction"] = 1.0
    if rope and (spec["positional"].get("scaling") or {}).get("kind") == "longrope":
        _size_longrope(draw, spec, d_model)
    embedding = {
        "tie_output": draw(st.booleans()),
        "scale_by_sqrt_d": draw(st.booleans()),
        "scale_output_by_inv_sqrt_d": draw(st.booleans()),
        "token_types": draw(st.integers(0, 2)),
        "norm": draw(st.booleans()),
        "output_transform": draw(st.booleans()),
        "output_bias": draw(st.booleans()),
    }
    if family == "encoder-only":
        embedding["pooler"] = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:  # Granite's and Gemma 2's output options
        embedding.update(multiplier=draw(st.sampled_from([0.5, 12.0])), logit_multiplier=draw(st.sampled_from([0.25, 2.0])))
        if draw(st.booleans()):
            embedding["logit_softcap"] = draw(st.sampled_from([20.0, 30.0]))  # Gemma 2: 30; a tiny cap makes ties
    spec["embedding"] = embedding
    tokens: dict = {}
    ids = st.integers(0, vocab - 1)
    if draw(st.booleans()):
        tokens = {"bos": draw(ids), "eos": draw(st.one_of(ids, st.lists(ids, max_size=3))), "pad": draw(ids)}
        if family == "encoder-decoder" and draw(st.booleans()):
            tokens["decoder_start"] = draw(ids)
    if tokens:
        spec["tokens"] = tokens
    if draw(st.booleans()):
        spec["dropout"] = draw(st.sampled_from([0.0, 0.1, 0.5]))
    return spec


# --------------------------------------------------------------------------- invalid specs


@dataclass(frozen=True)
class Broken:
    """A spec mapping broken in one way, and the dotted field its error must name."""

    spec: dict
    field: str
    how: str  # wrong-type, out-of-range, impossible, unknown-key

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        return f"Broken({self.how}: {self.field}, spec={self.spec!r})"


def _stack_name(spec: dict) -> str:
    return "decoder" if "decoder" in spec else "encoder"


def _set(spec: dict, path: str, value) -> dict:
    out = copy.deepcopy(spec)
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {"kind": node[key]} if key == "positional" and isinstance(node.get(key), str) else {}
        node = node[key]
    node[keys[-1]] = value
    return out


# field -> values of the wrong type (none of which pydantic may coerce)
_WRONG_TYPES = {
    "vocab_size": ["many", [1, 2], {"a": 1}, 3.5, True],
    "max_seq_len": ["long", [8], 2.25, None],
    "d_model": ["wide", {"x": 1}, 16.5, None],
    "family": [3, ["decoder-only"], None],
    "name": [["x"], {"a": "b"}, None],
    "dropout": ["a lot", [0.1]],
    "embedding.tie_output": ["maybe", 2, [True]],
    "STACK.layers": ["two", 1.5, [2], None],
    "STACK.attention.heads": ["four", [4], 2.5],
    "STACK.attention.score": [1, ["dot"], True],
    "STACK.attention.window": ["wide", 3.3],
    "STACK.attention.head_dim": ["wide", 6.5, [8]],
    "STACK.ffn.hidden": ["big", 7.7, {}],
    "STACK.ffn.gated": ["sure", 3],
    "STACK.norm.eps": ["tiny", [1e-5]],
    "STACK.norm.kind": [5, ["rmsnorm"]],
}

# field -> out-of-range values
_OUT_OF_RANGE = {
    "vocab_size": [0, -1, -(10**30)],
    "max_seq_len": [0, -7],
    "d_model": [0, -8],
    "dropout": [1.0, -0.1, 7],
    "embedding.token_types": [-1],
    "STACK.layers": [0, -3],
    "STACK.attention.heads": [0, -2],
    "STACK.attention.kv_heads": [0, -1],
    "STACK.attention.window": [0, -4],
    "STACK.attention.head_dim": [0, -8],
    "STACK.ffn.hidden": [0, -16],
    "STACK.norm.eps": [0, -1e-5, 1.0, 5],
    "tokens.bos": [-1],
    "tokens.pad": [-3],
}


@st.composite
def invalid_specs(draw) -> Broken:
    """A valid spec with one thing broken; ``Broken.field`` is what the error names."""
    spec = draw(valid_specs())
    stack = _stack_name(spec)
    how = draw(st.sampled_from(["wrong-type", "out-of-range", "impossible", "unknown-key"]))
    if how in ("wrong-type", "out-of-range"):
        table = _WRONG_TYPES if how == "wrong-type" else _OUT_OF_RANGE
        field = draw(st.sampled_from(sorted(table)))
        value = draw(st.sampled_from(table[field]))
        field = field.replace("STACK", stack)
        return Broken(_set(spec, field, value), field, how)
    if how == "unknown-key":
        parents = ["", "embedding", stack, f"{stack}.attention", f"{stack}.ffn", f"{stack}.norm"]
        parent = draw(st.sampled_from(parents))
        key = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
        known = set(_dig(spec, parent)) | _FIELDS.get(parent.split(".")[-1] if parent else "", set())
        if key in known:
            key = key + "_x"
        path = f"{parent}.{key}" if parent else key
        return Broken(_set(spec, path, draw(st.sampled_from([1, "x", True, None]))), path, how)
    return draw(impossible(spec))


def _dig(spec: dict, path: str) -> dict:
    node = spec
    for key in filter(None, path.split(".")):
        node = node[key]
    return node


# every field of each mapping (an "unknown" key must not be one of them)
_FIELDS = {
    "": {"name", "description", "family", "vocab_size", "max_seq_len", "d_model", "positional", "embedding",
         "encoder", "decoder", "tokens", "dropout", "dtype", "extends"},
    "embedding": {"tie_output", "scale_by_sqrt_d", "scale_output_by_inv_sqrt_d", "token_types", "norm",
                  "output_transform", "output_bias", "pooler", "multiplier", "logit_multiplier", "logit_softcap"},
    "encoder": {"layers", "attention", "ffn", "norm", "residual_multiplier", "layer_types"},
    "decoder": {"layers", "attention", "ffn", "norm", "residual_multiplier", "layer_types"},
    "attention": {"heads", "kv_heads", "score", "bias", "window", "head_dim", "qk_norm", "scale", "softcap"},
    "ffn": {"hidden", "activation", "gated", "bias", "experts"},
    "norm": {"kind", "placement", "eps", "final"},
}


@st.composite
def impossible(draw, spec: dict) -> Broken:
    """Each field fine alone, the combination impossible."""
    stack = _stack_name(spec)
    d_model = spec["d_model"]
    heads = spec[stack]["attention"]["heads"]
    choices = ["heads", "kv_heads", "missing-stack", "extra-stack", "token", "pooler", "sinusoidal-odd", "rope-odd",
               "relative-distance", "unknown-kind", "top-k"]
    what = draw(st.sampled_from(choices))
    if what in ("sinusoidal-odd", "relative-distance", "unknown-kind"):  # a new positional kind: per-layer RoPE
        spec = copy.deepcopy(spec)  # bases or NoPE entries would be refused first, naming another field
        for part in ("encoder", "decoder"):
            spec.get(part, {}).pop("layer_types", None)
    if what == "heads":
        bad = draw(st.sampled_from([h for h in range(2, 3 * d_model) if d_model % h]))
        out = _set(spec, f"{stack}.attention.heads", bad)
        out[stack]["attention"].pop("head_dim", None)  # with an explicit head_dim any head count is fine
        return Broken(out, f"{stack}.attention.heads", "impossible")
    if what == "top-k":
        count = draw(st.integers(1, 4))
        out = _set(spec, f"{stack}.ffn.experts", {"count": count, "top_k": count + draw(st.integers(1, 3))})
        return Broken(out, f"{stack}.ffn.experts.top_k", "impossible")
    if what == "kv_heads":
        bad = draw(st.sampled_from([k for k in range(2, 2 * heads + 3) if heads % k]))
        return Broken(_set(spec, f"{stack}.attention.kv_heads", bad), f"{stack}.attention.kv_heads", "impossible")
    if what == "missing-stack":
        out = copy.deepcopy(spec)
        del out[stack]
        return Broken(out, stack, "impossible")  # reported at the family line, naming the stack
    if what == "extra-stack":
        other = {"decoder-only": "encoder", "encoder-only": "decoder"}.get(spec["family"])
        if other is None:  # an encoder-decoder has both; make it decoder-only instead
            return Broken(_set(spec, "family", "decoder-only"), "encoder", "impossible")
        return Broken(_set(spec, other, copy.deepcopy(spec[stack])), other, "impossible")
    if what == "token":
        field = draw(st.sampled_from(["bos", "pad", "eos"]))
        return Broken(_set(spec, f"tokens.{field}", spec["vocab_size"] + draw(st.integers(0, 5))), f"tokens.{field}", "impossible")
    if what == "pooler" and spec["family"] != "encoder-only":
        return Broken(_set(spec, "embedding.pooler", True), "embedding.pooler", "impossible")
    if what == "sinusoidal-odd":
        out = _set(spec, "positional", {"kind": "sinusoidal"})
        for part in ("encoder", "decoder"):
            if part in out:
                out[part]["attention"]["heads"] = 1
                out[part]["attention"].pop("kv_heads", None)
        return Broken(_set(out, "d_model", draw(st.sampled_from([7, 9, 15]))), "d_model", "impossible")
    if what == "rope-odd":
        out = _set(spec, "positional", {"kind": "rope"})
        for part in ("encoder", "decoder"):
            if part in out:
                out[part]["attention"]["heads"] = 2
                out[part]["attention"].pop("kv_heads", None)
                out[part]["attention"].pop("head_dim", None)
        first = "encoder" if "encoder" in out else "decoder"  # both are broken; the first one is reported
        return Broken(_set(out, "d_model", draw(st.sampled_from([6, 10, 14]))), f"{first}.attention.heads", "impossible")
    if what == "relative-distance":
        buckets = draw(st.integers(4, 32))
        bad = {"kind": "relative-bias", "buckets": buckets, "max_distance": draw(st.integers(2, buckets // 2))}
        return Broken(_set(spec, "positional", bad), "positional.max_distance", "impossible")
    # a positional kind that does not exist
    kind = draw(st.sampled_from(["rotary", "absolute", "xpos", "ROPE", ""]))
    return Broken(_set(spec, "positional", {"kind": kind}), "positional", "impossible")
