"""The three families as objects: each owns its graphs (names, inputs, outputs, the
tensor role of every cache tensor) and its dummy inputs, so that no other module
branches on the family's name. The compiler keys its torch wrappers by the same
names (compiler.model.WRAPPERS). No torch, no pydantic: the runtime imports this.

Cache tensors are named ``{role}.{layer}.{key|value}``; ``Role`` is the one place
that knows those prefixes (``Role.PAST.name_of(0, "key")`` -> ``"past.0.key"``,
``Role.of("present.3.value")`` -> ``Role.PRESENT``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Optional

from zoo.spec.contract import GraphSpec, TensorSpec

KINDS = ("key", "value")
# The slot axis of a shared cache buffer (``zoo build --kv-cache shared``): past.* and
# present.* are then one preallocated tensor of max_seq slots, bound as both
SHARED_AXIS = "max_seq"
SHARED_BUFFER = (
    "shared: past.{i}.* (batch, kv_heads, max_seq, head_dim) preallocated once and bound, with IO binding, "
    "as present.{i}.* too; the graph writes the new tokens' rows at slots total_seq - seq .. total_seq - 1 "
    "(total_seq: the attention mask's width) and reads slots 0 .. total_seq - 1"
)


class Role(str, Enum):
    """What a cache tensor of a graph is."""

    PAST = "past"  # input: the keys/values of earlier tokens (batch, kv_heads, past_seq, head_dim)
    PRESENT = "present"  # output: past + the new tokens' (batch, kv_heads, total_seq, head_dim)
    CROSS = "cross"  # encoder output / decoder input: the encoder's keys/values (batch, kv_heads, src_seq, head_dim)

    def name_of(self, layer: int, kind: str) -> str:
        return f"{self.value}.{layer}.{kind}"

    @classmethod
    def of(cls, name: str) -> Optional["Role"]:
        """The role of a tensor name, or None for a tensor that is not a cache tensor."""
        parts = name.split(".")
        if len(parts) == 3 and parts[1].isdigit() and parts[2] in KINDS:
            return next((r for r in cls if r.value == parts[0]), None)
        return None

    @staticmethod
    def layer_of(name: str) -> int:
        return int(name.split(".")[1])

    def counterpart(self, name: str) -> str:
        """``present.3.key`` -> the same layer and kind under this role."""
        _, layer, kind = name.split(".")
        return f"{self.value}.{layer}.{kind}"

    def pick(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``tensors`` (by name) that have this role."""
        return {k: v for k, v in tensors.items() if Role.of(k) is self}

    @staticmethod
    def carried(outputs: dict[str, Any]) -> dict[str, Any]:
        """A step's ``present.*`` outputs as the next step's ``past.*`` inputs."""
        return {Role.PAST.counterpart(k): v for k, v in Role.PRESENT.pick(outputs).items()}


@dataclass(frozen=True)
class CacheLayout:
    """The key/value cache of a decoder graph.

    Per layer i the graph takes ``past.{i}.key`` / ``past.{i}.value`` of shape
    (batch, kv_heads, past_seq, head_dim) and returns ``present.{i}.key`` /
    ``present.{i}.value`` of shape (batch, kv_heads, total_seq, head_dim), total_seq =
    past_seq + seq: the past with the new tokens' keys/values appended (keys after
    RoPE). The attention mask covers all total_seq slots. Prefill passes a past of
    length 0. An encoder-decoder's encoder graph also returns ``cross.{i}.key`` /
    ``cross.{i}.value`` (batch, kv_heads, src_seq, head_dim), which the decoder takes
    at every step unchanged."""

    layers: int
    kv_heads: int
    head_dim: int
    cross: bool
    # LongRoPE: the generation loop recomputes the cache from every token when the sequence
    # first grows to refill_at + 1 (keys rotated with the short set then get the long one), as
    # transformers' Phi-3 generation does; None: the cache is never recomputed
    refill_at: Optional[int] = None
    # --kv-cache shared (passes.optimize.kv_share): past.{i}.* is a buffer of max_seq slots
    # that the runtime binds as present.{i}.* too; the graph writes the new rows in place
    shared: bool = False

    def names(self, role: Role | str) -> list[str]:
        role = Role(role)
        return [role.name_of(i, kind) for i in range(self.layers) for kind in KINDS]

    def tensors(self, role: Role | str, seq: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(n, "float", ("batch", "kv_heads", seq, "head_dim")) for n in self.names(role))

    def to_json(self) -> dict:
        return {
            "layers": self.layers,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "layout": "batch, kv_heads, seq, head_dim",
            "past": "past.{i}.key / past.{i}.value",
            "present": "present.{i}.key / present.{i}.value (past + new tokens)",
            "cross": "cross.{i}.key / cross.{i}.value, from the encoder graph" if self.cross else None,
            "prefill": "past of length 0",
            **({"refill_at": self.refill_at} if self.refill_at is not None else {}),
            **({"buffer": SHARED_BUFFER} if self.shared else {}),
        }


