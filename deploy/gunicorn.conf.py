"""Gunicorn settings for the lawclf API (``make serve``, the Docker image, Kubernetes).

    gunicorn -c deploy/gunicorn.conf.py "lawclf.serve:create_app()"

Sizing: every worker runs its own ONNX Runtime session with ``LAWCLF_ORT_THREADS``
intra-op threads, so workers x threads should equal the CPU cores; more only makes
them fight over the cores. Each worker's gthread pool holds many concurrent requests,
which mostly wait while the micro-batcher runs the model once for all of them.
Every value can be overridden from the environment (names below).
"""

from __future__ import annotations

import os

from lawclf.config import is_loopback


def _cpu_count() -> int:
    try:  # the cores this process may use (containers, taskset), not the host's
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _int_env(name: str, default: int, zero_is_auto: bool = False) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {raw!r}") from None
    if value == 0 and zero_is_auto:
        return default
    if value < 1:
        raise SystemExit(f"gunicorn.conf.py: {name} must be at least 1, got {value}")
    return value


cores = _cpu_count()
# Few workers, several ORT threads each: one worker per 4 cores (1 on a 2-core machine),
# so micro-batches stay large. WEB_CONCURRENCY is the conventional override.
workers = _int_env("WEB_CONCURRENCY", max(1, cores // 4))
ort_threads = _int_env("LAWCLF_ORT_THREADS", max(1, cores // workers), zero_is_auto=True)  # 0 = auto
# The app reads its thread count from the environment (ServeConfig.from_env).
os.environ["LAWCLF_ORT_THREADS"] = str(ort_threads)

# gthread plus a read deadline per request (GUNICORN_READ_TIMEOUT, default 10 s) and JSON for Gunicorn's own
# error pages: a slow or lying client holds a thread for at most that long (lawclf.gunicorn_worker).
worker_class = "lawclf.gunicorn_worker.DeadlineThreadWorker"
threads = _int_env("GUNICORN_THREADS", 32)  # concurrent requests per worker
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Bare Gunicorn reachable from other machines is open to slow and idle clients: each one holds a gthread
# thread until its read deadline (100 idle connections delayed /healthz by 15 s), which a buffering proxy
# absorbs. So binding off loopback needs GUNICORN_BEHIND_PROXY=1, the operator's word that Nginx (or
# another buffering proxy) is in front: docker-compose.yml sets it for the app behind its Nginx; a bare
# `docker run -p` of the image stops here with this message instead of serving exposed.
_host = bind.rsplit(":", 1)[0].strip("[]") if not bind.startswith(("unix:", "fd://")) else "127.0.0.1"
if not is_loopback(_host) and \
        os.environ.get("GUNICORN_BEHIND_PROXY", "").strip().lower() not in ("1", "true", "yes"):
    raise SystemExit(f"GUNICORN_BIND={bind}: Gunicorn alone must not face other machines (slow or idle clients hold "
                     "its threads). Put Nginx in front (deploy/docker-compose.yml, the Kubernetes sidecar) and set "
                     "GUNICORN_BEHIND_PROXY=1, or bind 127.0.0.1 for local use.")
# Each worker loads the app and the model itself. ONNX Runtime is not fork-safe: a session
# created in the master makes forked workers hang or abort, so no preload_app. A missing or
# corrupt model still stops start-up: the worker fails to boot with the app's message and
# Gunicorn exits with code 3 ("Worker failed to boot") instead of retrying forever.
preload_app = False
timeout = _int_env("GUNICORN_TIMEOUT", 60)  # a silent worker is restarted after this
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = _int_env("GUNICORN_KEEPALIVE", 5)
# A slow memory leak cannot grow forever; jitter avoids all workers restarting at once.
max_requests = _int_env("GUNICORN_MAX_REQUESTS", 100_000)
max_requests_jitter = max(1, max_requests // 10)
# The app writes one JSON line per request itself (lawclf.serve); no second access log.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Heartbeat files in memory when available (Docker's /dev/shm), else the temp dir.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "lawclf"
# No runtime control socket (gunicorn >= 24 puts one under $HOME, read-only in containers).
control_socket_disable = True


def when_ready(server):
    server.log.info("lawclf: %d worker(s) x %d ONNX Runtime thread(s), %d threads each, on %d core(s)",
                    workers, ort_threads, threads, cores)


def post_worker_init(worker):
    """Worker: load the model before accepting requests, so /readyz is honest and the first call is fast."""
    state = getattr(worker.wsgi, "extensions", {}).get("lawclf")
    if state is not None:
        state.ensure_loaded()
