"""A real Gunicorn started with deploy/gunicorn.conf.py serves the exported model; start-up failures exit non-zero."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _serve_fixtures import gunicorn_server, serve_model_dir  # noqa: F401 (pytest fixtures)

from lawclf_dev import CHECKOUT as REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def call(url: str, payload=None, headers=None, timeout: float = 30):
    """(status, headers, parsed JSON body) of one request; errors are answers too."""
    data = None if payload is None else json.dumps(payload, ensure_ascii=False).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


def test_gunicorn_serves_the_model_like_the_predictor(gunicorn_server, serve_model_dir):
    from lawclf.predict import Predictor

    texts = ["公司拖欠工资三个月，我该怎么维权？", "周末去哪里爬山比较好？", "请问酒驾会被判刑吗"]
    predictor = Predictor(serve_model_dir)
    # int8 dynamic quantisation scales activations per call, so compare like with like:
    # one text per call, then the same batch.
    for text in texts:
        want = predictor.predict(text)
        status, headers, body = call(gunicorn_server.url + "/predict", {"content": text})
        assert status == 200
        assert body["label"] == want["label"] and body["is_legal"] == want["is_legal"]
        assert body["score"] == pytest.approx(want["score"], abs=1e-5)
        assert body["model_version"]
    status, _, body = call(gunicorn_server.url + "/predict/batch", {"texts": texts})
    assert status == 200 and [r["score"] for r in body["results"]] == pytest.approx(
        [w["score"] for w in predictor.predict(texts)], abs=1e-5)


def test_gunicorn_answers_errors_as_json(gunicorn_server):
    status, _, body = call(gunicorn_server.url + "/predict", {"content": ""})
    assert status == 400 and body["error"]["code"] == "empty_text"
    status, _, body = call(gunicorn_server.url + "/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _, body = call(gunicorn_server.url + "/predict", {"content": "x" * 2_000_000})
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_concurrent_requests_are_micro_batched(gunicorn_server):
    results, errors = {}, []

    def worker(i):
        try:
            results[i] = call(gunicorn_server.url + "/predict", {"content": f"第{i}个问题：房东不退押金怎么办？"},
                              headers={"X-Request-ID": f"conc-{i}"})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 24
    assert all(status == 200 for status, _, _ in results.values())
    assert all(headers["X-Request-ID"] == f"conc-{i}" for i, (_, headers, _) in results.items())
    lines = {r["request_id"]: r for r in gunicorn_server.log_records() if r.get("event") == "request"}
    batch_sizes = [lines[f"conc-{i}"]["batch_size"] for i in range(24)]
    assert max(batch_sizes) > 1, f"no request shared a model call: {batch_sizes}"


def test_one_json_log_line_per_request_without_text(gunicorn_server):
    call(gunicorn_server.url + "/predict", {"content": "一段不应出现在日志里的文字"}, headers={"X-Request-ID": "log-check-1"})
    records = [r for r in gunicorn_server.log_records() if r.get("request_id") == "log-check-1"]
    assert len(records) == 1
    rec = records[0]
    assert rec["status"] == 200 and rec["method"] == "POST" and rec["path"] == "/predict"
    assert rec["latency_ms"] > 0 and rec["text_chars"] == len("一段不应出现在日志里的文字")
    assert "不应出现" not in gunicorn_server.logs()


def test_workers_times_threads_fit_the_cores(gunicorn_server):
    m = re.search(r"lawclf: (\d+) worker\(s\) x (\d+) ONNX Runtime thread\(s\), \d+ threads each, on (\d+) core",
                  gunicorn_server.logs())
    assert m, "gunicorn.conf.py logs its sizing"
    workers, ort_threads, cores = map(int, m.groups())
    assert cores == len(os.sched_getaffinity(0))
    assert cores - workers < workers * ort_threads <= max(cores, workers)


def _gunicorn(model_dir: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAWCLF_MODEL_DIR": str(model_dir)}
    return subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "deploy" / "gunicorn.conf.py"),
                           "--bind", "127.0.0.1:0", "lawclf.serve:create_app()"],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_gunicorn_exits_non_zero_on_a_missing_model(tmp_path):
    proc = _gunicorn(tmp_path / "no-such-model")
    assert proc.returncode != 0
    assert "no-such-model" in proc.stderr and "does not exist" in proc.stderr
    assert "Worker failed to boot" in proc.stderr


def test_gunicorn_exits_non_zero_on_a_corrupt_model(serve_model_dir, tmp_path):
    broken = tmp_path / "onnx"
    shutil.copytree(serve_model_dir, broken)
    for name in ("model.onnx", "model.int8.onnx"):
        if (broken / name).exists():
            (broken / name).write_bytes(b"this is not an onnx model")
    proc = _gunicorn(broken)
    assert proc.returncode != 0
    assert "not a loadable ONNX model" in proc.stderr


def test_dev_server_cli_refuses_a_missing_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lawclf", "serve", "--model-dir", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr and "nothing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dev_server_serves_too(serve_model_dir, tmp_path):
    from lawclf_dev.server import BackgroundServer

    with BackgroundServer(serve_model_dir, server="dev", log_path=tmp_path / "dev.log") as srv:
        status, _, body = call(srv.url + "/predict", {"text": "请问借钱不还可以起诉吗？"})
        assert status == 200 and 0 <= body["score"] <= 1


def test_server_stops_cleanly_on_sigterm(serve_model_dir, tmp_path):
    from lawclf_dev.server import BackgroundServer

    srv = BackgroundServer(serve_model_dir, log_path=tmp_path / "g.log").start()
    assert call(srv.url + "/predict", {"content": "测试一下关闭"})[0] == 200
    assert srv.stop() == 0
    assert "SIGABRT" not in srv.logs() and "terminate called" not in srv.logs()


def test_a_chunked_body_over_the_limit_gets_a_json_413_from_gunicorn(gunicorn_server):
    import http.client
    import urllib.parse

    url = urllib.parse.urlsplit(gunicorn_server.url)

    def chunked(body: bytes, tries: int = 3):
        # Gunicorn answers 413 as soon as it has read one byte past the limit and closes the connection; a client
        # still sending then gets EPIPE/ECONNRESET before it can read the answer (Gunicorn has no lingering close;
        # Nginx in front has). On a loaded machine that race can go either way, so a reset is retried.
        for attempt in range(tries):
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            try:
                conn.request("POST", "/predict", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                             headers={"Content-Type": "application/json"}, encode_chunked=True)
                resp = conn.getresponse()
                return resp.status, json.loads(resp.read())
            except (BrokenPipeError, ConnectionResetError):
                if attempt == tries - 1:
                    raise
            finally:
                conn.close()

    # 1.5 MB: over the default 1 MB limit; cut at the limit it would still parse.
    tricky = json.dumps({"content": "房东不退押金怎么办？", "pad": "x" * 1_500_000}).encode()
    status, body = chunked(tricky)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, body = chunked(json.dumps({"content": "房东不退押金怎么办？"}, ensure_ascii=False).encode())
    assert status == 200 and "score" in body
