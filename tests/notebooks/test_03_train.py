"""Notebook 03 runs under papermill in tiny mode and leaves a model, its history and the plots."""

from __future__ import annotations

import json

import pytest

from conftest import copy_run
from lawclf.config import RunPaths, read_model_meta, read_results
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_notebook_03_trains_the_tiny_model(prepared_run_dir, tmp_path):
    run = copy_run(prepared_run_dir, tmp_path / "run")
    run_notebook("03_train", run, {"MODEL_NAME": "tiny", "EPOCHS": 3, "CHECKPOINT_EVERY": 20})
    paths = RunPaths(run)

    for name in ("config.json", "model.safetensors", "tokenizer.json", "lawclf_meta.json", "training_history.json",
                 "ngram.npz"):
        assert (paths.model / name).is_file(), name
    for name in ("training_history.png", "token_lengths.png"):
        assert (paths.reports / name).stat().st_size > 1000, name
    # a finished run removes its checkpoints (KEEP_CHECKPOINTS = False); the hand-step model was freed first
    assert not paths.checkpoints.exists()

    results = read_results(run, "03_train")
    history = json.loads((paths.model / "training_history.json").read_text(encoding="utf-8"))
    assert len(history) == results["epochs_run"] >= 1
    assert {"train_loss", "val_loss", "val_f1", "samples_per_s", "lr"} <= set(history[0])
    assert results["val_f1"] >= 0.8 and results["val_pr_auc"] >= 0.9
    assert results["checkpoints_kept"] is False and results["hand_model_freed"] is True
    losses = results["hand_step_losses"]  # five optimisation steps by hand on one batch
    assert len(losses) == 6 and losses[-1] < losses[0]
    # MAX_LEN=0: chosen from the data, stated in the metadata, a multiple of 16
    meta = read_model_meta(paths.model)
    assert meta["max_len"] == results["max_len"] and meta["max_len"] % 16 == 0
    assert "auto" in meta["max_len_choice"] and meta["threshold"] == 0.5
    # the defaults: head+tail truncation, and the n-gram part fitted beside the model
    assert meta["truncation"] == results["truncation"] == "head_tail"
    assert meta["ngram"]["features"] == results["ngram_features"] > 100
    # length grouping leaves far less padding than padding everything to MAX_LEN
    assert results["padding_fraction_grouped"] < results["padding_fraction_fixed"] / 2
