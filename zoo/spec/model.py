"""The spec language: pydantic models for a transformer architecture.

Everything is frozen and ``extra="forbid"``: an unknown key is an error, never
ignored. Variants are tagged unions on ``kind`` (positional encodings), options
that exclude each other are one ``Literal`` field. Cross-field rules live in
``ModelSpec``'s validator and put the numbers in the message; derived values
(head_dim, parameter count) are computed here, in one place.

This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from zoo.spec.families import family
from zoo.spec import layer_types as _layer_types
from zoo.spec.fields import MAX_SIZE, FieldIssue, Int, PositiveInt, Strict_ as _Strict
from zoo.spec.layer_types import LayerType
from zoo.spec.positional import Alibi, Learned, NoPositional, RelativeBias, Rope, Sinusoidal
from zoo.spec.variants import ACTIVATIONS, NORMS, PLACEMENTS, POSITIONAL, RESIDUALS, SCORES as SCORE_VARIANTS

__all__ = ["Alibi", "Learned", "NoPositional", "RelativeBias", "Rope", "Sinusoidal", "FieldIssue", "MAX_SIZE"]

Family = Literal["encoder-only", "decoder-only", "encoder-decoder"]
Score = SCORE_VARIANTS.literal()
Activation = ACTIVATIONS.literal()
NormKind = NORMS.literal()
Placement = PLACEMENTS.literal()
DType = Literal["float32", "float16", "bfloat16"]

SCORES: tuple[str, ...] = SCORE_VARIANTS.keys()
FAMILIES: tuple[str, ...] = Family.__args__  # type: ignore[attr-defined]

Positional = Annotated[Union[tuple(e.options for e in POSITIONAL.entries())], Field(discriminator="kind")]
POSITIONAL_KINDS: tuple[str, ...] = POSITIONAL.keys()

# --------------------------------------------------------------------------- blocks


class QKNorm(_Strict):
    """A norm on the queries and keys after their projections, before RoPE: per head
    over head_dim (Qwen3, Gemma 3) or over the whole projection (OLMo 2)."""

    kind: NormKind = Field("rmsnorm", description=NORMS.describe())
    over: Literal["head", "all"] = Field("head", description="head: each head's head_dim values; all: the whole q (k) projection")
    eps: Optional[float] = Field(None, gt=0, lt=1, description="default: the stack norm's eps")


class Attention(_Strict):
    heads: PositiveInt = Field(le=MAX_SIZE["heads"], description="number of query heads")
    kv_heads: Optional[PositiveInt] = Field(
        None, description="key/value heads: = heads (MHA, the default), < heads (GQA), 1 (MQA)"
    )
    score: Score = Field("scaled-dot", description=SCORE_VARIANTS.describe())
    bias: Union[bool, Literal["qkv"]] = Field(
        True, description="bias on the q, k, v and output projections; 'qkv': on q, k and v only (Qwen2)"
    )
    window: Optional[PositiveInt] = Field(
        None, description="sliding window: a query sees at most this many keys around it (itself included)"
    )
    head_dim: Optional[PositiveInt] = Field(
        None, le=MAX_SIZE["d_model"], description="width of each head; default d_model / heads (Qwen3 and Gemma set it)"
    )
    qk_norm: Optional[QKNorm] = Field(None, description="a norm on q and k before RoPE (Qwen3, OLMo 2, Gemma 3)")
    scale: Optional[float] = Field(
        None, gt=0, description="the factor on q.k in place of the score's own (1/sqrt(head_dim) for scaled-dot): Granite's "
        "attention_multiplier, Gemma's query_pre_attn_scalar^-0.5; dot-product scores only"
    )
    softcap: Optional[float] = Field(None, gt=0, description="scores -> softcap * tanh(scores / softcap) before the mask (Gemma 2)")

    @property
    def qkv_bias(self) -> bool:
        return self.bias is not False

    @property
    def out_bias(self) -> bool:
        return self.bias is True

    def width(self, d_model: int) -> int:
        """head_dim: the explicit one, else d_model / heads."""
        return self.head_dim if self.head_dim is not None else d_model // self.heads

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads


class SharedExpert(_Strict):
    """An expert every token goes through, beside the routed ones (Qwen2-MoE)."""

    hidden: PositiveInt = Field(le=MAX_SIZE["hidden"], description="inner width of the shared expert")
    gate: bool = Field(True, description="its output times sigmoid(x . w), w a learned d_model vector (Qwen2-MoE's shared_expert_gate)")


class Experts(_Strict):
    """A mixture of experts in place of one feed-forward (Mixtral, Qwen-MoE, OLMoE): a router
    (d_model -> count, no bias), softmax over all experts, the top_k experts run and summed
    with their probabilities as weights."""

    count: PositiveInt = Field(le=MAX_SIZE["experts"], description="number of experts, each a feed-forward of the ffn's hidden, activation, gated and bias")
    top_k: PositiveInt = Field(description="experts each token goes through (ties: the lower expert index first)")
    normalize: bool = Field(True, description="renormalise the top_k probabilities to sum 1 (Mixtral, Qwen3-MoE; Qwen2-MoE's norm_topk_prob)")
    shared: Optional[SharedExpert] = Field(None, description="an expert every token goes through, added to the routed ones")


class FeedForward(_Strict):
    hidden: PositiveInt = Field(le=MAX_SIZE["hidden"], description="inner width of the feed-forward block")
    activation: Activation = Field("gelu", description=ACTIVATIONS.describe())
    gated: bool = Field(False, description="gated linear unit: act(x W1) * (x W3) -> SwiGLU / GeGLU")
    bias: bool = True
    experts: Optional[Experts] = Field(None, description="a mixture of experts of this feed-forward's shape (hidden is each expert's)")

    @property
    def kind(self) -> str:
        """Its entry in zoo.spec.variants.FFN_KINDS."""
        if self.experts is not None:
            return "moe"
        return "gated" if self.gated else "plain"


class Norm(_Strict):
    kind: NormKind = Field("layernorm", description=NORMS.describe())
    placement: Placement = Field("pre", description=PLACEMENTS.describe())
    eps: float = Field(1e-5, gt=0, lt=1)
    final: Optional[bool] = Field(
        None, description="norm after the last layer; defaults to true where the residual stream is never normalised "
        "(pre, sandwich, branch-post), false for post"
    )

    @property
    def has_final(self) -> bool:
        return self.final if self.final is not None else PLACEMENTS[self.placement].final


class Stack(_Strict):
    """A stack of identical layers (the encoder or the decoder)."""

    layers: PositiveInt = Field(le=MAX_SIZE["layers"])
    attention: Attention
    ffn: FeedForward
    norm: Norm = Norm()
    residual_multiplier: float = Field(1.0, gt=0, description="each sub-layer's output is scaled by this before the residual add (Granite)")
    residual: RESIDUALS.literal() = Field(  # type: ignore[valid-type]
        "sequential", description=RESIDUALS.describe() + ". Parallel layers are pre-norm and have no cross-attention"
    )
    layer_types: list[LayerType] = Field(
        default_factory=list,
        description="per-layer differences, repeated as a period (layer i uses entry i % len): sliding or full attention, "
        "positions or none (NoPE), its own RoPE base and scaling; empty: every layer alike",
    )

    def layer_type(self, i: int) -> LayerType:
        """Layer i's entry (zoo.spec.layer_types.layer_type)."""
        return _layer_types.layer_type(self, i)


