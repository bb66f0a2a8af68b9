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
