"""A Gunicorn gthread worker that a slow or lying client cannot hold, and that answers its own errors in JSON.

``deploy/gunicorn.conf.py`` selects it (``worker_class``). Two things differ from gthread:

* **A read deadline per request.** Reading one request — request line, headers and body —
  must finish within ``GUNICORN_READ_TIMEOUT`` seconds (default 10). A client that sends a
  byte every few seconds, or announces a Content-Length it never sends, gets a JSON 408 and
  its connection closed when the deadline passes, so it holds a thread for at most that
  long. Plain gthread waits for each byte without limit (its ``timeout`` only watches the
  worker's heartbeat), so 32 such clients froze every thread, ``/healthz`` included.
* **JSON for Gunicorn's own errors.** Gunicorn answers a malformed request line, a line
  over ``limit_request_line`` (414) or too many or too large headers (431, 400) itself,
  before the app runs, with an HTML page. Here the same statuses come back as
  ``{"error": {"code": ..., "message": ...}}`` like every error of the app.

Behind Nginx (``deploy/nginx.conf``) the proxy buffers whole requests, so none of this is
reached; it matters where Gunicorn is exposed directly (``docker run -p``, compose).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, NoReturn

from gunicorn import util
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker

from lawclf.http import error_body, error_code

READ_TIMEOUT_ENV = "GUNICORN_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT_S = 10.0
#: Sending a response may take this long per call (a client that stops reading).
WRITE_TIMEOUT_S = 30.0

def json_error_body(status: int, reason: str, message: str) -> bytes:
    """The body every error of the stack uses: ``{"error": {"code": ..., "message": ...}}``."""
    return error_body(error_code(status, reason), " ".join(str(message).split()) or reason).encode("utf-8")


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``, which writes an HTML page."""
    body = json_error_body(status_int, reason, mesg)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def read_timeout_from_env() -> float:
    raw = os.environ.get(READ_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_READ_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{READ_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{READ_TIMEOUT_ENV} must be positive, got {value}")
    return value


class DeadlineSocket:
    """A socket whose reads share one deadline per request; everything else is the socket's own.

    When the deadline passes, the client gets a JSON 408, the socket stops sending, and the
    read raises ``NoMoreData`` so Gunicorn closes the connection."""

    def __init__(self, sock: socket.socket, read_timeout: float):
        self._sock = sock
        self._read_timeout = read_timeout
        self._deadline = time.monotonic() + read_timeout
        self._timed_out = False

    def start_request(self) -> None:
        self._deadline = time.monotonic() + self._read_timeout

    def _expire(self) -> NoReturn:
        if not self._timed_out:
            self._timed_out = True
            try:
                self._sock.settimeout(1.0)
                self._sock.sendall(_timeout_response(self._read_timeout))
                self._sock.shutdown(socket.SHUT_WR)  # whatever else Gunicorn writes goes nowhere (EPIPE)
            except OSError:
                pass
        raise NoMoreData(b"")

    def recv(self, bufsize: int, *flags: int) -> bytes:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or self._timed_out:
            self._expire()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(bufsize, *flags)
        except (socket.timeout, BlockingIOError):
            self._expire()

    def send(self, data: bytes, *flags: int) -> int:
        self._sock.settimeout(WRITE_TIMEOUT_S)
        return self._sock.send(data, *flags)

    def sendall(self, data: bytes, *flags: int) -> None:
        self._sock.settimeout(WRITE_TIMEOUT_S)
        self._sock.sendall(data, *flags)

    def __getattr__(self, name: str) -> Any:  # fileno, setblocking, close, getpeername, ...
        return getattr(self._sock, name)


def _timeout_response(read_timeout: float) -> bytes:
    body = json_error_body(408, "Request Timeout",
                           f"the request was not received within {read_timeout:g} s; send it again")
    return (f"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


class DeadlineThreadWorker(ThreadWorker):
    """gthread with a per-request read deadline and JSON error pages (see the module docstring)."""

    def init_process(self) -> None:
        self.read_timeout = read_timeout_from_env()
        util.write_error = write_json_error  # Gunicorn's own 400/414/431 pages, in this worker process
        super().init_process()

    def handle(self, conn: Any) -> Any:
        if not isinstance(conn.sock, DeadlineSocket) and not self.cfg.is_ssl:  # TLS wraps the raw socket
            conn.sock = DeadlineSocket(conn.sock, self.read_timeout)
        if isinstance(conn.sock, DeadlineSocket):
            conn.sock.start_request()  # each request on a kept-alive connection gets the full time
        return super().handle(conn)  # gthread itself catches NoMoreData and socket errors
