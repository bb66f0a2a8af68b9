"""Training stage: fine-tune the classifier (notebook 03, ``lawclf train``).

The original recipe (BERT + a classification layer, Focal Loss, AdamW, a learning-rate
schedule, early stopping, save the best model) made faster and safer:

* **dynamic padding** (:class:`PadCollator`) and **length-grouped batches**
  (:class:`LengthGroupedBatchSampler`): a batch is padded to its own longest text,
  and texts of similar length share a batch, so little compute goes to ``[PAD]``;
* **Hugging Face Accelerate** owns the device, fp16 mixed precision on CUDA (a T4 has
  no fast bf16), gradient accumulation and multi-process (DDP) training, so the same
  loop runs on a CPU, one Colab GPU and ``accelerate launch --num_processes N``;
* **resume**: checkpoints every ``checkpoint_every`` optimizer steps and at each epoch
  end hold everything (weights, optimizer, scheduler, GradScaler, RNG states, position
  in the epoch, early-stopping state, history), so a run killed mid-epoch continues
  exactly where it stopped and ends in the same state as an uninterrupted run;
* the validation split chooses the best epoch; the test split is left to evaluation.

Hooks for experiments that change *what* is trained on without editing the loop:
``train(cfg, train_rows=..., sample_weights=..., batch_sampler_factory=..., callbacks=...)``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lawclf import __version__
from lawclf.config import LABELS, RunPaths, TrainConfig, add_config_args, config_from_args, to_dict, write_model_meta
from lawclf.modeling import TINY, TinySpec, build_or_load, model_kind
from lawclf.data import normalise_text

logger = logging.getLogger(__name__)

#: Default learning rates when ``TrainConfig.learning_rate`` is 0: a pretrained encoder
#: needs small steps not to forget what it knows; a randomly initialised tiny BERT needs big ones.
DEFAULT_LR = {"pretrained": 2e-5, TINY: 1e-3}
HISTORY_FILE = "training_history.json"
STATE_FILE = "trainer_state.json"
#: Metrics where lower is better (everything else: higher is better).
_LOWER_IS_BETTER = {"loss"}


# --------------------------------------------------------------------------- loss


class FocalLoss(nn.Module):
    """Focal Loss for 2-class logits (Lin et al., 2017): ``-alpha_t (1 - p_t)^gamma log p_t``.

    ``p_t`` is the predicted probability of the true class. ``gamma`` > 0 shrinks the loss
    of examples the model already gets right with confidence, so training attends to the
    hard ones; ``alpha`` weights class 1 (legal) and ``1 - alpha`` class 0. ``alpha=None``
    and ``gamma=0`` is exactly cross-entropy. Optional per-example ``weights`` give a
    weighted mean (sum(w * loss) / sum(w)).
    """

    def __init__(self, alpha: Optional[float] = 0.5, gamma: float = 2.0):
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"focal alpha must be in [0, 1] or None, got {alpha}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma = alpha, gamma

    def per_example(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of each example (no reduction)."""
        log_p = F.log_softmax(logits.float(), dim=-1)
        log_pt = log_p.gather(1, targets.long().unsqueeze(1)).squeeze(1)
        loss = -log_pt
        if self.gamma > 0:
            loss = loss * (1.0 - log_pt.exp()).clamp(min=0.0).pow(self.gamma)
        if self.alpha is not None:
            alpha_t = torch.where(targets == 1, self.alpha, 1.0 - self.alpha).to(loss.dtype)
            loss = alpha_t * loss
        return loss

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        loss = self.per_example(logits, targets)
        if weights is None:
            return loss.mean()
        weights = weights.to(loss.dtype)
        return (loss * weights).sum() / weights.sum().clamp(min=1e-12)


