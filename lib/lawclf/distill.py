"""Distillation stage: a small student from a trained run's model (notebook 08, ``lawclf distill``).

Serving cost grows with the number of transformer layers; a student of a third of the teacher's
layers, trained to copy the teacher's scores on this task's own texts, keeps nearly all of its
quality (DistilBERT, TinyBERT). Here:

* the **student** is the teacher's architecture with ``student_layers`` layers, initialised from
  the teacher: embeddings, pooler and classifier copied, and the teacher's layers taken evenly
  spaced with the last one included (12 → 4 takes layers 3, 6, 9, 12);
* it learns from the **teacher's logits** (computed once, before the student trains): KL divergence
  of the temperature-softened probabilities (× T², so the gradient scale does not depend on T) or
  squared distance of the logits, mixed with the teacher's own loss on the hard labels
  (``soft_weight``); **unlabelled texts** (the pool, screening posts) add teacher-scored examples;
* the rows are the ones the teacher's recipe chose (or every train row), the tokenizer, MAX_LEN,
  truncation and the n-gram part are the teacher's, and the student's run folder gets the teacher's
  splits, so ``lawclf evaluate`` and ``lawclf export`` treat it like any run; with
  ``evaluate_and_export`` (the default) the command runs them itself, with the teacher's
  threshold strategy and combination rule, and ends in a served ``onnx/`` folder;
* validation F1 picks the best epoch (early stopping), as in training. A student run is short and
  is not resumed after a kill: it starts again.

A little over ~400 lines: one stage (build the student, the teacher's logits, the loop, evaluate and
export), one function a step.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from lawclf import __version__
from lawclf.config import (
    DistillConfig,
    EvalConfig,
    ExportConfig,
    RunPaths,
    TrainConfig,
    add_config_args,
    config_from_args,
    read_model_meta,
    to_dict,
    training_config_of,
    write_model_meta,
)

logger = logging.getLogger(__name__)

#: Keys of the teacher's metadata that describe the teacher's own evaluation, not the student's.
_TEACHER_ONLY = ("threshold_choice", "combine", "test_metrics", "best_validation", "best_epoch", "training",
                 "export", "parity")


class DistillError(ValueError):
    """The teacher or an input cannot be used; the message says which and why."""


# --------------------------------------------------------------------------- the student


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Which teacher layer (0-based) initialises each student layer: evenly spaced, the last included."""
    if not 1 <= student_layers < teacher_layers:
        raise DistillError(f"student_layers must be at least 1 and fewer than the teacher's {teacher_layers} "
                           f"layers, got {student_layers}")
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def student_from_teacher(teacher, student_layers: int):
    """A copy of ``teacher`` with ``student_layers`` transformer layers, taken by :func:`layer_map`;
    returns ``(student, mapping)``. Works for any model whose layers are ``*.encoder.layer.<i>.*``
    (BERT, RoBERTa and their relatives)."""
    import copy
    import re

    teacher_layers = int(teacher.config.num_hidden_layers)
    mapping = layer_map(teacher_layers, student_layers)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = student_layers
    student = type(teacher)(config)
    pattern = re.compile(r"^(.*\.encoder\.layer\.)(\d+)(\..*)$")
    source = teacher.state_dict()
    if not any(pattern.match(k) for k in source):
        raise DistillError(f"{type(teacher).__name__}: no encoder.layer.<i> weights to take a student's layers from")
    wanted: dict[str, torch.Tensor] = {}
    for key in student.state_dict():
        m = pattern.match(key)
        origin = f"{m.group(1)}{mapping[int(m.group(2))]}{m.group(3)}" if m else key
        if origin not in source:
            raise DistillError(f"the teacher has no weight {origin!r} for the student's {key!r}")
        wanted[key] = source[origin].detach().clone()
    student.load_state_dict(wanted, strict=True)
    return student, mapping


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str,
              temperature: float) -> torch.Tensor:
    """Per-example distance to the teacher: ``kl`` (softened, × T²) or ``mse`` on the logits."""
    s, t = student_logits.float(), teacher_logits.float()
    if kind == "mse":
        return ((s - t) ** 2).mean(dim=-1)
    log_p_student = F.log_softmax(s / temperature, dim=-1)
    p_teacher = F.softmax(t / temperature, dim=-1)
    return F.kl_div(log_p_student, p_teacher, reduction="none").sum(dim=-1) * temperature ** 2


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 hard_loss, cfg: DistillConfig) -> torch.Tensor:
    """``soft_weight`` × the teacher part + (1 − soft_weight) × the hard-label part; a label of −1
    (an unlabelled text) has only the teacher part."""
    soft = soft_loss(student_logits, teacher_logits, cfg.soft_loss, cfg.temperature).mean()
    labelled = labels >= 0
    if cfg.soft_weight >= 1.0 or not bool(labelled.any()):
        return soft
    hard = hard_loss.per_example(student_logits[labelled], labels[labelled]).mean()
    return cfg.soft_weight * soft + (1.0 - cfg.soft_weight) * hard


