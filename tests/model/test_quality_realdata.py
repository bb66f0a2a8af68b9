"""benchmarks/quality.py end to end on a small subset of the real corpus (skips without it)."""

import importlib.util
import json

import pytest

from lawclf.config import REPO_ROOT

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality", REPO_ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subset(src, dst, every: int) -> None:
    """Every ``every``-th line of each corpus file (all sources represented), in a temp folder."""
    dst.mkdir()
    for name in ("legal.jsonl", "nonlegal.jsonl"):
        with open(src / name, encoding="utf-8") as fin, open(dst / name, "w", encoding="utf-8") as fout:
            fout.writelines(line for i, line in enumerate(fin) if i % every == 0)


def test_quality_benchmark_runs_on_a_small_subset(shared_data_dir, tmp_path):
    quality = _quality_module()
    corpus, out = tmp_path / "corpus", tmp_path / "quality"
    _subset(shared_data_dir, corpus, every=20)  # ~375 legal + ~3,400 non-legal rows
    rc = quality.main(["--data-dir", str(corpus), "--out", str(out),
                       "--models", "tiny", "--recipes", "robust", "--tiny-negatives", "600", "--tiny-epochs", "1",
                       "--oof-folds", "2", "--holdout", "smile", "--max-val", "600"])
    assert rc == 0
    report = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    by_name = {r["name"]: r for r in report["results"]}
    assert {"keyword-filter", "tfidf-char-lr", "tiny:robust"} <= set(by_name)
    tfidf = by_name["tfidf-char-lr"]["test"]["fpr_cap"]
    assert tfidf["f1"] >= 0.8 and tfidf["pr_auc"] >= 0.9  # a sane floor for a strong baseline
    assert 0.0 <= by_name["tiny:robust"]["test"]["max_f1"]["f1"] <= 1.0
    assert by_name["tiny:robust"]["suspected_noise_dropped"] >= 0
    held = {r["name"]: r for r in report["holdout"]}
    assert {"tfidf-char-lr -smile", "tiny:robust -smile"} <= set(held)
    assert held["tfidf-char-lr -smile"]["holdout"]["fpr_cap"]["n"] > 0
    assert "best_model" in report["goals"]
    # The report holds numbers only: no corpus text may leak into it.
    text = (out / "quality.json").read_text(encoding="utf-8")
    with open(corpus / "legal.jsonl", encoding="utf-8") as fh:
        samples = [json.loads(next(fh))["text"] for _ in range(20)]
    assert not any(s in text for s in samples)

