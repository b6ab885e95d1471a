"""Every spec exports to ONNX and ONNX Runtime agrees with torch (parity at two
batch sizes and sequence lengths, padding on both sides), fp32 max abs <= 1e-4."""

from __future__ import annotations

import json

import onnx
import pytest

import zoo
from compiler.builder import build
from zoo.app.build import BuildOptions, build_artifact
from zoo.app.parity import cache_limit
from tests.conftest import FAMILIES, tiny_spec
from zoo.spec.catalog import names
from zoo.spec.contract import parity_rule
from zoo.spec.families import Role, graphs_for
from zoo.spec import variants
from zoo.spec.model import POSITIONAL_KINDS, SCORES, ModelSpec

FULL_SIZE = [n for n in names() if not n.endswith("-tiny")]
TINY = [n for n in names() if n.endswith("-tiny")]


def check_artifact(folder, manifest, spec):
    assert manifest["parity"]["passed"], manifest["parity"]
    assert manifest["parity"]["worst"] <= 1.0 and manifest["parity"]["tolerance"] == parity_rule(spec.dtype).to_json()
    assert len(manifest["parity"]["runs"]) == 2
    sizes = {(r["batch"], r["seq"]) for r in manifest["parity"]["runs"]}
    assert len(sizes) == 2
    if spec.family != "encoder-only":  # cached step-by-step logits == one full forward
        cache = manifest["parity"]["cache"]
        steps = min(5, cache_limit(spec) - cache["prompt"])  # a short max_seq_len (or a LongRoPE switch) leaves room for fewer
        assert cache["within"] and cache["worst"] <= 1.0 and cache["steps"] >= steps >= 1, cache
        assert cache["top1"] == 1.0 or spec.dtype != "float32", cache
    for graph in graphs_for(spec):
        proto = onnx.load(folder / graph.file)
        onnx.checker.check_model(proto, full_check=True)
        for values, specs in ((proto.graph.input, graph.inputs), (proto.graph.output, graph.outputs)):
            assert [v.name for v in values] == [t.name for t in specs]
            for tensor, want in zip(values, specs):
                dims = [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
                assert len(dims) == len(want.axes) and dims[0] == "batch", (graph.name, tensor.name, dims)
                for dim, axis in zip(dims, want.axes):
                    assert dim == axis if isinstance(dim, str) else axis in ("d_model", "vocab", "kv_heads", "head_dim")
    assert set(manifest["files"]) == {g.file for g in graphs_for(spec)} | {"spec.yaml"}


@pytest.mark.parametrize("name", TINY)
def test_tiny_catalog_spec_parity(name, tiny_artifacts):
    """The session's build of each tiny catalog spec (tests/conftest.py, tiny_artifacts: built
    once with the build's parity and cached-decoding checks), as its manifest records it."""
    folder = tiny_artifacts[name]
    check_artifact(folder, json.loads((folder / "manifest.json").read_text()), zoo.load(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_catalog_spec_parity(name, tmp_path):
    spec = zoo.load(name)
    folder, manifest, _ = build_artifact(spec, tmp_path / name)
    check_artifact(folder, manifest, spec)
    print(f"\n{name}: max abs {manifest['parity']['max_abs']:.2e}, build {manifest['build_seconds']}")


ENCODER_DECODER_KINDS = ("rope", "relative-bias")  # in the default suite for that family (its builds cost twice)


def _matrix():
    """Every score x positional kind x family. The default suite keeps, per family, every
    positional kind once with the scores in rotation, shifted by one per family: every score
    and every positional kind in the decoder-only and encoder-only families; the
    encoder-decoder family (two graphs, cross-attention) with RoPE and relative bias; the other
    builds run in make test-slow."""
    for f, family in enumerate(FAMILIES):
        for j, positional in enumerate(POSITIONAL_KINDS):
            for i, score in enumerate(SCORES):
                slow = i != (j + f) % len(SCORES) or (family == "encoder-decoder" and positional not in ENCODER_DECODER_KINDS)
                yield pytest.param(family, positional, score, marks=pytest.mark.slow if slow else (), id=f"{score}-{positional}-{family}")


@pytest.mark.parametrize("family, positional, score", list(_matrix()))
def test_score_positional_family_parity(family, positional, score, tmp_path):
    spec = tiny_spec(family, score=score, positional=positional)
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    check_artifact(folder, manifest, spec)


# built in the default suite by the tiny catalog too (llama-tiny: SwiGLU; gemma3-tiny: GeGLU, MQA
# without biases, a window of 8): those cases run in make test-slow
IN_THE_CATALOG = pytest.mark.slow


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({"attention": {"heads": 4, "kv_heads": 1, "bias": False}}, marks=IN_THE_CATALOG),  # MQA without biases
        {"attention": {"heads": 4, "kv_heads": 2, "bias": "qkv"}},  # biases on q, k, v only (Qwen2)
        pytest.param({"attention": {"heads": 4, "window": 3}}, marks=IN_THE_CATALOG),  # sliding window
        {"norm": {"kind": "rmsnorm", "placement": "post", "final": True}},
        pytest.param({"ffn": {"hidden": 48, "activation": "silu", "gated": True, "bias": False}}, marks=IN_THE_CATALOG),  # SwiGLU
        pytest.param({"ffn": {"hidden": 48, "activation": "gelu-tanh", "gated": True}}, marks=IN_THE_CATALOG),  # GeGLU
        {"ffn": {"hidden": 48, "activation": "relu"}},
    ],
    ids=["mqa-nobias", "qkv-bias", "window", "rms-post", "swiglu", "geglu", "relu"],
)
@pytest.mark.parametrize(
    "family",
    [FAMILIES[0], *(pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES[1:])],  # the rest in make test-slow
)
def test_block_variants_parity(family, variant, tmp_path):
    spec = tiny_spec(family, positional="rope", **variant)
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    check_artifact(folder, manifest, spec)


QK_NORMS = {
    "qk-rms-head-dim": {"heads": 4, "kv_heads": 2, "head_dim": 12, "qk_norm": {"kind": "rmsnorm"}},  # Qwen3: per head, head_dim != d / heads
    "qk-layernorm-all": {"heads": 4, "qk_norm": {"kind": "layernorm", "over": "all", "eps": 1e-6}},  # OLMo 2's scope, as a LayerNorm
}


@pytest.mark.parametrize("family, attention", [  # the encoder-decoder's second case in make test-slow
    pytest.param(f, a, id=f"{f}-{k}", marks=pytest.mark.slow if (f, k) == ("encoder-decoder", "qk-layernorm-all") else ())
    for f in FAMILIES for k, a in QK_NORMS.items()
])
def test_qk_norm_and_head_dim_parity(family, attention, tmp_path):
    """QK-norm and an explicit head_dim in every family (cross-attention included), with RoPE;
    the encoder-decoder with QK-norm over the whole projection in make test-slow."""
    spec = tiny_spec(family, positional="rope", attention=attention)
    assert sum(p.numel() for p in build(spec).parameters()) == spec.parameter_count()
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    check_artifact(folder, manifest, spec)


@pytest.mark.parametrize("family", [*FAMILIES[:2], pytest.param(FAMILIES[2], marks=pytest.mark.slow)])  # two graphs: slow
def test_multipliers_and_softcaps_parity(family, tmp_path):
    """Granite's multipliers and Gemma 2's soft-capping (scores and logits) in every family
    (the encoder-decoder in make test-slow)."""
    spec = tiny_spec(family, positional="rope", attention={"heads": 4, "kv_heads": 2, "scale": 0.2, "softcap": 5.0},
                     residual_multiplier=0.4)
    embedding = {**spec.embedding.model_dump(), "multiplier": 8.0, "logit_multiplier": 0.5, "logit_softcap": 3.0}
    spec = ModelSpec.model_validate({**spec.model_dump(), "embedding": embedding})
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", options=BuildOptions(optimize=family == "decoder-only"))
    check_artifact(folder, manifest, spec)


NEW_PLACEMENTS = [k for k in variants.PLACEMENTS if k not in ("pre", "post")]  # pre and post: every other test


def _placement_cases():  # encoder-decoder sandwich (the longest, 25 s) in make test-slow; cross-attention by branch-post
    for family in FAMILIES:
        for placement in NEW_PLACEMENTS:
            slow = family == "encoder-decoder" and placement == "sandwich"
            yield pytest.param(family, placement, marks=pytest.mark.slow if slow else (), id=f"{family}-{placement}")


@pytest.mark.parametrize("family, placement", list(_placement_cases()))
def test_norm_placement_parity(family, placement, tmp_path):
    """Norms before and after each sublayer (sandwich) and after it only (branch-post), inside the
    residual, in every family (cross-attention included), on trained-like weights; the CPU build
    fuses them (decoder-only: --optimize)."""
    from compiler.trained_like import zoo_trained_like

    spec = tiny_spec(family, positional="rope", norm={"kind": "rmsnorm", "placement": placement})
    model = build(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.parameter_count()
    stats = zoo_trained_like(model, spec)
    assert stats["logit_std"] >= 5.0 and 100 <= stats["residual_outlier_ratio"] <= 1000, stats
    optimize = family == "decoder-only"
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", weights=model.state_dict(), options=BuildOptions(optimize=optimize))
    check_artifact(folder, manifest, spec)
    if optimize:  # every norm (2 sublayers x the entry's norms per layer, and the final one) one op: none decomposed
        ops = [n.op_type for n in onnx.load(folder / "model.onnx").graph.node]
        norms = spec.decoder.layers * 2 * variants.PLACEMENTS[placement].norms + 1
        assert manifest["build"]["lowering"]["norm"]["nodes"] == norms == sum(op.endswith("Normalization") for op in ops), ops
        assert not {"ReduceMean", "Pow", "Sqrt"} & set(ops), ops


ROPE_SCALING_EXAMPLES = {  # one per zoo.spec.variants.ROPE_SCALINGS entry; a context of 32 trained at 8
    "linear": {"factor": 4.0},
    "llama3": {"factor": 8.0, "original_max_seq_len": 8},
    "yarn": {"factor": 4.0, "original_max_seq_len": 8},
    # LongRoPE: rotary_dim 4 of an 8-wide head (fraction 0.5), so 2 factors per set; the
    # build's cached-decoding check stays within original_max_seq_len (11 tokens <= 12), its
    # full-forward runs are on both sides (7 tokens: short set; 13: long set)
    "longrope": {"factor": 4.0, "original_max_seq_len": 12, "short_factor": [1.0, 3.0], "long_factor": [2.0, 9.0]},
}


@pytest.mark.parametrize("kind", variants.ROPE_SCALINGS.keys())
@pytest.mark.parametrize("optimize", [pytest.param(False, marks=pytest.mark.slow), True], ids=["plain", "optimized"])
def test_rope_scaling_parity(kind, optimize, tmp_path):
    """Every RoPE scaling, exported and (fused for CPU) checked with cached decoding, with partial rotary.
    The optimized build checks the exported graphs before fusing them, then the fused ones: the
    plain builds (the same first check) run in make test-slow."""
    spec = tiny_spec("decoder-only", positional="rope")
    positional = {"kind": "rope", "theta": 500.0, "fraction": 0.5, "scaling": {"kind": kind, **ROPE_SCALING_EXAMPLES[kind]}}
    spec = ModelSpec.model_validate({**spec.model_dump(), "positional": positional})
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", options=BuildOptions(optimize=optimize))
    check_artifact(folder, manifest, spec)
    if optimize:  # as the registry entry states
        rotary = manifest["build"]["lowering"]["rotary"]
        assert (rotary["lowered_as"] != "decomposed") == variants.ROPE_SCALINGS[kind].fused
        assert variants.ROPE_SCALINGS[kind].fused or variants.ROPE_SCALINGS[kind].lowering in rotary["why"]


def _parallel_cases():
    """Both parallel kinds in every family; the default suite keeps two builds (the rest slow)."""
    kept = {("decoder-only", "parallel"), ("encoder-decoder", "parallel-two-norms")}
    for family in FAMILIES:
        for residual in (r for r in variants.RESIDUALS.keys() if r != "sequential"):
            yield pytest.param(family, residual, id=f"{residual}-{family}",
                               marks=() if (family, residual) in kept else pytest.mark.slow)


@pytest.mark.parametrize("family, residual", list(_parallel_cases()))
def test_parallel_residual_parity(family, residual, tmp_path):
    """Parallel attention + FFN (one shared or two input norms) in every family: the encoder's
    layers parallel, an encoder-decoder's decoder sequential (cross-attention: the spec's rule)."""
    data = tiny_spec(family, positional="rope", residual_multiplier=0.5).model_dump()
    for part in ("encoder", "decoder") if family != "encoder-decoder" else ("encoder",):
        if data.get(part):
            data[part]["residual"] = residual
    spec = ModelSpec.model_validate(data)
    model = build(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.parameter_count()
    optimize = family == "decoder-only"
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", options=BuildOptions(optimize=optimize))
    check_artifact(folder, manifest, spec)
    if optimize:  # nothing of its own to lower: the attention inside is fused as usual
        assert manifest["build"]["lowering"]["attention"]["lowered_as"] != "decomposed"


@pytest.mark.parametrize("family", [FAMILIES[0], *(pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES[1:])])
def test_rope_layout_parity(family, tmp_path):
    """Interleaved pairs (GPT-J) with partial rotary in every family; the optimizer lowers
    them to RotaryEmbedding with interleaved=1 (zoo.spec.variants.ROPE_LAYOUTS)."""
    spec = tiny_spec(family, positional="rope")
    positional = {"kind": "rope", "fraction": 0.5, "layout": "interleaved"}
    spec = ModelSpec.model_validate({**spec.model_dump(), "positional": positional})
    optimize = family == "decoder-only"
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", options=BuildOptions(optimize=optimize))
    check_artifact(folder, manifest, spec)
    if optimize:
        rotary = manifest["build"]["lowering"]["rotary"]
        assert rotary["lowered_as"] != "decomposed" and not rotary.get("decomposed"), rotary


@pytest.mark.parametrize(
    "embedding",
    [{"tie_output": False, "scale_by_sqrt_d": True}, {"tie_output": True, "scale_output_by_inv_sqrt_d": True}],
    ids=["untied-scaled-input", "tied-scaled-output"],
)
def test_embedding_options_parity(embedding, tmp_path):
    spec = tiny_spec("decoder-only").model_copy(update={"embedding": zoo.spec.model.Embedding(**embedding)})
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    check_artifact(folder, manifest, spec)


def test_manifest_records_what_the_design_promises(tmp_path):
    spec = zoo.load("gpt2-tiny")
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    for key in ("format_version", "spec_sha256", "weights_sha256", "artifact_id", "opset", "exporter", "packages", "graphs", "parity", "files"):
        assert key in manifest, key
    assert manifest["opset"] == 23
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["packages"])
    graph = manifest["graphs"]["model"]
    cache = [f"{p}.{i}.{k}" for p in ("past",) for i in range(2) for k in ("key", "value")]
    assert [i["name"] for i in graph["inputs"]] == ["input_ids", "attention_mask", *cache]
    assert graph["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]}
    assert graph["inputs"][1] == {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "total_seq"]}
    assert graph["inputs"][2] == {"name": "past.0.key", "dtype": "float32", "shape": ["batch", 4, "past_seq", 16]}
    assert graph["outputs"][0] == {"name": "logits", "dtype": "float32", "shape": ["batch", "seq", spec.vocab_size]}
    assert graph["outputs"][1] == {"name": "present.0.key", "dtype": "float32", "shape": ["batch", 4, "total_seq", 16]}
    assert manifest["kv_cache"]["layers"] == 2 and manifest["kv_cache"]["kv_heads"] == 4 and manifest["kv_cache"]["head_dim"] == 16
    assert manifest["model"]["tokens"]["eos"] == [511] and manifest["model"]["max_seq_len"] == 128
    assert manifest["parameters"]["total"] == spec.parameter_count()
    # tied embeddings stored once: weight bytes within 5% of the parameter bytes
    assert graph["weight_bytes"] <= 1.05 * 4 * spec.parameter_count()
    resolved = (folder / "spec.yaml").read_text()
    assert zoo.load(folder / "spec.yaml") == spec, resolved
    assert json.loads((folder / "manifest.json").read_text()) == manifest


@pytest.mark.parametrize("family", ["decoder-only", pytest.param("encoder-decoder", marks=pytest.mark.slow)])  # both graphs: slow
def test_float16_parity(family, tmp_path):
    spec = tiny_spec(family, positional="rope").model_copy(update={"dtype": "float16"})
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    check_artifact(folder, manifest, spec)
    assert manifest["parity"]["tolerance"]["rtol"] == parity_rule("float16").rtol
    proto = onnx.load(folder / graphs_for(spec)[-1].file)
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_bfloat16_on_cpu_is_refused_with_the_reason(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider runs bfloat16; this checks the CPU-only message")
    from zoo.spec.errors import ExportError

    spec = tiny_spec("decoder-only").model_copy(update={"dtype": "bfloat16"})
    with pytest.raises(ExportError, match="bfloat16 needs a provider with bfloat16 kernels"):
        build_artifact(spec, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "family, embedding, positional",
    [  # the BERT-like and BART-like ones in make test-slow: tests/test_import_bert_bart.py builds both importers' specs at parity
        pytest.param("encoder-only", {"token_types": 2, "norm": True, "output_transform": True, "output_bias": True, "pooler": True}, None,
                     marks=pytest.mark.slow),
        pytest.param("encoder-decoder", {"norm": True, "output_bias": True, "scale_by_sqrt_d": True}, {"kind": "learned", "offset": 2},
                     marks=pytest.mark.slow),
        ("decoder-only", {"output_transform": True, "tie_output": False}, {"kind": "sinusoidal", "layout": "halves"}),
    ],
    ids=["bert-like-pooler", "bart-like", "sinusoidal-halves"],
)
def test_imported_family_options_parity(family, embedding, positional, tmp_path):
    """The spec options the BERT / BART / Marian importers use, built and checked at parity."""
    data = tiny_spec(family, norm={"placement": "post"}).model_dump()
    data["embedding"] = embedding
    if positional is not None:
        data["positional"] = positional
    spec = zoo.spec.model.ModelSpec.model_validate(data)
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    check_artifact(folder, manifest, spec)
    outputs = [o["name"] for o in manifest["graphs"][graphs_for(spec)[-1].name]["outputs"]]
    assert outputs == graphs_for(spec)[-1].output_names
    checked = {n for n in graphs_for(spec)[-1].output_names if Role.of(n) is None}
    assert set(manifest["parity"]["runs"][0]["outputs"]) >= checked - {"encoder_hidden_states"}


MOE_EXAMPLES = {  # Mixtral's (renormalised top-2, SwiGLU) and Qwen2-MoE's (raw top-k, a gated shared expert)
    "mixtral": {"hidden": 16, "activation": "silu", "gated": True, "bias": False, "experts": {"count": 4, "top_k": 2}},
    "qwen2-moe": {"hidden": 16, "activation": "gelu", "experts": {"count": 4, "top_k": 3, "normalize": False, "shared": {"hidden": 24}}},
}


DEFAULT_MOE = {("encoder-decoder", "mixtral")}  # both stacks and cross-attention; decoder-only: tests/test_import_moe.py
MOE_CASES = [  # each family in the default suite, each example in every family in the slow target
    pytest.param(f, m, marks=() if (f, m) in DEFAULT_MOE else pytest.mark.slow) for f in FAMILIES for m in MOE_EXAMPLES
]


@pytest.mark.parametrize(("family", "moe"), MOE_CASES)
def test_mixture_of_experts_parity(family, moe, tmp_path):
    """A mixture-of-experts feed-forward in every family, cached decoding included; the optimizer
    leaves it decomposed and says why."""
    spec = tiny_spec(family, positional="rope", ffn=MOE_EXAMPLES[moe])
    assert sum(p.numel() for p in build(spec).parameters()) == spec.parameter_count()
    optimize = family != "encoder-only"
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", options=BuildOptions(optimize=optimize))
    check_artifact(folder, manifest, spec)
    if optimize:
        moe_record = manifest["build"]["lowering"]["moe"]
        assert moe_record["lowered_as"] == "decomposed" and variants.FFN_KINDS["moe"].lowering in moe_record["why"]


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "precision"), [("float16", "fp32"), ("float32", "fp16"), ("float32", "int8")])
def test_mixture_of_experts_at_reduced_precision(dtype, precision, tmp_path):
    """A float16 spec, and the fp16 and int8 passes: the experts' sum (ScatterND add, no float16
    CPU kernel) stays in fp32, parity and cached decoding hold."""
    spec = tiny_spec("decoder-only", positional="rope", ffn=MOE_EXAMPLES["mixtral"])
    spec = ModelSpec.model_validate({**spec.model_dump(), "dtype": dtype})
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", options=BuildOptions(precision=precision))
    assert manifest["parity"]["passed"], manifest["parity"]


LAYER_TYPES = [  # a period of 3 over 4 layers: sliding with its own RoPE base and scaling, NoPE, full
    {"attention": "sliding", "rope": {"theta": 50.0}},
    {"attention": "full", "positions": "none"},
    {"attention": "full", "rope": {"theta": 2000.0, "scaling": {"kind": "linear", "factor": 2.0}}},
]


@pytest.mark.parametrize("family", [*FAMILIES[:2], pytest.param(FAMILIES[2], marks=pytest.mark.slow)])  # 4 layers x 2 graphs: slow
def test_layer_types_parity(family, tmp_path):
    """Per-layer sliding/full, NoPE and per-layer RoPE bases in every family (cross-attention
    included: make test-slow), cached decoding checked by the build; the optimized graph for
    decoder-only."""
    spec = tiny_spec(family, positional="rope", layers=4, attention={"heads": 4, "kv_heads": 2, "window": 3},
                     layer_types=LAYER_TYPES)
    assert sum(p.numel() for p in build(spec).parameters()) == spec.parameter_count()
    folder, manifest, _ = build_artifact(spec, tmp_path / "a", options=BuildOptions(optimize=family == "decoder-only"))
    check_artifact(folder, manifest, spec)


@pytest.mark.parametrize("positional", ["alibi", "relative-bias"])
def test_layer_types_nope_with_score_bias_parity(positional, tmp_path):
    """positions: none leaves out a score bias in its layers."""
    spec = tiny_spec("decoder-only", positional=positional, score="bilinear", attention={"heads": 4, "window": 3},
                     layer_types=[{"attention": "sliding", "positions": "none"}, {}])
    folder, manifest, _ = build_artifact(spec, tmp_path / "a")
    check_artifact(folder, manifest, spec)
