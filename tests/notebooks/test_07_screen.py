"""Notebook 07 runs the screening loop offline: passes, digest, webhook, review by API, export, retraining."""

from __future__ import annotations

import json

import pytest

from conftest import copy_run
from lawclf.config import RunPaths, read_results
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_notebook_07_runs_the_whole_loop(exported_run_dir, tmp_path):
    run = copy_run(exported_run_dir, tmp_path / "run")
    executed = run_notebook("07_screen", run, {"EPOCHS": 2})
    r = read_results(run, "07_screen")
    assert r["screen"] is False
    assert r["review_page"].startswith("http://127.0.0.1:")  # the page was served (and stopped at the end)
    assert r["first_pass"]["status"] == "ok" and r["first_pass"]["new_posts"] == r["first_pass"]["scored"] == 30
    assert r["webhook_messages"] >= 2  # wecom + json for the first digest
    assert r["reviewed"] >= r["first_pass"]["flagged"] > 0
    assert r["exported"]["posts"] == r["reviewed"] and r["exported"]["merged"] > 0
    # three passes: the first, one killed before its digest, the next finishing its work
    assert [p["status"] for p in r["passes"]] == ["ok", "failed", "ok"]
    assert r["passes"][1]["new_posts"] == 30 and r["passes"][0]["new_posts"] == r["passes"][0]["scored"] == 0
    assert r["posts"] == 60
    old, new = r["passes"][2]["model_version"], r["passes"][0]["model_version"]
    assert old != new and r["scores"] == {old: 30, new: 60}  # the history is kept, the new model scored all
    assert set(r["batch2_errors"]) == {"旧模型", "新模型"}
    assert (run / "screen" / "digests" / "latest.html").exists()
    assert (RunPaths(run / "screen" / "retrain").onnx / "model.int8.onnx").exists()
    text = executed.read_text(encoding="utf-8")
    # the interpretation printed is the one this run's numbers call for
    nb = json.loads(text)
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert f"旧模型 {r['batch2_errors']['旧模型']}，新模型 {r['batch2_errors']['新模型']}" in printed
