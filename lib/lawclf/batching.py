"""Training batches: MAX_LEN choice, dynamic padding, length-grouped (and weighted) batch sampling.

Padding each batch to its own longest text, with texts of similar length in one batch,
spends little compute on ``[PAD]`` (:func:`padding_stats` measures how little).
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch

from lawclf.config import TrainConfig
from lawclf.inference import EncodedDataset, PadCollator, encode


def choose_max_len(lengths: Sequence[int], percentile: float = 98.0, multiple: int = 16,
                   cap: int = 512, floor: int = 16) -> int:
    """A MAX_LEN that keeps ``percentile`` % of texts whole: rounded up to ``multiple``, within [floor, cap].

    ``lengths`` are token counts including [CLS] and [SEP]. Longer texts are truncated;
    with dynamic padding a generous MAX_LEN costs nothing for the short majority.
    """
    if len(lengths) == 0:
        raise ValueError("choose_max_len: no lengths (is the train split empty?)")
    p = float(np.percentile(np.asarray(lengths, dtype=np.float64), percentile))
    rounded = int(math.ceil(p / multiple) * multiple)
    return int(min(cap, max(floor, rounded)))


def length_report(lengths: Sequence[int], max_len: int) -> dict[str, Any]:
    """Percentiles of token lengths and how many texts ``max_len`` truncates (for notebooks and logs)."""
    arr = np.asarray(lengths)
    pct = {f"p{q}": int(np.percentile(arr, q)) for q in (50, 90, 95, 98, 99)}
    return {"n": int(len(arr)), **pct, "max": int(arr.max()), "max_len": int(max_len),
            "truncated_fraction": float(np.mean(arr > max_len))}


def padding_stats(lengths: Sequence[int], batch_size: int, max_len: int, seed: int = 42) -> dict[str, dict]:
    """Share of computed positions that are [PAD], per batching strategy, for one epoch.

    ``pad_to_max_len``: every text padded to MAX_LEN (the original recipe);
    ``dynamic``: each batch padded to its longest text, batches random;
    ``dynamic_grouped``: the same with length-grouped batches (what training uses).
    ``relative_cost`` is the positions computed relative to pad-to-MAX_LEN.
    """
    clipped = [min(int(n), max_len) for n in lengths]
    real = sum(clipped)
    fixed = len(clipped) * max_len
    out: dict[str, dict[str, float]] = {"pad_to_max_len": {"positions": fixed}}
    for name, grouped in (("dynamic", False), ("dynamic_grouped", True)):
        sampler = LengthGroupedBatchSampler(clipped, batch_size, seed=seed, group_by_length=grouped)
        out[name] = {"positions": sum(len(b) * max(clipped[i] for i in b) for b in sampler)}
    for stats in out.values():
        stats["padding_fraction"] = 1.0 - real / stats["positions"]
        stats["relative_cost"] = stats["positions"] / fixed
    return out


class EpochBatchSampler(Protocol):
    """What the training loop needs from a batch sampler (implement it to plug in your own).

    Iterating yields lists of dataset indices. ``set_epoch(epoch)`` is called before each
    epoch, and the batches of an epoch must depend only on ``epoch`` and the sampler's own
    seed (never on the global RNG): that is what lets a resumed run replay the epoch it
    stopped in. ``batch_size`` and ``drop_last`` are read by Accelerate when it shards
    batches across processes, and an incomplete batch may only come last (Accelerate
    drops batch pairs around a short batch met earlier).
    """

    batch_size: int
    drop_last: bool

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[list[int]]: ...

    def __len__(self) -> int: ...


class LengthGroupedBatchSampler:
    """Shuffled batches of similar-length texts, reproducible from (seed, epoch).

    Each epoch the indices are shuffled, cut into *mega-batches* of
    ``batch_size * mega_batch_mult`` examples, each mega-batch is sorted by length and cut
    into batches, and the batch order is shuffled again. Batches are then nearly
    length-homogeneous (little padding) yet still random. The batch holding the longest
    text comes first, so an out-of-memory error shows at step 1, not at hour 2.
    ``group_by_length=False`` gives plain shuffled batches.

    ``weights`` (one per example, e.g. ``robustness.source_balanced_weights``) turns each
    epoch into ``num_samples`` draws with replacement in proportion to the weights
    (what a ``WeightedRandomSampler`` does), still length-grouped and seeded.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 42, group_by_length: bool = True,
                 mega_batch_mult: int = 50, drop_last: bool = False,
                 weights: Optional[Sequence[float]] = None, num_samples: Optional[int] = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if weights is not None:
            if len(weights) != len(lengths):
                raise ValueError(f"{len(weights)} weights for {len(lengths)} examples")
            if min(weights) < 0 or sum(weights) <= 0:
                raise ValueError("sampling weights must be >= 0 and not all 0")
        self.weights = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float64)
        self.num_samples = int(num_samples or len(lengths))
        self.lengths = list(lengths)
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self.mega_batch_mult, self.drop_last = mega_batch_mult, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch``, in order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is None:
            perm = torch.randperm(len(self.lengths), generator=g).tolist()
        else:
            perm = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()
        if self.group_by_length:
            mega = self.batch_size * max(1, self.mega_batch_mult)
            perm = [i for k in range(0, len(perm), mega)
                    for i in sorted(perm[k:k + mega], key=lambda j: -self.lengths[j])]
        out = [perm[k:k + self.batch_size] for k in range(0, len(perm), self.batch_size)]
        # An incomplete batch stays last: Accelerate's multi-process sharding assumes so.
        short = out.pop() if out and len(out[-1]) < self.batch_size else None
        if self.group_by_length and len(out) > 1:
            order = torch.randperm(len(out), generator=g).tolist()
            out = [out[i] for i in order]
            longest = max(range(len(out)), key=lambda b: max(self.lengths[j] for j in out[b]))
            out[0], out[longest] = out[longest], out[0]
        if short is not None and not self.drop_last:
            out.append(short)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples if self.weights is not None else len(self.lengths), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


