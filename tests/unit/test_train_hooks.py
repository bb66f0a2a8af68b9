"""The hooks other experiments use (custom rows, weights, samplers) and the CLIs over train/evaluate."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train_resume import cfg_for, write_splits

from lawclf.batching import LengthGroupedBatchSampler
from lawclf.config import RunPaths, read_model_meta
from lawclf.data import load_split
from lawclf.modeling import TinySpec, build_or_load
from lawclf.train import train


def test_zero_sample_weights_mean_no_learning(tmp_path):
    write_splits(tmp_path)
    cfg = cfg_for(tmp_path, epochs=1, weight_decay=0.0, checkpoint_every=0)
    rows = load_split(tmp_path, "train")
    train(cfg, sample_weights=[0.0] * len(rows))
    _, initial = build_or_load("tiny", [r["text"] for r in rows],
                               TinySpec(layers=1, hidden=32, heads=2, vocab_size=100), seed=cfg.seed)
    saved = load_file(str(RunPaths(tmp_path).model / "model.safetensors"))
    for name, value in initial.state_dict().items():
        if name in saved:
            assert torch.equal(saved[name], value), name


def test_custom_rows_and_batch_sampler_are_used(tmp_path):
    write_splits(tmp_path)
    rows = load_split(tmp_path, "train")[:40]
    seen = []

    class Recording(LengthGroupedBatchSampler):
        def set_epoch(self, epoch):
            seen.append(epoch)
            super().set_epoch(epoch)

    def factory(rows_, lengths, cfg):
        assert len(rows_) == len(lengths) == 40
        return Recording(lengths, batch_size=4, seed=cfg.seed)

    out = train(cfg_for(tmp_path, epochs=2, checkpoint_every=0), train_rows=rows, batch_sampler_factory=factory)
    assert out["train_size"] == 40
    assert out["history"][-1]["optimizer_steps"] == 20  # 40 rows / 4 per batch x 2 epochs
    assert set(seen) == {0, 1}
    with pytest.raises(ValueError, match="sample_weights"):
        train(cfg_for(tmp_path), train_rows=rows, sample_weights=[1.0])


def test_cli_train_then_evaluate(tmp_path, capsys):
    from lawclf.cli import main

    write_splits(tmp_path)
    assert main(["train", "--run-dir", str(tmp_path), "--model-name", "tiny", "--epochs", "2", "--batch-size", "8",
                 "--max-len", "0", "--tiny-layers", "1", "--tiny-hidden", "32", "--tiny-vocab-size", "100",
                 "--checkpoint-every", "0", "--no-resume"]) == 0
    meta = read_model_meta(RunPaths(tmp_path).model)
    assert meta["max_len"] % 16 == 0 and "auto" in meta["max_len_choice"]
    assert main(["evaluate", "--run-dir", str(tmp_path), "--threshold-strategy", "target_precision",
                 "--target-precision", "0.9"]) == 0
    metrics = json.loads((RunPaths(tmp_path).reports / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["threshold_choice"]["strategy"] == "target_precision"
    assert read_model_meta(RunPaths(tmp_path).model)["threshold"] == metrics["threshold"]
    assert '"f1"' in capsys.readouterr().out


def test_evaluate_without_a_model_says_what_to_run(tmp_path):
    from lawclf.config import EvalConfig
    from lawclf.evaluate import evaluate

    write_splits(tmp_path)
    with pytest.raises(FileNotFoundError, match="lawclf train"):
        evaluate(EvalConfig(run_dir=str(tmp_path)))


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    write_splits(tmp_path)
    # A learning rate this small changes nothing measurable: validation F1 never improves after epoch 1.
    out = train(cfg_for(tmp_path, epochs=5, patience=2, learning_rate=1e-12, checkpoint_every=0))
    assert out["stopped_early"] and out["epochs_run"] == 3 and out["best_epoch"] == 1
    assert read_model_meta(RunPaths(tmp_path).model)["best_epoch"] == 1


def test_gradient_accumulation_steps_the_optimizer_every_k_batches(tmp_path):
    write_splits(tmp_path)  # 80 texts / batch 8 = 10 batches per epoch
    out = train(cfg_for(tmp_path, epochs=2, grad_accum_steps=3, checkpoint_every=0))
    # 10 batches in groups of 3: steps after batches 3, 6, 9 and at the epoch's end (10)
    assert [h["optimizer_steps"] for h in out["history"]] == [4, 8]
