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
one predictor call by :class:`lawclf.microbatch.MicroBatcher`; request bodies are checked by
:mod:`lawclf.validation`. (Starting the server in the background for tests and notebooks:
:mod:`lawclf_dev.server`.)

Nothing here imports torch: the server installs with ONNX Runtime alone.

A little over ~400 lines: the model holder, the JSON logging and the routes of one app; the error
envelope and common handlers are in :mod:`lawclf.http`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from importlib import resources
from typing import Any, Callable, Optional, Sequence

from flask import Flask, Response, g, request

from lawclf import __version__
from lawclf.config import ServeConfig, add_config_args, config_from_args
from lawclf.http import error_response, install_common_handlers, json_response
from lawclf.microbatch import MicroBatcher, Overloaded
from lawclf.validation import ApiError, parse_json_body, validate_batch, validate_single

log = logging.getLogger("lawclf.serve")

#: A client-supplied X-Request-ID is echoed only if it looks like an id (no log injection).
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_EXT = "lawclf"
#: Model metadata that GET /version shows (the rest, e.g. training config with local paths, stays private).
PUBLIC_META_KEYS = ("labels", "max_len", "model_name", "version", "threshold", "threshold_choice", "test_metrics",
                    "opset", "inputs", "output", "files", "default_file", "optimized", "exported_at", "truncation",
                    "ngram", "combine")


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


JsonFormatter.converter = time.gmtime


