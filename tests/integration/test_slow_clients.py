"""Bare Gunicorn (as `docker run -p` exposes it) against slow, lying and malformed clients, on loopback.

Each case is bounded in time: a client that trickles bytes or announces a body it never
sends holds a thread for at most GUNICORN_READ_TIMEOUT (2 s here) and gets a JSON 408;
/healthz keeps answering while every thread is under attack; Gunicorn's own errors are JSON.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest
from _serve_fixtures import serve_model_dir  # noqa: F401 (pytest fixture)

pytestmark = pytest.mark.integration

READ_TIMEOUT = 2
THREADS = 4


@pytest.fixture(scope="module")
def small_server(serve_model_dir, tmp_path_factory):  # noqa: F811
    from lawclf_dev.server import BackgroundServer

    log = tmp_path_factory.mktemp("slow") / "server.log"
    server = BackgroundServer(serve_model_dir, log_path=log,
                              env={"GUNICORN_READ_TIMEOUT": str(READ_TIMEOUT), "GUNICORN_THREADS": str(THREADS)})
    server.start()
    yield server
    server.stop()


def _connect(server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT + 10)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def _healthz_seconds(server) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(server.url + "/healthz", timeout=READ_TIMEOUT + 5) as resp:
        assert resp.status == 200
    return time.monotonic() - t0


def test_clients_trickling_bytes_cannot_freeze_the_worker(small_server):
    stop = threading.Event()
    answers: list[bytes] = []

    def slowloris(part: str) -> None:
        sock = _connect(small_server)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
        data = head + b'{"content": "' if part == "body" else head
        step = 1 if part == "headers" else len(head)
        sent = 0
        try:
            while not stop.is_set() and sent < len(data):
                sock.sendall(data[sent:sent + step])
                sent += step
                time.sleep(0.3 if part == "headers" else 0)
            while not stop.is_set():  # then one byte now and then, never finishing
                sock.sendall(b"x")
                time.sleep(0.5)
        except OSError:  # the server closed the connection: what we want
            pass
        answers.append(_read_all(sock))
        sock.close()

    attackers = [threading.Thread(target=slowloris, args=("headers" if i % 2 else "body",), daemon=True)
                 for i in range(THREADS * 2)]
    t0 = time.monotonic()
    for t in attackers:
        t.start()
    time.sleep(0.5)
    # Every thread is taken by an attacker now; within the read deadline they are all let go.
    assert _healthz_seconds(small_server) < READ_TIMEOUT * 3
    for t in attackers:
        t.join(timeout=READ_TIMEOUT * 4)
    stop.set()
    assert not any(t.is_alive() for t in attackers), "a trickling client was held longer than the read deadline"
    assert time.monotonic() - t0 < READ_TIMEOUT * 5
    timed_out = [a for a in answers if a]
    assert timed_out, "no client got an answer"
    for raw in timed_out:
        status, body = _status_and_json(raw)
        assert status == 408 and body["error"]["code"] == "request_timeout"


def test_a_content_length_larger_than_the_body_cannot_hold_a_thread(small_server):
    socks = []
    for _ in range(THREADS + 2):
        sock = _connect(small_server)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"content\": \"x\"}")
        socks.append(sock)
    t0 = time.monotonic()
    for sock in socks:
        status, body = _status_and_json(_read_all(sock))
        assert status == 408, body
        sock.close()
    assert time.monotonic() - t0 < READ_TIMEOUT * 4
    assert _healthz_seconds(small_server) < 2


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),            # over limit_request_line
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431),
    (b"NOT-HTTP\r\n\r\n", 400),
])
def test_gunicorns_own_errors_are_json(small_server, request_bytes, status):
    sock = _connect(small_server)
    sock.sendall(request_bytes)
    got, body = _status_and_json(_read_all(sock))
    sock.close()
    assert got == status and body["error"]["code"] and body["error"]["message"]


CHUNKED = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("body, close_early", [
    (b"zz\r\n{}\r\n0\r\n\r\n", False),                       # a size that is not hex
    (b"2\r\n{}0\r\n\r\n", False),                            # the chunk's CRLF missing
    (b"20\r\n{\"content\": \"abc", True),                    # the client closes mid-chunk
])
def test_a_malformed_chunked_body_is_a_json_400_without_a_traceback(small_server, body, close_early):
    before = small_server.log_path.read_text(encoding="utf-8", errors="replace")
    sock = _connect(small_server)
    sock.sendall(CHUNKED + body)
    if close_early:
        sock.shutdown(socket.SHUT_WR)  # half-close: the server sees the end of the body, we can still read
    got, answer = _status_and_json(_read_all(sock))
    sock.close()
    assert got == 400 and answer["error"]["code"] == "bad_chunked_body", answer
    time.sleep(0.3)
    log = small_server.log_path.read_text(encoding="utf-8", errors="replace")[len(before):]
    assert "Traceback" not in log and '"status": 500' not in log, log[-2000:]