def make_loss(cfg: TrainConfig) -> FocalLoss:
    """``focal`` (alpha, gamma from the config) or ``ce`` (plain cross-entropy)."""
    if cfg.loss == "focal":
        return FocalLoss(alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    if cfg.loss == "ce":
        return FocalLoss(alpha=None, gamma=0.0)
    raise ValueError(f"loss must be 'focal' or 'ce', got {cfg.loss!r}")


# --------------------------------------------------------------------------- data


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
    out = {"pad_to_max_len": {"positions": fixed}}
    for name, grouped in (("dynamic", False), ("dynamic_grouped", True)):
        sampler = LengthGroupedBatchSampler(clipped, batch_size, seed=seed, group_by_length=grouped)
        out[name] = {"positions": sum(len(b) * max(clipped[i] for i in b) for b in sampler)}
    for stats in out.values():
        stats["padding_fraction"] = 1.0 - real / stats["positions"]
        stats["relative_cost"] = stats["positions"] / fixed
    return out


def plot_token_lengths(lengths: Sequence[int], max_len: int, out: Path) -> Path:
    """Histogram of token lengths with the MAX_LEN line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(lengths, bins=50, color="#4C72B0")
    ax.axvline(max_len, color="red", linestyle="--", label=f"MAX_LEN = {max_len}")
    ax.set_xlabel("tokens per text (with [CLS] and [SEP])"), ax.set_ylabel("texts"), ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def token_lengths(tokenizer, texts: Sequence[str]) -> list[int]:
    """Token count of each text with [CLS]/[SEP] and without truncation."""
    enc = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
    return [len(ids) for ids in enc["input_ids"]]


def encode(tokenizer, texts: Sequence[str], max_len: int) -> list[dict[str, list[int]]]:
    """Tokenise once, unpadded (padding happens per batch in :class:`PadCollator`)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]


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
    dataset = EncodedDataset(encode(tokenizer, [r["text"] for r in rows], max_len),
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


def make_eval_loader(texts: Sequence[str], labels: Sequence[int], tokenizer, max_len: int, batch_size: int,
                     multiple_of: Optional[int] = None):
    """Batches in order of length (fast inference); results come back in this dataset order."""
    dataset = EncodedDataset(encode(tokenizer, texts, max_len), labels)
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.encodings[i]["input_ids"]))
    sorted_ds = torch.utils.data.Subset(dataset, order)
    loader = torch.utils.data.DataLoader(sorted_ds, batch_size=batch_size, shuffle=False,
                                         collate_fn=PadCollator(tokenizer.pad_token_id or 0, multiple_of=multiple_of))
    return loader, order


# --------------------------------------------------------------------------- inference


