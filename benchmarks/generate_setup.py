"""What benchmarks/generate.py measures on: the models (a Hugging Face checkpoint made
from a config, random or trained-like weights), the zoo artifacts built from it at each
precision, and onnxruntime-genai's models built from the same folder by its builder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_135M = dict(  # SmolLM2-135M's shape: 30 layers, 576 wide, 9 heads over 3 KV heads, tied embedding
    num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
    vocab_size=49152, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
)


@dataclass(frozen=True)
class BenchModel:
    """A model of the benchmark: its transformers config class and arguments, its
    weights ("random" init or "trained-like": compiler.trained_like), the zoo precisions
    built on the CPU and on CUDA, and whether onnxruntime-genai runs it (its builder
    takes Llama checkpoints)."""

    config_class: str
    config: dict
    weights: str = "random"
    cpu_precisions: tuple = ("fp32",)
    cuda_precisions: tuple = ("fp16",)
    genai: bool = False
    iobinding: bool = True  # also time the zoo's fp32 with IO binding on the CPU
    nocache: bool = True  # also time the zoo's torch module without a cache (slow: small models only)
    extra: dict = field(default_factory=dict)


MODELS = {
    "llama-135m": BenchModel("LlamaConfig", LLAMA_135M, weights="trained-like", cpu_precisions=("fp32", "int8", "int4"),
                             cuda_precisions=("fp16", "int4"), genai=True, iobinding=False, nocache=False),
    "gpt2-small": BenchModel("GPT2Config", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)),
    "gpt2-tiny": BenchModel("GPT2Config", dict(n_layer=4, n_embd=256, n_head=4, vocab_size=50257, n_positions=1024)),
    "llama-small": BenchModel(
        "LlamaConfig",
        dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, num_key_value_heads=4, intermediate_size=2048,
             vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False),
        genai=True,
    ),
}
GENAI_PRECISIONS = {"cpu": ("fp32", "int4"), "cuda": ("fp16", "int4")}


def _hf_logits(model, ids, mask):
    return model(input_ids=ids, attention_mask=mask).logits


def make_checkpoint(name: str, folder: Path) -> tuple[Path, dict]:
    """Save ``name``'s checkpoint under ``folder``/hf; returns the folder and, for
    trained-like weights, their statistics (logit std, residual outlier ratio)."""
    import torch
    import transformers

    spec = MODELS[name]
    config = getattr(transformers, spec.config_class)(**spec.config)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    stats = {}
    if spec.weights == "trained-like":
        from compiler.trained_like import make_trained_like

        with torch.no_grad():
            s = make_trained_like(model, _hf_logits, vocab_size=config.vocab_size, placement="pre", seed=0)
        stats = {"logit_std": float(s["logit_std"]), "residual_outlier_ratio": float(s["residual_outlier_ratio"])}
    out = folder / "hf" / name
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out, config.vocab_size)
    return out, stats


def write_tokenizer(folder: Path, vocab: int) -> None:
    """A word-level tokenizer over the ids (token i is "t<i>"): onnxruntime-genai's
    builder insists on loading one; nothing else here reads it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "t0", "bos_token": "t1", "eos_token": "t2"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def make_artifacts(name: str, hf: Path, folder: Path, precisions, *, target: str = "cpu", optimize: bool = False,
                   kv_cache: str = "concat") -> dict:
    """Import ``hf`` once and build one artifact per precision (the build's parity check
    against torch included) -> precision: (folder, runtime Manifest, build seconds).
    ``kv_cache="shared"`` applies where the build allows it (optimized fp32 on the CPU)."""
    from compiler.importers import import_folder
    from runtime.manifest import Manifest
    from zoo.app.build import BuildOptions, build_artifact

    imported = import_folder(hf, name=name)
    out = {}
    for p in precisions:
        t0 = time.perf_counter()
        shared = kv_cache == "shared" and optimize and target == "cpu" and p != "fp16"
        options = BuildOptions(target=target, optimize=optimize, precision=p, kv_cache="shared" if shared else "concat")
        art, manifest, _ = build_artifact(imported.spec, folder / "artifacts" / f"{name}-{p}", weights=imported.state, options=options)
        out[p] = (art, Manifest.from_json(manifest, art / "manifest.json"), time.perf_counter() - t0)
    return out


def make_genai(hf: Path, folder: Path, precision: str, device: str) -> tuple[Path | None, str]:
    """Build onnxruntime-genai's model of the checkpoint at ``precision`` for ``device``
    with its builder (``python -m onnxruntime_genai.models.builder``), if the package is here."""
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return None, "onnxruntime-genai is not installed here (pip install onnxruntime-genai to include it)"
    out = folder / f"genai-{precision}-{device}"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out), "-p", precision,
           "-e", device, "-c", str(folder / "genai-cache")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode
        return None, f"onnxruntime-genai's builder failed at {precision}: {last}"
    return out, ""


def step_weight_bytes(folder: Path, graph: str = "") -> int:
    """The bytes of weights one decode step reads from memory, from the graph files in
    ``folder`` (``graph``: the file's stem; default every .onnx file): every initialiser,
    but those read only by Gathers (an untied token embedding: a step reads one row of it).
    The sizes come from the protobuf and the external-data records, without loading weights."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    total = 0
    for path in sorted(Path(folder).glob(f"{graph or '*'}.onnx")):
        proto = onnx.load(str(path), load_external_data=False)
        readers: dict[str, set] = {}
        for node in proto.graph.node:
            for i in node.input:
                readers.setdefault(i, set()).add(node.op_type)
        for t in proto.graph.initializer:
            if readers.get(t.name) and readers[t.name] <= {"Gather", "GatherBlockQuantized"}:
                continue
            if uses_external_data(t):
                total += int(next((e.value for e in t.external_data if e.key == "length"), 0))
            else:
                total += len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
    return total
