"""Sentence embeddings and fill-mask on imported encoder artifacts, verified against the
references: a tiny sentence-transformers checkpoint (BERT -> Pooling(mean) -> Normalize,
max_seq_length 16; tests/st_checkpoints.py) with random-init and trained-like weights is
imported (its pooling read by compiler.importers.sentence.read_pooling), built, and
runtime.embed.embed compared with SentenceTransformer.encode within 1e-5 (max abs) for
every pooling mode on texts of different lengths in one batch (right padding, one text
truncated); fill_mask against BertForMaskedLM and transformers' fill-mask pipeline
(top-k ids equal, probabilities within 1e-5). Refusals: modules the zoo does not
reproduce, untrusted pooling configs, no pooling, no mask token, no MLM head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
pytest.importorskip("tokenizers")

from compiler.importers import CheckpointError, import_folder  # noqa: E402
from compiler.importers.sentence import read_pooling  # noqa: E402
from runtime import load  # noqa: E402
from runtime.embed import embed, fill_mask, has_mlm_head  # noqa: E402
from runtime.pooling import POOLERS, Pooling  # noqa: E402
from tests.st_checkpoints import MAX_SEQ_LENGTH, TEXTS, VOCAB, mlm_checkpoint, sentence_checkpoint, with_pooling  # noqa: E402
from tests.test_bad_inputs import refused, zoo_cli  # noqa: E402
from zoo.app import usage_files  # noqa: E402
from zoo.app.build import build_artifact  # noqa: E402
from zoo.spec.errors import ArtifactError, InputError  # noqa: E402
from zoo.spec.pooling import POOLING_MODES  # noqa: E402

TOL = 1e-5


def assert_close(got, want, label=""):
    """Within TOL (max abs) for vectors of norm <= 1 (normalised ones), within TOL times the
    largest reference value for unnormalised ones: trained-like hidden states carry
    outlier channels in the hundreds, where float32 rounding alone reaches 1e-5."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (label, got.shape, want.shape)
    diff, scale = float(np.abs(got - want).max()), max(1.0, float(np.abs(want).max()))
    assert diff <= TOL * scale, f"{label}: max abs {diff:.2e}, largest value {scale:.1f}"


def built(folder, out):
    """The checkpoint folder imported and built with its usage files (pooling.json,
    tokenizer_config.json; fp32, parity checked), loaded."""
    imported = import_folder(folder)
    path, manifest, _ = build_artifact(
        imported.spec, out, weights=imported.state, tokenizer=imported.tokenizer, usage=usage_files.collect(folder)
    )
    assert manifest["parity"]["passed"]
    return load(path)


@pytest.fixture(scope="module", params=["random", "trained"])
def sentence(request, tmp_path_factory):
    """(SentenceTransformer, its pooling as read_pooling reads it, the built artifact's session)."""
    root = tmp_path_factory.mktemp(f"st-{request.param}")
    model = sentence_checkpoint(root / "st", request.param)
    pooling = read_pooling(root / "st")
    return model, pooling, built(root / "st", root / "art")


@pytest.fixture(scope="module", params=["trained", pytest.param("random", marks=pytest.mark.slow)])
def mlm(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"mlm-{request.param}")
    model, tok = mlm_checkpoint(root / "hf", request.param)
    return model, tok, built(root / "hf", root / "art")


def test_read_pooling_of_a_saved_model(sentence):
    _, pooling, session = sentence
    assert pooling == {"mode": "mean", "normalize": True, "dimension": 32, "max_seq_length": MAX_SEQ_LENGTH, "lowercase": False}
    assert import_folder(session.artifact.folder.parent / "st").pooling == pooling  # the import carries it


def test_import_refuses_before_reading_weights(sentence, tmp_path):
    """A Dense module, or a pooling width other than the model's, with config.json and no weights at all."""
    config = json.loads((sentence[2].artifact.folder.parent / "st" / "config.json").read_text())
    folder = write_st(tmp_path / "dense", modules("Transformer", "Pooling", "Dense"), **{"config.json": config})
    with pytest.raises(CheckpointError, match=r"modules.json: module 2: 'type' .*Dense"):
        import_folder(folder)
    folder = write_st(tmp_path / "wide", modules("Transformer", "Pooling"), {"embedding_dimension": 64}, **{"config.json": config})
    with pytest.raises(CheckpointError, match="'embedding_dimension' 64 differs from the model's hidden size 32"):
        import_folder(folder)


