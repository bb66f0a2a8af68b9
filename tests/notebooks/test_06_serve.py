"""Notebook 06 starts a real server on the exported model, calls it, reads its logs, measures it and stops it."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import copy_run
from lawclf.config import RunPaths, read_results
from lawclf_dev.nbrun import run_notebook

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.mark.parametrize("server", ["gunicorn", "dev"])
def test_notebook_06_serves_calls_and_stops(exported_run_dir, tmp_path, server):
    run = copy_run(exported_run_dir, tmp_path / "run")
    executed = run_notebook("06_serve", run, {"SERVER": server, "N_LATENCY": 5, "CONCURRENCY": 4, "N_CONCURRENT": 16})

    results = read_results(run, "06_serve")
    assert results["server"] == server
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", results["demo_page"])  # outside Colab: the loopback page
    assert results["predict_status"] == 200 and 0.0 <= results["predict_score"] <= 1.0
    assert results["batch_count"] == 10
    assert results["error_statuses"] == {"不是 JSON": 415, "JSON 写错了": 400, "字段名写错": 400, "文本是空的": 400,
                                         "文本太长": 400, "类型不对": 400, "不存在的地址": 404}
    assert results["sequential"]["requests"] == 5 and results["sequential"]["errors"] == 0
    assert results["concurrent"]["requests"] == 16 and results["concurrent"]["errors"] == 0
    assert results["concurrent"]["p50_ms"] > 0 and results["concurrent"]["throughput_rps"] > 0
    assert results["max_batch_size"] >= 1
    assert results["exit_code"] == 0
    assert results["log_lines"] >= 9  # one per request so far: predict, batch, 7 bad requests, curl

    log = (RunPaths(run).reports / "06_serve_server.log").read_text(encoding="utf-8")
    assert '"event": "request"' in log and "公司拖欠工资" not in log  # texts are not logged by default
    if shutil.which("curl"):
        assert '"request_id": "curl-demo-1"' in log and '"status": 200' in log

    nb = json.loads(executed.read_text(encoding="utf-8"))
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
