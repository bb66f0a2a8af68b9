"""Metrics, threshold choice, calibration, per-source tables and probes on hand-made scores."""

import json
import math

import pytest

from lawclf.evaluate import worst_errors
from lawclf.metrics import (
    binary_metrics,
    calibration,
    choose_threshold,
    per_source_metrics,
)
from lawclf.probes import load_probes, probe_report


def test_binary_metrics_by_hand():
    m = binary_metrics([1, 1, 0, 0, 1, 0], [0.9, 0.4, 0.6, 0.1, 0.8, 0.3], 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(4 / 6)
    assert m["fpr"] == pytest.approx(1 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert 0 < m["pr_auc"] <= 1 and m["n"] == 6


def test_binary_metrics_edge_cases():
    m = binary_metrics([0, 0], [0.1, 0.2], 0.5)
    assert m["f1"] == 0.0 and m["precision"] == 0.0 and math.isnan(m["roc_auc"])
    assert binary_metrics([1, 0], [0.5, 0.49], 0.5)["accuracy"] == 1.0  # score == threshold counts as legal
    with pytest.raises(ValueError, match="shape"):
        binary_metrics([1, 0], [0.5], 0.5)


LABELS = [0, 0, 1, 0, 1, 1]
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def test_threshold_max_f1():
    t = choose_threshold(LABELS, SCORES, "max_f1")
    assert t["threshold"] == pytest.approx(0.3)
    assert t["f1"] == pytest.approx(6 / 7) and t["precision"] == pytest.approx(0.75) and t["recall"] == 1.0


@pytest.mark.parametrize("target,expected", [(1.0, 0.5), (0.7, 0.3), (0.5, 0.1)])
def test_threshold_target_precision_is_the_lowest_reaching_it(target, expected):
    t = choose_threshold(LABELS, SCORES, "target_precision", target)
    assert t["threshold"] == pytest.approx(expected) and t["reached"] is True
    assert t["precision"] >= target


def test_threshold_target_precision_unreachable_falls_back_to_max_f1():
    t = choose_threshold([1, 0, 1], [0.2, 0.9, 0.1], "target_precision", 0.99)
    assert t["reached"] is False
    assert t["threshold"] == choose_threshold([1, 0, 1], [0.2, 0.9, 0.1], "max_f1")["threshold"]


def test_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="threshold_strategy"):
        choose_threshold(LABELS, SCORES, "youden")


def test_ece_by_hand():
    cal = calibration([0, 1, 1, 1, 0], [0.05, 0.15, 0.95, 0.85, 0.9], n_bins=10)
    # bins: {0.05}->|0-.05|, {0.15}->|1-.15|, {0.85}->|1-.85|, {0.95,0.9}->|.5-.925| x2
    assert cal["ece"] == pytest.approx((0.05 + 0.85 + 0.15 + 2 * 0.425) / 5)
    assert [b["n"] for b in cal["bins"]] == [1, 1, 1, 2]


def test_ece_is_zero_when_calibrated_and_score_one_goes_to_last_bin():
    assert calibration([0, 1, 1, 0], [0.5, 0.5, 1.0, 0.0], n_bins=2)["ece"] == pytest.approx(0.0)
    cal = calibration([1], [1.0], n_bins=10)
    assert cal["bins"][0]["upper"] == 1.0


def test_per_source_reports_fpr_for_negative_sources_and_recall_for_positive_ones():
    rows = [{"label": 0, "source": "forum"}, {"label": 0, "source": "forum"},
            {"label": 1, "source": "qa"}, {"label": 1, "source": "qa"}]
    out = per_source_metrics(rows, [0.9, 0.1, 0.8, 0.2], 0.5)
    assert out["forum"]["fpr"] == 0.5 and out["forum"]["recall"] is None and "f1" not in out["forum"]
    assert out["qa"]["recall"] == 0.5 and out["qa"]["fpr"] is None
    assert per_source_metrics([{"label": 0, "source": "a"}], [0.2], 0.5) == {}


def test_worst_errors_are_sorted_by_confidence():
    rows = [{"id": i, "text": f"t{i}", "label": y} for i, y in enumerate([0, 0, 0, 1, 1, 1])]
    errs = worst_errors(rows, [0.6, 0.95, 0.1, 0.4, 0.05, 0.9], 0.5, n=5)
    assert [e["id"] for e in errs["false_positives"]] == [1, 0]
    assert [e["id"] for e in errs["false_negatives"]] == [4, 3]
    assert worst_errors(rows, [0.6, 0.95, 0.1, 0.4, 0.05, 0.9], 0.5, n=1)["false_positives"][0]["score"] == 0.95


def test_probes_load_and_report(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "借钱", "label": 0, "kind": "k"}\n\n{"text": "被骗了怎么起诉", "label": 1, "kind": "l"}\n',
                    encoding="utf-8")
    probes = load_probes(path)
    assert [p["label"] for p in probes] == [0, 1]
    rep = probe_report(probes, [0.7, 0.9], 0.5)
    assert rep["accuracy"] == 0.5 and rep["items"][0]["correct"] is False
    assert rep["per_kind"] == {"k": {"n": 1, "accuracy": 0.0}, "l": {"n": 1, "accuracy": 1.0}}


def test_bad_probe_line_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.jsonl:2"):
        load_probes(path)
    with pytest.raises(FileNotFoundError):
        load_probes(tmp_path / "missing.jsonl")


def test_packaged_probes_are_valid_when_present():
    probes = load_probes()
    for p in probes:
        assert p["label"] in (0, 1) and p["text"].strip()
    assert json.dumps(probes, ensure_ascii=False)
