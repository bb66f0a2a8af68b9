"""The HTTP API and demo page over the ONNX predictor (notebook 06, ``lawclf serve``).

``create_app(ServeConfig)`` builds a Flask app; Gunicorn runs it in production
(``deploy/gunicorn.conf.py``, ``make serve``), ``lawclf serve`` runs Flask's
development server. Routes::

    POST /predict        {"content": "..."} (or "text")    -> label, is_legal, score, threshold, model_version
    POST /predict/batch  {"texts": [...]}   (or "contents") -> {"results": [...], "count", "model_version"}
    GET  /healthz  alive   GET /readyz  model loaded   GET /version  model metadata
    GET  /         demo page                            GET /openapi.json  the API description

Every client error is a 4xx JSON ``{"error": {"code", "message"}}``; a server error is a
generic 500 JSON (the traceback goes to the log and, when ``SENTRY_DSN`` is set, to Sentry).
Each request writes one JSON log line (request id, method, path, status, latency, text
lengths; the text itself only with ``log_text``). Concurrent requests are grouped into
one predictor call by :class:`MicroBatcher`.

Nothing here imports torch: the server installs with ONNX Runtime alone.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import dataclasses
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, InternalServerError

from lawclf import __version__
from lawclf.config import REPO_ROOT, ServeConfig, add_config_args

log = logging.getLogger("lawclf.serve")

#: Field names accepted for one text and for a list of texts (``content`` is the original contract).
TEXT_FIELDS = ("content", "text")
BATCH_FIELDS = ("texts", "contents")
#: A client-supplied X-Request-ID is echoed only if it looks like an id (no log injection).
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Machine-readable codes for the HTTP errors Werkzeug raises itself.
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "too_many_requests"}
_EXT = "lawclf"
#: Model metadata that GET /version shows (the rest, e.g. training config with local paths, stays private).
PUBLIC_META_KEYS = ("labels", "max_len", "model_name", "version", "threshold", "threshold_choice", "test_metrics",
                    "opset", "inputs", "output", "files", "default_file", "optimized", "exported_at")


class ApiError(Exception):
    """A client error: becomes a 4xx JSON response ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --------------------------------------------------------------------------- validation

def parse_json_body(mimetype: str, body: bytes) -> Any:
    """Decode a request body that must be JSON; raise :class:`ApiError` (415/400) otherwise."""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        shown = mimetype or "none"
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be application/json (got {shown}).")
    if not body.strip():
        raise ApiError(400, "invalid_json", "The request body is empty; send a JSON object.")
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, "invalid_json", "The JSON body is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, over-long integers
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {_short(str(exc))}") from None


def validate_text(value: Any, field: str, max_chars: int) -> str:
    """Check one text: a non-empty, well-formed string of at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"'{field}' must be a string, got {_json_type(value)}.")
    if not value.strip():
        raise ApiError(400, "empty_text", f"'{field}' is empty; send the text to classify.")
    if len(value) > max_chars:
        raise ApiError(400, "text_too_long",
                       f"'{field}' has {len(value)} characters; the limit is {max_chars}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON "\ud800" escapes
        raise ApiError(400, "invalid_text", f"'{field}' contains invalid Unicode (a lone surrogate).") from None
    return value


def _pick_field(payload: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any]:
    present = [n for n in names if n in payload]
    if not present:
        raise ApiError(400, "missing_field", f"Send a JSON object with a '{names[0]}' field "
                                             f"(or '{names[1]}').")
    if len(present) > 1:
        raise ApiError(400, "ambiguous_field", f"Send either '{names[0]}' or '{names[1]}', not both.")
    return present[0], payload[present[0]]


def validate_single(payload: Any, max_chars: int) -> str:
    """The text of a ``POST /predict`` body ``{"content": "..."}`` (or ``{"text": "..."}``)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", f"The body must be a JSON object, got {_json_type(payload)}.")
    field, value = _pick_field(payload, TEXT_FIELDS)
    return validate_text(value, field, max_chars)