def configure_logging(level: str = "INFO") -> None:
    """Send ``lawclf.serve`` records to stderr as JSON lines (once per process)."""
    log.setLevel(level.upper())
    if not any(getattr(h, "_lawclf", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._lawclf = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False  # Gunicorn's root handlers would print each line twice


def sentry_privacy_options(sdk_version: str) -> dict[str, Any]:
    """What Sentry may collect, in the option names of the installed SDK: no bodies, cookies,
    client IPs, headers (SDK 3), query strings or stack-frame variables (they hold the texts; posts can be personal).

    Sentry SDK 3 replaced `send_default_pii` and `include_local_variables` with one
    `data_collection` option; passing the old names to it is an error.
    """
    if int(sdk_version.split(".", 1)[0]) >= 3:
        off = {"mode": "off"}
        return {"data_collection": {"user_info": False, "cookies": off, "http_headers": {"request": off},
                                    "http_bodies": [], "url_query_params": off,
                                    "stack_frame_variables": False}}
    return {"send_default_pii": False, "include_local_variables": False}


def init_sentry(cfg: ServeConfig) -> bool:
    """Initialise Sentry's Flask integration when a DSN is configured; returns whether it was."""
    if not cfg.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(dsn=cfg.sentry_dsn, integrations=[FlaskIntegration()], environment=cfg.sentry_environment,
                    release=f"lawclf@{__version__}", sample_rate=cfg.sentry_sample_rate,
                    traces_sample_rate=cfg.sentry_traces_sample_rate, max_request_body_size="never",
                    **sentry_privacy_options(sentry_sdk.VERSION))
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
    from lawclf.probes import load_probes

    rows = [{"text": p["text"], "label": p["label"] if p["label"] in (0, 1) else None,
             "note": _KIND_NOTES.get(p["kind"], p["kind"])}
            for p in load_probes() if len(p["text"].strip()) >= 6]
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


def read_body(req: Any, limit: int) -> bytes:
    """The request body, or a 413 :class:`ApiError` when it is larger than ``limit`` bytes.

    With a Content-Length, Werkzeug enforces ``MAX_CONTENT_LENGTH`` itself. A chunked body has
    none, and Werkzeug then silently cuts the stream at the limit (a truncated JSON could even
    parse), so it is read here from the server's de-chunked input, one byte past the limit.
    """
    if req.content_length is not None:
        return req.get_data(cache=True)
    raw = req.environ.get("wsgi.input")
    if raw is None:
        return b""
    try:
        data = raw.read(limit + 1)
    except Exception as exc:  # the client's fault, not a server error (and no Sentry event)
        if not _is_framing_error(exc):
            raise
        raise ApiError(400, "bad_chunked_body", "The chunked request body is malformed or ended early "
                                                f"({exc.__class__.__name__}).") from None
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
    return data


def _is_framing_error(exc: BaseException) -> bool:
    """A broken chunked encoding (bad size line, missing CRLF, the client gone mid-body), as Gunicorn's
    parser or Werkzeug's development server reports it."""
    if isinstance(exc, (OSError, EOFError)) or type(exc).__name__ == "ClientDisconnected":
        return True
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:  # the development server: Werkzeug's de-chunker raises ValueError
        return isinstance(exc, ValueError)
    return isinstance(exc, (ParseException, ValueError))


_error = error_response
_json = json_response


class ServeState:
    """What the routes share; kept in ``app.extensions["lawclf"]``."""

    def __init__(self, cfg: ServeConfig, holder: ModelHolder, batcher: Optional[MicroBatcher], sentry: bool):
        self.cfg, self.holder, self.batcher, self.sentry = cfg, holder, batcher, sentry

    def predict(self, texts: list[str]) -> list[dict]:
        if self.batcher is not None:
            try:
                fut = self.batcher.submit(texts)
            except Overloaded:  # admission control: refuse at once rather than queue work nobody waits for
                raise ApiError(503, "overloaded", "The server is at capacity; retry in a moment.",
                               headers={"Retry-After": "1"}) from None
            try:
                results = fut.result(timeout=self.cfg.predict_timeout_s)
            except FutureTimeout:
                fut.cancel()  # still queued: dropped before it reaches the model
                raise ApiError(503, "timeout", "The model is busy; try again shortly.",
                               headers={"Retry-After": "1"}) from None
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
    batcher = (MicroBatcher(holder.predict_many, cfg.microbatch_max_size, cfg.microbatch_wait_ms, cfg.max_queue)
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
        if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
            # Flask's automatic OPTIONS answer is an empty text/html body: say the allowed methods in JSON.
            allow = [m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()]
            response.set_data(json.dumps({"allow": allow}))
            response.mimetype = "application/json"
        response.headers["X-Request-ID"] = g.get("request_id", "")
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
        return parse_json_body(request.mimetype, read_body(request, cfg.max_body_bytes))

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
        resp = _error(exc.status, exc.code, exc.message)
        resp.headers.update(exc.headers)
        return resp

    def _message(status: int) -> str:
        return {404: f"No route {request.path}; see GET /openapi.json.",
                405: f"{request.method} is not allowed on {request.path}.",
                413: f"The request body is larger than {cfg.max_body_bytes} bytes."}.get(status, "")

    def _server_error(exc: Exception) -> str:
        # Flask has already logged the traceback (app.logger is lawclf.serve) and told Sentry.
        log.debug("server error %s", type(exc).__name__)
        return f"Internal server error; it has been logged. Request id: {g.get('request_id', '')}."

    install_common_handlers(app, _message, _server_error)

    log.info("ready", extra={"fields": {"event": "startup", "model_dir": cfg.model_dir,
                                        "model_version": holder.version, "microbatch": cfg.microbatch,
                                        "ort_threads": cfg.ort_threads, "cors_origins": origins,
                                        "sentry": sentry}})
    return app


# --------------------------------------------------------------------------- CLI

def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf serve``: Flask's development server (use Gunicorn in production: ``make serve``)."""
    parser = argparse.ArgumentParser(prog="lawclf serve", description=cli.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    add_config_args(parser, ServeConfig)
    args = parser.parse_args(argv)
    try:  # flags > LAWCLF_* variables > --config file > defaults, as every stage
        cfg = config_from_args(ServeConfig, args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"lawclf serve: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(cfg)
    except Exception as exc:  # a missing or corrupt model: a clear message, no traceback
        print(f"lawclf serve: cannot start: {exc}", file=sys.stderr)
        return 1
    # SIGTERM (docker stop, BackgroundServer.stop) ends the dev server cleanly, exit code 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app.run(host=args.host, port=args.port, threaded=True)
    return 0

