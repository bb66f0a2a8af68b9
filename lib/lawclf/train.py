"""Training stage: fine-tune the classifier (notebook 03, ``lawclf train``).

The original recipe (BERT + a classification layer, Focal Loss, AdamW, a learning-rate
schedule, early stopping, save the best model) made faster and safer:

* **dynamic padding** (:class:`lawclf.inference.PadCollator`) and **length-grouped batches**
  (:class:`lawclf.batching.LengthGroupedBatchSampler`): a batch is padded to its own longest text,
  and texts of similar length share a batch, so little compute goes to ``[PAD]``;
* **Hugging Face Accelerate** owns the device, fp16 mixed precision on CUDA (a T4 has
  no fast bf16), gradient accumulation and multi-process (DDP) training, so the same
  loop runs on a CPU, one Colab GPU and ``accelerate launch --num_processes N``;
* **resume**: checkpoints every ``checkpoint_every`` optimizer steps and at each epoch
  end hold everything (weights, optimizer, scheduler, GradScaler, RNG states, position
  in the epoch, early-stopping state, history), so a run killed mid-epoch continues
  exactly where it stopped and ends in the same state as an uninterrupted run;
* the validation split chooses the best epoch; the test split is left to evaluation;
* a **training-set recipe** (``TrainConfig.recipe``, :mod:`lawclf.robustness`) chooses
  which train rows the model sees: all of them, negatives spread over sources, hard
  negatives, suspected label noise left out.

The pieces live beside this loop: :mod:`lawclf.losses`, :mod:`lawclf.batching`,
:mod:`lawclf.inference`, :mod:`lawclf.checkpoints`, :mod:`lawclf.metrics`.

Hooks for experiments that change *what* is trained on without editing the loop:
``train(cfg, train_rows=..., sample_weights=..., batch_sampler_factory=..., callbacks=...)``.

Longer than ~400 lines on purpose: the loop's named steps (:func:`set_up`, :func:`run_epoch`,
:func:`end_epoch`, :func:`finish`) and the resumable state they share (:class:`TrainingRun`) are kept
together, so what a resume restores is next to what each step writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from lawclf import __version__
from lawclf.batching import (
    EpochBatchSampler,
    choose_max_len,
    make_train_loader,
)
from lawclf.checkpoints import (
    StepCallback,
    TrainerState,
    latest_checkpoint,
    load_resumable_state,
    run_fingerprint,
    save_checkpoint,
)
from lawclf.config import (
    LABELS,
    RunPaths,
    TrainConfig,
    add_config_args,
    config_from_args,
    to_dict,
    write_model_meta,
)
from lawclf.inference import make_eval_loader, token_lengths
from lawclf.losses import make_loss
from lawclf.metrics import binary_metrics
from lawclf.modeling import TINY, TinySpec, build_or_load, model_kind
from lawclf.plots import plot_history
from lawclf.robustness import RECIPES, SUSPECTED_NOISE_FILE, TrainingSet, apply_recipe, short_forms

logger = logging.getLogger(__name__)

#: Default learning rates when ``TrainConfig.learning_rate`` is 0: a pretrained encoder
#: needs small steps not to forget what it knows; a randomly initialised tiny BERT needs big ones.
DEFAULT_LR = {"pretrained": 2e-5, TINY: 1e-3}
HISTORY_FILE = "training_history.json"
#: Metrics where lower is better (everything else: higher is better).
_LOWER_IS_BETTER = {"loss"}


# --------------------------------------------------------------------------- optimiser


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (decaying them only hurts)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
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


# --------------------------------------------------------------------------- the loop


def _say(accelerator, message: str) -> None:
    """Print on the main process only (visible in notebooks) and log it."""
    logger.info(message)
    if accelerator.is_main_process:
        print(f"[train] {message}", flush=True)


def validate(accelerator, model, loader, loss_fn) -> dict[str, float]:
    """Validation loss and metrics at threshold 0.5, gathered across processes without duplicates."""
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
    scores = torch.cat(all_probs).numpy().astype(np.float64)
    metrics = binary_metrics(torch.cat(all_labels).numpy(), scores, 0.5)
    metrics["loss"] = float(torch.cat(all_losses).mean())
    return metrics


def _improved(metric: str, value: float, best: Optional[float]) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return not math.isnan(value)
    return value < best - 1e-12 if metric in _LOWER_IS_BETTER else value > best + 1e-12


def _apply_recipe(rows: list[dict], weights: Optional[list[float]], cfg: TrainConfig):
    """The rows (and weights) the configured recipe keeps, what it chose (robustness.apply_recipe), and
    the rows the n-gram part fits (``cfg.ngram_rows``: every train row but the suspected label noise the
    recipe left out, or the model's own rows; short forms in both)."""
    chosen = apply_recipe(rows, cfg.recipe, negatives=cfg.recipe_negatives, positives=cfg.recipe_positives,
                          negatives_per_source=cfg.negatives_per_source, hard_fraction=cfg.hard_fraction,
                          noise_threshold=cfg.noise_threshold, oof_folds=cfg.oof_folds, seed=cfg.seed)
    kept = [rows[i] for i in chosen.indices]
    kept_weights = None if weights is None else [weights[i] for i in chosen.indices]
    extra = short_forms(kept, cfg.short_forms, seed=cfg.seed)
    if cfg.short_forms:
        chosen.report["short_forms"] = {"share": cfg.short_forms, "added": len(extra),
                                        "legal": sum(1 for r in extra if int(r["label"]) == 1)}
    if extra:
        kept += extra
        kept_weights = None if kept_weights is None else kept_weights + [1.0] * len(extra)
    if cfg.ngram_rows == "recipe":
        ngram_rows = kept
    else:  # n-grams are cheap to fit: every row, so a budget set for the model does not starve them
        noise = {(str(r["text"]), int(r["label"])) for r in chosen.suspected_noise}
        ngram_rows = [r for r in rows if (str(r["text"]), int(r["label"])) not in noise] + extra
    return kept, kept_weights, chosen, ngram_rows


def _recipe_line(report: dict[str, Any]) -> str:
    line = (f"recipe {report['recipe']}: {report['rows_out']} of {report['rows_in']} train rows "
            f"({report['positives']} legal, {report['negatives']} non-legal")
    if report["hard_negatives"]:
        line += f", {report['hard_negatives']} of them hard negatives"
    line += ")"
    if report.get("short_forms"):
        line += f"; added {report['short_forms']['added']} short forms ({report['short_forms']['legal']} legal)"
    if report["suspected_noise_dropped"]:
        line += f"; left out {report['suspected_noise_dropped']} suspected label-noise rows"
    if report["negatives_over_source_cap"]:
        line += f"; {report['negatives_over_source_cap']} non-legal rows over the per-source cap"
    return line


def _write_suspected_noise(paths: RunPaths, chosen: TrainingSet) -> None:
    """``reports/suspected_noise.jsonl``: the rows ``robust`` left out, most confident first, for a
    person to read (a stale file from an earlier run is removed)."""
    path = paths.reports / SUSPECTED_NOISE_FILE
    path.unlink(missing_ok=True)
    if not RECIPES[chosen.report["recipe"]].clean:  # a recipe that does not clean leaves out nothing
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in chosen.suspected_noise:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    chosen.report["suspected_noise_file"] = str(path)


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
        return build_or_load(cfg.model_name, [r["text"] for r in rows], _tiny_spec(cfg), seed=cfg.seed)

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


def _tiny_spec(cfg: TrainConfig) -> TinySpec:
    return TinySpec(layers=cfg.tiny_layers, hidden=cfg.tiny_hidden, heads=cfg.tiny_heads,
                    vocab_size=cfg.tiny_vocab_size)


def _max_len(cfg: TrainConfig, model, lengths: Sequence[int]) -> tuple[int, str]:
    """``(max_len, the sentence saying how it was chosen)``: given, or from the train lengths."""
    cap = min(512, int(getattr(model.config, "max_position_embeddings", 512)))
    if cfg.max_len > 0:
        return min(cfg.max_len, cap), f"MAX_LEN={cfg.max_len} (given)"
    max_len = choose_max_len(lengths, cap=cap)
    kept = float(np.mean(np.asarray(lengths) <= max_len))
    return max_len, (f"MAX_LEN={max_len} (auto: 98th percentile of {len(lengths)} train lengths "
                     f"rounded up to 16; {kept:.1%} of texts fit untruncated; median {int(np.median(lengths))})")


def _optimiser(cfg: TrainConfig, model, batches_per_epoch: int):
    """``(AdamW, linear warm-up schedule, total optimiser steps)`` for ``model``."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=resolve_learning_rate(cfg))
    # Counted on the whole (unsharded) epoch: Accelerate steps the scheduler once per process.
    total = max(1, math.ceil(batches_per_epoch / max(1, cfg.grad_accum_steps))) * cfg.epochs
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total), total


def training_parts(cfg: TrainConfig) -> SimpleNamespace:
    """The pieces :func:`train` puts together, built by the same helpers but without Accelerate, for
    a reader to take optimisation steps by hand (notebook 03): a fresh ``model`` and its
    ``tokenizer``, the length-grouped ``loader`` over the train split, the ``loss_fn``, AdamW
    ``optimizer`` and warm-up ``scheduler``, ``max_len``, ``total_steps`` and the ``device`` the model is on
    (the training device). Nothing is written; :func:`free_memory` after ``del`` gives the memory back."""
    from accelerate.utils import set_seed

    from lawclf.data import load_split

    set_seed(cfg.seed)
    rows = load_split(cfg.run_dir, "train")
    tokenizer, model = build_or_load(cfg.model_name, [r["text"] for r in rows], _tiny_spec(cfg), seed=cfg.seed)
    max_len, _ = _max_len(cfg, model, token_lengths(tokenizer, [r["text"] for r in rows]))
    loader, batch_sampler = make_train_loader(rows, tokenizer, cfg, max_len)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where Accelerate will put train()'s model
    model.to(device)  # the training device: on a GPU runtime the hand steps run where train() will
    optimizer, scheduler, total = _optimiser(cfg, model, len(batch_sampler))
    return SimpleNamespace(tokenizer=tokenizer, model=model.train(), loader=loader, loss_fn=make_loss(cfg),
                           optimizer=optimizer, scheduler=scheduler, max_len=max_len, total_steps=total,
                           device=device)


def free_memory() -> Optional[int]:
    """Collect what nothing refers to any more (notebook 03's hand-step model, before :func:`train`); on
    CUDA also empty the allocator's cache and return the bytes still allocated (None without a GPU)."""
    import gc

    gc.collect()
    if not torch.cuda.is_available():
        return None
    torch.cuda.empty_cache()
    return int(torch.cuda.memory_allocated())


def optimisation_step(model, batch: dict, loss_fn, optimizer, scheduler, grad_clip: float, *,
                      backward: Optional[Callable[[torch.Tensor], None]] = None,
                      clip: Optional[Callable[..., Any]] = None, sync: bool = True) -> tuple[torch.Tensor, int]:
    """One optimisation step on ``batch``: forward, loss (with the batch's ``weight`` when it has one),
    backward, gradient clipping, AdamW, the warm-up schedule, zeroed gradients. Returns ``(loss, examples)``.

    The one step both :func:`train` (through Accelerate: its ``backward`` and ``clip_grad_norm_``, ``sync``
    False while gradients accumulate) and notebook 03's hand steps take. ``batch`` is not changed."""
    batch = dict(batch)
    labels = batch.pop("labels")
    weight = batch.pop("weight", None)
    loss = loss_fn(model(**batch).logits, labels, weight)
    (backward or torch.Tensor.backward)(loss)
    if sync and grad_clip > 0:
        (clip or torch.nn.utils.clip_grad_norm_)(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss, len(labels)


@dataclass
class TrainingRun:
    """What the steps of :func:`train` share: made by :func:`set_up`, advanced by :func:`run_epoch` and
    :func:`end_epoch`, closed by :func:`finish`."""

    cfg: TrainConfig
    paths: RunPaths
    accelerator: Any
    rows: list[dict]
    val_rows: list[dict]
    ngram_rows: list[dict]
    tokenizer: Any
    model: Any
    optimizer: Any
    scheduler: Any
    loss_fn: Any
    train_loader: Any
    val_loader: Any
    batch_sampler: Any
    state: TrainerState
    meta: dict[str, Any]
    max_len: int
    max_len_choice: str
    learning_rate: float
    callbacks: Sequence[StepCallback] = ()
    started: float = field(default_factory=time.perf_counter)


def set_up(cfg: TrainConfig, *, train_rows: Optional[Sequence[dict]] = None,
           sample_weights: Optional[Sequence[float]] = None,
           batch_sampler_factory: Optional[Callable[[Sequence[dict], Sequence[int], TrainConfig], EpochBatchSampler]] = None,
           callbacks: Sequence[StepCallback] = ()) -> TrainingRun:
    """Set-up and recipe, then build: the rows the recipe keeps, the model and tokenizer, MAX_LEN, the
    loaders, AdamW and its schedule under Accelerate, and the state (resumed from ``checkpoints/`` when a
    checkpoint of the same run is there). The arguments are :func:`train`'s."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lawclf.data import load_split

    started = time.perf_counter()
    paths = RunPaths(cfg.run_dir)
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=max(1, cfg.grad_accum_steps))
    set_seed(cfg.seed)

    rows = list(train_rows) if train_rows is not None else load_split(cfg.run_dir, "train")
    weights = None if sample_weights is None else [float(w) for w in sample_weights]
    if weights is not None and len(weights) != len(rows):
        raise ValueError(f"sample_weights has {len(weights)} values for {len(rows)} train rows")
    rows, weights, recipe, ngram_rows = _apply_recipe(rows, weights, cfg)
    rows, weights = _subsample(rows, weights, cfg.max_train_samples, cfg.seed)
    val_rows = load_split(cfg.run_dir, "validation")
    if not rows or not val_rows:
        raise ValueError(f"{paths.splits}: the train and validation splits must not be empty")

    _say(accelerator, _recipe_line(recipe.report))
    if accelerator.is_main_process:
        _write_suspected_noise(paths, recipe)
    tokenizer, model = _build_model(accelerator, cfg, rows, paths)
    lengths = token_lengths(tokenizer, [r["text"] for r in rows])
    max_len, max_len_choice = _max_len(cfg, model, lengths)
    _say(accelerator, max_len_choice)

    fp16 = accelerator.mixed_precision == "fp16"
    multiple_of = 8 if fp16 else None  # fp16 tensor cores like multiples of 8
    batch_sampler = None
    if batch_sampler_factory is not None:
        batch_sampler = batch_sampler_factory(rows, [min(n, max_len) for n in lengths], cfg)
    train_loader, batch_sampler = make_train_loader(rows, tokenizer, cfg, max_len, batch_sampler=batch_sampler,
                                                    weights=weights, multiple_of=multiple_of)
    val_loader, _ = make_eval_loader([r["text"] for r in val_rows], [r["label"] for r in val_rows], tokenizer,
                                     max_len, batch_size=cfg.batch_size * 2, multiple_of=multiple_of,
                                     truncation=cfg.truncation)

    lr = resolve_learning_rate(cfg)
    optimizer, scheduler, _ = _optimiser(cfg, model, len(batch_sampler))
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)

    fingerprint = run_fingerprint(cfg, rows, weights, processes=accelerator.num_processes)
    state = load_resumable_state(paths, fingerprint) if cfg.resume else None
    if state is not None:
        accelerator.load_state(str(latest_checkpoint(paths)))  # also restores every RNG
        _say(accelerator, f"resuming from {latest_checkpoint(paths)}: epoch {state.epoch + 1}, "
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

    meta = dict(labels=list(LABELS), max_len=max_len, max_len_choice=max_len_choice, truncation=cfg.truncation,
                model_name=cfg.model_name, version=__version__, threshold=0.5, train_config=to_dict(cfg),
                learning_rate=lr, recipe=recipe.report)
    return TrainingRun(cfg=cfg, paths=paths, accelerator=accelerator, rows=rows, val_rows=val_rows,
                       ngram_rows=ngram_rows, tokenizer=tokenizer, model=model, optimizer=optimizer,
                       scheduler=scheduler, loss_fn=make_loss(cfg), train_loader=train_loader, val_loader=val_loader,
                       batch_sampler=batch_sampler, state=state, meta=meta, max_len=max_len,
                       max_len_choice=max_len_choice, learning_rate=lr, callbacks=callbacks, started=started)


def run_epoch(run: TrainingRun, epoch: int) -> None:
    """One epoch of optimisation steps (resumed mid-epoch where the state says), with a progress bar and
    the checkpoints every ``checkpoint_every`` optimizer steps."""
    from tqdm import tqdm  # text bars: they work in Colab, terminals and papermill (no ipywidgets needed)

    cfg, acc, state = run.cfg, run.accelerator, run.state
    run.batch_sampler.set_epoch(epoch)
    if hasattr(run.train_loader, "set_epoch"):  # Accelerate's loader re-sets its sampler's epoch on iter()
        run.train_loader.set_epoch(epoch)
    # On resume, the batches done before the checkpoint are drawn again (same order: the
    # sampler depends only on seed and epoch) and skipped; only collation is repeated.
    skip = state.step_in_epoch
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=len(run.train_loader),
               disable=not acc.is_local_main_process, mininterval=1.0, dynamic_ncols=True)
    t_epoch = time.perf_counter()
    for i, batch in enumerate(bar):
        if i < skip:
            continue
        with acc.accumulate(run.model):
            loss, n = optimisation_step(run.model, batch, run.loss_fn, run.optimizer, run.scheduler, cfg.grad_clip,
                                        backward=acc.backward, clip=acc.clip_grad_norm_, sync=acc.sync_gradients)
        state.step_in_epoch += 1
        state.epoch_loss_sum += float(loss.detach()) * n
        state.epoch_examples += n
        if acc.sync_gradients:
            state.global_step += 1
            bar.set_postfix(loss=f"{state.epoch_loss_sum / state.epoch_examples:.4f}", refresh=False)
            if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                state.epoch_seconds += time.perf_counter() - t_epoch
                save_checkpoint(acc, run.paths, state)
                t_epoch = time.perf_counter()
            for callback in run.callbacks:
                callback(state)
    bar.close()
    state.epoch_seconds += time.perf_counter() - t_epoch


def end_epoch(run: TrainingRun, epoch: int) -> dict[str, Any]:
    """Validate, record the epoch, keep the model when it is the best so far, decide on early stopping and
    checkpoint the state; returns the epoch's record."""
    cfg, acc, state = run.cfg, run.accelerator, run.state
    totals = acc.reduce(torch.tensor([state.epoch_loss_sum, state.epoch_examples],
                                     dtype=torch.float64, device=acc.device), "sum")
    val = validate(acc, run.model, run.val_loader, run.loss_fn)
    record = {
        "epoch": epoch + 1,
        "train_loss": float(totals[0] / max(1.0, float(totals[1]))),
        "val_loss": val["loss"],
        **{f"val_{k}": v for k, v in val.items() if k not in {"loss", "threshold", "n"}},
        "samples_per_s": float(totals[1]) / max(state.epoch_seconds, 1e-9),
        "epoch_seconds": state.epoch_seconds,
        "lr": float(run.scheduler.get_last_lr()[0]),
        "optimizer_steps": state.global_step,
    }
    state.history.append(record)
    value = val[cfg.metric] if cfg.metric in val else float("nan")
    if _improved(cfg.metric, value, state.best_metric):
        state.best_metric, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
        save_best_model(acc, run.model, run.tokenizer, run.paths, {
            **run.meta, "best_epoch": epoch + 1, "best_validation": {k: val[k] for k in val if k != "threshold"}})
        flag = " *best*"
    else:
        state.bad_epochs += 1
        flag = f" (no improvement {state.bad_epochs}/{cfg.patience})"
    _say(acc, f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, val loss {val['loss']:.4f}, "
              f"val {cfg.metric} {value:.4f}, {record['samples_per_s']:.1f} samples/s{flag}")
    state.epoch, state.step_in_epoch = epoch + 1, 0
    state.epoch_loss_sum, state.epoch_examples, state.epoch_seconds = 0.0, 0, 0.0
    if cfg.patience > 0 and state.bad_epochs >= cfg.patience and epoch + 1 < cfg.epochs:
        state.stopped_early = True
        _say(acc, f"early stopping: {cfg.metric} has not improved for {cfg.patience} epochs")
    state.finished = state.stopped_early or state.epoch >= cfg.epochs
    save_checkpoint(acc, run.paths, state)
    return record


def finish(run: TrainingRun) -> dict[str, Any]:
    """The history, the n-gram part and the summary written beside the best model; checkpoints of a finished
    run removed (unless kept); the training plot. Returns the summary."""
    cfg, acc, state, paths = run.cfg, run.accelerator, run.state, run.paths
    if state.best_epoch is None:
        raise RuntimeError(f"validation {cfg.metric} was never a number; no model was saved")
    summary = {
        "best_epoch": state.best_epoch, "best_metric": state.best_metric, "metric": cfg.metric,
        "epochs_run": len(state.history), "stopped_early": state.stopped_early, "max_len": run.max_len,
        "max_len_choice": run.max_len_choice, "learning_rate": run.learning_rate, "model_dir": str(paths.model),
        "mixed_precision": acc.mixed_precision, "num_processes": acc.num_processes,
        "train_size": len(run.rows), "validation_size": len(run.val_rows), "history": state.history,
        "seconds": time.perf_counter() - run.started,
    }
    if acc.is_main_process:
        write_history(paths, state.history)
        summary["ngram"] = fit_ngram_part(cfg, run.ngram_rows, paths)
        write_model_meta(paths.model, training={k: v for k, v in summary.items() if k != "history"},
                         ngram=summary["ngram"])
        if state.finished and not cfg.keep_checkpoints:  # never resumed again: free the disk (Drive in Colab)
            shutil.rmtree(paths.checkpoints, ignore_errors=True)
            _say(acc, f"removed {paths.checkpoints} (a finished run is not resumed; "
                      "KEEP_CHECKPOINTS / --keep-checkpoints keeps it)")
        summary["checkpoints_kept"] = paths.checkpoints.exists()
        try:
            plot_history(state.history, paths.reports / "training_history.png")
        except Exception as exc:  # a plot must never lose a trained model
            logger.warning("could not plot the training history: %s", exc)
    acc.wait_for_everyone()
    return summary


def train(cfg: TrainConfig, *, train_rows: Optional[Sequence[dict]] = None,
          sample_weights: Optional[Sequence[float]] = None,
          batch_sampler_factory: Optional[Callable[[Sequence[dict], Sequence[int], TrainConfig], EpochBatchSampler]] = None,
          callbacks: Sequence[StepCallback] = ()) -> dict[str, Any]:
    """Train on the run's train split, choose the best epoch on validation, save it to ``model/``:
    :func:`set_up`, then :func:`run_epoch` and :func:`end_epoch` per epoch, then :func:`finish`.

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
    run = set_up(cfg, train_rows=train_rows, sample_weights=sample_weights,
                 batch_sampler_factory=batch_sampler_factory, callbacks=callbacks)
    run.model.train()
    for epoch in range(run.state.epoch, cfg.epochs):
        if run.state.finished:
            break
        run_epoch(run, epoch)
        end_epoch(run, epoch)
        if run.state.finished:
            break
    return finish(run)


# --------------------------------------------------------------------------- outputs


def fit_ngram_part(cfg: TrainConfig, rows: Sequence[dict], paths: RunPaths) -> Optional[dict[str, Any]]:
    """The char n-gram part (lawclf.ngram) fitted on the rows the model was trained on, saved as
    ``model/ngram.npz``; its description for ``lawclf_meta.json`` (None when ``cfg.ngram`` is off)."""
    from lawclf.baselines import TfidfCharLR
    from lawclf.ngram import NGRAM_FILE

    path = paths.model / NGRAM_FILE
    path.unlink(missing_ok=True)
    labels = [int(r["label"]) for r in rows]
    if not cfg.ngram or len(set(labels)) < 2:
        return None
    t0 = time.perf_counter()
    part = TfidfCharLR(seed=cfg.seed).fit([r["text"] for r in rows], labels).to_ngram_model()
    part.save(path)
    logger.info("n-gram part: %d features fitted on %d rows", len(part.vocabulary), len(rows))
    return {**part.describe(), "train_rows": len(rows), "rows": cfg.ngram_rows,
            "seconds": round(time.perf_counter() - t0, 2)}


def write_history(paths: RunPaths, history: list[dict]) -> Path:
    """``model/training_history.json`` (one record per epoch)."""
    path = paths.model / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(history, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def read_history(run_dir: str | os.PathLike[str]) -> list[dict]:
    return json.loads((RunPaths(run_dir).model / HISTORY_FILE).read_text(encoding="utf-8"))


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf train``: the same parameters as notebook 03."""
    parser = argparse.ArgumentParser(prog="lawclf train", description="Fine-tune the classifier (notebook 03).")
    add_config_args(parser, TrainConfig)
    cfg = config_from_args(TrainConfig, parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = train(cfg)
    # Set up by train(): under `accelerate launch`, report once.
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}, ensure_ascii=False, indent=2))
    return 0


__all__ = [
    "DEFAULT_LR", "param_groups", "resolve_learning_rate", "resolve_mixed_precision", "train", "validate",
    "optimisation_step", "TrainingRun", "set_up", "run_epoch", "end_epoch", "finish",
    "write_history", "read_history", "cli",
]