def validate_batch(payload: Any, max_chars: int, max_batch: int) -> list[str]:
    """The texts of a ``POST /predict/batch`` body ``{"texts": [...]}`` (or ``{"contents": [...]}``)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", f"The body must be a JSON object, got {_json_type(payload)}.")
    field, value = _pick_field(payload, BATCH_FIELDS)
    if not isinstance(value, list):
        raise ApiError(400, "invalid_field", f"'{field}' must be a list of strings, got {_json_type(value)}.")
    if not value:
        raise ApiError(400, "empty_batch", f"'{field}' is empty; send at least one text.")
    if len(value) > max_batch:
        raise ApiError(400, "batch_too_large", f"'{field}' has {len(value)} texts; the limit is {max_batch}.")
    return [validate_text(item, f"{field}[{i}]", max_chars) for i, item in enumerate(value)]


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# --------------------------------------------------------------------------- micro-batching

class MicroBatcher:
    """Groups concurrent requests into one predictor call.

    Each request puts its texts on a queue and waits on a future. One thread takes the
    first waiting job, then everything already queued, then waits up to ``wait_ms`` for
    more until ``max_size`` texts are collected, runs ``predict_many`` once and hands each
    request its slice of the results. Under load a batch forms while the previous one
    runs, so throughput approaches batch throughput; a lone request waits at most
    ``wait_ms``.

    The thread is started lazily in the process that uses it: Gunicorn forks workers
    after loading the app, and threads do not survive a fork.
    """

    def __init__(self, predict_many: Callable[[list[str]], list[dict]], max_size: int = 32,
                 wait_ms: float = 5.0):
        self._predict_many = predict_many
        self.max_size = max(1, int(max_size))
        self.wait_s = max(0.0, float(wait_ms)) / 1000.0
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Optional[tuple[list[str], Future]]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        #: Sizes (texts) of the latest batches run in this process (bounded: a server runs for months).
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)

    def submit(self, texts: list[str]) -> Future:
        """Queue ``texts``; the future resolves to their results (same order)."""
        self._ensure_running()
        fut: Future = Future()
        self._queue.put((list(texts), fut))
        return fut

    def predict(self, texts: list[str], timeout: Optional[float] = None) -> list[dict]:
        return self.submit(texts).result(timeout=timeout)

    @property
    def healthy(self) -> bool:
        """True unless the thread was started in this process and has died."""
        return self._thread is None or self._pid != os.getpid() or self._thread.is_alive()

    def close(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=5)
            self._thread = None

    def _ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's queue and thread are not ours
                self._queue = queue.Queue()
                self._pid = os.getpid()
                self.batch_sizes.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lawclf-microbatch", daemon=True)
                self._thread.start()

    def _collect(self, first: tuple[list[str], Future]) -> tuple[list[tuple[list[str], Future]], bool]:
        jobs, n = [first], len(first[0])
        deadline = time.monotonic() + self.wait_s
        while n < self.max_size:
            try:  # whatever is queued already, then whatever arrives before the deadline
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job[0])
        return jobs, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            jobs = [j for j in jobs if j[1].set_running_or_notify_cancel()]
            texts = [t for job_texts, _ in jobs for t in job_texts]
            try:
                results = self._predict_many(texts) if texts else []
                if len(results) != len(texts):
                    raise RuntimeError(f"predictor returned {len(results)} results for {len(texts)} texts")
            except BaseException as exc:  # every waiting request gets the error, the thread lives on
                for _, fut in jobs:
                    fut.set_exception(exc)
            else:
                self.batch_sizes.append(len(texts))
                start = 0
                for job_texts, fut in jobs:
                    fut.batch_size = len(texts)  # type: ignore[attr-defined]  # logged with the request
                    fut.set_result(results[start:start + len(job_texts)])
                    start += len(job_texts)
            if stop:
                return


# --------------------------------------------------------------------------- model holder

class ModelHolder:
    """The predictor of this process, reloaded if the process was forked after loading it.

    ONNX Runtime is not fork-safe: a child forked after a session was created hangs or
    aborts at exit. Gunicorn therefore loads the app in each worker (no ``preload_app``,
    deploy/gunicorn.conf.py); this holder still never hands a parent's session to a
    forked child (``get()`` reloads), and ``release()`` drops it.
    """

    def __init__(self, loader: Optional[Callable[[], Any]] = None, predictor: Any = None):
        if loader is None and predictor is None:
            raise ValueError("give a loader or a predictor")
        self._loader = loader
        self._lock = threading.Lock()
        self._predictor = predictor if predictor is not None else loader()  # type: ignore[misc]
        self._pid = os.getpid()
        self.meta: dict = dict(getattr(self._predictor, "meta", {}) or {})
        self.version: str = str(getattr(self._predictor, "version", "") or self.meta.get("version", ""))

    @property
    def loaded(self) -> bool:
        return self._predictor is not None and (self._loader is None or self._pid == os.getpid())

    def get(self) -> Any:
        if self.loaded:
            return self._predictor
        with self._lock:
            if not self.loaded:
                self._predictor = self._loader()  # type: ignore[misc]
                self._pid = os.getpid()
        return self._predictor

    def release(self) -> None:
        """Drop this process's predictor (only when it can be reloaded)."""
        if self._loader is not None:
            self._predictor = None

    def predict_many(self, texts: list[str]) -> list[dict]:
        return list(self.get().predict(list(texts)))


