"""benchmarks/quality.py pieces that need no corpus and no training."""

import importlib.util
from pathlib import Path

import pytest

from lawclf.config import REPO_ROOT


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality", REPO_ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_skips_with_a_clear_message_without_corpus(quality, tmp_path, capsys):
    assert quality.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 0
    assert "skipped: corpus not found" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_locate_m3e_returns_a_model_dir_or_none(quality):
    path = quality.locate_m3e()
    if path is not None:  # installed only where benchmarks run (research-only weights, never shipped)
        assert (Path(path) / "config.json").exists()


def test_spread_sample_keeps_class_ratio_and_every_source(quality):
    rows = [{"text": f"l{i}", "label": 1, "source": "a"} for i in range(100)]
    rows += [{"text": f"n{i}", "label": 0, "source": "b" if i % 10 else "c"} for i in range(300)]
    sample = quality.spread_sample(rows, 100, seed=1)
    assert len(sample) == 100
    assert sum(r["label"] for r in sample) == 25
    assert {r["source"] for r in sample} == {"a", "b", "c"}
    assert quality.spread_sample(rows, 0, seed=1) is rows


def test_evaluate_scores_reports_both_thresholds_and_worst_source(quality):
    val = [{"text": "v", "label": y, "source": s} for y, s in [(1, "l")] * 10 + [(0, "x")] * 30 + [(0, "y")] * 30]
    val_scores = [0.9] * 10 + [0.1] * 29 + [0.95] + [0.2] * 30
    res = quality.evaluate_scores(val, val_scores, val, val_scores, max_fpr=0.03)
    assert set(res) == {"max_f1", "fpr_cap"}
    assert res["fpr_cap"]["threshold"] >= res["max_f1"]["threshold"]
    assert res["max_f1"]["worst_source"] in {"x", "y"}
    fixed = quality.evaluate_scores(val, val_scores, val, val_scores, 0.03, fixed_threshold=0.5)
    assert set(fixed) == {"rule"} and fixed["rule"]["per_source"]["x"]["false_positives"] == 1


def test_goals_judge_the_best_model_against_the_baselines_best_threshold(quality):
    def metrics(f1, pr_auc, worst=0.01):
        return {"f1": f1, "pr_auc": pr_auc, "max_source_fpr": worst}

    tfidf = {"name": "tfidf-char-lr", "kind": "baseline",
             "test": {"max_f1": metrics(0.93, 0.981), "fpr_cap": metrics(0.91, 0.981)}}
    weak = {"name": "tiny:plain", "kind": "model", "model": "tiny",
            "test": {"max_f1": metrics(0.95, 0.97), "fpr_cap": metrics(0.90, 0.97)}}
    strong = {"name": "m3e:robust", "kind": "model", "model": "m3e",
              "test": {"max_f1": metrics(0.94, 0.987), "fpr_cap": metrics(0.92, 0.987, worst=0.04)}}
    held = [{"model": "m3e", "holdout": {"fpr_cap": {"fpr": 0.2}}}]
    goals = quality._goals([tfidf, weak, strong], held, max_fpr=0.03)
    assert goals["best_model"] == "m3e:robust"  # by F1 at the fpr_cap threshold
    assert goals["f1>=0.95"] == (0.92, False)
    assert goals["pr_auc>=0.98"] == (0.987, True)
    assert goals["every source fpr<=0.03"] == (0.04, False)
    assert goals["held-out fpr<=0.03"] == (0.2, False)
    # 0.92 beats the baseline's fpr_cap F1 (0.91) but not its best threshold (0.93): not ahead.
    assert goals["beats tfidf f1"] == (0.93, False)
    assert goals["beats tfidf pr_auc"] == (0.981, True)
    assert quality._goals([tfidf], [], 0.03) == {"note": "no model trained"}