def test_embed_matches_sentence_transformers(sentence):
    """The artifact's own pooling (mean, normalised, max_seq_length 16), from its pooling.json."""
    model, pooling, session = sentence
    assert session.artifact.usage.pooling == pooling
    want = model.encode(TEXTS, convert_to_numpy=True)
    got = embed(session, TEXTS, batch_size=3)  # two batches, each padded to its longest text
    assert got.shape == want.shape == (len(TEXTS), 32)
    assert np.abs(got - want).max() <= TOL
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("mode", [*POOLING_MODES, ("cls", "mean"), ("max", "mean", "lasttoken")])
@pytest.mark.parametrize("normalize", [False, True])
def test_every_pooling_mode_matches(sentence, mode, normalize):
    """Every mode (several: concatenated in their order), normalised or not, given explicitly
    (the carried pooling's max_seq_length kept)."""
    model, pooling, session = sentence
    want = with_pooling(model, mode, normalize).encode(TEXTS, convert_to_numpy=True)
    assert_close(embed(session, TEXTS, mode, normalize=normalize), want, str(mode))


def test_token_id_rows_embed_as_their_texts(sentence):
    model, pooling, session = sentence
    ids = model.tokenizer(TEXTS[:3], truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    p = Pooling.from_json(pooling, "pooling")
    assert np.abs(embed(session, ids, p) - embed(session, TEXTS[:3], p)).max() <= 1e-6
    same = model.tokenizer([TEXTS[0]] * 2, return_tensors="np")["input_ids"]  # a 2-d array
    assert np.abs(embed(session, same, p) - embed(session, TEXTS[:1] * 2, p)).max() <= 1e-6


def test_fill_mask_matches_transformers(mlm):
    model, tok, session = mlm
    text = "the [MASK] sat on the [MASK] ."
    got = fill_mask(session, text, top_k=5)
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.double().softmax(-1)[0]
    where = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
    assert len(got) == len(where) == 2
    for ranked, pos in zip(got, where):
        want = probs[pos].topk(5)
        assert [i for _, i, _ in ranked] == want.indices.tolist()
        assert np.abs(np.array([p for _, _, p in ranked]) - want.values.numpy()).max() <= TOL
        assert [t for t, _, _ in ranked] == [tok.decode([i]) for i in want.indices.tolist()]


def test_fill_mask_matches_the_pipeline(mlm):
    model, tok, session = mlm
    text = "a big [MASK] ran fast"
    want = transformers.pipeline("fill-mask", model=model, tokenizer=tok, top_k=4, device="cpu")(text)
    got = fill_mask(session, text, top_k=4)[0]
    assert [i for _, i, _ in got] == [w["token"] for w in want]
    assert max(abs(p - w["score"]) for (_, _, p), w in zip(got, want)) <= TOL
    assert [t for t, _, _ in got] == [w["token_str"] for w in want]


# ---------------------------------------------------------------- refusals


def write_st(folder, modules, pooling=None, **files):
    """A sentence-transformers folder of config files only (no weights: refusals come first)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"embedding_dimension": 32, "pooling_mode": "cls"}))
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value))
    return folder


def modules(*kinds):
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize", "Dense": "2_Dense", "LayerNorm": "3_LayerNorm"}
    return [{"idx": i, "name": str(i), "path": paths[k], "type": f"sentence_transformers.models.{k}"} for i, k in enumerate(kinds)]


def test_read_pooling_forms(tmp_path):
    assert read_pooling(tmp_path) is None  # a plain Hugging Face folder
    legacy = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}
    got = read_pooling(write_st(tmp_path / "a", modules("Transformer", "Pooling"), legacy, **{"sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": True}}))
    assert got == {"mode": ["cls", "mean"], "dimension": 32, "normalize": False, "max_seq_length": 128, "lowercase": True}
    none_set = read_pooling(write_st(tmp_path / "b", modules("Transformer", "Pooling", "Normalize"), {"word_embedding_dimension": 8}))
    assert none_set["mode"] == "mean" and none_set["normalize"] and none_set["max_seq_length"] is None


@pytest.mark.parametrize(
    "kinds, pooling, files, fragments",
    [
        (("Transformer", "Pooling", "Dense"), None, {}, ["modules.json", "module 2", "'type'", "Dense"]),
        (("Transformer", "Pooling", "LayerNorm"), None, {}, ["module 2", "LayerNorm"]),
        (("Transformer", "Pooling", "Normalize", "Normalize"), None, {}, ["Transformer -> Pooling -> Normalize -> Normalize"]),
        (("Pooling", "Transformer"), None, {}, ["Pooling -> Transformer"]),
        (("Transformer", "Pooling"), {"embedding_dimension": "32"}, {}, ["1_Pooling/config.json", "'embedding_dimension'", "'32'"]),
        (("Transformer", "Pooling"), {"embedding_dimension": 32, "pooling_mode": "sum"}, {}, ["'pooling_mode'", "'sum'"]),
        (("Transformer", "Pooling"), {"embedding_dimension": 32, "pooling_mode_cls_token": "yes"}, {}, ["'pooling_mode_cls_token'"]),
        (("Transformer", "Pooling"), None, {"sentence_bert_config.json": {"max_seq_length": -1}}, ["sentence_bert_config.json", "'max_seq_length'", "-1"]),
        (("Transformer", "Pooling"), None, {"config_sentence_transformers.json": {"default_prompt_name": "query", "prompts": {"query": "query: "}}}, ["'default_prompt_name'"]),
    ],
)
def test_read_pooling_refuses(tmp_path, kinds, pooling, files, fragments):
    with pytest.raises(CheckpointError) as e:
        read_pooling(write_st(tmp_path, modules(*kinds), pooling, **files))
    assert "\n" not in str(e.value) and all(f in str(e.value) for f in fragments), str(e.value)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ([1, 2], "module 0 is a int"),
        ({"idx": 0}, "a dict, not a list of modules"),
        ([{"idx": 0, "path": "../up", "type": "sentence_transformers.models.Transformer"}], "'../up' is not a folder inside"),
        ([{"idx": 0, "path": "", "type": "os.system"}], "'os.system' is a module the zoo does not reproduce"),
        ([{"idx": 3, "path": "", "type": "sentence_transformers.models.Transformer"}], "'idx' is 3"),
    ],
)
def test_modules_json_is_checked(tmp_path, raw, fragment):
    (tmp_path / "modules.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="modules.json") as e:
        read_pooling(tmp_path)
    assert fragment in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("mean", "not an object"),
        ({"mode": "sum"}, "'mode' is 'sum'"),
        ({"mode": []}, "'mode' is []"),
        ({"mode": ["cls"] * 7}, "'mode' is ['cls'"),
        ({"mode": "cls", "normalize": 1}, "'normalize' is 1"),
        ({"mode": "cls", "dimension": 0}, "'dimension' is 0"),
        ({"mode": "cls", "max_seq_length": True}, "'max_seq_length' is True"),
    ],
)
def test_pooling_from_json_refuses(raw, fragment):
    with pytest.raises(ArtifactError, match="pooling") as e:
        Pooling.from_json(raw, "art/pooling.json")
    assert fragment in str(e.value) and str(e.value).startswith("art/pooling.json")


def test_poolers_cover_every_mode():
    assert tuple(POOLERS) == POOLING_MODES


def test_no_pooling_is_refused_with_the_way_to_give_one(mlm, capsys):
    """A BertForMaskedLM folder has no modules.json: its artifact carries no pooling."""
    session = mlm[2]
    assert session.artifact.usage.pooling is None
    with pytest.raises(InputError, match="--pooling mean"):
        embed(session, TEXTS)
    code, err = zoo_cli(capsys, "embed", session.artifact.folder, "--text", "a cat")
    refused(code, err, "carries no sentence-transformers pooling", "--pooling")
    assert embed(session, TEXTS, "mean").shape == (len(TEXTS), 32)  # given one, it embeds


@pytest.mark.parametrize(
    "inputs, kw, fragment",
    [
        ("a text", {}, "a non-empty list of texts"),
        ([], {}, "a non-empty list of texts"),
        ([[2, 5, 3], []], {}, "input 1: not a non-empty row"),
        ([[2, 5, 10_000]], {}, "10000"),
        (["a cat"], {"batch_size": 0}, "batch_size"),
        (["a cat"], {"pooling": "sum"}, "'sum'"),
    ],
)
def test_embed_refuses_bad_input(sentence, inputs, kw, fragment):
    session = sentence[2]
    with pytest.raises(InputError) as e:
        embed(session, inputs, **kw)
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_fill_mask_refusals(mlm, sentence, capsys):
    _, _, session = mlm
    with pytest.raises(InputError, match=r"no mask token: put \[MASK\]"):
        fill_mask(session, "the cat sat")
    refused(*zoo_cli(capsys, "fill-mask", session.artifact.folder, "--text", "a [MASK]", "--top-k", "0"), "--top-k", f"[1, {len(VOCAB)}]")
    encoder = sentence[2]
    assert has_mlm_head(session) and not has_mlm_head(encoder)
    refused(*zoo_cli(capsys, "fill-mask", encoder.artifact.folder, "--text", "a [MASK]"), "no masked-LM head")


def test_cli_embed_and_fill_mask(sentence, mlm, capsys):
    from zoo.app.cli import main

    model, pooling, session = sentence
    texts = TEXTS[:2]
    assert main(["embed", str(session.artifact.folder), "--text", texts[0], "--text", texts[1], "--pooling", "cls", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = with_pooling(model, "cls", normalize=True).encode(texts)  # the artifact's normalisation and max_seq_length kept
    assert out["dimension"] == 32 and out["pooling"]["mode"] == "cls" and out["pooling"]["normalize"]
    assert_close([e["embedding"] for e in out["embeddings"]], want, "zoo embed --json")
    refused(*zoo_cli(capsys, "embed", session.artifact.folder, "--text", "a", "--pooling", "max", "--batch-size", "0"), "--batch-size")
    assert main(["fill-mask", str(mlm[2].artifact.folder), "--text", "the [MASK] sat", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("text") and "probability" in lines[1] and len(lines) == 5
