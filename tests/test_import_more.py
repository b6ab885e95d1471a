"""More Hugging Face model_types imported into the zoo, verified against transformers as
tests/test_import.py and tests/test_import_bert_bart.py do: a tiny model (hidden 32,
2 layers, vocab 100) with trained-like weights (default suite) and random-init weights
(slow) saved with save_pretrained, imported, and compared with transformers for the zoo's
torch module and its ONNX artifact by the fp32 parity rule: encoders on a right-padded
batch (last hidden state, MLM logits or pooler), encoder-decoders on padded source and
target, decoders on a batch padded left and right plus 16 greedy tokens (cached decoding)
equal to transformers' generate."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from tests.hf_trained_like import build_session, prepare  # noqa: E402
from runtime.generate import GenerationConfig, Generator  # noqa: E402
from tests.hf_trained_like import greedy_agreement  # noqa: E402
from tests.importing import check_decoder, check_greedy  # noqa: E402
from tests.hf_trained_like import FP32, LOGIT_STD_FLOOR, assert_matches, logit_std  # noqa: E402
from tests.test_import_bert_bart import check_seq2seq, right_padded, zoo_module  # noqa: E402

V = 100
BERT = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=66)
SEQ2SEQ = dict(
    vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=64, decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=1, decoder_start_token_id=2,
)
DISTILBERT = dict(vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
ELECTRA = dict(BERT, embedding_size=32, max_position_embeddings=64)
ENCODERS = {
    "electra": lambda: transformers.ElectraModel(transformers.ElectraConfig(**ELECTRA)),
    "electra-mlm": lambda: transformers.ElectraForMaskedLM(transformers.ElectraConfig(**ELECTRA)),
    "distilbert": lambda: transformers.DistilBertModel(transformers.DistilBertConfig(**DISTILBERT)),
    "distilbert-mlm": lambda: transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(sinusoidal_pos_embds=True, **DISTILBERT)),
    "xlm-roberta": lambda: transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**BERT)),
    "xlm-roberta-mlm": lambda: transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**BERT)),
}
# equal layer counts: transformers 5.25 generate sizes the T5 cache by num_layers
T5_SMALL = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=V)
SEQ2SEQS = {
    # pre-norm, final norms, layernorm_embedding, sqrt(d_model) embeddings, final_logits_bias;
    # no decoder_start_token_id: generate starts from bos (what mBART configs do)
    "mbart": lambda: transformers.MBartForConditionalGeneration(transformers.MBartConfig(**{**SEQ2SEQ, "scale_embedding": True, "decoder_start_token_id": None})),
    "mt5": lambda: transformers.MT5ForConditionalGeneration(transformers.MT5Config(**T5_SMALL)),  # gated-gelu, no rescaling
}
OPT = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, max_position_embeddings=64)
BLOOM = dict(vocab_size=V, hidden_size=32, n_layer=2, n_head=4)
DECODERS = {
    "bloom": lambda: transformers.BloomForCausalLM(transformers.BloomConfig(**BLOOM)),
    "bloom-6-heads": lambda: transformers.BloomForCausalLM(transformers.BloomConfig(**{**BLOOM, "hidden_size": 48, "n_head": 6})),  # slopes interleaved
    "opt": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(**OPT)),
    "opt-post": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(do_layer_norm_before=False, **OPT)),  # OPT-350m's
    "opt-nobias": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(enable_bias=False, _remove_final_layer_norm=True, **OPT)),
}
MODELS = {**ENCODERS, **SEQ2SEQS, **DECODERS}
DEFAULT = {"xlm-roberta-mlm", "mt5", "mbart", "opt", "bloom", "distilbert-mlm", "electra-mlm"}  # the trained-like case of these in the default suite; every other case slow


def cases(kinds) -> list:
    return [pytest.param(k, w, id=f"{k}-{w}", marks=() if (k, w) in {(d, "trained") for d in DEFAULT} else pytest.mark.slow)
            for k in sorted(kinds) for w in ("trained", "random")]


@torch.no_grad()
def make(kind: str, folder, weights: str):
    """``kind`` with ``weights`` (random init with every parameter perturbed, so norms and
    biases matter; or trained-like), saved with save_pretrained."""
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    gen = torch.Generator().manual_seed(1)
    if weights == "random":
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    else:
        prepare(model, weights, seed=1)
    if hasattr(model, "final_logits_bias"):
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=gen))
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("kind, weights", cases(ENCODERS))
def test_encoder_matches_transformers(kind, weights, tmp_path):
    hf = make(kind, tmp_path / "hf", weights)
    imported = import_folder(tmp_path / "hf")
    check_encoder(kind, weights, hf, imported, build_session(imported, tmp_path / "art"))


def check_encoder(kind, weights, hf, imported, session):
    """Every output the checkpoint has (last hidden state; MLM logits; pooler) of the zoo's
    torch module and of ``session`` against transformers, on a right-padded batch."""
    ids, mask = right_padded(11, seed=5)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = dict(zip(("last_hidden_state", "logits", "pooler_output"), zoo_module(imported)(ids, mask)))
    ref = {"last_hidden_state": out.hidden_states[-1]}
    ref.update({k: getattr(out, k) for k in ("logits", "pooler_output") if getattr(out, k, None) is not None})
    onnx = session.forward({"model": {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}})
    for name, want in ref.items():
        full = None if name == "pooler_output" else mask
        assert_matches(f"{kind} {weights} {name} torch", got[name], want, full)
        assert_matches(f"{kind} {weights} {name} onnx", onnx[name], want, full, FP32)
    if weights == "trained":
        assert logit_std(ref.get("logits", ref["last_hidden_state"]), mask) >= LOGIT_STD_FLOOR


@pytest.mark.parametrize("kind, weights", cases(SEQ2SEQS))
def test_seq2seq_matches_transformers(kind, weights, tmp_path):
    hf = make(kind, tmp_path / "hf", weights)
    imported = import_folder(tmp_path / "hf")
    session = build_session(imported, tmp_path / "art")
    check_seq2seq(kind, weights, hf, imported, session)
    if weights == "trained":
        check_seq2seq_greedy(kind, hf, session)


def check_seq2seq_greedy(label, hf, session):
    """16 greedy tokens of the zoo artifact (encoder once, cached decoder from the decoder
    start token) equal transformers' generate(do_sample=False), no EOS stop and no forced
    BOS/EOS on either side (the zoo's generation does not force tokens)."""
    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randint(3, V, (n,), generator=gen).tolist() for n in (5, 8, 3)]
    ours = Generator(session).generate(prompts, GenerationConfig(max_new_tokens=16, eos=())).tokens
    config = hf.generation_config
    config.eos_token_id = config.forced_bos_token_id = config.forced_eos_token_id = None
    theirs = []
    for p in prompts:
        ids = torch.tensor([p])
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
        theirs.append(out[0, 1:].tolist())  # after the decoder start token
    print(f"{label} greedy: zoo {ours}, transformers {theirs}")
    assert all(len(t) == 16 for t in theirs)
    assert greedy_agreement(ours, theirs) == 1.0, (ours, theirs)


