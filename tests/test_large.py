"""A model past protobuf's 2 GB limit: its weights go to ONNX external data
(model.onnx + model.onnx.data), the manifest hashes both, and it loads back and
runs. Slow (make test-slow): ~2.5 GB of weights are exported, hashed and loaded."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import zoo
from zoo.app.build import build_artifact
from passes.files import EXTERNAL_DATA_SUFFIX, PROTOBUF_LIMIT
from runtime.artifact import load_artifact
from runtime.generate import GenerationConfig, Generator
from runtime.session import Session

# Large in parameters, cheap to run: a 600k-token vocabulary on a 1-layer, 1024-wide
# decoder. 614 M parameters, 2.46 GB in float32 with the output tied to the embedding.
HUGE_VOCAB = [
    "name=huge-vocab", "vocab_size=600000", "d_model=1024", "max_seq_len=64", "decoder.layers=1",
    "decoder.attention.heads=8", "decoder.ffn.hidden=1024", "tokens={bos: 1, eos: [2]}",
]


@pytest.mark.slow
def test_model_over_2gb_uses_external_data_and_runs(tmp_path):
    spec = zoo.load("llama-tiny", HUGE_VOCAB)
    assert spec.parameter_count() * 4 > PROTOBUF_LIMIT
    folder, manifest, built = build_artifact(spec, tmp_path / "huge")
    assert built and manifest["parity"]["passed"], manifest["parity"]
    data = "model.onnx" + EXTERNAL_DATA_SUFFIX
    assert set(manifest["files"]) == {"model.onnx", data, "spec.yaml"}
    assert manifest["files"][data]["bytes"] > PROTOBUF_LIMIT > manifest["files"]["model.onnx"]["bytes"]
    # the graph file itself is small and points at the data file
    proto = onnx.load(folder / "model.onnx", load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {data}
    artifact = load_artifact(folder)  # verifies the sha256 of both files
    session = Session(artifact)
    ids = np.array([[5, 6, 7, 599_999]])
    out = session.forward({"model": {"input_ids": ids, "attention_mask": np.ones_like(ids)}})
    assert out["logits"].shape == (1, 4, 600_000) and np.isfinite(out["logits"]).all()
    result = Generator(artifact).generate([[5, 6, 7]], GenerationConfig(max_new_tokens=4, eos=()))
    assert len(result.tokens[0]) == 4
