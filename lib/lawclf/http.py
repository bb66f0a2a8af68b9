"""The HTTP layer both web apps share: the prediction API (:mod:`lawclf.serve`) and the review page
(:mod:`lawclf.screen.review`).

One JSON error envelope for every answer that is not a success, ``{"error": {"code", "message"}}``, with
one table of codes (also used by the Gunicorn worker and mirrored by the Nginx configuration), the
security headers every response carries, and the handlers that turn Werkzeug's HTML error pages and
unexpected exceptions into that envelope. Each app adds only its own messages and routes.

Flask is imported where it is used, so the Gunicorn worker can read :data:`ERROR_CODES` without it.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional

#: Machine-readable code of each HTTP error status (what a client can branch on).
ERROR_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "request_timeout", 413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
    429: "too_many_requests", 431: "headers_too_large", 500: "internal_error", 503: "unavailable",
}
#: Every response of both apps: no MIME sniffing, no caching of answers about people's posts.
BASE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def error_code(status: int, reason: str = "") -> str:
    """The code for ``status`` (a reason phrase in snake case for a status the table lacks)."""
    return ERROR_CODES.get(status, reason.lower().replace(" ", "_") or "error")


def error_body(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False)


def error_response(status: int, code: str, message: str, headers: Optional[Mapping[str, str]] = None):
    """A Flask ``Response`` carrying the envelope."""
    from flask import Response

    resp = Response(error_body(code, message), status=status, mimetype="application/json")
    resp.headers.update(dict(headers or {}))
    return resp


def json_response(payload: Any, status: int = 200):
    """A JSON success; ``allow_nan=False``: a NaN becomes a server error, never invalid JSON on the wire."""
    from flask import Response

    return Response(json.dumps(payload, ensure_ascii=False, allow_nan=False), status=status,
                    mimetype="application/json")


def install_common_handlers(app, messages: Callable[[int], str],
                            on_server_error: Callable[[Exception], str]) -> None:
    """Register the handlers both apps need:

    * every Werkzeug HTTP error (404, 405 with its ``Allow`` header, 413, …) as the envelope, its message
      from ``messages(status)`` (empty: Werkzeug's own description);
    * every unexpected exception as a 500 whose message ``on_server_error(exc)`` gives; the handler is on
      ``InternalServerError``, so Flask has logged the traceback and sent ``got_request_exception`` (what
      Sentry listens to) before it runs, and the answer never carries a traceback;
    * :data:`BASE_HEADERS` on every response (an app's own value, e.g. a page's CSP, is kept).
    """
    from werkzeug.exceptions import HTTPException, InternalServerError

    def http_error(exc: HTTPException):
        status = exc.code or 500
        if status >= 500:
            return server_error(exc)
        resp = error_response(status, error_code(status, exc.name or ""), messages(status) or exc.description or "")
        if status == 405:
            resp.headers.update({k: v for k, v in exc.get_headers() if k == "Allow"})
        return resp

    def server_error(exc: Exception):
        original = getattr(exc, "original_exception", None)
        if isinstance(original, HTTPException):
            return http_error(original)
        return error_response(500, "internal_error", on_server_error(original or exc))

    def base_headers(resp):
        for key, value in BASE_HEADERS.items():
            resp.headers.setdefault(key, value)
        return resp

    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(InternalServerError, server_error)
    # The JSON 500 in test clients (``app.testing``) too: what a test sees is what a browser gets.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.after_request(base_headers)


__all__ = ["ERROR_CODES", "BASE_HEADERS", "error_code", "error_body", "error_response", "json_response",
           "install_common_handlers"]
