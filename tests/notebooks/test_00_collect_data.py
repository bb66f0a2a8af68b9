"""Notebook 00 (optional data collection) runs offline by default: fake V2EX server → SQLite → JSONL."""

from __future__ import annotations

import json

import pytest

from lawclf.config import read_results
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_notebook_00_collects_offline_and_exports_the_two_file_layout(tmp_path):
    run = tmp_path / "run"
    run_notebook("00_collect_data", run, {"MAX_PAGES": 2})
    results = read_results(run, "00_collect_data")
    assert results["collect"] is False and results["failures"] == 0
    # python, career: pages 1-2; apple (7 topics): page 1 + an empty page 2; + latest + hot.
    assert results["pages"] == 8 and results["second_run_pages"] == 2  # only the feeds are refetched
    assert results["new_topics"] == 20 + 20 + 7 + 2  # + the two feed-only topics
    assert results["qa_imported"] == 22
    out = run / "collect" / "data"
    assert results["out_dir"] == str(out)
    for name, label in (("legal.jsonl", 1), ("nonlegal.jsonl", 0)):
        rows = [json.loads(line) for line in (out / name).read_text(encoding="utf-8").splitlines()]
        assert len(rows) == results["exported"][name.split(".")[0]] > 0
        assert all(set(r) == {"text", "label", "source"} and r["label"] == label for r in rows)
    assert (run / "collect" / "collect.db").is_file()
