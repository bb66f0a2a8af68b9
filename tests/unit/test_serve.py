"""The HTTP layer of lawclf.serve with a stand-in predictor: contract, errors, logs, CORS, micro-batching."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from _serve_fakes import FakePredictor

from lawclf import serve
from lawclf.config import ServeConfig
from lawclf.microbatch import MicroBatcher
from lawclf_dev.server import config_env, load_test


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    """Records of the ``lawclf.serve`` logger (it does not propagate to the root, so caplog misses it)."""
    handler = _ListHandler()
    logger = logging.getLogger("lawclf.serve")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def request_lines(records) -> list[dict]:
    return [r.fields for r in records if getattr(r, "fields", {}).get("event") == "request"]


def make_client(predictor=None, **cfg):
    app = serve.create_app(ServeConfig(**cfg), predictor=predictor or FakePredictor())
    return app.test_client()


@pytest.fixture
def client():
    return make_client()


def test_predict_with_the_original_content_field(client):
    resp = client.post("/predict", json={"content": "公司拖欠工资三个月，我该怎么维权？"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) >= {"label", "is_legal", "score", "threshold", "model_version"}
    assert body["score"] == FakePredictor.score("公司拖欠工资三个月，我该怎么维权？")
    assert body["model_version"] == "test-1"


def test_predict_accepts_text_as_well(client):
    resp = client.post("/predict", json={"text": "x" * 80})
    assert resp.status_code == 200 and resp.get_json()["is_legal"] is True


def test_batch_keeps_order_and_accepts_contents(client):
    texts = ["a" * n for n in (10, 90, 30)]
    for field in ("texts", "contents"):
        resp = client.post("/predict/batch", json={field: texts})
        assert resp.status_code == 200
        body = resp.get_json()
        assert body["count"] == 3 and [r["score"] for r in body["results"]] == [0.1, 0.9, 0.3]


@pytest.mark.parametrize("method,path,kwargs,status,code", [
    ("post", "/predict", dict(data="content=hi"), 415, "unsupported_media_type"),
    ("post", "/predict", dict(data='{"content": "hi"}', content_type="text/plain"), 415, "unsupported_media_type"),
    ("post", "/predict", dict(data="{not json", content_type="application/json"), 400, "invalid_json"),
    ("post", "/predict", dict(data="", content_type="application/json"), 400, "invalid_json"),
    ("post", "/predict", dict(data=b"\xff\xfe\xfa", content_type="application/json"), 400, "invalid_json"),
    ("post", "/predict", dict(data="[" * 100_000, content_type="application/json"), 400, "invalid_json"),
    ("post", "/predict", dict(data="1" * 5000, content_type="application/json"), 400, "invalid_json"),
    ("post", "/predict", dict(json=["hi"]), 400, "invalid_body"),
    ("post", "/predict", dict(json={}), 400, "missing_field"),
    ("post", "/predict", dict(json={"contnet": "hi"}), 400, "missing_field"),
    ("post", "/predict", dict(json={"content": "a", "text": "b"}), 400, "ambiguous_field"),
    ("post", "/predict", dict(json={"content": 42}), 400, "invalid_field"),
    ("post", "/predict", dict(json={"content": None}), 400, "invalid_field"),
    ("post", "/predict", dict(json={"content": ["hi"]}), 400, "invalid_field"),
    ("post", "/predict", dict(json={"content": ""}), 400, "empty_text"),
    ("post", "/predict", dict(json={"content": " \n\t\u3000"}), 400, "empty_text"),
    ("post", "/predict", dict(json={"content": "长" * 2001}), 400, "text_too_long"),
    ("post", "/predict", dict(data='{"content": "\\ud800abc"}', content_type="application/json"), 400, "invalid_text"),
    ("post", "/predict/batch", dict(json={"texts": []}), 400, "empty_batch"),
    ("post", "/predict/batch", dict(json={"texts": ["a"] * 65}), 400, "batch_too_large"),
    ("post", "/predict/batch", dict(json={"texts": ["ok", 3]}), 400, "invalid_field"),
    ("post", "/predict/batch", dict(json={"texts": ["ok", "  "]}), 400, "empty_text"),
    ("post", "/predict/batch", dict(json={"texts": "one string"}), 400, "invalid_field"),
    ("post", "/predict/batch", dict(json={"content": "hi"}), 400, "missing_field"),
    ("get", "/predict", {}, 405, "method_not_allowed"),
    ("put", "/predict/batch", {}, 405, "method_not_allowed"),
    ("post", "/healthz", {}, 405, "method_not_allowed"),
    ("get", "/no/such/route", {}, 404, "not_found"),
])
def test_bad_requests_get_a_clear_json_4xx(client, method, path, kwargs, status, code):
    resp = getattr(client, method)(path, **kwargs)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    error = resp.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and len(error["message"]) > 10


def test_error_messages_name_the_field_and_the_limit(client):
    msg = client.post("/predict", json={"content": "长" * 2001}).get_json()["error"]["message"]
    assert "content" in msg and "2001" in msg and "2000" in msg
    msg = client.post("/predict/batch", json={"texts": ["ok", 3]}).get_json()["error"]["message"]
    assert "texts[1]" in msg and "string" in msg
    msg = client.post("/predict", data="x", content_type="text/plain").get_json()["error"]["message"]
    assert "application/json" in msg and "text/plain" in msg


def test_405_lists_the_allowed_methods(client):
    resp = client.get("/predict")
    assert "POST" in resp.headers["Allow"]


def test_body_over_the_size_limit_is_413():
    client = make_client(max_body_bytes=1000)
    resp = client.post("/predict", data=json.dumps({"content": "x" * 2000}), content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"
    assert "1000" in resp.get_json()["error"]["message"]


def test_limits_come_from_the_config():
    client = make_client(max_text_chars=10, max_batch=2)
    assert client.post("/predict", json={"content": "x" * 11}).status_code == 400
    assert client.post("/predict", json={"content": "x" * 10}).status_code == 200
    assert client.post("/predict/batch", json={"texts": ["a", "b", "c"]}).status_code == 400


@pytest.mark.parametrize("microbatch", [True, False])
def test_server_error_is_a_generic_500_logged_with_traceback(records, microbatch):
    client = make_client(FakePredictor(fail=True), microbatch=microbatch)
    resp = client.post("/predict", json={"content": "hello world"}, headers={"X-Request-ID": "req-500"})
    assert resp.status_code == 500
    body = resp.get_json()
    assert body["error"]["code"] == "internal_error" and "req-500" in body["error"]["message"]
    text = resp.get_data(as_text=True)
    assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert errors and errors[0].exc_info and "secret internal detail" in str(errors[0].exc_info[1])
    assert request_lines(records)[-1]["status"] == 500


def test_one_structured_log_line_per_request_without_the_text(records, client):
    client.post("/predict", json={"content": "私密内容 private"}, headers={"X-Request-ID": "abc-123"})
    client.post("/predict/batch", json={"texts": ["一二三", "四五"]})
    client.get("/healthz")
    lines = request_lines(records)
    assert len(lines) == 3
    first = lines[0]
    assert first["request_id"] == "abc-123" and first["method"] == "POST" and first["path"] == "/predict"
    assert first["status"] == 200 and first["latency_ms"] >= 0 and first["text_chars"] == len("私密内容 private")
    assert lines[1]["text_chars"] == [3, 2]
    formatted = serve.JsonFormatter().format(next(r for r in records if r.fields is lines[0]))
    assert json.loads(formatted)["request_id"] == "abc-123"
    assert "私密" not in formatted and "private" not in formatted


def test_log_text_puts_the_text_in_the_log(records):
    client = make_client(log_text=True)
    client.post("/predict", json={"content": "记录这段文字"})
    assert request_lines(records)[-1]["text"] == "记录这段文字"


def test_request_id_is_echoed_generated_or_replaced(client):
    assert client.get("/healthz", headers={"X-Request-ID": "my-id.1"}).headers["X-Request-ID"] == "my-id.1"
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    injected = client.get("/healthz", headers={"X-Request-ID": 'x"} {"forged": 1'}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", injected)


def test_no_cors_headers_without_an_allow_list(client):
    resp = client.post("/predict", json={"content": "hello"}, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    pre = client.options("/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in pre.headers


def test_cors_allows_only_listed_origins():
    client = make_client(cors_origins="https://blog.example.com, https://other.example")
    ok = client.post("/predict", json={"content": "hello"}, headers={"Origin": "https://blog.example.com"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://blog.example.com"
    assert "X-Request-ID" in ok.headers.get("Access-Control-Expose-Headers", "")
    bad = client.post("/predict", json={"content": "hello"}, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in bad.headers
    pre = client.options("/predict", headers={"Origin": "https://other.example",
                                              "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200 and pre.headers["Access-Control-Allow-Origin"] == "https://other.example"
    assert "*" not in pre.headers.get("Access-Control-Allow-Origin", "")


def test_health_ready_version(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready", "model_version": "test-1"}
    version = client.get("/version").get_json()
    assert version["model_version"] == "test-1" and version["model"]["labels"] == ["non_legal", "legal"]


def test_version_hides_private_metadata():
    fake = FakePredictor()
    fake.meta = {**FakePredictor.meta, "train_config": {"run_dir": "/home/me/secret-run"}}
    body = make_client(fake).get("/version").get_json()
    assert body["model"]["threshold"] == 0.5 and "train_config" not in body["model"]
    assert "secret-run" not in json.dumps(body)


def test_readyz_is_503_when_the_batching_thread_died():
    app = serve.create_app(ServeConfig(), predictor=FakePredictor())
    client = app.test_client()
    assert client.post("/predict", json={"content": "hello"}).status_code == 200
    batcher = app.extensions["lawclf"].batcher
    batcher._queue.put(None)  # the thread's stop signal
    batcher._thread.join(timeout=5)
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["problems"]
    # the next request restarts it
    assert client.post("/predict", json={"content": "hello"}).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_demo_page_is_self_contained(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert "模型实时预测" in html and 'id="text"' in html and 'id="result"' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external assets"
    assert "/*__EXAMPLES__*/" not in html and "__MAX_TEXT_CHARS__" not in html
    examples = serve.read_examples()
    assert examples and json.dumps(examples[0]["text"], ensure_ascii=False)[1:-1] in html
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


def test_examples_mix_everyday_and_legal_questions():
    examples = serve.read_examples(limit=8)
    labels = [e["label"] for e in examples]
    assert labels.count(0) >= 3 and labels.count(1) >= 3
    assert all(isinstance(e["text"], str) and e["text"].strip() for e in examples)


def test_demo_examples_cannot_break_out_of_the_script():
    html = serve._demo_html([{"text": "</script><script>alert(1)</script>", "label": 0, "note": ""}], 100)
    assert "</script><script>alert(1)" not in html
    assert 'maxlength="100"' in html


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    app = serve.create_app(ServeConfig(), predictor=FakePredictor())
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            routes.setdefault(rule.rule, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(ops) for path, ops in spec["paths"].items()}
    assert routes == documented


# --------------------------------------------------------------------------- micro-batching

def test_microbatcher_groups_concurrent_requests_and_returns_each_its_results():
    fake = FakePredictor(delay=0.05)
    batcher = MicroBatcher(fake.predict, max_size=64, wait_ms=20)
    results: dict[int, list] = {}

    def call(i):
        results[i] = batcher.predict(["x" * (i + 1)] * (1 + i % 3), timeout=10)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    for i in range(16):
        assert [r["score"] for r in results[i]] == [FakePredictor.score("x" * (i + 1))] * (1 + i % 3)
    assert sum(fake.calls) == sum(1 + i % 3 for i in range(16))
    assert len(fake.calls) <= 10, f"expected grouped calls, got batch sizes {fake.calls}"
    assert max(fake.calls) <= 64 + 3


def test_microbatcher_respects_max_size():
    fake = FakePredictor(delay=0.02)
    batcher = MicroBatcher(fake.predict, max_size=4, wait_ms=50)
    futures = [batcher.submit(["t"]) for _ in range(12)]
    assert all(len(f.result(timeout=10)) == 1 for f in futures)
    batcher.close()
    assert max(fake.calls) <= 4


def test_microbatcher_lone_request_waits_at_most_wait_ms():
    batcher = MicroBatcher(FakePredictor().predict, max_size=32, wait_ms=5)
    batcher.predict(["warm"], timeout=5)
    t0 = time.perf_counter()
    batcher.predict(["one"], timeout=5)
    assert time.perf_counter() - t0 < 0.5
    batcher.close()


def test_microbatcher_passes_errors_to_every_waiter_and_keeps_running():
    fake = FakePredictor(fail=True)
    batcher = MicroBatcher(fake.predict, max_size=8, wait_ms=10)
    futures = [batcher.submit(["a"]) for _ in range(3)]
    for f in futures:
        with pytest.raises(RuntimeError):
            f.result(timeout=5)
    fake.fail = False
    assert batcher.predict(["b"], timeout=5)[0]["score"] == FakePredictor.score("b")
    batcher.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_microbatcher_works_in_a_forked_child():
    """Gunicorn forks workers after create_app: the child must start its own thread."""
    batcher = MicroBatcher(FakePredictor().predict, max_size=8, wait_ms=1)
    batcher.predict(["parent"], timeout=5)
    pid = os.fork()
    if pid == 0:  # child
        try:
            ok = batcher.predict(["child!"], timeout=5)[0]["score"] == FakePredictor.score("child!")
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    batcher.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_model_holder_reloads_after_fork_and_after_release():
    loads = []

    def loader():
        loads.append(os.getpid())
        return FakePredictor()

    holder = serve.ModelHolder(loader=loader)
    assert holder.loaded and len(loads) == 1
    holder.release()
    assert not holder.loaded
    holder.get()
    assert holder.loaded and len(loads) == 2
    holder._pid = -1  # as if this process were a fork of the one that loaded it
    assert not holder.loaded
    holder.get()
    assert len(loads) == 3


def test_microbatch_off_calls_the_predictor_directly():
    fake = FakePredictor()
    client = make_client(fake, microbatch=False)
    assert client.post("/predict/batch", json={"texts": ["a", "b"]}).status_code == 200
    assert fake.calls == [2]
    assert client.application.extensions["lawclf"].batcher is None


# --------------------------------------------------------------------------- config, CLI, imports

def test_serve_config_from_env():
    cfg = ServeConfig.from_env({"LAWCLF_MODEL_DIR": "/models", "LAWCLF_CORS_ORIGINS": "https://a.example",
                                "LAWCLF_MICROBATCH": "false", "LAWCLF_MAX_BATCH": "8",
                                "SENTRY_DSN": "https://k@sentry.example/1", "SENTRY_TRACES_SAMPLE_RATE": "0.1"})
    assert cfg.model_dir == "/models" and cfg.microbatch is False and cfg.max_batch == 8
    assert cfg.sentry_dsn.startswith("https://") and cfg.sentry_traces_sample_rate == 0.1
    with pytest.raises(ValueError, match="LAWCLF_MAX_BATCH"):
        ServeConfig.from_env({"LAWCLF_MAX_BATCH": "many"})


def test_cli_reports_a_bad_env_value(monkeypatch, capsys):
    monkeypatch.setenv("LAWCLF_MAX_BATCH", "many")
    assert serve.cli(["--port", "1"]) == 2
    assert "LAWCLF_MAX_BATCH" in capsys.readouterr().err


def test_sentry_is_off_without_a_dsn():
    assert serve.init_sentry(ServeConfig()) is False


def test_importing_the_server_does_not_import_torch():
    code = ("import sys, lawclf.serve, lawclf.cli; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_config_env_round_trips():
    cfg = ServeConfig(model_dir="/m", cors_origins="https://a.example", microbatch=False, max_batch=7,
                      microbatch_wait_ms=2.5, sentry_traces_sample_rate=0.2)
    assert ServeConfig.from_env(config_env(cfg)) == cfg


def test_load_test_counts_latencies_and_errors():
    """Against a stub HTTP server: every 5th request fails with a 503."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body["content"])
            status = 503 if len(seen) % 5 == 0 else 200
            payload = b"{}"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        stats = load_test(f"http://127.0.0.1:{httpd.server_port}", ["甲", "乙"], concurrency=4, n_requests=40)
    finally:
        httpd.shutdown()
    assert stats["requests"] == 40 and stats["errors"] == 8 and stats["ok"] == 32
    assert stats["error_kinds"] == ["HTTP 503"] and not stats["timed_out"]
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] and stats["throughput_rps"] > 0
    assert set(seen) == {"甲", "乙"}