class Embedding(_Strict):
    tie_output: bool = Field(True, description="output projection shares the token embedding matrix")
    scale_by_sqrt_d: bool = Field(False, description="multiply token embeddings by sqrt(d_model)")
    scale_output_by_inv_sqrt_d: bool = Field(
        False, description="multiply the last hidden states by 1/sqrt(d_model) before the output projection (T5)"
    )
    token_types: Int = Field(
        0,
        ge=0,
        le=MAX_SIZE["vocab_size"],
        description="rows of a token-type table (BERT's segments; 0 = none). The graphs take no token-type "
        "input, so row 0 is added to every token (what BERT does without token_type_ids)",
    )
    norm: bool = Field(
        False,
        description="a norm after token and absolute position embeddings, one per stack, of the stack's norm kind and eps "
        "(BERT, BART's layernorm_embedding)",
    )
    output_transform: bool = Field(
        False,
        description="dense d_model -> d_model, the last stack's ffn activation and a norm before the output projection "
        "(BERT's MLM head transform)",
    )
    output_bias: bool = Field(False, description="a vocab-sized bias added to the logits (BERT's MLM bias, BART's final_logits_bias)")
    multiplier: float = Field(1.0, gt=0, description="token embeddings times this (Granite's embedding_multiplier)")
    logit_multiplier: float = Field(1.0, gt=0, description="logits times this (Granite: 1 / logits_scaling)")
    logit_softcap: Optional[float] = Field(None, gt=0, description="logits -> softcap * tanh(logits / softcap) (Gemma 2)")
    pooler: bool = Field(
        False,
        description="encoder-only: an extra output pooler_output (batch, d_model) = tanh(dense(first token's hidden state)) (BERT)",
    )


