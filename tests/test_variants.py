"""The registries of zoo.spec.variants: every key implemented in the compiler, and
everything that derives from them (spec literals, JSON Schema, parameter counts,
initialisation) agreeing with the implementations."""

from __future__ import annotations

import pytest
import torch

from compiler.attention import SCORES as SCORE_IMPLS
from compiler.builder import build
from compiler.ffn import ACTIVATIONS as ACTIVATION_IMPLS, FFN_KINDS as FFN_IMPLS
from compiler.layers import RESIDUALS as RESIDUAL_IMPLS
from compiler.norms import NORMS as NORM_IMPLS
from compiler.positional import POSITIONAL as POSITIONAL_IMPLS, ROPE_LAYOUTS as ROPE_LAYOUT_IMPLS
from compiler.layers import Residual
from compiler.variants import implement, variant_of
from tests.conftest import tiny_spec
from zoo.spec import variants
from zoo.spec.model import schema

IMPLEMENTED = {
    "score": SCORE_IMPLS,
    "positional": POSITIONAL_IMPLS,
    "norm": NORM_IMPLS,
    "activation": ACTIVATION_IMPLS,
    "ffn": FFN_IMPLS,
    "rope-layout": ROPE_LAYOUT_IMPLS,
    "residual": RESIDUAL_IMPLS,
}


@pytest.mark.parametrize("kind", list(IMPLEMENTED))
def test_every_key_is_implemented(kind):
    assert tuple(IMPLEMENTED[kind]) == variants.REGISTRIES[kind].keys()


def test_every_registry_is_implemented_or_computed_on_floor_1():
    # RoPE scalings are frequencies (zoo.spec.rope), computed without torch and used by compiler.positional.Rotary;
    # placements are flags that the builder reads to give compiler.layers.Residual its norms (test_every_placement_builds)
    assert set(variants.REGISTRIES) - set(IMPLEMENTED) == {"rope-scaling", "placement"}
    from typing import get_args

    from zoo.spec.positional import RopeScaling

    union = get_args(get_args(RopeScaling)[0])
    assert tuple(c.model_fields["kind"].default for c in union) == variants.ROPE_SCALINGS.keys()
    assert all(variants.ROPE_SCALINGS[c.model_fields["kind"].default].options is c for c in union)


def test_the_rope_layout_literal_is_the_registry():
    from typing import get_args

    from zoo.spec.positional import Rope

    assert get_args(Rope.model_fields["layout"].annotation) == variants.ROPE_LAYOUTS.keys()


def test_rope_layouts_rotate_the_pairs_transformers_rotates():
    """halves: Llama's rotate_half; interleaved: GPT-J's rotate_every_two (modeling code, same formula)."""
    from compiler.positional import Rotary

    x, pos = torch.randn(2, 3, 5, 8), torch.arange(5)[None].expand(2, 5)
    for layout in variants.ROPE_LAYOUTS:
        rotary = Rotary(6, theta=100.0, layout=layout)
        out = rotary.apply(x, *rotary(pos))
        angles = pos.float()[..., None] * rotary.inv_freq  # (B, T, 3)
        pairs = [(i, i + 3) for i in range(3)] if layout == "halves" else [(2 * i, 2 * i + 1) for i in range(3)]
        for f, (a, b) in enumerate(pairs):
            c, s = angles[:, None, :, f].cos(), angles[:, None, :, f].sin()
            torch.testing.assert_close(out[..., a], x[..., a] * c - x[..., b] * s)
            torch.testing.assert_close(out[..., b], x[..., b] * c + x[..., a] * s)
        torch.testing.assert_close(out[..., 6:], x[..., 6:])


def test_a_registry_with_a_missing_or_extra_implementation_is_refused():
    with pytest.raises(TypeError, match=r"not implemented \['dot'\]"):
        implement(variants.SCORES, {k: v for k, v in SCORE_IMPLS.items() if k != "dot"})
    with pytest.raises(TypeError, match=r"not declared \['cubic'\]"):
        implement(variants.SCORES, {**SCORE_IMPLS, "cubic": object})


def _enum(tree: dict, field: str) -> list[str]:
    defs = tree["$defs"]
    owner = {"score": "Attention", "activation": "FeedForward", "kind": "Norm", "placement": "Norm"}[field]
    return defs[owner]["properties"][field]["enum"]


@pytest.mark.parametrize(("field", "registry"), [("score", variants.SCORES), ("activation", variants.ACTIVATIONS), ("kind", variants.NORMS), ("placement", variants.PLACEMENTS)])
def test_json_schema_lists_the_registry(field, registry):
    assert _enum(schema(), field) == list(registry.keys())