@pytest.mark.parametrize("method,path,kwargs", [
    ("post", "/predict", dict(json={"content": "房东不退押金怎么办？"})),
    ("post", "/predict", dict(json={"content": ""})),
    ("post", "/predict", dict(data="x", content_type="text/plain")),
    ("post", "/predict/batch", dict(json={"texts": ["一", "二"]})),
    ("post", "/predict/batch", dict(json={"texts": []})),
    ("get", "/healthz", {}), ("get", "/readyz", {}), ("get", "/version", {}), ("get", "/openapi.json", {}),
])
def test_responses_match_the_openapi_schemas(client, method, path, kwargs):
    jsonschema = pytest.importorskip("jsonschema")
    spec = client.get("/openapi.json").get_json()
    resp = getattr(client, method)(path, **kwargs)
    responses = spec["paths"][path][method]["responses"]
    assert str(resp.status_code) in responses, f"{resp.status_code} not documented for {method.upper()} {path}"
    documented = responses[str(resp.status_code)]
    if "$ref" in documented:  # "#/components/responses/Error"
        documented = spec["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
    schema = {**spec, **documented["content"]["application/json"]["schema"]}  # refs resolve against the spec
    jsonschema.validate(resp.get_json(), schema)


def _gunicorn_conf(monkeypatch, **env) -> dict:
    import runpy

    from lawclf_dev import CHECKOUT as REPO_ROOT

    for name in ("WEB_CONCURRENCY", "LAWCLF_ORT_THREADS", "GUNICORN_THREADS", "GUNICORN_BIND", "GUNICORN_BEHIND_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(REPO_ROOT / "deploy" / "gunicorn.conf.py"))


def test_gunicorn_refuses_to_face_other_machines_without_a_proxy(monkeypatch):
    """The image binds 0.0.0.0: a bare `docker run -p` must not serve exposed to idle and slow clients."""
    for bind in ("0.0.0.0:8000", "[::]:8000", "10.1.2.3:8000"):
        with pytest.raises(SystemExit, match="GUNICORN_BEHIND_PROXY=1"):
            _gunicorn_conf(monkeypatch, GUNICORN_BIND=bind)
    for bind in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "unix:/tmp/lawclf.sock"):
        assert _gunicorn_conf(monkeypatch, GUNICORN_BIND=bind)["bind"] == bind
    assert _gunicorn_conf(monkeypatch, GUNICORN_BIND="0.0.0.0:8000", GUNICORN_BEHIND_PROXY="1")["bind"] == "0.0.0.0:8000"


def test_gunicorn_conf_fits_workers_times_threads_to_the_cores(monkeypatch):
    conf = _gunicorn_conf(monkeypatch)
    cores = len(os.sched_getaffinity(0))
    assert conf["worker_class"] == "lawclf.gunicorn_worker.DeadlineThreadWorker"  # gthread with read deadlines
    assert conf["preload_app"] is False and conf["accesslog"] is None
    assert conf["workers"] == max(1, cores // 4) and conf["workers"] * conf["ort_threads"] <= max(cores, 1)
    assert os.environ["LAWCLF_ORT_THREADS"] == str(conf["ort_threads"])  # handed to the app
    conf = _gunicorn_conf(monkeypatch, WEB_CONCURRENCY="3", LAWCLF_ORT_THREADS="0", GUNICORN_BIND="0.0.0.0:9000",
                          GUNICORN_BEHIND_PROXY="1")
    assert conf["workers"] == 3 and conf["ort_threads"] == max(1, cores // 3) and conf["bind"] == "0.0.0.0:9000"
    assert _gunicorn_conf(monkeypatch, LAWCLF_ORT_THREADS="5")["ort_threads"] == 5
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY"):
        _gunicorn_conf(monkeypatch, WEB_CONCURRENCY="many")
