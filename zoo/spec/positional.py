"""The options of each positional encoding (one pydantic class per ``kind``) and the
rules each one sets on the rest of the spec (``check``). Their registry entries (hook,
parameters, lowering) are in zoo.spec.variants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Optional, Union

from pydantic import Field

from zoo.spec.fields import MAX_SIZE, FieldIssue, Int, PositiveInt, Strict_

if TYPE_CHECKING:  # pragma: no cover
    from zoo.spec.model import ModelSpec


class PositionalOptions(Strict_):
    """What every positional kind has: ``check``, its rules on the whole spec."""

    def check(self, spec: "ModelSpec") -> None:
        return None


class Sinusoidal(PositionalOptions):
    """Fixed sin/cos absolute positions added to the token embeddings (Vaswani et al.)."""

    kind: Literal["sinusoidal"] = "sinusoidal"
    layout: Literal["interleaved", "halves"] = Field(
        "interleaved",
        description="interleaved: sin, cos alternate over the dimensions (Vaswani); halves: sin on the first half, cos on the second (Marian)",
    )

    def check(self, spec: "ModelSpec") -> None:
        if spec.d_model % 2:
            raise FieldIssue(("d_model",), f"sinusoidal positions need an even d_model, got d_model={spec.d_model}")


class Learned(PositionalOptions):
    """A learned absolute position table of ``max_seq_len + offset`` rows (GPT-2, BERT);
    position p reads row p + offset (BART keeps 2 unused rows: offset 2)."""

    kind: Literal["learned"] = "learned"
    offset: Int = Field(0, ge=0, le=MAX_SIZE["max_seq_len"], description="rows before position 0 in the table (2 for BART)")


class LinearScaling(Strict_):
    """Positions divided by ``factor`` (position interpolation; Hugging Face rope_type linear)."""

    kind: Literal["linear"] = "linear"
    factor: float = Field(gt=0, description="how many times longer the context is than in training")


class Llama3Scaling(Strict_):
    """Llama 3.1's frequency-dependent scaling: long wavelengths divided by ``factor``,
    short ones kept, a smooth ramp between (rope_type llama3)."""

    kind: Literal["llama3"] = "llama3"
    factor: float = Field(gt=0)
    low_freq_factor: float = Field(1.0, gt=0)
    high_freq_factor: float = Field(4.0, gt=0)
    original_max_seq_len: PositiveInt = Field(le=MAX_SIZE["max_seq_len"], description="the training context length")


class YarnScaling(Strict_):
    """YaRN (Peng et al. 2023): interpolated and extrapolated frequencies blended over
    the dimensions between beta_fast and beta_slow rotations, the rotated part scaled by
    attention_factor (default 0.1 ln(factor) + 1) (rope_type yarn)."""

    kind: Literal["yarn"] = "yarn"
    factor: float = Field(gt=0)
    original_max_seq_len: PositiveInt = Field(le=MAX_SIZE["max_seq_len"])
    beta_fast: float = Field(32.0, gt=0)
    beta_slow: float = Field(1.0, gt=0)
    attention_factor: Optional[float] = Field(None, gt=0, description="default: from factor (and mscale, mscale_all_dim)")
    mscale: Optional[float] = Field(None, gt=0)
    mscale_all_dim: Optional[float] = Field(None, gt=0)
    truncate: bool = True


class LongRopeScaling(Strict_):
    """LongRoPE (Phi-3 long context; rope_type longrope): each frequency divided by its own
    factor, ``short_factor`` while the longest position of the batch + 1 is at most
    ``original_max_seq_len``, ``long_factor`` beyond (both sets are in the graph, one
    selected per forward, as transformers does); the rotated part scaled by
    attention_factor (default sqrt(1 + ln(factor) / ln(original_max_seq_len)), 1 for factor <= 1).

    Cached decoding past the threshold: a cache keeps each key rotated with the set of the
    forward that computed it (short for a prompt within the threshold), where one full
    forward over the longer sequence rotates every key with the long set. transformers'
    Phi-3 generate drops its cache once, when the sequence first reaches
    original_max_seq_len + 1, and recomputes it from every token; the zoo's generation loop
    does the same (manifest ``kv_cache.refill_at``), so its greedy tokens equal transformers'
    and each step equals a full forward. A caller stepping the graph itself must refill
    likewise. The build's cached-decoding check (no refill) stays within
    ``original_max_seq_len`` tokens."""

    kind: Literal["longrope"] = "longrope"
    short_factor: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=MAX_SIZE["max_seq_len"], description="one per rotated frequency (rotary_dim / 2)")
    long_factor: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=MAX_SIZE["max_seq_len"], description="one per rotated frequency (rotary_dim / 2)")
    original_max_seq_len: PositiveInt = Field(le=MAX_SIZE["max_seq_len"], description="the training context: longer batches use long_factor")
    factor: float = Field(gt=0, description="context extension (Phi-3: max_position_embeddings / original); sets the default attention_factor")
    attention_factor: Optional[float] = Field(None, gt=0, description="default: sqrt(1 + ln(factor) / ln(original_max_seq_len))")

    def check(self, spec: "ModelSpec") -> None:
        for part, _ in spec.stacks():
            pairs = spec.rotary_dim(part) // 2
            for name in ("short_factor", "long_factor"):
                if len(getattr(self, name)) != pairs:
                    raise FieldIssue(
                        ("positional", "scaling", name),
                        f"{name} has {len(getattr(self, name))} values but {part} rotates {pairs} frequency pairs "
                        f"(rotary_dim {spec.rotary_dim(part)} = positional.fraction {spec.positional.fraction} x {part}.attention head_dim {spec.head_dim(part)})",
                    )


RopeScaling = Annotated[Union[LinearScaling, Llama3Scaling, YarnScaling, LongRopeScaling], Field(discriminator="kind")]


class Rope(PositionalOptions):
    """Rotary embeddings on queries and keys (RoFormer, Llama); ``fraction`` < 1 rotates
    only the first ``fraction * head_dim`` dimensions of each head (GPT-NeoX style);
    ``layout`` pairs dimension i with i + rot/2 (halves) or 2i with 2i + 1 (interleaved)."""

    kind: Literal["rope"] = "rope"
    layout: Literal["halves", "interleaved"] = Field(  # zoo.spec.variants.ROPE_LAYOUTS (tests check they agree)
        "halves",
        description="halves: dimension i rotates with i + rot/2 (GPT-NeoX, Llama: rotate_half); "
        "interleaved: 2i with 2i + 1 (GPT-J: rotate_every_two)",
    )
    theta: float = Field(10000.0, gt=0, description="base of the rotation frequencies")
    fraction: float = Field(1.0, gt=0, le=1, description="share of head_dim that is rotated")
    scaling: Optional[RopeScaling] = Field(None, description="longer contexts: linear, llama3, yarn or longrope (zoo.spec.variants.ROPE_SCALINGS)")

    def check(self, spec: "ModelSpec") -> None:
        for part, stack in spec.stacks():
            head_dim = spec.head_dim(part)
            if head_dim % 2:
                raise FieldIssue(
                    (part, "attention", "heads"),
                    f"RoPE needs an even head_dim, got head_dim={head_dim} (d_model={spec.d_model} / heads={stack.attention.heads})",
                )
            if spec.rotary_dim(part) < 2:
                raise FieldIssue(
                    ("positional", "fraction"), f"fraction={self.fraction} of head_dim={head_dim} rotates no dimension pair"
                )
        if hasattr(self.scaling, "check"):  # a scaling with rules on the rotated dimensions (longrope)
            self.scaling.check(spec)


class Alibi(PositionalOptions):
    """Linear distance penalties per head added to the scores (Press et al.)."""

    kind: Literal["alibi"] = "alibi"


class RelativeBias(PositionalOptions):
    """T5's learned bias per head over log-bucketed relative distances; bidirectional
    in encoders, causal in decoders; computed by the first layer, shared by all."""

    kind: Literal["relative-bias"] = "relative-bias"
    buckets: PositiveInt = Field(32, ge=2, le=MAX_SIZE["buckets"], description="number of distance buckets")
    max_distance: PositiveInt = Field(128, ge=2, le=MAX_SIZE["max_seq_len"], description="distance beyond which buckets saturate")

    def check(self, spec: "ModelSpec") -> None:
        if self.buckets < 4:
            raise FieldIssue(
                ("positional", "buckets"),
                f"buckets={self.buckets} is too few: relative bias needs at least 4 (half per direction in encoders)",
            )
        if self.max_distance <= self.buckets // 2:
            raise FieldIssue(
                ("positional", "max_distance"),
                f"max_distance={self.max_distance} must exceed buckets/2={self.buckets // 2} (the exact-distance buckets)",
            )


class NoPositional(PositionalOptions):
    """No positional information (a bag of tokens, or position from causality alone)."""

    kind: Literal["none"] = "none"
