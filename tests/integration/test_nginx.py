"""A real Nginx, configured from deploy/nginx.conf, proxies to a real Gunicorn.

Only what cannot work outside Docker is changed: the upstream (``app:8000`` -> the test's
Gunicorn), the listen port, the /tmp and /dev/std* paths (-> the test's folder), one worker.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _procs import need_binary
from _serve_fixtures import gunicorn_server, serve_model_dir  # noqa: F401 (pytest fixtures)

from lawclf_dev import CHECKOUT as REPO_ROOT
from lawclf_dev.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"


def render_nginx_conf(template: str, upstream: str, listen: str, prefix: Path) -> str:
    """deploy/nginx.conf with the Docker-only values replaced; fails if one is no longer there."""
    replacements = [  # /tmp/ first: the test's own folder is under /tmp too
        (r"/tmp/", str(prefix) + "/"),
        (r"server app:8000;", f"server {upstream};"),
        (r"listen 8080;", f"listen {listen};"),
        (r"worker_processes auto;", "worker_processes 1;"),
        (r"/dev/stderr", str(prefix / "error.log")),
        (r"/dev/stdout", str(prefix / "access.log")),
    ]
    for pattern, value in replacements:
        template, n = re.subn(re.escape(pattern), value, template)
        assert n >= 1, f"deploy/nginx.conf no longer contains {pattern!r}; update this test"
    return template


@pytest.fixture(scope="module")
def nginx(gunicorn_server, tmp_path_factory):
    binary = need_binary("nginx", "/usr/sbin/nginx")
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(NGINX_CONF.read_text(), f"127.0.0.1:{gunicorn_server.port}",
                                      f"127.0.0.1:{port}", prefix))
    base = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run(base + ["-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(base + ["-g", "daemon off;"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"nginx did not start: {out}\n{(prefix / 'error.log').read_text(errors='replace')}")
            time.sleep(0.1)
    yield {"url": url, "prefix": prefix, "proc": proc}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def fetch(url: str, payload=None, headers=None, raw: bytes | None = None):
    data = raw if raw is not None else (None if payload is None else json.dumps(payload, ensure_ascii=False).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_config_is_valid_and_has_the_production_settings():
    text = NGINX_CONF.read_text()
    for needle in ("client_max_body_size", "proxy_read_timeout", "limit_req_zone", "limit_req ", "gzip on",
                   "application/json", "X-Request-ID", "proxy_pass http://lawclf_app"):
        assert needle in text, needle


def test_nginx_proxies_predictions(nginx):
    status, headers, body = fetch(nginx["url"] + "/predict", {"content": "请问借钱不还可以起诉吗？"})
    assert status == 200, body
    result = json.loads(body)
    assert set(result) >= {"label", "is_legal", "score", "threshold", "model_version"}
    assert headers.get("Server", "").startswith("nginx") and "nginx/" not in headers.get("Server", "")


def test_request_id_passes_through_both_ways(nginx, gunicorn_server):
    status, headers, _ = fetch(nginx["url"] + "/predict", {"content": "房东不退押金怎么办？"},
                               headers={"X-Request-ID": "through-nginx-1"})
    assert status == 200 and headers.get_all("X-Request-ID") == ["through-nginx-1"]
    # without one, nginx makes one, the app logs it and the client sees the same id
    status, headers, _ = fetch(nginx["url"] + "/healthz")
    made = headers.get_all("X-Request-ID")
    assert status == 200 and len(made) == 1 and re.fullmatch(r"[0-9a-f]{32}", made[0])
    time.sleep(0.2)
    ids = {r.get("request_id") for r in gunicorn_server.log_records()}
    assert {"through-nginx-1", made[0]} <= ids


def test_errors_from_the_app_pass_through_as_json(nginx):
    status, _, body = fetch(nginx["url"] + "/predict", {"content": "   "})
    assert status == 400 and json.loads(body)["error"]["code"] == "empty_text"
    status, _, body = fetch(nginx["url"] + "/no-such-page")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


def test_body_over_the_limit_is_a_json_413_from_nginx(nginx):
    status, headers, body = fetch(nginx["url"] + "/predict", raw=b'{"content": "' + b"x" * 1_200_000 + b'"}')
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert headers.get("X-Request-ID")


def test_html_and_json_are_gzipped(nginx):
    for path, marker in (("/", "模型实时预测".encode()), ("/openapi.json", b'"openapi"')):
        status, headers, body = fetch(nginx["url"] + path, headers={"Accept-Encoding": "gzip"})
        assert status == 200 and headers.get("Content-Encoding") == "gzip", path
        assert marker in gzip.decompress(body)


def test_rate_limit_answers_429_json(nginx):
    """20 r/s with a burst of 40 per client: a quick run of requests must hit the limit."""
    time.sleep(2.5)  # let the bucket drain from the other tests
    statuses, limited = [], None
    for _ in range(300):
        status, headers, body = fetch(nginx["url"] + "/predict", raw=b"not json")
        statuses.append(status)
        if status == 429:
            limited = (headers, body)
            break
    assert limited is not None, f"no 429 after {len(statuses)} requests"
    assert statuses.count(400) >= 40, "the burst is served before limiting"
    assert json.loads(limited[1])["error"]["code"] == "too_many_requests"
    # other routes are not rate limited
    assert fetch(nginx["url"] + "/healthz")[0] == 200


def test_clients_behind_a_proxy_are_limited_each_on_their_own(nginx):
    """Behind a load balancer every request comes from its address: the limit must key on the client
    it names (X-Forwarded-For from a trusted address), not throttle 16 clients as one; and the 429s
    of a client over its limit do not write one error-log line each."""
    time.sleep(2.5)
    log = nginx["prefix"] / "error.log"
    log_before = log.stat().st_size if log.exists() else 0
    statuses = []
    for _round in range(4):  # 16 clients x 4 rounds x 10 = 640 requests, 40 per client: within each burst
        for client in range(16):
            for _ in range(10):
                statuses.append(fetch(nginx["url"] + "/predict", raw=b"not json",
                                      headers={"X-Forwarded-For": f"198.51.100.{client + 1}"})[0])
    assert statuses.count(429) == 0 and statuses.count(400) == len(statuses)
    one = [fetch(nginx["url"] + "/predict", raw=b"not json", headers={"X-Forwarded-For": "203.0.113.7"})[0]
           for _ in range(150)]
    assert one.count(429) > 50, "a single client over its limit is still limited"
    time.sleep(0.3)
    new_log = log.read_text(errors="replace")[log_before:] if log.exists() else ""
    assert "limiting requests" not in new_log, new_log[-1000:]


def test_access_log_is_json_with_the_request_id(nginx):
    fetch(nginx["url"] + "/healthz", headers={"X-Request-ID": "access-log-1"})
    time.sleep(0.3)
    lines = [json.loads(li) for li in (nginx["prefix"] / "access.log").read_text().splitlines() if li.strip()]
    assert any(li["request_id"] == "access-log-1" and li["status"] == 200 for li in lines)


def _raw(url: str, request: bytes) -> tuple[int, str, bytes]:
    """Send bytes as they are (malformed on purpose); return status, Content-Type and body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


@pytest.mark.parametrize("request_bytes,status,code", [
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 414, "uri_too_long"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\nConnection: close\r\n\r\n", 400,
     "headers_too_large"),
    (b"NOT A REQUEST\r\n\r\n", 400, "bad_request"),
    (b"TRACE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
     501, "not_implemented"),
    (b"GET /healthz HTTP/3.0\r\nHost: x\r\nConnection: close\r\n\r\n", 505, "http_version_not_supported"),
])
def test_errors_nginx_answers_itself_are_json(nginx, request_bytes, status, code):
    got, content_type, body = _raw(nginx["url"], request_bytes)
    assert got == status and content_type.startswith("application/json"), body[:200]
    assert json.loads(body)["error"]["code"] == code
