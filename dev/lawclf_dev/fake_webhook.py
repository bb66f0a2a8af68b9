"""A local webhook receiver that records what it is sent and can be told to fail (tests, notebook 07).

::

    with FakeWebhook() as hook:
        hook.fail_next(2, status=503)          # the next two deliveries fail
        ... run a screening pass with webhooks=f"wecom={hook.url}/wecom?key=demo" ...
        hook.received                          # [(path, json body), ...] of the accepted ones

Paths ending in ``/wecom``, ``/dingtalk`` or ``/feishu`` answer like those group robots
(HTTP 200 with an error code in the body when told to fail with ``status=200``); the query
(the robot's key) is not part of the recorded path.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from lawclf_dev.fake_v2ex import start_local_server, stop_local_server


class FakeWebhook:
    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self.attempts = 0
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the receiver first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, times: int, status: int = 503) -> None:
        with self._lock:
            self._failures += [status] * times

    def _answer(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.attempts += 1
            status = self._failures.pop(0) if self._failures else None
            if status is None:
                self.received.append((path, body))
        robot = path.rstrip("/").rsplit("/", 1)[-1]
        if status is None:
            return 200, ({"errcode": 0, "errmsg": "ok"} if robot in ("wecom", "dingtalk") else
                         {"code": 0, "msg": "success"} if robot == "feishu" else {"ok": True})
        if status == 200:  # the robots' way of failing: 200 with an error code
            return 200, ({"code": 9499, "msg": "Bad Request"} if robot == "feishu" else
                         {"errcode": 45009, "errmsg": "api freq out of limit"})
        return status, {"error": "unavailable"}

    def start(self) -> "FakeWebhook":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                status, answer = fake._answer(urllib.parse.urlsplit(self.path).path, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = start_local_server(Handler)
        return self

    def stop(self) -> None:
        stop_local_server(self._server)
        self._server = None

    def __enter__(self) -> "FakeWebhook":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