@pytest.mark.parametrize("kind, weights", cases(DECODERS))
def test_decoder_matches_transformers(kind, weights, tmp_path):
    hf = make(kind, tmp_path / "hf", weights)
    imported = import_folder(tmp_path / "hf")
    session = build_session(imported, tmp_path / "art")
    check_decoder(kind, hf, imported, session, weights)
    if weights == "trained":
        check_greedy(kind, hf, session)


@pytest.mark.parametrize(
    "kind, changes, fields",
    [
        ("opt", {"word_embed_proj_dim": 16, "layer_norm_elementwise_affine": False}, ["word_embed_proj_dim=16", "layer_norm_elementwise_affine"]),
        ("bloom", {"apply_residual_connection_post_layernorm": True}, ["apply_residual_connection_post_layernorm"]),
        ("mbart", {"normalize_before": False, "add_final_layer_norm": False}, ["normalize_before", "add_final_layer_norm"]),
        ("electra", {"embedding_size": 16, "architectures": ["ElectraForPreTraining"]}, ["embedding_size=16", "ElectraForPreTraining"]),
        ("distilbert-mlm", {"activation": "quick_gelu"}, ["activation"]),
    ],
)
def test_refusals_list_every_field_at_once(kind, changes, fields, tmp_path):
    """Refused from config.json alone, before any weight is read: every field in one message."""
    torch.manual_seed(0)
    MODELS[kind]().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    (tmp_path / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(CheckpointError) as err:
        import_folder(tmp_path)
    assert all(f in str(err.value) for f in fields), str(err.value)


def test_trained_like_sharpens_bloom_fused_per_head_queries_and_keys():
    """BLOOM's query_key_value rows are (heads, 3, head_dim): the generator finds the q and
    k rows of every head (2/3 of them), not the first two thirds of the matrix."""
    from compiler.query_keys import query_key_columns
    from compiler.trained_like import find_roles

    model = DECODERS["bloom"]()
    roles = find_roles(model)
    name, fused = next((n, m) for n, m in roles.linears if n.endswith("query_key_value"))
    rows = query_key_columns(name, fused, model)
    head_dim = 32 // 4
    assert rows.numel() == 2 * 32 and set((rows // head_dim % 3).tolist()) == {0, 1}
