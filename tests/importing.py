"""What the decoder importer tests share: a tiny Hugging Face checkpoint given random-init or
trained-like weights and saved with save_pretrained (``checkpoint``), a padded batch, the
logits of the zoo's torch module and its ONNX artifact against transformers
(``check_decoder``), 16 greedy tokens against transformers' generate (``check_greedy``), and
the whole round trip, import, build, logits, greedy, in one call (``check_imported_decoder``),
which tests/test_import*.py parametrise over their model_types."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from compiler import build
from compiler.importers import import_folder
from runtime.generate import GenerationConfig, Generator
from tests.hf_trained_like import FP32, LOGIT_STD_FLOOR, assert_matches, build_session, greedy_agreement, logit_std, prepare

V = 100
SMALL = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)


def save(model, folder, weights: str = "random", **kw):
    """``model`` given ``weights`` (random init or trained-like), saved with save_pretrained."""
    torch.manual_seed(0)
    prepare(model, weights)
    model.save_pretrained(folder, **kw)
    return model


def checkpoint(make: Callable, weights: str, folder):
    """``make()`` (seeded) with ``weights``, saved into ``folder``; the transformers model."""
    torch.manual_seed(0)
    return save(make(), folder, weights)


def batch(seq=9):
    """ids (3, seq); mask: row 0 full, row 1 right-padded, row 2 left-padded."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, V, (3, seq), generator=gen)
    mask = torch.ones(3, seq, dtype=torch.long)
    mask[1, seq - 3 :] = 0
    mask[2, :2] = 0
    return ids, mask


def zoo_module(imported):
    model = build(imported.spec)
    model.load_state_dict(imported.state, strict=True)
    return model.eval()


def decoder_inputs(ids, mask) -> dict:
    return {"model": {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}}


def check_decoder(label, hf, imported, session, weights, rule=FP32, seq=9):
    """Logits (3, seq, V) of the zoo's torch module and of ``session`` against transformers on
    a batch of ``seq`` padded right and left (positions from the mask); the trained-like
    logits are large."""
    ids, mask = batch(seq)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        ours = zoo_module(imported)(ids, mask)
    got = session.forward(decoder_inputs(ids, mask))["logits"]
    if rule is FP32:
        assert_matches(f"{label} {weights} torch", ours, expected, mask)
    figures = assert_matches(f"{label} {weights} onnx", got, expected, mask, rule)
    if rule.top1 is not None:
        assert figures["top1"] >= rule.top1, figures
    assert np.abs(expected.numpy()).max() > 1e-2
    if weights == "trained":
        assert logit_std(expected, mask) >= LOGIT_STD_FLOOR


def check_greedy(label, hf, session, batched: bool = False):
    """16 greedy tokens of the zoo artifact (runtime.generate, cached decoding) equal
    transformers' generate(do_sample=False), per prompt (``batched``: the prompts in one
    left-padded batch), no EOS stop on either side."""
    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randint(1, V, (n,), generator=gen).tolist() for n in (5, 8, 3)]
    ours = Generator(session).generate(prompts, GenerationConfig(max_new_tokens=16, eos=())).tokens
    hf.generation_config.eos_token_id = None  # a config passed to generate would be merged with this one
    theirs = []
    if batched:  # one left-padded batch, as the zoo's loop runs it (LongRoPE picks its set by the batch's longest row)
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
        prompts = []  # done
        theirs = out[:, width:].tolist()
    for p in prompts:
        ids = torch.tensor([p])
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False, pad_token_id=0)
        theirs.append(out[0, len(p) :].tolist())
    print(f"{label} greedy: zoo {ours}, transformers {theirs}")
    assert all(len(t) == 16 for t in theirs)
    assert greedy_agreement(ours, theirs) == 1.0, (ours, theirs)


def check_imported_decoder(kind: str, make: Callable, weights: str, folder, *, expect: Optional[Callable] = None,
                           batched: bool = False):
    """The round trip of a causal LM ``kind``: ``make()`` with ``weights`` saved into
    ``folder``/hf, imported (``expect(imported)`` checks the mapping, when given), built into
    ``folder``/artifact (the build's parity and cached decoding), its logits against
    transformers (check_decoder) and, with trained-like weights, 16 greedy tokens
    (check_greedy; ``batched``: as one left-padded batch). Returns (hf, imported, session)."""
    hf = checkpoint(make, weights, folder / "hf")
    imported = import_folder(folder / "hf")
    if expect is not None:
        expect(imported)
    session = build_session(imported, folder / "artifact")
    check_decoder(kind, hf, imported, session, weights)
    if weights == "trained":
        check_greedy(kind, hf, session, batched=batched)
    return hf, imported, session