# --------------------------------------------------------------------------- logging

class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (or the event's fields), traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                                 "level": record.levelname, "logger": record.name}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


JsonFormatter.converter = time.gmtime  # type: ignore[assignment]


def configure_logging(level: str = "INFO") -> None:
    """Send ``lawclf.serve`` records to stderr as JSON lines (once per process)."""
    log.setLevel(level.upper())
    if not any(getattr(h, "_lawclf", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._lawclf = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False  # Gunicorn's root handlers would print each line twice


def init_sentry(cfg: ServeConfig) -> bool:
    """Initialise Sentry's Flask integration when a DSN is configured; returns whether it was."""
    if not cfg.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(dsn=cfg.sentry_dsn, integrations=[FlaskIntegration()], environment=cfg.sentry_environment,
                    release=f"lawclf@{__version__}", sample_rate=cfg.sentry_sample_rate,
                    traces_sample_rate=cfg.sentry_traces_sample_rate,
                    # No bodies, cookies, client IPs or stack-frame variables (they hold the
                    # texts): posts can be personal.
                    send_default_pii=False, max_request_body_size="never", include_local_variables=False)
    return True


# --------------------------------------------------------------------------- app

def _load_predictor(cfg: ServeConfig) -> Any:
    from lawclf.predict import Predictor  # ONNX Runtime + tokenizers, no torch

    return Predictor(cfg.model_dir, threads=cfg.ort_threads)


def read_examples(limit: int = 12) -> list[dict]:
    """Example questions for the demo page: the packaged probes, everyday and legal alternating.

    ``resources/probes.jsonl`` holds the tricky everyday questions (legal keywords, no
    legal question) and their legal counterparts; without it a small default set is used.
    """
    rows: list[dict] = []
    try:
        text = resources.files("lawclf").joinpath("resources/probes.jsonl").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        text = ""
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("text"), str) and len(row["text"].strip()) >= 6:
            label = row.get("label")
            rows.append({"text": row["text"], "label": label if label in (0, 1) else None,
                         "note": _KIND_NOTES.get(str(row.get("kind", "")), str(row.get("kind", "")))})
    if not rows:
        rows = list(DEFAULT_EXAMPLES)
    everyday = [r for r in rows if r["label"] != 1]
    legal = [r for r in rows if r["label"] == 1]
    mixed = [r for pair in zip(everyday, legal) for r in pair]
    mixed += everyday[len(legal):] + legal[len(everyday):]
    return mixed[:limit]


_KIND_NOTES = {"everyday-keyword": "易混淆：日常问题", "legal-counterpart": "法律咨询"}

#: Shown when lawclf/resources/probes.jsonl is absent; written for this project.
DEFAULT_EXAMPLES: tuple[dict, ...] = (
    {"text": "公司拖欠我三个月工资不发，我可以去劳动仲裁吗？需要准备哪些材料？", "label": 1, "note": "劳动纠纷"},
    {"text": "房东不退押金，合同上写的是提前一个月通知，我该怎么维权？", "label": 1, "note": "租房"},
    {"text": "离婚后孩子的抚养权一般判给谁？", "label": 1, "note": "婚姻家庭"},
    {"text": "周末去哪里爬山比较好？求推荐北京周边的路线。", "label": 0, "note": "日常"},
    {"text": "合租室友总是半夜打游戏，怎么委婉地提醒他？", "label": 0, "note": "易混淆：有纠纷但不是法律问题"},
    {"text": "律师这个职业以后还有前途吗？", "label": 0, "note": "易混淆：提到法律但不是咨询"},
)


def _demo_html(examples: list[dict], max_text_chars: int) -> str:
    page = resources.files("lawclf").joinpath("resources/demo.html").read_text(encoding="utf-8")
    # "<" escaped so no example can close the <script> element.
    data = json.dumps(examples, ensure_ascii=False).replace("<", "\\u003c").replace("&", "\\u0026")
    return page.replace("/*__EXAMPLES__*/[]", data).replace("__MAX_TEXT_CHARS__", str(int(max_text_chars)))


def _openapi_spec() -> dict:
    return json.loads(resources.files("lawclf").joinpath("resources/openapi.json").read_text(encoding="utf-8"))


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False)
    return Response(body, status=status, mimetype="application/json")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype="application/json")


