"""Sentry: a server error reaches a (local, fake) Sentry with no request body or client IP; client errors do not.

sentry_sdk.init is process-global, so the app runs in a subprocess; its DSN points at a
small HTTP server here that records the envelopes Sentry's SDK posts.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("sentry_sdk")

HERE = Path(__file__).resolve().parent

APP_CODE = """
import sys
sys.path.insert(0, {here!r})
import sentry_sdk
from _serve_fakes import FakePredictor
from lawclf.config import ServeConfig
from lawclf.serve import create_app

app = create_app(ServeConfig(sentry_dsn={dsn!r}, log_level="CRITICAL"), predictor=FakePredictor(fail=True))
client = app.test_client()
bad = client.post("/predict", json={{"content": ""}})
err = client.post("/predict", json={{"content": "a private post 私密"}}, headers={{"X-Forwarded-For": "203.0.113.9"}})
sentry_sdk.flush(timeout=10)
print(bad.status_code, err.status_code)
"""


def test_server_errors_reach_sentry_without_personal_data():
    envelopes: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            envelopes.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    dsn = f"http://publickey@127.0.0.1:{httpd.server_port}/1"
    try:
        proc = subprocess.run([sys.executable, "-c", APP_CODE.format(here=str(HERE), dsn=dsn)],
                              capture_output=True, text=True, timeout=60)
    finally:
        httpd.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["400", "500"]

    events = []
    for env in envelopes:
        for line in env.decode("utf-8", errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and "exception" in item:
                events.append(item)
    assert len(events) == 1, f"expected one error event (the 500, not the 400), got {len(events)}"
    event = events[0]
    exc = event["exception"]["values"][-1]
    assert exc["type"] == "RuntimeError" and "secret internal detail" in exc["value"]
    raw = b"".join(envelopes).decode("utf-8", errors="replace")
    assert "a private post" not in raw and "私密" not in raw, "the request body must not be sent"
    assert "203.0.113.9" not in raw, "no client IP (send_default_pii=False)"
    assert event.get("release", "").startswith("lawclf@")
    frames = [f for value in event["exception"]["values"] for f in (value.get("stacktrace") or {}).get("frames", [])]
    assert frames and not any(f.get("vars") for f in frames), "no stack-frame variables (they hold the texts)"
