"""The review page and the export that feeds corrections back into training.

``create_review_app(cfg)`` is a small Flask app: one self-contained HTML page (no external assets)
over a JSON API.

* ``GET /api/posts?queue=flagged|uncertain|reviewed&source=&date=YYYY-MM-DD&limit=&offset=`` (``has_more``: page on)
  ``flagged``: posts the current model judged legal, newest first (``date`` = the day they were
  scored, server-local). ``uncertain``: unreviewed posts whose score is within ``uncertain_band``
  of the threshold, nearest first: the clicks that teach the next model most.
* ``POST /api/reviews`` ``{"post_id": 12, "label": 1}`` (1 = 是法律咨询, 0 = 不是): stored with the
  reviewer (the basic-auth user name, else ``reviewer`` in the body) and the time; every click is kept.
* ``GET /healthz``.

Off loopback the app needs a token (basic-auth password, any user name, or ``Authorization: Bearer``);
POSTs must be JSON, which a cross-site form cannot send, so a logged-in browser cannot be made to review.
Requests must name an allowed host (:func:`host_allowed`: loopback names, ``review_allowed_hosts``):
a page that rebinds its own DNS name to 127.0.0.1 sends its own name as ``Host`` and ``Origin``
and gets a 403, so a website the reviewer visits cannot write reviews. Every error is JSON
``{"error": {"code", "message"}}``, 500 included.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any, Optional

import sqlalchemy as sa

from lawclf.config import ConfigError, ScreenConfig, is_loopback
from lawclf.screen.job import open_db, post_text, post_view
from lawclf.screen.store import as_utc, posts, screen_passes, screen_reviews, screen_scores, utcnow

QUEUES = ("flagged", "uncertain", "reviewed")
MAX_LIMIT = 500
#: Post ids are 64-bit database integers: anything outside is a bad request, not a server error.
MAX_POST_ID = 2**63 - 1
#: Colab's kernel proxy (notebook 07 shows the page through it): names only Google can serve.
COLAB_PROXY_SUFFIXES = (".colab.dev", ".colab.googleusercontent.com")


def review_token(cfg: ScreenConfig) -> str:
    return cfg.review_token or os.environ.get("LAWCLF_REVIEW_TOKEN", "")


def check_exposure(cfg: ScreenConfig) -> None:
    """Refuse to serve reviews off loopback without a token."""
    if not is_loopback(cfg.review_host) and not review_token(cfg):
        raise ConfigError(f"ScreenConfig.review_host: {cfg.review_host!r} is reachable from other machines; "
                          "set review_token (or LAWCLF_REVIEW_TOKEN) to protect the review page")


def _hostname(value: str) -> str:
    """``"Example.org:8010"`` / ``"[::1]:8010"`` / ``"https://x.org"`` -> ``"example.org"`` / ``"::1"`` / ``"x.org"``."""
    try:
        return (urllib.parse.urlsplit(value if "//" in value else "//" + value).hostname or "").rstrip(".")
    except ValueError:
        return ""


def host_allowed(hostname: str, cfg: ScreenConfig, any_host: bool = False) -> bool:
    """Whether the review page answers to ``hostname``: a loopback name or address, ``review_host``
    itself (when it is a name or a specific address), a name in ``review_allowed_hosts``
    (``*.example.org`` matches its subdomains), Colab's proxy when running in Colab, or any name
    when ``any_host`` (a token is set and no names are configured)."""
    if not hostname:
        return False
    if is_loopback(hostname):
        return True
    configured = [h.strip().lower().rstrip(".") for h in cfg.review_allowed_hosts.split(",") if h.strip()]
    if any_host and not configured:
        return True
    if cfg.review_host not in ("0.0.0.0", "::", "") and hostname == cfg.review_host.lower():
        return True
    for name in configured:
        if hostname == name or (name.startswith("*.") and hostname.endswith(name[1:])):
            return True
    from lawclf.colab import in_colab

    return in_colab() and hostname.endswith(COLAB_PROXY_SUFFIXES)


def current_version(conn: sa.engine.Connection) -> Optional[str]:
    """The model version of the newest pass (the one whose scores the page shows)."""
    return conn.execute(sa.select(screen_passes.c.model_version).order_by(screen_passes.c.id.desc()).limit(1)).scalar()


def _latest_reviews(post_ids: list[int], conn: sa.engine.Connection) -> dict[int, dict[str, Any]]:
    if not post_ids:
        return {}
    rows = conn.execute(sa.select(screen_reviews).where(screen_reviews.c.post_id.in_(post_ids))
                        .order_by(screen_reviews.c.id)).mappings().all()
    return {r["post_id"]: {"label": r["label"], "reviewer": r["reviewer"],
                           "reviewed_at": as_utc(r["reviewed_at"]).isoformat()} for r in rows}  # newest wins


def list_posts(conn: sa.engine.Connection, cfg: ScreenConfig, queue: str, source: str = "",
               day: Optional[dt.date] = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """One page of a queue: ``limit`` posts from ``offset``, and ``has_more`` when the queue goes on."""
    version = current_version(conn)
    if version is None:
        return {"model_version": None, "queue": queue, "posts": [], "offset": offset, "has_more": False}
    reviewed = sa.select(screen_reviews.c.post_id)
    q = (sa.select(posts.c.id, posts.c.source, posts.c.external_id, posts.c.title, posts.c.body, posts.c.node,
                   posts.c.created, screen_scores.c.score, screen_scores.c.threshold, screen_scores.c.is_legal,
                   screen_scores.c.scored_at)
         .join(screen_scores, screen_scores.c.post_id == posts.c.id)
         .where(screen_scores.c.model_version == version))
    if source:
        q = q.where(posts.c.source == source)
    if day is not None:
        start = dt.datetime.combine(day, dt.time()).astimezone(dt.timezone.utc)
        q = q.where(screen_scores.c.scored_at >= start, screen_scores.c.scored_at < start + dt.timedelta(days=1))
    if queue == "flagged":
        q = q.where(screen_scores.c.is_legal.is_(True)).order_by(posts.c.created.desc(), posts.c.id.desc())
    elif queue == "uncertain":
        distance = sa.func.abs(screen_scores.c.score - screen_scores.c.threshold)
        q = q.where(distance <= cfg.uncertain_band, posts.c.id.not_in(reviewed)).order_by(distance, posts.c.id)
    else:
        q = q.where(posts.c.id.in_(reviewed)).order_by(posts.c.id.desc())
    rows = conn.execute(q.limit(limit + 1).offset(offset)).mappings().all()
    has_more, rows = len(rows) > limit, rows[:limit]
    reviews = _latest_reviews([r["id"] for r in rows], conn)
    out = [{**post_view(cfg, r, as_utc(r["created"])), "threshold": float(r["threshold"]),
            "is_legal": bool(r["is_legal"]), "review": reviews.get(r["id"])} for r in rows]
    sources = conn.execute(sa.select(posts.c.source).distinct().order_by(posts.c.source)).scalars().all()
    return {"model_version": version, "queue": queue, "posts": out, "sources": list(sources), "offset": offset,
            "has_more": has_more}


def add_review(conn: sa.engine.Connection, post_id: int, label: int, reviewer: str) -> dict[str, Any]:
    version = current_version(conn)
    score = conn.execute(sa.select(screen_scores.c.score).where(screen_scores.c.post_id == post_id,
                                                                screen_scores.c.model_version == version)).scalar()
    now = utcnow()
    rid = conn.execute(sa.insert(screen_reviews).values(post_id=post_id, label=label, reviewer=reviewer,
                                                        reviewed_at=now, model_version=version, score=score)
                       .returning(screen_reviews.c.id)).scalar_one()
    return {"id": rid, "post_id": post_id, "label": label, "reviewer": reviewer, "reviewed_at": now.isoformat(),
            "model_version": version, "score": score}


def create_review_app(cfg: Optional[ScreenConfig] = None, engine: Any = None):
    """The Flask app. ``lawclf screen review`` runs it on Flask's server (loopback use); to share it, run
    ``gunicorn -b 0.0.0.0:8010 "lawclf.screen.review:create_review_app()"`` with ``LAWCLF_SCREEN_REVIEW_HOST``
    set to the bind address and ``LAWCLF_REVIEW_TOKEN`` set, behind TLS. Raises ConfigError off loopback
    without a token."""
    import base64

    from flask import Flask, Response, jsonify, request

    from lawclf.http import error_response, install_common_handlers

    if cfg is None:  # under Gunicorn: the settings come from LAWCLF_SCREEN_* variables
        from lawclf.config import resolve_config

        cfg = resolve_config(ScreenConfig)
    check_exposure(cfg)
    token = review_token(cfg)
    engine = engine or open_db(cfg.db_url)
    app = Flask("lawclf.review")
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    page = (Path(__file__).with_name("review.html")).read_text(encoding="utf-8")

    def error(status: int, code: str, message: str, **headers: str):
        return error_response(status, code, message, headers)

    def caller() -> tuple[bool, str]:
        """(allowed, user name from basic auth or "")."""
        if not token:
            return True, ""
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), token.encode()), ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False, ""
            return hmac.compare_digest(password.encode(), token.encode()), user
        return False, ""

    @app.before_request
    def authenticate():
        if request.path == "/healthz":  # reveals nothing, writes nothing: probes use the pod's address
            return None
        host = _hostname(request.host)
        if not host_allowed(host, cfg, any_host=bool(token)):
            return error(403, "wrong_host", f"this review page does not answer to Host {host or request.host!r}: "
                         "open it by a loopback address or set review_allowed_hosts to the name it is served under")
        origin = request.headers.get("Origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            origin_host = _hostname(origin) if origin != "null" else ""
            if origin_host != host and not host_allowed(origin_host, cfg):
                return error(403, "wrong_origin", f"writes are accepted from this page only, not from {origin!r}")
        ok, user = caller()
        if not ok:
            return error(401, "unauthorized", "this review page needs the review token (basic auth password)",
                         **{"WWW-Authenticate": 'Basic realm="lawclf review", charset="UTF-8"'})
        request.environ["lawclf.user"] = user
        return None

    @app.after_request
    def page_policy(resp):
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
        return resp

    def message(status: int) -> str:  # the page reads every answer as JSON
        return {404: f"no route {request.path}", 405: f"{request.method} is not allowed on {request.path}",
                413: "request body over 16 KiB"}.get(status, "")

    def server_error(_exc: Exception) -> str:
        return "the review page failed on this request; its log has the details"

    install_common_handlers(app, message, server_error)

    @app.errorhandler(sa.exc.SQLAlchemyError)
    def database_error(exc: sa.exc.SQLAlchemyError):
        app.logger.error("review database error: %s", exc)
        from lawclf.collect.store import error_detail

        return error(503, "database_unavailable",
                     f"the review database could not be used ({error_detail(exc, 200)}); try again")

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html")

    @app.get("/healthz")
    def healthz():
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return jsonify({"status": "ok"})

    @app.get("/api/posts")
    def api_posts():
        queue = request.args.get("queue", "flagged")
        if queue not in QUEUES:
            return error(400, "bad_queue", f"queue must be one of {', '.join(QUEUES)}, got {queue!r}")
        day = None
        if request.args.get("date"):
            try:
                day = dt.date.fromisoformat(request.args["date"])
            except ValueError:
                return error(400, "bad_date", f"date must be YYYY-MM-DD, got {request.args['date']!r}")
        try:
            limit = int(request.args.get("limit", "100"))
        except ValueError:
            return error(400, "bad_limit", "limit must be an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return error(400, "bad_limit", f"limit must be between 1 and {MAX_LIMIT}")
        try:
            offset = int(request.args.get("offset", "0"))
        except ValueError:
            return error(400, "bad_offset", "offset must be an integer")
        if not 0 <= offset <= MAX_POST_ID:
            return error(400, "bad_offset", "offset must be 0 or more")
        if day is not None and queue != "flagged":
            return error(400, "bad_date", "date filters the flagged queue only (the day the posts were scored)")
        with engine.connect() as conn:
            return jsonify(list_posts(conn, cfg, queue, request.args.get("source", ""), day, limit, offset))

    @app.post("/api/reviews")
    def api_reviews():
        if not request.is_json:
            return error(415, "not_json", "send Content-Type: application/json")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error(400, "bad_json", "the body must be a JSON object")
        post_id, label = body.get("post_id"), body.get("label")
        if not isinstance(post_id, int) or isinstance(post_id, bool) or not 1 <= post_id <= MAX_POST_ID:
            return error(400, "bad_post_id", f"post_id must be an integer from 1 to {MAX_POST_ID}")
        if label not in (0, 1) or isinstance(label, bool):
            return error(400, "bad_label", "label must be 1 (是法律咨询) or 0 (不是)")
        reviewer = request.environ.get("lawclf.user") or body.get("reviewer") or "anonymous"
        if not isinstance(reviewer, str) or len(reviewer) > 200:
            return error(400, "bad_reviewer", "reviewer must be a string of at most 200 characters")
        with engine.begin() as conn:
            if conn.execute(sa.select(posts.c.id).where(posts.c.id == post_id)).first() is None:
                return error(404, "unknown_post", f"no post with id {post_id}")
            stored = add_review(conn, post_id, int(label), reviewer)
        return jsonify(stored), 201

    return app


class ReviewServer:
    """The review page on a background thread of this process (notebook 07; ``lawclf screen review`` is the
    command-line way): ``srv = ReviewServer(cfg).start()``, ``srv.url``, ``srv.stop()``. Loopback only, like
    the command's default; port 0 picks a free one."""

    def __init__(self, cfg: ScreenConfig, port: int = 0):
        from werkzeug.serving import make_server

        if not is_loopback(cfg.review_host):
            raise ConfigError(f"ScreenConfig.review_host: ReviewServer serves on loopback only, got {cfg.review_host!r}")
        self._server = make_server(cfg.review_host, port, create_review_app(cfg), threaded=True)
        self.url = f"http://{cfg.review_host}:{self._server.server_port}"
        self._thread: Any = None

    def start(self) -> "ReviewServer":
        import threading

        self._thread = threading.Thread(target=self._server.serve_forever, name="lawclf-review", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


# --------------------------------------------------------------------------- export
def export_reviews(cfg: ScreenConfig, min_chars: int = 5, max_chars: int = 512) -> dict[str, Any]:
    """Write reviewed posts (newest review per post) as ``legal.jsonl`` + ``nonlegal.jsonl``.

    With ``merge_data_dir`` the rows of that two-file folder are written too, minus any text a
    reviewer labelled (the review wins), so ``lawclf prepare --data-dir <reviews_out_dir>`` trains
    on the old data plus the corrections. Texts ``lawclf prepare`` would reject are counted, not written.
    """
    from lawclf.screen.job import check_writable_folder
    from lawclf.text import normalise_text

    check_writable_folder(cfg.reviews_out_dir, "reviews_out_dir")
    engine = open_db(cfg.db_url, writable=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(screen_reviews.c.post_id, screen_reviews.c.label, screen_reviews.c.reviewer,
                                          screen_reviews.c.reviewed_at, posts.c.source, posts.c.external_id,
                                          posts.c.title, posts.c.body)
                                .join(posts, posts.c.id == screen_reviews.c.post_id)
                                .order_by(screen_reviews.c.id)).mappings().all()
    finally:
        engine.dispose()
    latest: dict[int, Any] = {}
    for r in rows:
        latest[r["post_id"]] = r
    out_dir = Path(cfg.reviews_out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"reviews": len(rows), "posts": len(latest), "legal": 0, "nonlegal": 0, "skipped_length": 0,
              "merged": 0, "merged_overridden": 0}
    records: list[dict[str, Any]] = []
    reviewed_texts: set[str] = set()
    for r in latest.values():
        text = post_text(r["title"], r["body"])
        if not min_chars <= len(normalise_text(text)) <= max_chars:
            counts["skipped_length"] += 1
            continue
        reviewed_texts.add(normalise_text(text))
        records.append({"text": text, "label": int(r["label"]), "source": f"review:{r['source']}",
                        "id": f"{r['source']}:{r['external_id']}", "reviewer": r["reviewer"],
                        "reviewed_at": as_utc(r["reviewed_at"]).isoformat()})
    if cfg.merge_data_dir:
        from collections import Counter

        from lawclf.config import DataConfig
        from lawclf.data import _Rejects, read_file, resolve_inputs

        data_cfg = DataConfig(data_dir=cfg.merge_data_dir)
        for inp in resolve_inputs(data_cfg):  # the data stage's own reader: same checks, file:line errors
            for row in read_file(inp, data_cfg, _Rejects(lenient=False), Counter()):
                if normalise_text(row.text) in reviewed_texts:
                    counts["merged_overridden"] += 1
                    continue
                records.append({"text": row.text, "label": row.label, "source": row.source})
                counts["merged"] += 1
    files = {1: out_dir / "legal.jsonl", 0: out_dir / "nonlegal.jsonl"}
    handles = {k: open(str(p) + ".tmp", "w", encoding="utf-8") for k, p in files.items()}
    try:
        for rec in records:
            handles[int(rec["label"])].write(json.dumps(rec, ensure_ascii=False) + "\n")
            counts["legal" if int(rec["label"]) == 1 else "nonlegal"] += 1
    finally:
        for h in handles.values():
            h.close()
    for path in files.values():
        os.replace(str(path) + ".tmp", path)
    return {**counts, "out_dir": str(out_dir)}
