"""``zoo build --kv-cache shared``: the decoder's attention as GroupQueryAttention writing in
place into one preallocated buffer bound as past and present (passes.optimize.kv_share,
runtime.shared_cache).

llama-tiny (GQA, RoPE) on trained-like weights and gpt2-tiny (MHA, learned positions),
each built once: the build's parity gate (which steps the cache through the shared
buffer), greedy and beam generation of a left-padded batch against torch and against
the plain optimized build, a planted off-by-one write position that parity must catch,
and the refusals.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import zoo
from compiler.builder import build
from compiler.trained_like import zoo_logits, zoo_trained_like
from runtime.generate import GenerationConfig, Generator, left_pad
from zoo.app.build import BuildOptions, build_artifact
from zoo.app.parity import parity
from zoo.spec.errors import ArtifactError, ExportError, InputError

SHARED = BuildOptions(optimize=True, kv_cache="shared")
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]  # rows 1 and 2 left-padded


def _model(name: str, trained: bool):
    spec = zoo.load(name)
    model = build(spec, seed=0)
    if trained:
        zoo_trained_like(model, spec)
    return spec, model.eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (spec, torch module, shared folder, manifest); llama-tiny also has a plain optimized build."""
    root, out = tmp_path_factory.mktemp("kv-share"), {}
    for name, trained in (("llama-tiny", True), ("gpt2-tiny", False)):
        spec, model = _model(name, trained)
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        folder, manifest, _ = build_artifact(spec, root / name, weights=weights, options=SHARED)
        out[name] = (spec, model, folder, manifest)
    spec, model, _, _ = out["llama-tiny"]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    out["plain"] = build_artifact(spec, root / "plain", weights=weights, options=BuildOptions(optimize=True), check_parity=False)[0]
    return out


def _torch_greedy(model, prompts, steps: int, pad: int = 0) -> list[list[int]]:
    """Greedy tokens of the torch module: a full forward over the left-padded batch each step."""
    ids, mask = left_pad(prompts, pad)
    ids, mask, new = torch.from_numpy(ids), torch.from_numpy(mask), []
    with torch.no_grad():
        for _ in range(steps):
            nxt = zoo_logits(model, ids, mask)[:, -1].argmax(-1)
            new.append(nxt)
            ids, mask = torch.cat([ids, nxt[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(new, 1).tolist()


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
def test_manifest_and_parity_of_the_shared_build(built, name):
    spec, _, folder, manifest = built[name]
    assert manifest["build"]["kv_cache"] == {"buffer": "shared", "op": "com.microsoft:GroupQueryAttention",
                                             "layers": spec.decoder.layers, "axis": "max_seq", "version": 1}
    assert manifest["kv_cache"]["buffer"].startswith("shared")
    past = next(t for t in manifest["graphs"]["model"]["inputs"] if t["name"] == "past.0.key")
    assert past["shape"][2] == "max_seq"
    proto = onnx.load(str(folder / "model.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("GroupQueryAttention") == spec.decoder.layers and "Attention" not in ops and "Concat" not in {
        n.op_type for n in proto.graph.node if any(i.startswith("past.") for i in n.input)}
    report = manifest["parity"]
    assert report["passed"] and report["cache"]["within"] and report["cache"]["worst"] < 0.05, report["cache"]


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
def test_greedy_tokens_equal_torch(built, name):
    spec, model, folder, _ = built[name]
    gen = Generator(folder, device="cpu")
    assert type(gen.runner).__name__ == "SharedRunner"
    out = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=12, eos=()))
    assert out.tokens == _torch_greedy(model, PROMPTS, 12)


def test_unbound_the_graph_keeps_the_concat_contract(built):
    """Run without IO binding (plain ``run``, each past the last present: what a Triton client
    does), the shared graph returns past + new tokens like a concat graph, same tokens."""
    from runtime.generate import _Runner

    spec, model, folder, _ = built["llama-tiny"]
    gen = Generator(folder, device="cpu")
    gen.runner = _Runner(gen.session, "model", io_binding=False)
    out = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=8, eos=()))
    assert out.tokens == _torch_greedy(model, PROMPTS, 8)
    assert gen.runner.past["past.0.key"].shape == (3, spec.decoder.attention.n_kv_heads, 7 + 7, spec.head_dim("decoder"))


def test_shared_and_plain_builds_generate_the_same(built):
    """Greedy to max_seq_len (the buffer exactly full) and beam search (rows reordered in the buffer)."""
    shared, plain = Generator(built["llama-tiny"][2], device="cpu"), Generator(built["plain"], device="cpu")
    long = [list(range(1, 121)), [3, 4, 5]]
    for config in (GenerationConfig(max_new_tokens=20, eos=()), GenerationConfig(max_new_tokens=8, num_beams=3, eos=())):
        a, b = shared.generate(long, config), plain.generate(long, config)
        assert a.tokens == b.tokens and a.finish_reasons == b.finish_reasons
    assert a.finish_reasons == ["length"] * 2
    greedy = shared.generate(PROMPTS, GenerationConfig(max_new_tokens=10, eos=()), keep_logits=True)
    ref = plain.generate(PROMPTS, GenerationConfig(max_new_tokens=10, eos=()), keep_logits=True)
    scale = np.abs(ref.logits).max()
    assert np.abs(greedy.logits - ref.logits).max() <= 1e-5 * scale


@pytest.mark.parametrize("offset", [0, 2])
def test_planted_off_by_one_write_position_fails_parity(built, tmp_path, offset):
    """seqlens_k = total_seq - offset: the new row written one slot late (0: the kernel refuses
    the slot) or early (2: it overwrites the last cached row)."""
    spec, model, folder, _ = built["llama-tiny"]
    proto = onnx.load(str(folder / "model.onnx"))
    init = next(i for i in proto.graph.initializer if i.name == "zoo_kv_write_offset")
    init.CopyFrom(numpy_helper.from_array(np.array(offset, np.int32), init.name))
    onnx.save(proto, str(tmp_path / "model.onnx"))
    try:
        report = parity(model, spec, {"model": tmp_path / "model.onnx"})
    except Exception as e:  # onnxruntime refuses a slot past the buffer's written length
        assert "seqlens_k" in str(e)
        return
    assert not report["passed"] and not report["cache"]["within"]


def test_buffer_capacity_is_checked(built):
    gen = Generator(built["gpt2-tiny"][2], device="cpu")
    gen.runner.start(1, {}, np.float32, capacity=4)
    with pytest.raises(InputError, match="4 slots"):
        gen.runner.step({"input_ids": np.ones((1, 5), np.int64), "attention_mask": np.ones((1, 5), np.int64)})


def test_refusals():
    spec = zoo.load("llama-tiny")
    for options in (BuildOptions(kv_cache="shared"), BuildOptions(optimize=True, kv_cache="shared", target="cuda"),
                    BuildOptions(optimize=True, kv_cache="shared", precision="fp16"), BuildOptions(kv_cache="ring")):
        with pytest.raises(ArtifactError, match="kv-cache"):
            options.check(spec)
    from passes.optimize.kv_share import share_cache

    # a decomposed attention (no fused Attention node reads the present): refused, not half rewritten
    x = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Concat", ["past.0.key", "k"], ["present.0.key"], axis=2)], "g",
        [x("past.0.key", 1, None), x("k", 1, None), x("attention_mask", 7, None)], [x("present.0.key", 1, None)])
    with pytest.raises(ExportError, match="layer 0"):
        share_cache(onnx.helper.make_model(graph), spec, "attention_mask")