class ServeState:
    """What the routes share; kept in ``app.extensions["lawclf"]``."""

    def __init__(self, cfg: ServeConfig, holder: ModelHolder, batcher: Optional[MicroBatcher], sentry: bool):
        self.cfg, self.holder, self.batcher, self.sentry = cfg, holder, batcher, sentry

    def predict(self, texts: list[str]) -> list[dict]:
        if self.batcher is not None:
            fut = self.batcher.submit(texts)
            try:
                results = fut.result(timeout=self.cfg.predict_timeout_s)
            except FutureTimeout:
                raise ApiError(503, "timeout", "The model is busy; try again shortly.") from None
            g.batch_size = getattr(fut, "batch_size", len(texts))
            return results
        g.batch_size = len(texts)
        return self.holder.predict_many(texts)

    def ensure_loaded(self) -> None:
        """Load the model in this process and run it once (Gunicorn's post_worker_init).

        ONNX Runtime's first run is several times slower than the next ones; a warm-up here
        keeps that off the first user's request.
        """
        self.holder.predict_many(["预热"])

    def release(self) -> None:
        self.holder.release()


def create_app(cfg: Optional[ServeConfig] = None, *, predictor: Any = None) -> Flask:
    """Build the Flask app; ``cfg`` defaults to :meth:`ServeConfig.from_env`.

    The model is loaded here, so a missing or corrupt model fails at start-up with
    :class:`lawclf.predict.ModelLoadError` (under Gunicorn the worker fails to boot and
    Gunicorn exits with code 3). ``predictor`` replaces the ONNX predictor (tests of the
    HTTP layer).
    """
    cfg = cfg or ServeConfig.from_env()
    configure_logging(cfg.log_level)
    if predictor is not None:
        holder = ModelHolder(predictor=predictor)
    else:
        try:
            holder = ModelHolder(loader=lambda: _load_predictor(cfg))
        except Exception as exc:
            log.critical("cannot load the model from %s: %s", cfg.model_dir, exc)
            raise
    batcher = (MicroBatcher(holder.predict_many, cfg.microbatch_max_size, cfg.microbatch_wait_ms)
               if cfg.microbatch else None)
    sentry = init_sentry(cfg)
    examples = read_examples()
    demo_page = _demo_html(examples, cfg.max_text_chars)
    spec = _openapi_spec()

    app = Flask("lawclf.serve")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    state = ServeState(cfg, holder, batcher, sentry)
    app.extensions[_EXT] = state
    origins = [o.strip() for o in cfg.cors_origins.split(",") if o.strip()]
    if origins:  # no list, no CORS headers at all: browsers then refuse cross-origin calls
        from flask_cors import CORS

        CORS(app, origins=origins, methods=["GET", "POST", "OPTIONS"], allow_headers=["Content-Type", "X-Request-ID"],
             expose_headers=["X-Request-ID"], max_age=600)

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")
        g.request_id = rid if _REQUEST_ID_RE.match(rid) else uuid.uuid4().hex
        g.text_chars = None
        g.texts = None

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-store")
        fields: dict[str, Any] = {
            "event": "request", "request_id": g.get("request_id"), "method": request.method,
            "path": request.path, "status": response.status_code,
            "latency_ms": round((time.perf_counter() - g.get("t0", time.perf_counter())) * 1000, 2),
        }
        if g.get("text_chars") is not None:
            fields["text_chars"] = g.text_chars
        if g.get("batch_size") is not None:  # texts in the model call that served this request
            fields["batch_size"] = g.batch_size
        if cfg.log_text and g.get("texts") is not None:
            fields["text"] = g.texts
        log.info("request", extra={"fields": fields})
        return response

    def _body_json() -> Any:
        # get_data enforces MAX_CONTENT_LENGTH (413) even without a Content-Length header.
        return parse_json_body(request.mimetype, request.get_data(cache=True))

    @app.post("/predict")
    def predict_one() -> Response:
        text = validate_single(_body_json(), cfg.max_text_chars)
        g.text_chars, g.texts = len(text), text
        result = dict(state.predict([text])[0])
        result["model_version"] = holder.version
        return _json(result)

    @app.post("/predict/batch")
    def predict_batch() -> Response:
        texts = validate_batch(_body_json(), cfg.max_text_chars, cfg.max_batch)
        g.text_chars, g.texts = [len(t) for t in texts], texts
        results = state.predict(texts)
        return _json({"results": results, "count": len(results), "model_version": holder.version})

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        problems = []
        if not holder.loaded:
            problems.append("model not loaded in this worker")
        if batcher is not None and not batcher.healthy:
            problems.append("micro-batching thread stopped")
        if problems:
            return _json({"status": "not_ready", "problems": problems}, 503)
        return _json({"status": "ready", "model_version": holder.version})

    @app.get("/version")
    def version() -> Response:
        public = {k: v for k, v in holder.meta.items() if k in PUBLIC_META_KEYS}  # no training paths
        return _json({"model_version": holder.version, "model": public, "lawclf": __version__,
                      "microbatch": cfg.microbatch, "max_text_chars": cfg.max_text_chars,
                      "max_batch": cfg.max_batch})

    @app.get("/")
    def demo() -> Response:
        resp = Response(demo_page, mimetype="text/html")
        # Everything is inline and calls only this origin.
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return resp

    @app.get("/openapi.json")
    def openapi() -> Response:
        return _json(spec)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status >= 500:
            return _server_error(exc)
        messages = {404: f"No route {request.path}; see GET /openapi.json.",
                    405: f"{request.method} is not allowed on {request.path}.",
                    413: f"The request body is larger than {cfg.max_body_bytes} bytes."}
        resp = _error(status, _HTTP_CODES.get(status, "http_error"), messages.get(status, exc.description or ""))
        if status == 405 and exc.get_headers():
            resp.headers.update({k: v for k, v in exc.get_headers() if k == "Allow"})
        return resp

    @app.errorhandler(InternalServerError)
    def _server_error(exc: Exception) -> Response:
        # Flask has already logged the traceback (app.logger is lawclf.serve) and told Sentry.
        original = getattr(exc, "original_exception", None)
        if original is not None and not isinstance(original, HTTPException):
            log.debug("server error %s", type(original).__name__)
        return _error(500, "internal_error", "Internal server error; it has been logged. "
                                             f"Request id: {g.get('request_id', '')}.")

    log.info("ready", extra={"fields": {"event": "startup", "model_dir": cfg.model_dir,
                                        "model_version": holder.version, "microbatch": cfg.microbatch,
                                        "ort_threads": cfg.ort_threads, "cors_origins": origins,
                                        "sentry": sentry}})
    return app


