"""Tiny sentence-transformers and masked-LM checkpoints made locally (the hubs are
unreachable): a WordPiece tokenizer.json built with the ``tokenizers`` package and
wrapped in a BertTokenizerFast, so that sentence-transformers, transformers and the zoo
read the same tokenizer; a BERT (hidden 32, 2 layers, 4 heads) with random-init
(every parameter perturbed) or trained-like weights (tests/hf_trained_like.py)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from tests.hf_trained_like import prepare

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a cat dog sat on mat is was big small red blue ran fast slow and of to in it bird sang tree".split()
VOCAB = SPECIAL + WORDS + list("abcdefghijklmnopqrstuvwxyz.,!?") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##s", "##ed"]
BERT = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
MAX_SEQ_LENGTH = 16  # below max_position_embeddings: the long texts are cut as sentence-transformers cuts them
TEXTS = [
    "the cat sat on the mat",
    "a big red dog ran fast and the small blue bird sang in the tree to the cat",  # > 16 tokens: truncated
    "it",
    "Dogs ran!",
    "the quick zebra",  # letters and pieces (##)
]


def tokenizer() -> transformers.BertTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    return transformers.BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


@torch.no_grad()
def bert(cls, weights: str):
    """``cls`` (BertModel, BertForMaskedLM) with ``weights``: "random" (perturbed) or "trained"."""
    torch.manual_seed(0)
    model = cls(transformers.BertConfig(**BERT)).eval()
    if weights == "random":
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    else:
        prepare(model, weights)
    return model


def sentence_checkpoint(folder: Path, weights: str, *, pooling: str = "mean", normalize: bool = True):
    """A SentenceTransformer (BertModel -> Pooling -> Normalize) saved into ``folder``; returned."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    hf = folder.parent / f"{folder.name}-hf"
    bert(transformers.BertModel, weights).save_pretrained(hf)
    tokenizer().save_pretrained(hf)
    modules = [Transformer(str(hf), max_seq_length=MAX_SEQ_LENGTH), Pooling(BERT["hidden_size"], pooling)]
    model = SentenceTransformer(modules=modules + ([Normalize()] if normalize else []), device="cpu")
    model.save(str(folder))
    return model.eval()


def with_pooling(model, pooling, normalize: bool = False):
    """The same Transformer module under another pooling (sentence-transformers, in memory)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling

    modules = [model[0], Pooling(BERT["hidden_size"], pooling)] + ([Normalize()] if normalize else [])
    return SentenceTransformer(modules=modules, device="cpu").eval()


def mlm_checkpoint(folder: Path, weights: str):
    """A BertForMaskedLM and its tokenizer saved into ``folder``; (model, tokenizer)."""
    model, tok = bert(transformers.BertForMaskedLM, weights), tokenizer()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok
