"""Building and loading the tokenizer and the classifier.

Three ways to get a model, all ending in an ordinary ``save_pretrained`` directory
(config, weights, ``tokenizer.json``) so that training, evaluation, export and
serving never care which one was used:

* a hub name such as ``bert-base-chinese`` (the Colab default; needs the internet),
* a local directory written by ``save_pretrained`` (a previous run, a mirror),
* ``tiny``: a small BERT built here, offline, with a character-level WordPiece
  vocabulary trained on the training texts. Tests and CI use this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from lawclf.config import LABELS

TINY = "tiny"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class TinySpec:
    """Shape of the offline tiny BERT (see TrainConfig.tiny_*)."""

    layers: int = 2
    hidden: int = 128
    heads: int = 2
    vocab_size: int = 6000
    max_positions: int = 512


def model_kind(model_name: str) -> str:
    """``tiny``, ``local`` (an existing directory) or ``hub``."""
    if model_name == TINY:
        return TINY
    if Path(model_name).expanduser().is_dir():
        return "local"
    return "hub"


def character_vocab(texts: Iterable[str], vocab_size: int = 6000, min_frequency: int = 1) -> dict[str, int]:
    """A character-level WordPiece vocabulary: special tokens, then characters by frequency.

    Chinese is one token per character (as in bert-base-chinese); a Latin word is spelt as its
    first character plus ``##``-continuation characters. Built by counting, with ties broken by
    the token itself, so the same texts always give the same vocabulary (the ``tokenizers``
    WordPiece trainer does not: its ties depend on hash order, which broke resume and DDP).
    """
    from collections import Counter

    normalizer, pre_tokenizer = _bert_normalizer(), _bert_pre_tokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word[0]] += 1
            counts.update("##" + ch for ch in word[1:])
    ranked = sorted((tok for tok, n in counts.items() if n >= min_frequency), key=lambda t: (-counts[t], t))
    tokens = SPECIAL_TOKENS + ranked[: max(0, vocab_size - len(SPECIAL_TOKENS))]
    return {tok: i for i, tok in enumerate(tokens)}


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 6000, min_frequency: int = 1):
    """Build a BERT-style character WordPiece tokenizer on ``texts``, wrapped as a transformers fast tokenizer.

    The BERT normaliser puts spaces around every CJK character, so Chinese ends up one
    token per character; the vocabulary comes from :func:`character_vocab` (deterministic).
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = character_vocab(texts, vocab_size=vocab_size, min_frequency=min_frequency)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = _bert_normalizer()
    tok.pre_tokenizer = _bert_pre_tokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
        # Same inputs as bert-base-chinese's tokenizer, so export and serving see one interface.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _bert_normalizer():
    from tokenizers import normalizers

    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)


def _bert_pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.BertPreTokenizer()


def build_tiny(texts: Iterable[str], spec: Optional[TinySpec] = None, seed: int = 42):
    """Return ``(tokenizer, model)``: a small randomly initialised BERT and its vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    spec = spec or TinySpec()
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=spec.vocab_size)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, intermediate_size=4 * spec.hidden,
        max_position_embeddings=spec.max_positions, pad_token_id=tokenizer.pad_token_id,
        **_label_kwargs(),
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    return tokenizer, model


def load_pretrained(model_name: str, attn_implementation: Optional[str] = None):
    """Return ``(tokenizer, model)`` from a hub name or a local save_pretrained directory.

    A fresh classification head is added when the checkpoint has none (as for
    ``bert-base-chinese``); a directory saved by this project loads its trained head.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        model = AutoModelForSequenceClassification.from_pretrained(model_name, **_label_kwargs(), **kwargs)
    except OSError as exc:
        if model_kind(model_name) == "hub":
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise OSError(
                f"could not load {model_name!r} from the Hugging Face hub"
                + (" (HF_HUB_OFFLINE=1 is set)" if offline else "")
                + ". Without internet access use MODEL_NAME='tiny' (an offline model built from your data) "
                "or a local directory that holds a save_pretrained copy of the model."
            ) from exc
        raise
    return tokenizer, model


def build_tokenizer(model_name: str, train_texts: Optional[Iterable[str]] = None, vocab_size: int = 6000):
    """Only the tokenizer of :func:`build_or_load` (the same one, for looking at tokens before training)."""
    if model_name == TINY:
        if train_texts is None:
            raise ValueError("MODEL_NAME='tiny' builds its vocabulary from the training texts: pass train_texts")
        return train_wordpiece_tokenizer(train_texts, vocab_size=vocab_size)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_name)


def build_or_load(model_name: str, train_texts: Optional[Iterable[str]] = None,
                  spec: Optional[TinySpec] = None, seed: int = 42):
    """One entry point for the three modes; ``train_texts`` is needed only for ``tiny``."""
    if model_name == TINY:
        if train_texts is None:
            raise ValueError("MODEL_NAME='tiny' builds its vocabulary from the training texts: pass train_texts")
        return build_tiny(train_texts, spec=spec, seed=seed)
    return load_pretrained(model_name)


def _label_kwargs() -> dict:
    return {
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {name: i for i, name in enumerate(LABELS)},
    }