# --------------------------------------------------------------------------- background server

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


#: deploy/gunicorn.conf.py when running from a checkout (absent from an installed wheel).
GUNICORN_CONF = REPO_ROOT / "deploy" / "gunicorn.conf.py"


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
        getattr(self, "_log_file", None) and self._log_file.close()
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
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
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
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
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


# --------------------------------------------------------------------------- CLI

def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf serve``: Flask's development server (use Gunicorn in production: ``make serve``)."""
    parser = argparse.ArgumentParser(prog="lawclf serve", description=cli.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    add_config_args(parser, ServeConfig)
    try:
        env_cfg = ServeConfig.from_env()
    except ValueError as exc:
        print(f"lawclf serve: {exc}", file=sys.stderr)
        return 2
    parser.set_defaults(**dataclasses.asdict(env_cfg))  # flags > LAWCLF_* variables > defaults
    args = parser.parse_args(argv)
    cfg = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
    try:
        app = create_app(cfg)
    except Exception as exc:  # a missing or corrupt model: a clear message, no traceback
        print(f"lawclf serve: cannot start: {exc}", file=sys.stderr)
        return 1
    # SIGTERM (docker stop, BackgroundServer.stop) ends the dev server cleanly, exit code 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app.run(host=args.host, port=args.port, threaded=True)
    return 0