@torch.no_grad()
def predict_proba(model, tokenizer, texts: Sequence[str], batch_size: int = 64, max_len: int = 128,
                  device: Optional[str | torch.device] = None) -> np.ndarray:
    """P(legal) for each text, batched in order of length (little padding), in input order.

    Texts get the data stage's normalisation first, as the training texts did (and as the
    ONNX Predictor does), so raw input such as full-width punctuation scores the same.
    """
    texts = [normalise_text(t) for t in texts]
    if not texts:
        return np.zeros(0, dtype=np.float64)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    model.to(device)
    loader, order = make_eval_loader(texts, [0] * len(texts), tokenizer, max_len, batch_size)
    out = np.zeros(len(texts), dtype=np.float64)
    pos = 0
    for batch in loader:
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        probs = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()
        out[order[pos:pos + len(probs)]] = probs
        pos += len(probs)
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- optimiser


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (decaying them only hurts)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        low = name.lower()
        (no_decay if low.endswith("bias") or "layernorm" in low or "layer_norm" in low else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def resolve_learning_rate(cfg: TrainConfig) -> float:
    """``cfg.learning_rate``, or the default for the model kind when it is 0."""
    if cfg.learning_rate > 0:
        return cfg.learning_rate
    return DEFAULT_LR[TINY] if model_kind(cfg.model_name) == TINY else DEFAULT_LR["pretrained"]


def resolve_mixed_precision(setting: str) -> str:
    """``auto`` → ``fp16`` on CUDA (a T4 has no fast bf16), ``no`` elsewhere; explicit values pass through."""
    if setting == "auto":
        cpu_forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true", "yes"}
        return "fp16" if torch.cuda.is_available() and not cpu_forced else "no"
    if setting not in {"no", "fp16", "bf16"}:
        raise ValueError(f"mixed_precision must be auto, no, fp16 or bf16, got {setting!r}")
    return setting


# --------------------------------------------------------------------------- state


@dataclass
class TrainerState:
    """Where training stands; saved with each checkpoint (JSON) so a resume continues exactly."""

    epoch: int = 0
    #: Micro-batches this process has done in the current epoch.
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    #: Running sums of the current epoch (restored on resume so its history line is exact).
    epoch_loss_sum: float = 0.0
    epoch_examples: int = 0
    epoch_seconds: float = 0.0
    finished: bool = False
    stopped_early: bool = False
    fingerprint: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        return cls(**json.loads(text))


StepCallback = Callable[[TrainerState], None]


def run_fingerprint(cfg: TrainConfig, rows: Sequence[dict], weights: Optional[Sequence[float]],
                    processes: int = 1) -> str:
    """Hash of everything that must match for a checkpoint to be resumed (config + train data +
    process count: a checkpoint's sampler position and per-process RNG states only mean
    something with the same number of processes)."""
    h = hashlib.sha256()
    ignore = {"resume", "checkpoint_every", "run_dir"}
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ignore}
    h.update(json.dumps({**settings, "processes": processes}, sort_keys=True).encode())
    for r in rows:
        h.update(f"{r['label']}\t{r['text']}\n".encode("utf-8"))
    if weights is not None:
        h.update(np.asarray(weights, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _latest_checkpoint(paths: RunPaths) -> Path:
    return paths.checkpoints / "latest"


def save_checkpoint(accelerator, paths: RunPaths, state: TrainerState) -> None:
    """Save the full training state into ``checkpoints/latest`` (written aside, then swapped in)."""
    tmp = paths.checkpoints / "incoming"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, scheduler, GradScaler, RNG states (per process)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        latest = _latest_checkpoint(paths)
        old = paths.checkpoints / "previous"
        shutil.rmtree(old, ignore_errors=True)
        if latest.exists():
            latest.rename(old)
        tmp.rename(latest)  # a kill before this line leaves the previous checkpoint intact
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_resumable_state(paths: RunPaths, fingerprint: str) -> Optional[TrainerState]:
    """The saved state of an unfinished run with the same fingerprint, else None."""
    state_file = _latest_checkpoint(paths) / STATE_FILE
    if not state_file.exists():
        return None
    state = TrainerState.from_json(state_file.read_text(encoding="utf-8"))
    if state.finished:
        return None
    if state.fingerprint != fingerprint:
        logger.warning("checkpoint in %s is from a different configuration or data; starting afresh",
                       paths.checkpoints)
        return None
    return state


# --------------------------------------------------------------------------- the loop


def _say(accelerator, message: str) -> None:
    """Print on the main process only (visible in notebooks) and log it."""
    logger.info(message)
    if accelerator.is_main_process:
        print(f"[train] {message}", flush=True)


def validate(accelerator, model, loader, loss_fn) -> dict[str, float]:
    """Validation loss and metrics at threshold 0.5, gathered across processes without duplicates."""
    from lawclf.evaluate import binary_metrics

    model.eval()
    all_probs, all_labels, all_losses = [], [], []
    with torch.no_grad():
        for batch in loader:
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            per_example = loss_fn.per_example(logits, labels)
            probs = torch.softmax(logits, dim=-1)[:, 1]
            probs, labels, per_example = accelerator.gather_for_metrics((probs, labels, per_example))
            all_probs.append(probs.cpu())
            all_labels.append(labels.cpu())
            all_losses.append(per_example.cpu())
    model.train()
    probs = torch.cat(all_probs).numpy().astype(np.float64)
    labels = torch.cat(all_labels).numpy()
    metrics = binary_metrics(labels, probs, 0.5)
    metrics["loss"] = float(torch.cat(all_losses).mean())
    return metrics


def _improved(metric: str, value: float, best: Optional[float]) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return not math.isnan(value)
    return value < best - 1e-12 if metric in _LOWER_IS_BETTER else value > best + 1e-12


def _subsample(rows: list[dict], weights: Optional[list[float]], n: int, seed: int):
    if not n or n >= len(rows):
        return rows, weights
    idx = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in idx], (None if weights is None else [weights[i] for i in idx])


def save_best_model(accelerator, model, tokenizer, paths: RunPaths, meta: dict) -> None:
    """``save_pretrained`` the model and tokenizer into ``model/`` plus ``lawclf_meta.json`` (main process)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        paths.model.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(str(paths.model))
        tokenizer.save_pretrained(str(paths.model))
        write_model_meta(paths.model, **meta)
    accelerator.wait_for_everyone()


def _build_model(accelerator, cfg: TrainConfig, rows: Sequence[dict], paths: RunPaths):
    """``(tokenizer, model)``; with several processes and ``tiny``, the main process's for all.

    The WordPiece trainer breaks frequency ties in hash-map order, which differs from one
    process to the next, so each process of a distributed run would get its own vocabulary
    (and embedding size, which DDP rejects). The main process builds it and the others load it.
    """
    def build():
        return build_or_load(cfg.model_name, [r["text"] for r in rows],
                             TinySpec(layers=cfg.tiny_layers, hidden=cfg.tiny_hidden, heads=cfg.tiny_heads,
                                      vocab_size=cfg.tiny_vocab_size), seed=cfg.seed)

    if accelerator.num_processes == 1 or model_kind(cfg.model_name) != TINY:
        return build()
    from lawclf.modeling import load_pretrained

    shared = paths.run_dir / ".tiny-init"  # the run folder is on storage every process sees
    if accelerator.is_main_process:
        tokenizer, model = build()
        shutil.rmtree(shared, ignore_errors=True)
        tokenizer.save_pretrained(str(shared))
        model.save_pretrained(str(shared))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        tokenizer, model = load_pretrained(str(shared))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(shared, ignore_errors=True)
    return tokenizer, model


def train(cfg: TrainConfig, *, train_rows: Optional[Sequence[dict]] = None,
          sample_weights: Optional[Sequence[float]] = None,
          batch_sampler_factory: Optional[Callable[[Sequence[dict], Sequence[int], TrainConfig], EpochBatchSampler]] = None,
          callbacks: Sequence[StepCallback] = ()) -> dict[str, Any]:
    """Train on the run's train split, choose the best epoch on validation, save it to ``model/``.

    Args:
        cfg: the training configuration.
        train_rows: train on these rows instead of ``splits/train.jsonl`` (e.g. hard negatives added).
        sample_weights: one weight per train row for a weighted loss.
        batch_sampler_factory: ``f(rows, token_lengths, cfg) -> EpochBatchSampler`` replacing the
            length-grouped sampler (e.g. source-balanced batches).
        callbacks: called with the :class:`TrainerState` after every optimizer step (progress
            hooks; an exception raised there stops training like a crash would).

    Returns a summary: best epoch and validation metrics, max_len, paths, timings.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from lawclf.data import load_split

    t_start = time.perf_counter()
    paths = RunPaths(cfg.run_dir)
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=max(1, cfg.grad_accum_steps))
    set_seed(cfg.seed)

    rows = list(train_rows) if train_rows is not None else load_split(cfg.run_dir, "train")
    weights = None if sample_weights is None else [float(w) for w in sample_weights]
    if weights is not None and len(weights) != len(rows):
        raise ValueError(f"sample_weights has {len(weights)} values for {len(rows)} train rows")
    rows, weights = _subsample(rows, weights, cfg.max_train_samples, cfg.seed)
    val_rows = load_split(cfg.run_dir, "validation")
    if not rows or not val_rows:
        raise ValueError(f"{paths.splits}: the train and validation splits must not be empty")

    tokenizer, model = _build_model(accelerator, cfg, rows, paths)
    lengths = token_lengths(tokenizer, [r["text"] for r in rows])
    cap = min(512, int(getattr(model.config, "max_position_embeddings", 512)))
    if cfg.max_len > 0:
        max_len, max_len_choice = min(cfg.max_len, cap), f"MAX_LEN={cfg.max_len} (given)"
    else:
        max_len = choose_max_len(lengths, cap=cap)
        kept = float(np.mean(np.asarray(lengths) <= max_len))
        max_len_choice = (f"MAX_LEN={max_len} (auto: 98th percentile of {len(lengths)} train lengths "
                          f"rounded up to 16; {kept:.1%} of texts fit untruncated; median {int(np.median(lengths))})")
    _say(accelerator, max_len_choice)

    fp16 = accelerator.mixed_precision == "fp16"
    multiple_of = 8 if fp16 else None  # fp16 tensor cores like multiples of 8
    batch_sampler = None
    if batch_sampler_factory is not None:
        batch_sampler = batch_sampler_factory(rows, [min(n, max_len) for n in lengths], cfg)
    train_loader, batch_sampler = make_train_loader(rows, tokenizer, cfg, max_len, batch_sampler=batch_sampler,
                                                    weights=weights, multiple_of=multiple_of)
    val_loader, _ = make_eval_loader([r["text"] for r in val_rows], [r["label"] for r in val_rows], tokenizer,
                                     max_len, batch_size=cfg.batch_size * 2, multiple_of=multiple_of)

    lr = resolve_learning_rate(cfg)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr)
    # Counted on the whole (unsharded) epoch: Accelerate steps the scheduler once per process.
    steps_per_epoch = max(1, math.ceil(len(batch_sampler) / max(1, cfg.grad_accum_steps)))
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)
    loss_fn = make_loss(cfg)

    fingerprint = run_fingerprint(cfg, rows, weights, processes=accelerator.num_processes)
    state = load_resumable_state(paths, fingerprint) if cfg.resume else None
    if state is not None:
        accelerator.load_state(str(_latest_checkpoint(paths)))  # also restores every RNG
        _say(accelerator, f"resuming from {_latest_checkpoint(paths)}: epoch {state.epoch + 1}, "
                          f"batch {state.step_in_epoch}, optimizer step {state.global_step}")
    else:
        state = TrainerState(fingerprint=fingerprint)
        if accelerator.is_main_process:  # a fresh run must not inherit an old model's metadata
            shutil.rmtree(paths.model, ignore_errors=True)
            shutil.rmtree(paths.checkpoints, ignore_errors=True)
        accelerator.wait_for_everyone()
    _say(accelerator, f"model {cfg.model_name} ({model_kind(cfg.model_name)}), {len(rows)} train / "
                      f"{len(val_rows)} validation texts, batch {cfg.batch_size} x {accelerator.num_processes} "
                      f"process(es) x accumulation {cfg.grad_accum_steps}, lr {lr:g}, "
                      f"mixed precision {accelerator.mixed_precision}, device {accelerator.device}")

    meta = dict(labels=list(LABELS), max_len=max_len, max_len_choice=max_len_choice, model_name=cfg.model_name,
                version=__version__, threshold=0.5, train_config=to_dict(cfg), learning_rate=lr)
    from tqdm import tqdm  # text bars: work in Colab, terminals and papermill (no ipywidgets needed)

    model.train()
    for epoch in range(state.epoch, cfg.epochs):
        if state.finished:
            break
        batch_sampler.set_epoch(epoch)
        if hasattr(train_loader, "set_epoch"):  # Accelerate's loader re-sets its sampler's epoch on iter()
            train_loader.set_epoch(epoch)
        # On resume, the batches done before the checkpoint are drawn again (same order: the
        # sampler depends only on seed and epoch) and skipped; only collation is repeated.
        skip = state.step_in_epoch
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=len(train_loader),
                   disable=not accelerator.is_local_main_process, mininterval=1.0, dynamic_ncols=True)
        t_epoch = time.perf_counter()
        for i, batch in enumerate(bar):
            if i < skip:
                continue
            with accelerator.accumulate(model):
                labels = batch.pop("labels")
                weight = batch.pop("weight", None)
                logits = model(**batch).logits
                loss = loss_fn(logits, labels, weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state.step_in_epoch += 1
            state.epoch_loss_sum += float(loss.detach()) * len(labels)
            state.epoch_examples += len(labels)
            if accelerator.sync_gradients:
                state.global_step += 1
                bar.set_postfix(loss=f"{state.epoch_loss_sum / state.epoch_examples:.4f}", refresh=False)
                if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                    state.epoch_seconds += time.perf_counter() - t_epoch
                    save_checkpoint(accelerator, paths, state)
                    t_epoch = time.perf_counter()
                for callback in callbacks:
                    callback(state)
        bar.close()
        state.epoch_seconds += time.perf_counter() - t_epoch

        totals = accelerator.reduce(torch.tensor([state.epoch_loss_sum, state.epoch_examples],
                                                 dtype=torch.float64, device=accelerator.device), "sum")
        val = validate(accelerator, model, val_loader, loss_fn)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(totals[0] / max(1.0, float(totals[1]))),
            "val_loss": val["loss"],
            **{f"val_{k}": v for k, v in val.items() if k not in {"loss", "threshold", "n"}},
            "samples_per_s": float(totals[1]) / max(state.epoch_seconds, 1e-9),
            "epoch_seconds": state.epoch_seconds,
            "lr": float(scheduler.get_last_lr()[0]),
            "optimizer_steps": state.global_step,
        }
        state.history.append(record)
        value = val[cfg.metric] if cfg.metric in val else float("nan")
        if _improved(cfg.metric, value, state.best_metric):
            state.best_metric, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
            save_best_model(accelerator, model, tokenizer, paths, {
                **meta, "best_epoch": epoch + 1, "best_validation": {k: val[k] for k in val if k != "threshold"}})
            flag = " *best*"
        else:
            state.bad_epochs += 1
            flag = f" (no improvement {state.bad_epochs}/{cfg.patience})"
        _say(accelerator, f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, val loss {val['loss']:.4f}, "
                          f"val {cfg.metric} {value:.4f}, {record['samples_per_s']:.1f} samples/s{flag}")
        state.epoch, state.step_in_epoch = epoch + 1, 0
        state.epoch_loss_sum, state.epoch_examples, state.epoch_seconds = 0.0, 0, 0.0
        if cfg.patience > 0 and state.bad_epochs >= cfg.patience and epoch + 1 < cfg.epochs:
            state.stopped_early = True
            _say(accelerator, f"early stopping: {cfg.metric} has not improved for {cfg.patience} epochs")
        state.finished = state.stopped_early or state.epoch >= cfg.epochs
        save_checkpoint(accelerator, paths, state)
        if state.finished:
            break

    if state.best_epoch is None:
        raise RuntimeError(f"validation {cfg.metric} was never a number; no model was saved")
    summary = {
        "best_epoch": state.best_epoch, "best_metric": state.best_metric, "metric": cfg.metric,
        "epochs_run": len(state.history), "stopped_early": state.stopped_early, "max_len": max_len,
        "max_len_choice": max_len_choice, "learning_rate": lr, "model_dir": str(paths.model),
        "mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
        "train_size": len(rows), "validation_size": len(val_rows), "history": state.history,
        "seconds": time.perf_counter() - t_start,
    }
    if accelerator.is_main_process:
        write_history(paths, state.history)
        write_model_meta(paths.model, training={k: v for k, v in summary.items() if k != "history"})
        try:
            plot_history(state.history, paths.reports / "training_history.png")
        except Exception as exc:  # a plot must never lose a trained model
            logger.warning("could not plot the training history: %s", exc)
    accelerator.wait_for_everyone()
    return summary