# --------------------------------------------------------------------------- inputs


def read_unlabelled(spec: str, exclude: set[str], limit: int = 0, seed: int = 42) -> tuple[list[str], dict[str, int]]:
    """Texts of the JSONL files (or folders of ``*.jsonl``) in ``spec``, comma-separated, normalised as
    the data stage does; empty, duplicate and ``exclude``d texts (the splits) left out and counted.
    A line that is not a JSON object with a string ``text`` fails naming the file and line."""
    from lawclf.text import normalise_text

    files: list[Path] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        path = Path(part).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise DistillError(f"unlabelled_paths: {path} holds no *.jsonl file")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DistillError(f"unlabelled_paths: {path} does not exist")
    texts: list[str] = []
    seen: set[str] = set()
    counts = {"files": len(files), "lines": 0, "in_splits": 0, "duplicates": 0, "empty": 0}
    for path in files:
        with path.open(encoding="utf-8-sig") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                counts["lines"] += 1
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DistillError(f"{path}:{lineno}: bad JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise DistillError(f"{path}:{lineno}: expected a JSON object with a string \"text\"")
                text = normalise_text(obj["text"])
                if not text.strip():
                    counts["empty"] += 1
                elif text in exclude:
                    counts["in_splits"] += 1
                elif text in seen:
                    counts["duplicates"] += 1
                else:
                    seen.add(text)
                    texts.append(text)
    if limit and len(texts) > limit:
        texts = random.Random(seed).sample(texts, limit)
    counts["used"] = len(texts)
    return texts, counts


def _teacher_rows(cfg: DistillConfig, teacher_cfg: TrainConfig) -> tuple[list[dict], dict[str, Any]]:
    """The labelled rows the student learns from: the teacher recipe's choice or the whole train split."""
    from lawclf.data import load_split
    from lawclf.train import _apply_recipe

    rows = load_split(cfg.run_dir, "train")
    if cfg.distill_rows == "all":
        return rows, {"recipe": "all train rows", "rows_out": len(rows)}
    kept, _, chosen, _ = _apply_recipe(rows, None, teacher_cfg)
    if teacher_cfg.max_train_samples and teacher_cfg.max_train_samples < len(kept):
        idx = sorted(random.Random(teacher_cfg.seed).sample(range(len(kept)), teacher_cfg.max_train_samples))
        kept = [kept[i] for i in idx]
    return kept, {k: v for k, v in chosen.report.items() if k != "suspected_noise_file"}


def copy_splits(teacher_run: str, student_run: str) -> None:
    """The teacher's splits (and their summary) into the student's run folder: the same validation
    split chooses its threshold, the same test split scores it."""
    src, dst = RunPaths(teacher_run).splits, RunPaths(student_run).splits
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


# --------------------------------------------------------------------------- the stage


