"""A small fake V2EX API on 127.0.0.1, for the tests and the notebook's offline demo.

It serves made-up topics with the same shapes as V2EX (v1 lists, v2 ``result`` +
``pagination``) and can be scripted to misbehave: ``429`` with ``Retry-After``, ``500``,
malformed JSON, an exhausted rate-limit window, or a request that hangs until
released (so a test can kill a crawler mid-page)::

    with FakeV2EX(topics_by_node, per_page=10) as fake:
        fake.add_fault("node_name=python&page=2", "500", times=2)
        client = V2EXClient(base_url=fake.url)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlparse

FAULTS = ("429", "500", "503", "malformed", "exhausted", "hang", "drop")


@dataclass
class Fault:
    #: Substring of the request path and query (``node_name=python&page=2``, ``/nodes/python/``).
    match: str
    kind: str
    times: int = 1
    retry_after: Optional[str] = "7"


class FakeClock:
    """A clock whose ``sleep`` only moves time forward (tests never wait); records the sleeps."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


def start_local_server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """``handler`` served on a free 127.0.0.1 port by a daemon thread (the fakes of this package)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop_local_server(server: Optional[ThreadingHTTPServer]) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


@dataclass
class FakeV2EX:
    """Threaded fake server; use as a context manager. ``requests`` logs (path, query) pairs."""

    nodes: dict[str, list[dict[str, Any]]]
    latest: list[dict[str, Any]] = field(default_factory=list)
    hot: list[dict[str, Any]] = field(default_factory=list)
    per_page: int = 10
    token: str = ""
    #: Reset time (epoch seconds, from ``clock``) advertised in X-Rate-Limit-Reset.
    clock: Callable[[], float] = time.time
    #: Advertised in X-Rate-Limit-Limit; high by default so demos and tests do not wait.
    rate_limit: int = 1_000_000
    window_s: float = 3600.0
    #: False: v1 show.json ignores ``page`` and always returns the first page.
    v1_pagination: bool = True

    def __post_init__(self) -> None:
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.hanging = threading.Event()  # set when a request starts hanging
        self.release = threading.Event()  # set to let hanging requests finish
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None

    @classmethod
    def from_fixture(cls, path: str | Path, **kwargs: Any) -> "FakeV2EX":
        """Load ``{"nodes": {name: [topic, ...]}, "latest": [...], "hot": [...]}``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(nodes=data["nodes"], latest=data.get("latest", []), hot=data.get("hot", []), **kwargs)

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first (use it as a context manager)"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_fault(self, match: str, kind: str, times: int = 1, retry_after: Optional[str] = "7") -> None:
        """Make the next ``times`` requests whose path+query contains ``match`` misbehave as ``kind``."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULTS}")
        with self._lock:
            self.faults.append(Fault(match, kind, times, retry_after))

    def publish(self, topics: list[dict[str, Any]], node: str = "", latest_size: int = 20) -> None:
        """New topics appear: on top of ``node``'s pages (newest first) and of the latest feed."""
        with self._lock:
            if node:
                self.nodes[node] = list(reversed(topics)) + self.nodes.get(node, [])
            self.latest = (list(reversed(topics)) + self.latest)[:latest_size]

    def start(self) -> "FakeV2EX":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self)

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = start_local_server(Handler)
        return self

    def stop(self) -> None:
        self.release.set()
        stop_local_server(self._server)
        self._server = None

    def kill_crawler_when_hanging(self, db_url: str, nodes: str, timeout: float = 60.0) -> None:
        """Run ``lawclf collect v2ex`` against this server in a new process and SIGKILL it as soon
        as a request hits a ``hang`` fault: a crash in the middle of a page, for resume tests."""
        cmd = [sys.executable, "-m", "lawclf", "collect", "v2ex", "--db-url", db_url, "--base-url", self.url,
               "--nodes", nodes, "--feeds", "", "--max-pages", "1000", "--requests-per-hour", "3600000",
               "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        try:
            if not self.hanging.wait(timeout):
                err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else "(still running)"
                raise RuntimeError(f"the crawler never reached the hanging request: {err}")
        finally:
            proc.kill()
            proc.wait(timeout=30)
            proc.stderr.close()
            self.release.set()

    def __enter__(self) -> "FakeV2EX":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving
    def _take_fault(self, raw_path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match in raw_path:
                    fault.times -= 1
                    return fault
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(h.path)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        with self._lock:
            self.requests.append((parsed.path, query))
            used = len(self.requests)
        page_raw = query.get("page") or query.get("p") or "1"
        page = int(page_raw) if page_raw.isdigit() else 1
        reset = int(self.clock() + self.window_s)
        headers = {"X-Rate-Limit-Limit": str(self.rate_limit),
                   "X-Rate-Limit-Remaining": str(max(0, self.rate_limit - used)),
                   "X-Rate-Limit-Reset": str(reset)}
        fault = self._take_fault(h.path)
        if fault is not None:
            if fault.kind == "hang":
                self.hanging.set()
                self.release.wait(timeout=60)
            elif fault.kind == "drop":  # close the connection without an answer
                h.close_connection = True
                h.connection.close()
                return
            elif fault.kind in ("429", "503"):
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                return self._send(h, int(fault.kind), {"message": "slow down"}, {**headers, **extra})
            elif fault.kind == "500":
                return self._send(h, 500, {"message": "server error"}, headers)
            elif fault.kind == "malformed":
                return self._send_raw(h, 200, b'[{"id": 1, "title": "trunc', headers)
            elif fault.kind == "exhausted":
                headers["X-Rate-Limit-Remaining"] = "0"
        status, body = self._route(parsed.path, query, page, h.headers.get("Authorization", ""))
        self._send(h, status, body, headers)

    def _route(self, path: str, query: dict[str, str], page: int, auth: str) -> tuple[int, Any]:
        if path in ("/api/topics/latest.json", "/api/topics/hot.json"):
            return 200, self.latest if "latest" in path else self.hot
        if path == "/api/topics/show.json":
            node = query.get("node_name", "")
            if node not in self.nodes:
                return 404, {"status": "error", "message": f"node {node!r} not found"}
            return 200, self._page(self.nodes[node], page if self.v1_pagination else 1)
        if path.startswith("/api/v2/nodes/") and path.endswith("/topics"):
            if not self.token or auth != f"Bearer {self.token}":
                return 401, {"success": False, "message": "Invalid token"}
            node = path.split("/")[4]
            if node not in self.nodes:
                return 404, {"success": False, "message": "Node not found"}
            topics = self.nodes[node]
            pages = max(1, -(-len(topics) // self.per_page))
            result = [{k: v for k, v in t.items() if k not in ("node", "member")} for t in self._page(topics, page)]
            return 200, {"success": True, "message": "Current token details",
                         "result": result,
                         "pagination": {"per_page": self.per_page, "total": len(topics), "pages": pages}}
        return 404, {"message": f"no route {path}"}

    def _page(self, topics: list[dict[str, Any]], page: int) -> list[dict[str, Any]]:
        start = (max(page, 1) - 1) * self.per_page
        return topics[start:start + self.per_page]

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str]) -> None:
        self._send_raw(h, status, json.dumps(body, ensure_ascii=False).encode("utf-8"), headers)

    @staticmethod
    def _send_raw(h: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str]) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Length", str(len(payload)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed crawler)
            pass


def topics_from_texts(texts: list[str], first_id: int = 1, node: str = "qna",
                      created: float = 1_767_000_000.0) -> list[dict[str, Any]]:
    """V2EX-shaped topics whose title is each text (ids and times counting up), for demos and tests."""
    return [{"id": first_id + i, "title": text, "content": "", "url": f"https://www.v2ex.com/t/{first_id + i}",
             "node": {"name": node, "title": node}, "created": int(created) + 60 * i, "replies": 0}
            for i, text in enumerate(texts)]
