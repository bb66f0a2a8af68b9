"""PyTorch inference helpers shared by training (validation), evaluation and export checks.

Tokenise once without padding (:func:`encode`), pad each batch to its own longest text
(:class:`PadCollator`), and score in order of length (:func:`predict_proba`). The server
never imports this module: it scores with ONNX Runtime (:mod:`lawclf.predict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from lawclf.text import normalise_text
from lawclf.truncation import LEGACY_TRUNCATION, truncate_ids


def token_lengths(tokenizer, texts: Sequence[str]) -> list[int]:
    """Token count of each text with [CLS]/[SEP] and without truncation."""
    enc = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
    return [len(ids) for ids in enc["input_ids"]]


def encode(tokenizer, texts: Sequence[str], max_len: int,
           truncation: str = LEGACY_TRUNCATION) -> list[dict[str, list[int]]]:
    """Tokenise once, unpadded (padding happens per batch in :class:`PadCollator`), each text cut to
    ``max_len`` tokens by ``truncation`` (:func:`lawclf.truncation.truncate_ids`, the serving rule too)."""
    enc = tokenizer(list(texts), truncation=False, padding=False, verbose=False)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{k: truncate_ids(enc[k][i], max_len, truncation) for k in keys} for i in range(len(texts))]


class EncodedDataset(torch.utils.data.Dataset):
    """Encoded texts with labels (and optional per-example weights) for the DataLoader."""

    def __init__(self, encodings: Sequence[dict], labels: Sequence[int], weights: Optional[Sequence[float]] = None):
        if len(encodings) != len(labels) or (weights is not None and len(weights) != len(labels)):
            raise ValueError("encodings, labels and weights must have the same length")
        self.encodings, self.labels = list(encodings), [int(x) for x in labels]
        self.weights = None if weights is None else [float(w) for w in weights]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.encodings[i], labels=self.labels[i])
        if self.weights is not None:
            item["weight"] = self.weights[i]
        return item

    @property
    def lengths(self) -> list[int]:
        return [len(e["input_ids"]) for e in self.encodings]


@dataclass
class PadCollator:
    """Pad a batch to its longest sequence (``pad_to=None``) or to a fixed ``pad_to`` length.

    ``multiple_of`` rounds the padded length up (8 suits fp16 tensor cores on a GPU).
    """

    pad_token_id: int = 0
    pad_to: Optional[int] = None
    multiple_of: Optional[int] = None

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        width = self.pad_to if self.pad_to else longest
        if self.multiple_of:
            width = int(math.ceil(width / self.multiple_of) * self.multiple_of)
        if width < longest:
            raise ValueError(f"pad_to={width} is shorter than a sequence of {longest} tokens")
        pad_values = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0}
        batch: dict[str, torch.Tensor] = {}
        for key, pad in pad_values.items():
            if key in items[0]:
                batch[key] = torch.tensor([list(it[key]) + [pad] * (width - len(it[key])) for it in items],
                                          dtype=torch.long)
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        if "weight" in items[0]:
            batch["weight"] = torch.tensor([it["weight"] for it in items], dtype=torch.float32)
        return batch


def make_eval_loader(texts: Sequence[str], labels: Sequence[int], tokenizer, max_len: int, batch_size: int,
                     multiple_of: Optional[int] = None, truncation: str = LEGACY_TRUNCATION):
    """Batches in order of length (fast inference); results come back in this dataset order."""
    dataset = EncodedDataset(encode(tokenizer, texts, max_len, truncation), labels)
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.encodings[i]["input_ids"]))
    sorted_ds = torch.utils.data.Subset(dataset, order)
    loader = torch.utils.data.DataLoader(sorted_ds, batch_size=batch_size, shuffle=False,
                                         collate_fn=PadCollator(tokenizer.pad_token_id or 0, multiple_of=multiple_of))
    return loader, order


@torch.no_grad()
def predict_logits(model, tokenizer, texts: Sequence[str], batch_size: int = 64, max_len: int = 128,
                   device: Optional[str | torch.device] = None, truncation: str = LEGACY_TRUNCATION) -> np.ndarray:
    """The model's logits ``(n, 2)`` for each text, batched in order of length (little padding), in input order.

    Texts get the data stage's normalisation first, as the training texts did (and as the
    ONNX Predictor does), so raw input such as full-width punctuation scores the same.
    """
    texts = [normalise_text(t) for t in texts]
    if not texts:
        return np.zeros((0, 2), dtype=np.float32)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    model.to(device)
    loader, order = make_eval_loader(texts, [0] * len(texts), tokenizer, max_len, batch_size, truncation=truncation)
    out = np.zeros((len(texts), int(model.config.num_labels)), dtype=np.float32)
    pos = 0
    for batch in loader:
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
        out[order[pos:pos + len(logits)]] = logits
        pos += len(logits)
    model.train(was_training)
    return out


def predict_proba(model, tokenizer, texts: Sequence[str], batch_size: int = 64, max_len: int = 128,
                  device: Optional[str | torch.device] = None, truncation: str = LEGACY_TRUNCATION) -> np.ndarray:
    """P(legal) for each text (:func:`predict_logits` through a softmax), in input order."""
    logits = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_len=max_len, device=device,
                            truncation=truncation)
    if not len(logits):
        return np.zeros(0, dtype=np.float64)
    return torch.softmax(torch.from_numpy(logits), dim=-1)[:, 1].numpy().astype(np.float64)


__all__ = ["token_lengths", "encode", "EncodedDataset", "PadCollator", "make_eval_loader", "predict_logits", "predict_proba"]