class _RowNumbers(torch.utils.data.Dataset):
    """0 … n−1: the distillation loader batches row numbers (see :func:`distill`)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i



def check_teacher(run_dir: str) -> dict[str, Any]:
    """The teacher's metadata, or a DistillError saying which stage to run first."""
    model = RunPaths(run_dir).model
    if not (model / "config.json").exists():
        raise DistillError(f"{model} holds no trained model: train the teacher first (notebook 03 or `lawclf train`)")
    for split in ("train", "validation", "test"):
        if not RunPaths(run_dir).split_file(split).exists():
            raise DistillError(f"{RunPaths(run_dir).split_file(split)} is missing: the teacher's run needs its splits")
    return read_model_meta(model)


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Train a ``cfg.student_layers``-layer student on the teacher's scores, keep its best epoch in
    ``<student run>/model`` (metadata naming the teacher); then, with ``evaluate_and_export``, evaluate
    and export it. Returns a summary."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    from lawclf.batching import LengthGroupedBatchSampler
    from lawclf.data import load_split
    from lawclf.inference import EncodedDataset, PadCollator, encode, make_eval_loader, predict_logits
    from lawclf.losses import make_loss
    from lawclf.modeling import load_pretrained
    from lawclf.train import param_groups, resolve_learning_rate, resolve_mixed_precision, validate

    t_start = time.perf_counter()
    teacher_meta = check_teacher(cfg.run_dir)
    teacher_cfg = training_config_of(RunPaths(cfg.run_dir).model, run_dir=cfg.run_dir)
    max_len = int(teacher_meta.get("max_len") or 128)
    truncation = str(teacher_meta.get("truncation") or teacher_cfg.truncation)
    tokenizer, teacher = load_pretrained(str(RunPaths(cfg.run_dir).model))
    teacher_layers = int(teacher.config.num_hidden_layers)
    layers = cfg.layers_for(teacher_layers)
    student_run = cfg.student_dir(layers)
    if Path(student_run).resolve() == Path(cfg.run_dir).resolve():
        raise DistillError("student_run_dir must differ from run_dir (the teacher's run)")
    student, mapping = student_from_teacher(teacher, layers)  # fails early on a bad layer count

    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision))
    set_seed(cfg.seed)
    rows, recipe = _teacher_rows(cfg, teacher_cfg)
    val_rows = load_split(cfg.run_dir, "validation")
    held = {r["text"] for split in ("validation", "test") for r in load_split(cfg.run_dir, split)}
    unlabelled, unlabelled_counts = (read_unlabelled(cfg.unlabelled_paths, held | {r["text"] for r in rows},
                                                     cfg.max_unlabelled, cfg.seed)
                                     if cfg.unlabelled_paths else ([], {}))
    texts = [r["text"] for r in rows] + unlabelled
    labels = [int(r["label"]) for r in rows] + [-1] * len(unlabelled)

    t0 = time.perf_counter()
    soft_targets = predict_logits(teacher, tokenizer, texts, batch_size=cfg.distill_batch_size * 4, max_len=max_len,
                                  device=accelerator.device, truncation=truncation)
    teacher_seconds = time.perf_counter() - t0
    del teacher  # its scores are all the student needs: free the memory (a T4 holds both only just)
    _say(accelerator, f"teacher {teacher_meta.get('model_name')} ({teacher_layers} layers; the {layers}-layer "
                      f"student starts from its layers {[i + 1 for i in mapping]}): scored {len(texts)} texts "
                      f"({len(rows)} labelled, {len(unlabelled)} unlabelled) in {teacher_seconds:.0f}s")

    dataset = EncodedDataset(encode(tokenizer, texts, max_len, truncation), [max(0, y) for y in labels])
    sampler = LengthGroupedBatchSampler(dataset.lengths, cfg.distill_batch_size, seed=cfg.seed)
    pad = PadCollator(pad_token_id=tokenizer.pad_token_id or 0,
                      multiple_of=8 if accelerator.mixed_precision == "fp16" else None)

    def collate(indices: Sequence[int]) -> dict[str, torch.Tensor]:
        batch = pad([dataset[i] for i in indices])
        batch["labels"] = torch.tensor([labels[i] for i in indices], dtype=torch.long)  # -1: unlabelled
        batch["teacher_logits"] = torch.from_numpy(soft_targets[list(indices)])
        return batch

    # The loader's items are row numbers, so the collator can join each row's teacher logits to it.
    loader: torch.utils.data.DataLoader = torch.utils.data.DataLoader(
        _RowNumbers(len(dataset)), batch_sampler=sampler, collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.seed))
    val_loader, _ = make_eval_loader([r["text"] for r in val_rows], [r["label"] for r in val_rows], tokenizer,
                                     max_len, batch_size=cfg.distill_batch_size * 2, truncation=truncation)
    lr = cfg.distill_learning_rate or 2 * resolve_learning_rate(teacher_cfg)
    optimizer = torch.optim.AdamW(param_groups(student, teacher_cfg.weight_decay), lr=lr)
    total = max(1, len(sampler)) * cfg.distill_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(teacher_cfg.warmup_ratio * total), total)
    student, optimizer, loader, val_loader, scheduler = accelerator.prepare(
        student, optimizer, loader, val_loader, scheduler)
    hard_loss = make_loss(teacher_cfg)

    paths = RunPaths(student_run)
    if accelerator.is_main_process:
        shutil.rmtree(paths.model, ignore_errors=True)
        shutil.rmtree(paths.onnx, ignore_errors=True)
        copy_splits(cfg.run_dir, student_run)
    accelerator.wait_for_everyone()
    distilled_from = {
        "run_dir": str(cfg.run_dir), "model_name": teacher_meta.get("model_name"),
        "teacher_layers": teacher_layers, "student_layers": layers,
        "layers_taken": [i + 1 for i in mapping], "teacher_threshold": teacher_meta.get("threshold"),
        "teacher_test_metrics": teacher_meta.get("test_metrics"),
    }
    meta = {k: v for k, v in teacher_meta.items() if k not in _TEACHER_ONLY}
    meta.update(threshold=0.5, version=__version__, distilled_from=distilled_from, distill_config=to_dict(cfg),
                learning_rate=lr, distill_rows={"labelled": len(rows), "unlabelled": len(unlabelled),
                                                "recipe": recipe, "unlabelled_files": unlabelled_counts})
    history: list[dict[str, Any]] = []
    best: Optional[float] = None
    best_epoch, bad_epochs = 0, 0
    student.train()
    for epoch in range(cfg.distill_epochs):
        sampler.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):  # Accelerate's loader re-sets its sampler's epoch on iter()
            loader.set_epoch(epoch)
        t_epoch, loss_sum, seen = time.perf_counter(), 0.0, 0
        bar = tqdm(loader, desc=f"distil {epoch + 1}/{cfg.distill_epochs}", total=len(loader),
                   disable=not accelerator.is_local_main_process, mininterval=1.0, dynamic_ncols=True)
        for batch in bar:
            y, soft = batch.pop("labels"), batch.pop("teacher_logits")
            logits = student(**batch).logits
            loss = distill_loss(logits, soft, y, hard_loss, cfg)
            accelerator.backward(loss)
            if teacher_cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(student.parameters(), teacher_cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss_sum, seen = loss_sum + float(loss.detach()) * len(y), seen + len(y)
            bar.set_postfix(loss=f"{loss_sum / max(1, seen):.4f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - t_epoch
        val = validate(accelerator, student, val_loader, hard_loss)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "val_loss": val["loss"],
                  **{f"val_{k}": v for k, v in val.items() if k not in {"loss", "threshold", "n"}},
                  "samples_per_s": seen / max(seconds, 1e-9), "epoch_seconds": seconds}
        history.append(record)
        value = float(val["f1"])
        if best is None or (not math.isnan(value) and value > best + 1e-12):
            best, best_epoch, bad_epochs = value, epoch + 1, 0
            _save(accelerator, student, tokenizer, paths, {
                **meta, "best_epoch": epoch + 1, "best_validation": {k: val[k] for k in val if k != "threshold"}})
            flag = " *best*"
        else:
            bad_epochs += 1
            flag = f" (no improvement {bad_epochs}/{cfg.distill_patience})"
        _say(accelerator, f"epoch {epoch + 1}: distillation loss {record['train_loss']:.4f}, "
                          f"val F1 {value:.4f}, {record['samples_per_s']:.1f} samples/s{flag}")
        if cfg.distill_patience and bad_epochs >= cfg.distill_patience:
            _say(accelerator, f"early stopping: validation F1 has not improved for {cfg.distill_patience} epochs")
            break

    summary: dict[str, Any] = {
        "student_run_dir": student_run, "model_dir": str(paths.model), "teacher_run_dir": cfg.run_dir,
        "student_layers": layers, "layers_taken": [i + 1 for i in mapping], "best_epoch": best_epoch,
        "best_validation_f1": best, "labelled_rows": len(rows), "unlabelled_texts": len(unlabelled),
        "learning_rate": lr, "teacher_seconds": teacher_seconds, "history": history,
        "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
    }
    if accelerator.is_main_process:
        from lawclf.ngram import NGRAM_FILE
        from lawclf.plots import plot_history
        from lawclf.train import write_history

        ngram = RunPaths(cfg.run_dir).model / NGRAM_FILE
        if ngram.exists():  # the teacher's n-gram part is the student's: it never depended on the layers
            shutil.copy2(ngram, paths.model / NGRAM_FILE)
        write_history(paths, history)
        summary["seconds"] = time.perf_counter() - t_start
        write_model_meta(paths.model, training={k: v for k, v in summary.items() if k != "history"})
        try:
            plot_history(history, paths.reports / "training_history.png")
        except Exception as exc:  # a plot must never lose a trained model
            logger.warning("could not plot the distillation history: %s", exc)
    accelerator.wait_for_everyone()
    if cfg.evaluate_and_export and accelerator.is_main_process:
        summary.update(finish_student(student_run, teacher_meta))
    summary["seconds"] = time.perf_counter() - t_start
    return summary


def student_eval_config(student_run: str, teacher_meta: dict[str, Any], **overrides: Any) -> EvalConfig:
    """The :class:`EvalConfig` that evaluated the teacher (its metadata's ``eval_config``; for a model
    evaluated before that was recorded, the strategy and cap of its ``threshold_choice``), for the student."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(EvalConfig)}
    values: dict[str, Any] = {k: v for k, v in (teacher_meta.get("eval_config") or {}).items() if k in names}
    if not values:
        choice = teacher_meta.get("threshold_choice") or {}
        values = {k: choice[k] for k in ("max_source_fpr", "target_precision") if k in choice}
        if choice.get("strategy"):
            values["threshold_strategy"] = choice["strategy"]
    return EvalConfig(**{**values, "run_dir": student_run, **overrides})


def finish_student(student_run: str, teacher_meta: dict[str, Any]) -> dict[str, Any]:
    """``lawclf evaluate`` (the teacher's strategy) and ``lawclf export`` on the student's run."""
    from lawclf.evaluate import evaluate
    from lawclf.export import export

    metrics = evaluate(student_eval_config(student_run, teacher_meta))
    report = export(ExportConfig(run_dir=student_run))
    return {"test": metrics["test"], "threshold": metrics["threshold"], "onnx_dir": report["onnx_dir"],
            "size_mb": report["size_mb"]}


def _save(accelerator, model, tokenizer, paths: RunPaths, meta: dict) -> None:
    if accelerator.is_main_process:
        paths.model.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(str(paths.model))
        tokenizer.save_pretrained(str(paths.model))
        write_model_meta(paths.model, **meta)
    accelerator.wait_for_everyone()


def _say(accelerator, message: str) -> None:
    logger.info(message)
    if accelerator.is_main_process:
        print(f"[distill] {message}", flush=True)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf distill``: the same parameters as notebook 08."""
    parser = argparse.ArgumentParser(prog="lawclf distill",
                                     description="Distil a trained run's model into a small student (notebook 08).")
    add_config_args(parser, DistillConfig)
    cfg = config_from_args(DistillConfig, parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = distill(cfg)
    except (DistillError, FileNotFoundError) as exc:
        print(f"lawclf distill: {exc}", file=__import__("sys").stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, ensure_ascii=False, indent=2, default=str))
    return 0


__all__ = ["DistillError", "layer_map", "student_from_teacher", "soft_loss", "distill_loss", "read_unlabelled",
           "copy_splits", "check_teacher", "distill", "student_eval_config", "finish_student", "cli"]