class Tokens(_Strict):
    """Special token ids the generation loop uses (Hugging Face's generation config)."""

    bos: Optional[Int] = Field(None, ge=0, description="beginning-of-sequence id")
    eos: list[Int] = Field(default_factory=list, description="ids that end a generated sequence (one id or a list)")
    pad: Optional[Int] = Field(None, ge=0, description="padding id (filler after a sequence ends)")
    decoder_start: Optional[Int] = Field(
        None, ge=0, description="encoder-decoder: the first decoder token (default: pad, else bos, else 0)"
    )

    @field_validator("eos", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("eos")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        if any(v < 0 for v in value):
            raise ValueError(f"token ids are >= 0, got {value}")
        return value


# --------------------------------------------------------------------------- the model


class ModelSpec(_Strict):
    """A whole transformer: the root of a spec file."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    family: Family
    vocab_size: PositiveInt = Field(le=MAX_SIZE["vocab_size"])
    max_seq_len: PositiveInt = Field(le=MAX_SIZE["max_seq_len"])
    d_model: PositiveInt = Field(le=MAX_SIZE["d_model"])
    positional: Positional = Field(default_factory=Learned)
    embedding: Embedding = Embedding()
    encoder: Optional[Stack] = None
    decoder: Optional[Stack] = None
    tokens: Tokens = Tokens()
    dropout: float = Field(0.0, ge=0, lt=1)
    dtype: DType = "float32"

    @field_validator("positional", mode="before")
    @classmethod
    def _positional_shorthand(cls, value: Any) -> Any:
        # `positional: rope` is short for `positional: {kind: rope}`
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "ModelSpec":
        wanted = family(self).stacks
        for part in ("encoder", "decoder"):
            present = getattr(self, part) is not None
            if part in wanted and not present:
                raise FieldIssue((part,), f"family {self.family} needs a '{part}' stack", where=("family",))
            if part not in wanted and present:
                raise FieldIssue((part,), f"family {self.family} has no '{part}' stack; remove it")
        for field in ("bos", "pad", "decoder_start"):
            value = getattr(self.tokens, field)
            if value is not None and value >= self.vocab_size:
                raise FieldIssue(("tokens", field), f"{field}={value} is not below vocab_size={self.vocab_size}")
        for value in self.tokens.eos:
            if value >= self.vocab_size:
                raise FieldIssue(("tokens", "eos"), f"eos={value} is not below vocab_size={self.vocab_size}")
        if self.embedding.pooler and family(self).generates:  # a pooler summarises an encoder-only model
            raise FieldIssue(("embedding", "pooler"), f"a pooler output exists for encoder-only models only, not {self.family}")
        for part, stack in self.stacks():
            att = stack.attention
            where = (part, "attention")
            if att.head_dim is None and self.d_model % att.heads:
                raise FieldIssue(
                    where + ("heads",), f"heads={att.heads} does not divide d_model={self.d_model}"
                )
            if att.scale is not None and SCORE_VARIANTS[att.score].dot_product is None:
                raise FieldIssue(
                    where + ("scale",), f"attention.scale sets the factor of a dot-product score, not of score={att.score}"
                )
            if stack.residual != "sequential" and stack.norm.placement != "pre":
                raise FieldIssue(
                    (part, "residual"), f"{part}.residual={stack.residual} reads its input through the norms (pre-norm): "
                    f"{part}.norm.placement={stack.norm.placement} is refused with it", where=(part, "norm", "placement"),
                )
            if stack.residual != "sequential" and part == "decoder" and family(self).crossed:
                raise FieldIssue(
                    (part, "residual"), f"{part}.residual={stack.residual} is refused with family={self.family}: the decoder's "
                    "cross-attention has no parallel form (the encoder's may be parallel)", where=("family",),
                )
            if att.kv_heads is not None and att.heads % att.kv_heads:
                raise FieldIssue(
                    where + ("kv_heads",), f"kv_heads={att.kv_heads} does not divide heads={att.heads}"
                )
            moe = stack.ffn.experts
            if moe is not None and moe.top_k > moe.count:
                raise FieldIssue(
                    (part, "ffn", "experts", "top_k"), f"experts.top_k={moe.top_k} is more than experts.count={moe.count}"
                )
            _layer_types.check(self, part, stack)
        self.positional.check(self)
        return self

    # ---- derived values, computed in one place

    def stacks(self) -> list[tuple[str, Stack]]:
        return [(p, s) for p, s in (("encoder", self.encoder), ("decoder", self.decoder)) if s is not None]

    def stack(self, part: str) -> Stack:
        stack = getattr(self, part)
        if stack is None:
            raise KeyError(f"{self.name} has no {part}")
        return stack

    def head_dim(self, part: str) -> int:
        return self.stack(part).attention.width(self.d_model)

    def rotary_dim(self, part: str) -> int:
        """Dimensions of each head that RoPE rotates (even, at most head_dim)."""
        if not isinstance(self.positional, Rope):
            return 0
        rot = int(self.head_dim(part) * self.positional.fraction)
        return rot - rot % 2

    @property
    def is_causal_lm(self) -> bool:
        return family(self).causal_lm

    def parameter_count(self) -> int:
        """Exact number of parameters of the compiled module (tied weights counted once)."""
        from zoo.spec.params import count_parameters

        return count_parameters(self).total


def schema() -> dict[str, Any]:
    """JSON Schema of a spec file (for editors); ``extends`` is the loader's key."""
    out = ModelSpec.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "Transformer Zoo model spec"
    out["properties"]["extends"] = {
        "type": ["string", "null"],
        "description": "a catalog name or a path (relative to this file) whose spec this one overrides",
    }
    return out
