"""The training recipe and the fpr_cap threshold travel the product path: train → evaluate → export → Predictor."""

from __future__ import annotations

import json

import pytest

from conftest import copy_run
from lawclf.cli import main
from lawclf.config import RunPaths, read_model_meta

pytestmark = pytest.mark.slow


def train_with_recipe(prepared_run_dir, tmp_path, recipe: str):
    """``lawclf train --recipe RECIPE`` (tiny, one epoch, 150 negatives) on a copy of the prepared run."""
    run = copy_run(prepared_run_dir, tmp_path / "run")
    assert main(["train", "--run-dir", str(run), "--model-name", "tiny", "--epochs", "1", "--max-len", "48",
                 "--checkpoint-every", "0", "--recipe", recipe, "--recipe-negatives", "150",
                 "--noise-threshold", "0.6", "--oof-folds", "2"]) == 0
    return run, read_model_meta(RunPaths(run).model)["recipe"]


def test_lawclf_train_recipe_is_recorded_and_its_dropped_rows_written(prepared_run_dir, tmp_path):
    run, recipe = train_with_recipe(prepared_run_dir, tmp_path, "robust")
    assert recipe["recipe"] == "robust" and recipe["negatives"] == 150
    assert recipe["settings"] == {"negatives": 150, "positives": 0, "negatives_per_source": 0, "seed": 42,
                                  "hard_fraction": 0.3, "oof_folds": 2, "noise_threshold": 0.6}
    assert recipe["hard_negatives"] == 45 and sum(recipe["negatives_per_group"].values()) == 150
    noise = [json.loads(line) for line in (RunPaths(run).reports / "suspected_noise.jsonl").open(encoding="utf-8")]
    assert len(noise) == recipe["suspected_noise_dropped"]
    assert all(r["label"] == 0 and r["oof_score"] >= 0.6 for r in noise)
    assert recipe["suspected_noise_file"].endswith("suspected_noise.jsonl")
    history = json.loads((RunPaths(run).model / "training_history.json").read_text(encoding="utf-8"))
    assert len(history) == 1


def test_lawclf_train_diverse_takes_hard_negatives_from_every_genre(prepared_run_dir, tmp_path):
    run, recipe = train_with_recipe(prepared_run_dir, tmp_path, "diverse")
    assert recipe["recipe"] == "diverse" and recipe["hard_negatives"] == 45
    per_group = recipe["hard_negatives_per_group"]
    assert set(per_group) == set(recipe["negatives_per_group"])  # every non-legal genre gives hard negatives
    assert max(per_group.values()) - min(per_group.values()) <= 1  # in equal shares
    assert (RunPaths(run).reports / "suspected_noise.jsonl").exists()  # diverse cleans, as robust does


def test_fpr_cap_threshold_is_stored_exported_and_served(trained_run_dir, tmp_path):
    from lawclf.predict import Predictor

    run = copy_run(trained_run_dir, tmp_path / "run")
    assert main(["evaluate", "--run-dir", str(run), "--threshold-strategy", "fpr_cap", "--max-source-fpr", "0.0",
                 "--min-source-rows", "5"]) == 0
    metrics = json.loads((RunPaths(run).reports / "metrics.json").read_text(encoding="utf-8"))
    choice = metrics["threshold_choice"]
    assert choice["strategy"] == "fpr_cap" and choice["max_source_fpr"] == 0.0
    assert metrics["threshold"] >= choice["max_f1_threshold"]
    assert read_model_meta(RunPaths(run).model)["threshold_choice"]["strategy"] == "fpr_cap"
    assert main(["export", "--run-dir", str(run), "--no-quantize", "--parity-max-texts", "50"]) == 0
    predictor = Predictor(RunPaths(run).onnx)
    assert predictor.threshold == metrics["threshold"]
    assert predictor.meta["threshold_choice"]["strategy"] == "fpr_cap"
    from lawclf.data import load_split
    from lawclf.metrics import groups_of

    assert set(metrics["per_source"]) == set(groups_of(load_split(str(run), "test")))  # reported per source group
    fprs = {g: v["fpr"] for g, v in metrics["per_source"].items() if v["fpr"] is not None}
    assert metrics["max_source_fpr"] == max(fprs.values())
