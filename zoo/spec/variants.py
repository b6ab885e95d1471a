"""Each variant declared once: one registry per kind of component.

An entry carries what every floor needs to know about a variant, keyed by the
literal a spec writes:

- ``summary``: one line, used in the JSON Schema's description and the docs;
- its parameter count (``parameters``) and its initialisation (``init``: per
  parameter name, an ``Init`` the compiler applies);
- the hook it plugs into (positional kinds: ``absolute``, ``rotary``, ``score-bias``);
- what the fused lowering does with it (``fused``, and ``lowering``: why, in words).

The spec's Literals and JSON Schema, the parameter counter (zoo.spec.params), the
compiler's modules and init_weights (compiler.variants.implement refuses a registry
with a key left unimplemented), the optimizer's checks (passes.optimize) and the tests'
parametrisation all read these registries. A new variant is one entry here and one
implementation in the compiler.

No torch, no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Literal, Optional, TypeVar

from zoo.spec import positional as pos
from zoo.spec import rope


@dataclass(frozen=True)
class Init:
    """How the compiler initialises one parameter: N(0, std) (``normal``), N(0,
    value / sqrt(last dimension)) (``fan``) or a ``constant``."""

    how: Literal["normal", "fan", "constant"]
    value: float


ONES, ZEROS = Init("constant", 1.0), Init("constant", 0.0)


@dataclass(frozen=True)
class Variant:
    key: str  # the spec's literal
    summary: str
    init: dict[str, Init] = field(default_factory=dict)  # parameter name -> its initialisation


@dataclass(frozen=True)
class ScoreVariant(Variant):
    """An attention score: q (B, H, Tq, hd), k (B, KV, Tk, hd) -> (B, H, Tq, Tk)."""

    parameters: Callable[[int, int], int] = lambda heads, head_dim: 0  # (heads, head_dim) -> count
    dot_product: Optional[Literal["scaled", "unscaled"]] = None  # a plain q.k (the trained-like sinks plant in it)
    sharpened_by: str = ""  # a parameter multiplying the scores: trained-like weights sharpen attention through it
    fused: bool = True  # matched and lowered to the fused attention op
    lowering: str = ""


@dataclass(frozen=True)
class PositionalVariant(Variant):
    options: type[pos.PositionalOptions] = pos.PositionalOptions  # the spec's class for `positional: {kind: ...}`
    hook: Optional[Literal["absolute", "rotary", "score-bias"]] = None
    parameters: Callable[[Any, str], int] = lambda spec, part: 0  # (spec, stack) -> parameters of its tables
    lowering: str = ""


@dataclass(frozen=True)
class RopeScalingVariant(Variant):
    """(plain inverse frequencies, options, rotary_dim, theta) -> (scaled ones, factor on the rotated part)."""

    options: type = object
    frequencies: Callable[..., tuple[list[float], float]] = lambda f, opts, dim, theta: (f, 1.0)
    # a second set, selected per forward when the longest position + 1 exceeds switch_at(opts)
    long_frequencies: Optional[Callable[..., tuple[list[float], float]]] = None
    switch_at: Callable[[Any], Optional[int]] = lambda opts: None  # cached decoding == full forward only up to it
    fused: bool = True  # the rotation is still lowered to RotaryEmbedding
    lowering: str = ""


@dataclass(frozen=True)
class RopeLayoutVariant(Variant):
    """Which dimensions of a head rotate together: ``pairs(rot)`` lists them."""

    fused: bool = True  # lowered to RotaryEmbedding (its interleaved attribute says which)
    lowering: str = ""


@dataclass(frozen=True)
class NormVariant(Variant):
    parameters: Callable[[int], int] = lambda d: 0  # (d_model) -> count
    onnx_op: str = ""  # the op the export produces (the optimizer's norm pass reads it)
    offset: float = 0.0  # the gain is offset + weight (Gemma: 1 + w, weights stored as gain - 1)


@dataclass(frozen=True)
class PlacementVariant(Variant):
    """Where a sublayer's norms sit around it and its residual add."""

    before: bool = False  # a norm on the sublayer's input, inside the residual: x + f(norm(x))
    after: bool = False  # a norm on the sublayer's output, inside the residual: x + norm(f(x))
    around: bool = False  # a norm on the sum, outside the residual: norm(x + f(x))
    final: bool = True  # default of Norm.final: a norm after the last layer (the residual stream is never normalised)
    # the trained-like generator: an un-normalised residual stream ("pre") or one renormalised after every sublayer
    # ("post": compiler.trained_like.POST_NORM), and where it reads that stream (the inputs of the norms, their
    # outputs, or the layers' outputs where some norms sit on the branch)
    residual: Literal["pre", "post"] = "pre"
    stream_at: Literal["norm-inputs", "norm-outputs", "layer-outputs"] = "norm-inputs"
    lowering: str = ("every norm exports as its single op (RMSNormalization / LayerNormalization) wherever it sits; the "
                     "optimizer's norm pass matches the op, not its place, and folds a residual Add before it where the target gains")

    @property
    def norms(self) -> int:
        """Norms per sublayer (the parameter counter multiplies them)."""
        return int(self.before) + int(self.after) + int(self.around)


