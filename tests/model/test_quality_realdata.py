"""benchmarks/quality.py end to end on a small subset of the real corpus (skips without it)."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lawclf_dev import CHECKOUT as REPO_ROOT

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


def test_quality_rows_are_the_product_cli_and_reproduce_through_it(shared_data_dir, tmp_path):
    quality = _quality_module()
    corpus, out = tmp_path / "corpus", tmp_path / "quality"
    _subset(shared_data_dir, corpus, every=20)  # ~375 legal + ~3,400 non-legal rows
    rc = quality.main(["--data-dir", str(corpus), "--out", str(out), "--configs", "tiny:robust",
                       "--tiny-negatives", "600", "--tiny-epochs", "1", "--oof-folds", "2", "--holdout", "smile"])
    assert rc == 0
    report = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    by_name = {r.get("name") or f"{r['model']}:{r['recipe']}": r for r in report["results"]}
    assert {"keyword-filter", "tfidf-char-lr", "tiny:robust"} <= set(by_name)
    tfidf = by_name["tfidf-char-lr"]["thresholds"]["fpr_cap"]
    assert tfidf["f1"] >= 0.8 and tfidf["pr_auc"] >= 0.9  # a sane floor for a strong baseline
    row = by_name["tiny:robust"]
    assert set(row["engines"]) == {"torch", "onnx-fp32", "onnx-int8"}
    assert row["recipe_report"]["recipe"] == "robust" and row["recipe_report"]["hard_negatives"] > 0
    run = Path(row["run_dir"])  # a complete run folder, as `lawclf` leaves it
    for part in ("splits/test.jsonl", "model/config.json", "onnx/model.int8.onnx", "reports/metrics.json",
                 "reports/suspected_noise.jsonl"):
        assert (run / part).exists(), part
    assert json.loads((run / "onnx" / "lawclf_meta.json").read_text())["threshold"] == row["threshold"]
    assert row["threshold_choice"]["strategy"] == "fpr_cap"
    held = [r for r in report["holdout"] if r["holdout"] == "smile"]
    assert {"tfidf-char-lr -smile", "tiny:robust"} <= {r.get("name") or f"{r['model']}:{r['recipe']}" for r in held}
    assert "best_model" in report["goals"]

    # The printed commands, run through the CLI into another folder, give the same int8 row.
    again = tmp_path / "again"
    for command in row["commands"]:
        argv = shlex.split(command.replace(str(run), str(again)))
        assert argv[0] == "lawclf"
        done = subprocess.run([sys.executable, "-m", "lawclf", *argv[1:]], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
    engines = quality.score_engines(again, json.loads((again / "reports" / "metrics.json").read_text()),
                                    json.loads((again / "onnx" / "lawclf_meta.json").read_text())["threshold"], 0)
    assert abs(engines["onnx-int8"]["f1"] - row["engines"]["onnx-int8"]["f1"]) <= 0.005

    # The report holds numbers only: no corpus text may leak into it.
    text = (out / "quality.json").read_text(encoding="utf-8")
    with open(corpus / "legal.jsonl", encoding="utf-8") as fh:
        samples = [json.loads(next(fh))["text"] for _ in range(20)]
    assert not any(s in text for s in samples)
