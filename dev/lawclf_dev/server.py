"""Run the API in a background process and load it (tests, benchmarks, notebook 06)."""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from lawclf.config import ServeConfig
from lawclf_dev import CHECKOUT

#: Gunicorn settings the project ships (workers, threads, timeouts, logging).
GUNICORN_CONF = CHECKOUT / "deploy" / "gunicorn.conf.py"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """The API in a child process (Gunicorn, or Flask's dev server) for notebooks, tests and benchmarks.

    ``with BackgroundServer(model_dir) as srv: requests.post(srv.url + "/predict", ...)``;
    its stderr (the JSON log lines) goes to ``srv.log_path``. Works in Colab too.
    """

    def __init__(self, model_dir: str | os.PathLike[str], port: int = 0, host: str = "127.0.0.1",
                 server: str = "gunicorn", env: Optional[Mapping[str, str]] = None,
                 log_path: Optional[str | os.PathLike[str]] = None, startup_timeout: float = 60.0):
        self.host, self.port = host, port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.model_dir = str(model_dir)
        self.server = server
        self.extra_env = dict(env or {})
        self.log_path = Path(log_path) if log_path else Path(
            os.environ.get("TMPDIR", "/tmp")) / f"lawclf-serve-{self.port}.log"
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen] = None

    def command(self) -> list[str]:
        if self.server == "gunicorn":
            cmd = [sys.executable, "-m", "gunicorn"]
            if GUNICORN_CONF.exists():
                cmd += ["-c", str(GUNICORN_CONF)]
            else:  # an installed package without the checkout's deploy/ folder
                cmd += ["--worker-class", "gthread", "--threads", "16"]
            return cmd + ["--bind", f"{self.host}:{self.port}", "lawclf.serve:create_app()"]
        if self.server == "dev":
            return [sys.executable, "-m", "lawclf", "serve", "--host", self.host, "--port", str(self.port)]
        raise ValueError(f"server must be 'gunicorn' or 'dev', got {self.server!r}")

    def start(self) -> "BackgroundServer":
        env = {**os.environ, "LAWCLF_MODEL_DIR": self.model_dir, "PYTHONUNBUFFERED": "1", **self.extra_env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        atexit.register(self.stop)  # a notebook kernel that stops mid-way still stops its server
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server was not ready within {self.startup_timeout:.0f}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        """The JSON log lines written so far (other lines skipped)."""
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """Stop gracefully (SIGTERM), then kill; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_log_file", None) is not None:
            self._log_file.close()
        atexit.unregister(self.stop)
        return self.proc.returncode

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def config_env(cfg: ServeConfig) -> dict[str, str]:
    """``cfg`` as the ``LAWCLF_*`` environment variables :meth:`ServeConfig.from_env` reads back."""
    env = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        env[f"LAWCLF_{f.name.upper()}"] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


def load_test(url: str, texts: Sequence[str], concurrency: int = 4, n_requests: int = 100,
              time_limit_s: float = 60.0, path: str = "/predict") -> dict[str, Any]:
    """A bounded closed-loop load test: ``concurrency`` clients send ``n_requests`` in all.

    Each client keeps one HTTP/1.1 connection and sends its next request when the last
    answer arrives; the run stops early at ``time_limit_s``. Returns throughput
    (requests/s), latency percentiles (ms) and the count of errors (non-200 or failed).
    """
    import http.client
    import urllib.parse

    import numpy as np

    parts = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    counter = iter(range(n_requests))
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + time_limit_s

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = json.dumps({"content": texts[i % len(texts)]}, ensure_ascii=False).encode()
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                err = "" if ok else f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                ok, err = False, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                (latencies.append(elapsed) if ok else errors.append(err))
        conn.close()

    t_start = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(max(1, concurrency))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t_start
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {"concurrency": concurrency, "requests": len(latencies) + len(errors), "ok": len(latencies),
            "errors": len(errors), "error_kinds": sorted(set(errors)), "seconds": round(wall, 3),
            "throughput_rps": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "timed_out": len(latencies) + len(errors) < n_requests}



__all__ = ["free_port", "BackgroundServer", "config_env", "load_test"]
