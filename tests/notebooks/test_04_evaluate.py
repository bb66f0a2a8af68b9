"""Notebook 04 runs under papermill on a trained run: metrics.json, plots, threshold stored with the model."""

from __future__ import annotations

import pytest

from conftest import copy_run
from lawclf.config import RunPaths, read_model_meta, read_results
from lawclf.evaluate import read_metrics
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_notebook_04_evaluates_on_test_and_stores_the_threshold(trained_run_dir, tmp_path):
    run = copy_run(trained_run_dir, tmp_path / "run")
    run_notebook("04_evaluate", run, {"THRESHOLD_STRATEGY": "max_f1", "N_ERRORS": 5})
    paths = RunPaths(run)

    metrics = read_metrics(run)
    results = read_results(run, "04_evaluate")
    assert metrics["split"] == "test" and metrics["threshold_choice"]["chosen_on"] == "validation"
    assert results["f1"] == pytest.approx(metrics["f1"]) and results["f1"] >= 0.8 and results["pr_auc"] >= 0.9
    assert 0.0 <= results["ece"] <= 1.0
    for name in ("confusion_matrix", "pr_curve", "reliability", "score_histogram"):
        assert (paths.reports / f"{name}.png").stat().st_size > 1000, name
    assert read_model_meta(paths.model)["threshold"] == pytest.approx(metrics["threshold"])
    assert len(metrics["errors"]["false_positives"]) <= 5
    # the embedded sample is noisy enough to teach with: real mistakes, shown and checked against the answer key
    assert results["f1"] < 1.0 and results["false_positives"] + results["false_negatives"] > 0
    assert results["errors_listed"] == len(metrics["errors"]["false_positives"]) + len(metrics["errors"]["false_negatives"])
    assert 0 <= results["errors_misfiled"] <= results["errors_listed"]
    # the threshold sweep and the ECE done by hand in the notebook agree with the library
    assert results["threshold_by_hand"] == pytest.approx(metrics["threshold"])
    assert results["ece_by_hand"] == pytest.approx(results["ece"], abs=1e-5)  # scores.json keeps 6 decimals
    if metrics["probes"]:
        assert results["probe_accuracy"] == pytest.approx(metrics["probes"]["accuracy"])
        assert all({"text", "score", "correct"} <= set(item) for item in metrics["probes"]["items"])
    # the combined model: the ablation on the same split, and the length buckets
    assert results["combine"] == metrics["combine"]["method"] == read_model_meta(paths.model)["combine"]["method"]
    assert set(results["ablation_f1"]) == {"model", "ngram", "combined"}
    assert results["ablation_f1"]["combined"] == pytest.approx(metrics["f1"])
    order = ["<15", "15-29", "30-59", "60-119", ">=120"]  # shortest first; buckets with no test rows are left out
    assert results["length_buckets"] == [b for b in order if b in results["length_buckets"]] and len(results["length_buckets"]) >= 3