def _ids(name: str, seq: str) -> TensorSpec:
    return TensorSpec(name, "int64", ("batch", seq))


def _hidden(name: str, seq: str) -> TensorSpec:
    return TensorSpec(name, "float", ("batch", seq, "d_model"))


def _logits(seq: str) -> TensorSpec:
    return TensorSpec("logits", "float", ("batch", seq, "vocab"))


@dataclass(frozen=True)
class Family:
    """What a family is, for every floor: its stacks and graphs, the graph a
    generation step runs (``step_graph``, None: it does not generate) and its inputs."""

    name: str
    stacks: tuple[str, ...]
    step_graph: Optional[str]  # the graph a decoding step runs
    ids: str  # that graph's (or the only graph's) token-id input
    mask: str  # and its attention mask
    encoder_graph: Optional[str] = None  # a separate graph run once per prompt

    @property
    def generates(self) -> bool:
        return self.step_graph is not None

    @property
    def crossed(self) -> bool:
        """Decoder layers attend to an encoder's output."""
        return self.encoder_graph is not None

    @property
    def causal_lm(self) -> bool:
        """One graph that takes the prompt and its own cache (decoder-only)."""
        return self.generates and not self.crossed

    def output_stack(self) -> str:
        """The stack whose hidden states are projected to logits."""
        return self.stacks[-1]

    def cache(self, spec: Any) -> Optional[CacheLayout]:
        if not self.generates:
            return None
        dec = spec.stack("decoder")
        from zoo.spec.variants import ROPE_SCALINGS  # here: the runtime imports this module without pydantic

        scaling = getattr(spec.positional, "scaling", None)
        refill = ROPE_SCALINGS[scaling.kind].switch_at(scaling) if scaling is not None else None
        return CacheLayout(layers=dec.layers, kv_heads=dec.attention.n_kv_heads, head_dim=spec.head_dim("decoder"), cross=self.crossed, refill_at=refill)

    def graphs(self, spec: Any) -> tuple[GraphSpec, ...]:
        raise NotImplementedError

    def feeds(self, ids: Any, mask: Any, *, src_ids: Any = None, src_mask: Any = None) -> dict[str, dict[str, Any]]:
        """The token inputs of every graph, by graph then input name: ``ids`` and
        ``mask`` for the (step) graph, ``src_*`` for an encoder graph (ignored without one)."""
        return {"model": {self.ids: ids, self.mask: mask}}

    def token_inputs(self, *, vocab: int, batch: int, seq: int, src_seq: int | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
        """Random ids and padded masks of every graph, by graph then input name (cache
        tensors come from runtime.session or the encoder's outputs)."""
        import numpy as np  # here, so that the spec commands load no numpy

        from zoo.spec.inputs import padded_mask, random_ids

        rng = np.random.default_rng(seed)
        return self.feeds(random_ids(batch, seq, vocab, rng), padded_mask(batch, seq, rng))

    def masks(self, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Graph name and stack name -> the attention mask of its tokens in ``inputs``
        (the form of ``feeds``)."""
        mask = inputs["model"][self.mask]
        return {"model": mask, **{stack: mask for stack in self.stacks}}

    def output_masks(self, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Output name -> the attention mask whose real positions count."""
        mask = inputs["model"][self.mask]
        # the pooler reads the first position: a row padded on the left pools a padding slot
        return {"last_hidden_state": mask, "logits": mask, "pooler_output": mask[:, 0]}


class EncoderOnly(Family):
    def graphs(self, spec: Any) -> tuple[GraphSpec, ...]:
        outputs: tuple[TensorSpec, ...] = (_hidden("last_hidden_state", "seq"), _logits("seq"))
        if spec is not None and spec.embedding.pooler:
            outputs += (TensorSpec("pooler_output", "float", ("batch", "d_model")),)
        return (GraphSpec("model", "model.onnx", (_ids(self.ids, "seq"), _ids(self.mask, "seq")), outputs),)


class DecoderOnly(Family):
    def graphs(self, spec: Any) -> tuple[GraphSpec, ...]:
        cache = self.cache(spec)
        inputs = (_ids(self.ids, "seq"), _ids(self.mask, "total_seq"), *cache.tensors(Role.PAST, "past_seq"))
        return (GraphSpec("model", "model.onnx", inputs, (_logits("seq"), *cache.tensors(Role.PRESENT, "total_seq"))),)


class EncoderDecoder(Family):
    def graphs(self, spec: Any) -> tuple[GraphSpec, ...]:
        cache = self.cache(spec)
        encoder = GraphSpec(
            "encoder",
            "encoder.onnx",
            (_ids("input_ids", "src_seq"), _ids("attention_mask", "src_seq")),
            (_hidden("encoder_hidden_states", "src_seq"), *cache.tensors(Role.CROSS, "src_seq")),
        )
        inputs = (
            _ids(self.ids, "seq"),
            _ids(self.mask, "total_seq"),
            _ids("encoder_attention_mask", "src_seq"),
            *cache.tensors(Role.CROSS, "src_seq"),
            *cache.tensors(Role.PAST, "past_seq"),
        )
        decoder = GraphSpec("decoder", "decoder.onnx", inputs, (_logits("seq"), *cache.tensors(Role.PRESENT, "total_seq")))
        return encoder, decoder

    def feeds(self, ids: Any, mask: Any, *, src_ids: Any = None, src_mask: Any = None) -> dict[str, dict[str, Any]]:
        return {
            "encoder": {"input_ids": src_ids, "attention_mask": src_mask},
            "decoder": {self.ids: ids, self.mask: mask, "encoder_attention_mask": src_mask},
        }

    def token_inputs(self, *, vocab: int, batch: int, seq: int, src_seq: int | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
        import numpy as np

        from zoo.spec.inputs import padded_mask, random_ids

        rng = np.random.default_rng(seed)
        src = src_seq or seq
        src_mask = padded_mask(batch, src, rng)
        src_ids = random_ids(batch, src, vocab, rng)
        return self.feeds(random_ids(batch, seq, vocab, rng), padded_mask(batch, seq, rng), src_ids=src_ids, src_mask=src_mask)

    def masks(self, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"encoder": inputs["encoder"]["attention_mask"], "decoder": inputs["decoder"][self.mask]}

    def output_masks(self, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        masks = self.masks(inputs)
        return {"encoder_hidden_states": masks["encoder"], "logits": masks["decoder"]}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        EncoderOnly("encoder-only", ("encoder",), None, "input_ids", "attention_mask"),
        DecoderOnly("decoder-only", ("decoder",), "model", "input_ids", "attention_mask"),
        EncoderDecoder("encoder-decoder", ("encoder", "decoder"), "decoder", "decoder_input_ids", "decoder_attention_mask", "encoder"),
    )
}


def family(of: Any) -> Family:
    """The family of a ModelSpec, an artifact (anything with ``.family``) or a name."""
    name = of if isinstance(of, str) else of.family
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}: one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def graphs_for(spec: Any) -> tuple[GraphSpec, ...]:
    """The graphs of an artifact of ``spec`` (attention masks: 1 = token, 0 = padding)."""
    return family(spec).graphs(spec)


def cache_layout(spec: Any, *, shared: bool = False) -> Optional[CacheLayout]:
    """The cache of a ModelSpec's decoder graph (``shared``: a --kv-cache shared build's);
    None for encoder-only."""
    cache = family(spec).cache(spec)
    return replace(cache, shared=True) if cache is not None and shared else cache