# --------------------------------------------------------------------------- outputs


def write_history(paths: RunPaths, history: list[dict]) -> Path:
    """``model/training_history.json`` (one record per epoch)."""
    path = paths.model / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(history, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def read_history(run_dir: str | os.PathLike[str]) -> list[dict]:
    return json.loads((RunPaths(run_dir).model / HISTORY_FILE).read_text(encoding="utf-8"))


def plot_history(history: list[dict], out: Path) -> Path:
    """Loss curves (train vs validation) and validation F1 / PR-AUC per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation loss")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    for key in ("val_f1", "val_pr_auc", "val_accuracy"):
        if key in history[0]:
            ax2.plot(epochs, [h[key] for h in history], "o-", label=key.replace("val_", "validation "))
    ax2.set_xlabel("epoch"), ax2.set_ylim(0, 1.02), ax2.legend(), ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.set_xticks(epochs)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf train``: the same parameters as notebook 03."""
    parser = argparse.ArgumentParser(prog="lawclf train", description="Fine-tune the classifier (notebook 03).")
    add_config_args(parser, TrainConfig)
    cfg = config_from_args(TrainConfig, parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = train(cfg)
    from accelerate import PartialState  # set up by train(): under `accelerate launch`, report once

    if PartialState().is_main_process:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}, ensure_ascii=False, indent=2))
    return 0


__all__ = [
    "FocalLoss", "make_loss", "choose_max_len", "length_report", "padding_stats", "plot_token_lengths",
    "token_lengths", "encode", "EncodedDataset", "PadCollator",
    "EpochBatchSampler", "LengthGroupedBatchSampler", "make_collator", "make_train_loader", "make_eval_loader",
    "predict_proba", "param_groups", "resolve_learning_rate", "resolve_mixed_precision", "TrainerState",
    "save_checkpoint", "train", "validate", "write_history", "read_history", "plot_history", "cli",
]