def test_json_schema_lists_every_positional_kind():
    mapping = schema()["properties"]["positional"]["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(variants.POSITIONAL.keys())


@pytest.mark.parametrize("score", variants.SCORES.keys())
def test_score_entry_matches_its_module(score):
    """The entry's parameter count and initialised names are the module's."""
    entry, impl = variants.SCORES[score], SCORE_IMPLS[score](4, 8)
    params = dict(impl.named_parameters())
    assert sum(p.numel() for p in params.values()) == entry.parameters(4, 8)
    assert set(entry.init) <= set(params), f"{score}: init names a parameter the module lacks"
    assert variant_of(impl) is entry


@pytest.mark.parametrize("kind", variants.NORMS.keys())
def test_norm_entry_matches_its_module(kind):
    entry, impl = variants.NORMS[kind], NORM_IMPLS[kind](16, eps=1e-5)
    assert sum(p.numel() for p in impl.parameters()) == entry.parameters(16)
    assert set(entry.init) == {n for n, _ in impl.named_parameters()}


@pytest.mark.parametrize("placement", variants.PLACEMENTS.keys())
@pytest.mark.parametrize("family", ["decoder-only", "encoder-decoder"])
def test_every_placement_builds_with_its_norms(placement, family):
    """Each residual sub-layer (self-attention, cross-attention, FFN) gets the entry's norms, where it says;
    the final norm is the entry's default."""
    entry = variants.PLACEMENTS[placement]
    spec = tiny_spec(family, norm={"kind": "rmsnorm", "placement": placement})
    model = build(spec)
    residuals = [m for m in model.modules() if isinstance(m, Residual)]
    assert len(residuals) == (2 if family == "decoder-only" else 5) * 2
    for r in residuals:
        have = (r.norm is not None, r.post_norm is not None, r.pre)
        assert have == (entry.before or entry.around, entry.after, not entry.around)
        assert sum(p.numel() for p in r.parameters()) == entry.norms * 32
    assert (model.decoder.final_norm is not None) == entry.final == spec.decoder.norm.has_final
    assert sum(p.numel() for p in model.parameters()) == spec.parameter_count()


PLACEMENT_MATHS = {  # the entries' summaries, written out: x (B, T, d), f the sublayer, a the pre norm, b the post norm
    "pre": lambda x, f, a, b: x + f(a(x)),
    "post": lambda x, f, a, b: a(x + f(x)),
    "sandwich": lambda x, f, a, b: x + b(f(a(x))),
    "branch-post": lambda x, f, a, b: x + b(f(x)),
}


@pytest.mark.parametrize("placement", variants.PLACEMENTS.keys())
def test_placement_computes_its_summary(placement):
    spec = tiny_spec("decoder-only", norm={"kind": "layernorm", "placement": placement})
    residual = build(spec).decoder.layers[0].norm_ffn
    for n in (residual.norm, residual.post_norm):  # distinct gains, so that a norm in the wrong place shows
        if n is not None:
            n.weight.data.uniform_(0.5, 2.0)
    x, f = torch.randn(2, 3, 32), torch.nn.Linear(32, 32)
    a = residual.post_norm if residual.norm is None else residual.norm
    want = PLACEMENT_MATHS[placement](x, f, a, residual.post_norm)
    assert torch.allclose(residual(x, f), want, atol=1e-6)


@pytest.mark.parametrize("positional", variants.POSITIONAL.keys())
def test_positional_hook_is_where_the_module_goes(positional):
    spec = tiny_spec("decoder-only", positional=positional)
    stack = build(spec).decoder
    hook = variants.POSITIONAL[positional].hook
    slots = {"absolute": stack.absolute, "rotary": stack.rotary, "score-bias": stack.score_bias}
    assert all((module is not None) == (slot == hook) for slot, module in slots.items())


@pytest.mark.parametrize("score", [k for k in variants.SCORES if variants.SCORES[k].init])
def test_declared_initialisation_is_applied(score):
    model = build(tiny_spec("decoder-only", score=score))
    module = model.decoder.layers[0].self_attn.score
    for name, init in variants.SCORES[score].init.items():
        p = getattr(module, name).detach()
        if init.how == "constant":
            assert torch.all(p == init.value), name
        else:
            expected = init.value / p.shape[-1] ** 0.5 if init.how == "fan" else init.value
            assert 0.6 * expected < float(p.std()) < 1.5 * expected, name


FFN_EXAMPLES = {  # one FeedForward per zoo.spec.variants.FFN_KINDS entry
    "plain": {"hidden": 24, "bias": True},
    "gated": {"hidden": 24, "gated": True, "bias": False},
    "moe": {"hidden": 12, "gated": True, "bias": True, "experts": {"count": 3, "top_k": 2, "shared": {"hidden": 20}}},
}


@pytest.mark.parametrize("kind", variants.FFN_KINDS.keys())
def test_ffn_entry_matches_its_module(kind):
    """The entry's parameter count is the built module's, and the spec names the entry."""
    spec = tiny_spec("decoder-only", ffn=FFN_EXAMPLES[kind])
    ffn = build(spec).decoder.layers[0].ffn
    assert spec.decoder.ffn.kind == kind
    if kind == "moe":  # a class of its own (plain and gated share FeedForward)
        assert variant_of(ffn) is variants.FFN_KINDS[kind]
    assert sum(p.numel() for p in ffn.parameters()) == variants.FFN_KINDS[kind].parameters(spec.d_model, spec.decoder.ffn)


def test_parallel_layer_computes_both_branches_from_the_input():
    """y = x + attn(n1(x)) + ffn(n2(x)), checked against the sub-modules run by hand."""
    for residual in ("parallel", "parallel-two-norms"):
        spec = tiny_spec("decoder-only", positional="rope", residual=residual)
        model = build(spec)
        layer = model.decoder.layers[0]
        assert (layer.norm_ffn is None) == (residual == "parallel")
        x = torch.randn(2, 5, spec.d_model)
        allowed = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
        attn, _ = layer.self_attn(layer.norm_attn(x), allowed=allowed, bias=None, rotate=None)
        ffn = layer.ffn((layer.norm_ffn or layer.norm_attn)(x))
        out, _ = layer(x, allowed=allowed, bias=None, rotate=None)
        torch.testing.assert_close(out, x + attn + ffn)


@pytest.mark.parametrize(
    "family, overrides, message",
    [
        ("decoder-only", {"norm": {"placement": "post"}}, r"decoder.residual=parallel reads .* decoder.norm.placement=post is refused"),
        ("encoder-decoder", {}, r"decoder.residual=parallel is refused with family=encoder-decoder"),
    ],
    ids=["post-norm", "cross-attention"],
)
def test_parallel_residual_refusals_name_both_fields(family, overrides, message):
    from pydantic import ValidationError

    from zoo.spec.model import ModelSpec

    data = tiny_spec(family, **overrides).model_dump(exclude_defaults=True)
    data["decoder"]["residual"] = "parallel"
    with pytest.raises(ValidationError, match=message):
        ModelSpec.model_validate(data)


def test_trained_like_weights_on_parallel_layers():
    """The generator finds the shared norm and both branches: its statistics are reached."""
    from compiler.trained_like import zoo_trained_like

    spec = tiny_spec("decoder-only", positional="rope", residual="parallel")
    stats = zoo_trained_like(build(spec), spec)
    assert abs(stats["logit_std"] - stats["config"]["logit_std"]) < 1.0 and stats["residual_outlier_ratio"] > 100


@pytest.mark.parametrize("layout", variants.ROPE_LAYOUTS.keys())
def test_onnx_rotary_embedding_computes_each_layout(layout):
    """ONNX's RotaryEmbedding (opset 23, interleaved = layout != halves, a partial rotation)
    in ONNX Runtime equals compiler.positional.Rotary: what a fused lowering would emit."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from compiler.positional import Rotary

    B, H, S, hd, rot = 2, 3, 5, 8, 4
    node = helper.make_node("RotaryEmbedding", ["x", "cos", "sin"], ["y"], interleaved=int(layout == "interleaved"),
                            rotary_embedding_dim=rot)
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [B, H, S, hd]), ("cos", [B, S, rot // 2]), ("sin", [B, S, rot // 2]))]
    graph = helper.make_graph([node], "rotary", io, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, H, S, hd])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    x, pos = torch.randn(B, H, S, hd), torch.arange(S)[None].expand(B, S)
    rotary = Rotary(rot, theta=100.0, layout=layout)
    angles = (pos.float()[..., None] * rotary.inv_freq).numpy()  # (B, S, rot/2)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy(), "cos": np.cos(angles), "sin": np.sin(angles)})[0]
    np.testing.assert_allclose(got, rotary.apply(x, *rotary(pos)).numpy(), atol=1e-6)


def test_expert_ties_go_to_the_lower_index_as_in_onnx_topk():
    """Equal routing probabilities: torch's eager top_k picks what ONNX Runtime's TopK picks."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from compiler.ffn import top_k

    x = np.array([[0.25] * 4, [0.1, 0.3, 0.3, 0.3], [0.4, 0.1, 0.4, 0.1]], dtype=np.float32)
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1)
    graph = helper.make_graph([node], "topk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("v", TensorProto.FLOAT, None), helper.make_tensor_value_info("i", TensorProto.INT64, None)],
                              [helper.make_tensor("k", TensorProto.INT64, [1], [2])])
    session = ort.InferenceSession(helper.make_model(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    _, want = session.run(None, {"x": x})
    _, got = top_k(torch.from_numpy(x), 2)
    assert got.tolist() == want.tolist() == [[0, 1], [1, 2], [0, 2]]