def make_collator(tokenizer, cfg: TrainConfig, max_len: int, multiple_of: Optional[int] = None) -> PadCollator:
    """Dynamic padding, or pad-to-MAX_LEN when ``cfg.dynamic_padding`` is False (the benchmark's baseline)."""
    return PadCollator(pad_token_id=tokenizer.pad_token_id or 0,
                       pad_to=None if cfg.dynamic_padding else max_len, multiple_of=multiple_of)


def make_train_loader(rows: Sequence[dict], tokenizer, cfg: TrainConfig, max_len: int, *,
                      batch_sampler: Optional[EpochBatchSampler] = None,
                      weights: Optional[Sequence[float]] = None,
                      multiple_of: Optional[int] = None):
    """``(DataLoader, batch_sampler)`` over ``rows``: the one place the train set is built.

    Pass ``batch_sampler`` (any :class:`EpochBatchSampler`, e.g. source-balanced) or
    per-example ``weights`` (a weighted loss) to change what the model sees without
    touching the loop. Default: :class:`LengthGroupedBatchSampler` from the config.
    """
    dataset = EncodedDataset(encode(tokenizer, [r["text"] for r in rows], max_len, cfg.truncation),
                             [r["label"] for r in rows], weights)
    if batch_sampler is None:
        batch_sampler = LengthGroupedBatchSampler(dataset.lengths, cfg.batch_size, seed=cfg.seed,
                                                  group_by_length=cfg.group_by_length)
    # A private generator: DataLoader draws a base seed per epoch, and drawing it from
    # the global RNG would shift dropout masks after a resume.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler,
                                         collate_fn=make_collator(tokenizer, cfg, max_len, multiple_of),
                                         generator=torch.Generator().manual_seed(cfg.seed))
    return loader, batch_sampler



__all__ = ["choose_max_len", "length_report", "padding_stats", "EpochBatchSampler",
    "LengthGroupedBatchSampler", "make_collator", "make_train_loader"]