@dataclass(frozen=True)
class ActivationVariant(Variant):
    onnx_op: str = ""  # the single op torch exports it as ("" where it is several)


@dataclass(frozen=True)
class FfnVariant(Variant):
    parameters: Callable[[int, Any], int] = lambda d, ffn: 0  # (d_model, the spec's FeedForward) -> count
    fused: bool = True  # nothing to fuse, or lowered to a fused op
    lowering: str = ""


@dataclass(frozen=True)
class ResidualVariant(Variant):
    """How a layer's attention and feed-forward meet the residual stream."""

    norms: int = 2  # input norms per layer (self-attention and feed-forward)
    lowering: str = ""


V = TypeVar("V", bound=Variant)


class Registry(Generic[V]):
    """The entries of one kind of component, in declaration order."""

    def __init__(self, kind: str, *entries: V):
        self.kind = kind
        self._entries = {e.key: e for e in entries}

    def __getitem__(self, key: str) -> V:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[V]:
        return list(self._entries.values())

    def keys(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def literal(self) -> Any:
        """``Literal[key1, key2, ...]`` for a pydantic field."""
        return Literal[self.keys()]  # type: ignore[valid-type]

    def describe(self) -> str:
        return "; ".join(f"{e.key}: {e.summary}" for e in self._entries.values())


def _fan(*names: str) -> dict[str, Init]:
    # score matrices N(0, 1/sqrt(head_dim)), so that additive and bilinear scores are not flat
    return {n: Init("fan", 1.0) for n in names}


SCORES: Registry[ScoreVariant] = Registry(
    "attention score",
    ScoreVariant("scaled-dot", "qk/sqrt(d)", dot_product="scaled"),
    ScoreVariant("dot", "qk", dot_product="unscaled"),
    ScoreVariant(
        "additive",
        "v.tanh(Wq q + Wk k)",
        init=_fan("w_q", "w_k", "v"),
        parameters=lambda h, hd: h * (2 * hd * hd + hd),  # per head: W_q, W_k (hd x hd) and v (hd)
        fused=False,
        lowering="the additive score (v . tanh(Wq q + Wk k)) has no fused kernel: decomposed",
    ),
    ScoreVariant(
        "bilinear",
        "q W k",
        init=_fan("w"),
        parameters=lambda h, hd: h * hd * hd,  # per head: W (hd x hd)
        lowering="q W is computed first, then the fused op takes it as the query",
    ),
    ScoreVariant(
        "cosine",
        "tau_h cos(q, k): q and k L2-normalised per head, a learned temperature tau per head",
        init={"temperature": Init("constant", 10.0)},  # Swin v2's starting scale
        parameters=lambda h, hd: h,
        sharpened_by="temperature",
        lowering="tau q/|q| and k/|k| are computed first, then the fused op takes them at scale 1",
    ),
)


def _learned_rows(spec: Any, part: str) -> int:
    return (spec.max_seq_len + spec.positional.offset) * spec.d_model


def _bias_table(spec: Any, part: str) -> int:
    return spec.positional.buckets * spec.stack(part).attention.heads


POSITIONAL: Registry[PositionalVariant] = Registry(
    "positional encoding",
    PositionalVariant("sinusoidal", "fixed sin/cos added to the embeddings", options=pos.Sinusoidal, hook="absolute"),
    PositionalVariant("learned", "a learned table added to the embeddings", options=pos.Learned, hook="absolute", parameters=_learned_rows),
    PositionalVariant(
        "rope", "rotation of q and k", options=pos.Rope, hook="rotary", lowering="RotaryEmbedding where the target gains"
    ),
    PositionalVariant("alibi", "per-head distance penalty on the scores", options=pos.Alibi, hook="score-bias"),
    PositionalVariant(
        "relative-bias",
        "learned per-head bias over distance buckets",
        options=pos.RelativeBias,
        hook="score-bias",
        parameters=_bias_table,
        init={"weight": Init("normal", 0.5)},  # so that distance matters from the start
    ),
    PositionalVariant("none", "no positions", options=pos.NoPositional),
)

# every scaling changes only the frequency constants: the fused rotary lowering reads them from the graph
_SCALED = "the scaled frequencies are constants of the graph: RotaryEmbedding takes them like plain ones"
# the attention factor on the rotated dimensions only: folded into the cos/sin caches (x cos f + rotate_half(x) sin f)
_FACTOR = _SCALED + "; the attention factor on the rotated dimensions is folded into the cos/sin caches"
ROPE_SCALINGS: Registry[RopeScalingVariant] = Registry(
    "rope scaling",
    RopeScalingVariant("linear", "positions / factor", options=pos.LinearScaling, frequencies=rope.linear, lowering=_SCALED),
    RopeScalingVariant("llama3", "long wavelengths / factor, a ramp to the short ones (Llama 3.1)", options=pos.Llama3Scaling,
                       frequencies=rope.llama3, lowering=_SCALED),
    RopeScalingVariant("yarn", "YaRN: blended frequencies, the rotated part scaled", options=pos.YarnScaling,
                       frequencies=rope.yarn, lowering=_FACTOR),
    RopeScalingVariant("longrope", "LongRoPE: a factor per frequency, short or long set chosen by the batch's longest position (Phi-3)",
                       options=pos.LongRopeScaling, frequencies=rope.longrope, long_frequencies=rope.longrope_long,
                       switch_at=lambda opts: opts.original_max_seq_len,
                       lowering="opset 23 RotaryEmbedding takes cos/sin computed in the graph from the selected set, times the "
                       "attention factor; com.microsoft's position-indexed tables need constant frequencies: decomposed there"),
)

ROPE_LAYOUTS: Registry[RopeLayoutVariant] = Registry(
    "rope layout",
    RopeLayoutVariant("halves", "dimension i rotates with i + rot/2 (GPT-NeoX, Llama: rotate_half)",
                      lowering="RotaryEmbedding, interleaved=0"),
    RopeLayoutVariant("interleaved", "dimension 2i rotates with 2i + 1 (GPT-J: rotate_every_two)",
                      lowering="RotaryEmbedding, interleaved=1 (ONNX Runtime computes the same rotation: tests/test_variants.py)"),
)

NORMS: Registry[NormVariant] = Registry(
    "norm",
    NormVariant("layernorm", "(x - mean) / std * w + b", {"weight": ONES, "bias": ZEROS}, parameters=lambda d: 2 * d, onnx_op="LayerNormalization"),
    NormVariant("rmsnorm", "x / rms(x) * w", {"weight": ONES}, parameters=lambda d: d, onnx_op="RMSNormalization"),
    NormVariant("rmsnorm-plus-one", "x / rms(x) * (1 + w), in fp32 (Gemma)", {"weight": ZEROS}, parameters=lambda d: d,
                onnx_op="RMSNormalization", offset=1.0),
)

PLACEMENTS: Registry[PlacementVariant] = Registry(
    "norm placement",
    PlacementVariant("pre", "x + f(norm(x))", before=True),
    PlacementVariant("post", "norm(x + f(x)) (the 2017 paper, BERT, BART)", around=True, final=False, residual="post",
                     stream_at="norm-outputs"),
    PlacementVariant("sandwich", "x + norm_after(f(norm_before(x))): a norm before and after each sublayer (Gemma 2/3, Peri-LN)",
                     before=True, after=True, stream_at="layer-outputs"),
    PlacementVariant("branch-post", "x + norm(f(x)): a norm on the sublayer's output only, inside the residual (OLMo 2)",
                     after=True, stream_at="layer-outputs"),
)

ACTIVATIONS: Registry[ActivationVariant] = Registry(
    "activation",
    ActivationVariant("relu", "max(x, 0)", onnx_op="Relu"),
    ActivationVariant("gelu", "x Phi(x) (erf)", onnx_op="Gelu"),
    ActivationVariant("gelu-tanh", "the tanh approximation of gelu", onnx_op="Gelu"),
    ActivationVariant("silu", "x sigmoid(x)"),
)


MOE_LOWERING = (
    "decomposed: each expert runs on the tokens routed to it (NonZero, Gather, MatMuls, index_add; 0.26-0.59x the "
    "masked-dense graph's time, benchmarks/moe.py). ONNX Runtime 1.32's com.microsoft MoE has a CPU kernel (plain "
    "relu/gelu/silu experts, SwiGLU only with gate and up interleaved: a separate fc3 is refused), measured no faster "
    "(prefill 1.6x the per-expert graph's time, decode 1-1.6x) and without a shared expert or GeGLU: not lowered to"
)


def _dense(d: int, hidden: int, gated: bool, bias: bool) -> int:
    ins = 2 if gated else 1
    return ins * d * hidden + hidden * d + ((ins * hidden + d) if bias else 0)


def _moe(d: int, ffn: Any) -> int:
    """Router (d -> experts, no bias), the experts, the shared expert and its sigmoid gate (d -> 1, no bias)."""
    moe = ffn.experts
    n = d * moe.count + moe.count * _dense(d, ffn.hidden, ffn.gated, ffn.bias)
    if moe.shared is not None:
        n += _dense(d, moe.shared.hidden, ffn.gated, ffn.bias) + (d if moe.shared.gate else 0)
    return n


FFN_KINDS: Registry[FfnVariant] = Registry(
    "feed-forward",
    FfnVariant("plain", "down(act(up x))", parameters=lambda d, f: _dense(d, f.hidden, False, f.bias)),
    FfnVariant("gated", "down(act(gate x) * up x): SwiGLU with silu, GeGLU with gelu", parameters=lambda d, f: _dense(d, f.hidden, True, f.bias)),
    FfnVariant(
        "moe",
        "mixture of experts: softmax over a router's logits, the top_k experts (plain or gated FFNs) weighted by their "
        "probabilities (renormalised to sum 1 with normalize), plus an optional shared expert (with a sigmoid gate: Qwen2-MoE)",
        parameters=_moe,
        fused=False,
        lowering=MOE_LOWERING,
    ),
)

_NO_OP = "no op of its own: the attention and the norms in it are lowered as in a sequential layer"
RESIDUALS: Registry[ResidualVariant] = Registry(
    "residual",
    ResidualVariant("sequential", "h = x + attn(n1(x)); y = h + ffn(n2(h))", norms=2, lowering=_NO_OP),
    ResidualVariant("parallel", "y = x + attn(n(x)) + ffn(n(x)), one shared norm (GPT-J, Falcon-7B, Phi-1/2)", norms=1,
                    lowering=_NO_OP),
    ResidualVariant("parallel-two-norms", "y = x + attn(n1(x)) + ffn(n2(x)) (GPT-NeoX, Falcon-40B's ln_attn / ln_mlp)",
                    norms=2, lowering=_NO_OP),
)

REGISTRIES = {
    "score": SCORES,
    "positional": POSITIONAL,
    "rope-scaling": ROPE_SCALINGS,
    "rope-layout": ROPE_LAYOUTS,
    "norm": NORMS,
    "placement": PLACEMENTS,
    "activation": ACTIVATIONS,
    "ffn": FFN_KINDS,
    "residual": RESIDUALS,
}



@dataclass(frozen=True)
class LayerAttentionVariant(Variant):
    """What one layer's self-attention sees (a stack's ``layer_types[i].attention``)."""

    windowed: bool = False  # attention.window applies (the stack's cache stays full length and is masked)
    lowering: str = ""


@dataclass(frozen=True)
class LayerPositionsVariant(Variant):
    """Whether one layer takes the model's positions (``layer_types[i].positions``)."""

    positioned: bool = True  # rotation / score bias applied in this layer
    hooks: tuple[str, ...] = ("absolute", "rotary", "score-bias", "none")  # positional hooks it can be used with
    lowering: str = ""


_PER_MASK = "each distinct mask is computed once per stack and feeds the fused attention of its layers like the one mask does"
LAYER_ATTENTION: Registry[LayerAttentionVariant] = Registry(
    "layer attention",
    LayerAttentionVariant("full", "every key the causal and padding masks allow", lowering=_PER_MASK),
    LayerAttentionVariant("sliding", "keys within attention.window positions of the query (Mistral, Gemma 2/3 local layers)",
                          windowed=True, lowering=_PER_MASK),
)

LAYER_POSITIONS: Registry[LayerPositionsVariant] = Registry(
    "layer positions",
    LayerPositionsVariant("model", "the model's positional encoding (rotation or score bias)"),
    LayerPositionsVariant("none", "no positions in this layer (NoPE: no rotation, no score bias; SmolLM3)", positioned=False,
                          hooks=("rotary", "score-bias", "none"),
                          lowering="the layer's q and k are not rotated: nothing to lower"),
)
