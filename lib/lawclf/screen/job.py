"""One screening pass: collect → score → digest → notify, each step safe to kill.

* **collect**: V2EX feeds and node walks (:func:`lawclf.collect.v2ex.refresh`) and/or a file of
  new posts, upserted by ``(source, external_id)``: a post is stored once however often it is seen.
* **score**: posts above the model version's watermark, in id order, a chunk per transaction
  (scores and the new watermark together). The work is the number of new posts, never the size
  of the database; a new model version starts its own watermark at 0 and keeps the old scores.
* **digest**: every post the current model judges legal that no digest listed yet is assigned to
  this pass, and the outbox gets this pass's notifications, in one transaction. The files are
  written from the database afterwards, so a pass killed in between has its files written by the next.
* **notify**: :func:`lawclf.screen.notify.deliver` within a time budget.

A little over ~400 lines: the four steps of a pass and the pass that runs them, each step
safe to kill, kept together so the order of the transactions can be read in one file.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lawclf.collect import store as collect_store
from lawclf.collect.jsonl import clean_text
from lawclf.config import ScreenConfig
from lawclf.screen import notify
from lawclf.screen.store import (
    as_utc,
    get_value,
    insert_ignore,
    posts,
    screen_digest,
    screen_notifications,
    screen_passes,
    screen_reviews,
    screen_scores,
    set_value,
    utcnow,
)

SOURCES = ("v2ex", "file")


class Scorer(Protocol):
    """What a pass needs from a model: :class:`lawclf.predict.Predictor` is one."""

    threshold: float

    @property
    def version(self) -> str: ...

    def predict_proba(self, texts: Sequence[str]) -> Any: ...


def scorer_version(scorer: Scorer) -> str:
    """The version stored with each score: the model's own version string, plus the first 12 hex
    digits of the ONNX file's SHA-256 when there is a file, because a retrained model often keeps
    the version string of the one before it and must still count as a new model."""
    path = getattr(scorer, "model_path", None)
    if path is None:
        return str(scorer.version)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{scorer.version}+{digest.hexdigest()[:12]}"


def check_writable_folder(folder: str, setting: str) -> None:
    """Create ``folder`` and write a file in it, or raise a ValueError naming ``setting`` (a read-only
    mount or a file in the way would otherwise fail after the pass's work, when the digest is written)."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".lawclf-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot write in {path} ({exc.strerror or exc})") from None


def open_db(url: str, writable: bool = True) -> Engine:
    """The screening database, checked (:func:`lawclf.collect.store.open_db`) and upgraded."""
    from lawclf.screen import store  # registers the screening tables on the shared metadata

    engine = collect_store.open_db(url, writable=writable)
    try:
        store.upgrade(engine)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise collect_store.DatabaseError(f"db_url: cannot upgrade {collect_store.redact_url(url)}: "
                                          f"{collect_store.error_detail(exc)}") from None
    return engine


def post_text(title: str, body: str) -> str:
    """What the model reads: the export's cleaning (no HTML or markdown), as in training data."""
    return clean_text(title or "", body or "")


def post_view(cfg: ScreenConfig, row: Any, created: Optional[dt.datetime]) -> dict[str, Any]:
    """A scored post as the digest and the review page show it (``row``: posts columns plus ``score``)."""
    return {"id": row["id"], "source": row["source"], "node": row["node"] or "", "title": row["title"],
            "text": post_text(row["title"], row["body"]), "url": post_link(cfg, row["source"], row["external_id"]),
            "created": created.isoformat() if created else "", "score": round(float(row["score"]), 4)}


def post_link(cfg: ScreenConfig, source: str, external_id: str) -> str:
    if source == "v2ex":
        return cfg.post_url.replace("{id}", quote(str(external_id), safe=""))
    return ""


# --------------------------------------------------------------------------- collect
def collect(cfg: ScreenConfig, engine: Engine, client: Any = None) -> dict[str, Any]:
    sources = [s.strip() for s in cfg.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; expected some of {', '.join(SOURCES)}")
    summary: dict[str, Any] = {"new": 0, "failures": []}
    if "v2ex" in sources:
        from lawclf.collect import v2ex

        client = client or v2ex.V2EXClient(base_url=cfg.base_url, token=os.environ.get("V2EX_TOKEN", ""),
                                           requests_per_hour=cfg.requests_per_hour, max_retries=3)
        got = v2ex.refresh(engine, client, nodes=_split(cfg.nodes), feeds=_split(cfg.feeds), max_pages=cfg.max_pages)
        summary["new"] += got["new"]
        summary["failures"] += got["failures"]
    if "file" in sources:
        if not cfg.import_path:
            raise ValueError("source 'file' needs import_path (--import-path)")
        from lawclf.collect import qa

        got = qa.import_qa(engine, cfg.import_path, title_field="title", body_fields=["content", "body", "text"],
                           id_field="id", source=cfg.import_source, label=0, lenient=True, node_field="node")
        summary["new"] += got.get("new", 0)
        summary["file"] = got
    return summary


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# --------------------------------------------------------------------------- score
def score_new(engine: Engine, scorer: Scorer, pass_id: int, chunk: int = 256,
              on_chunk: Optional[Callable[[int], None]] = None, version: str = "") -> dict[str, int]:
    """Score every post above this model version's watermark; returns ``{"scored", "flagged"}``."""
    version = version or scorer_version(scorer)
    key = f"scored:{version}"
    scored = flagged = 0
    threshold = float(scorer.threshold)
    while True:
        with engine.connect() as conn:
            mark = get_value(conn, key)
            rows = conn.execute(sa.select(posts.c.id, posts.c.title, posts.c.body).where(posts.c.id > mark)
                                .order_by(posts.c.id).limit(chunk)).all()
        if not rows:
            break
        probs = scorer.predict_proba([post_text(r.title, r.body) for r in rows])
        now = utcnow()
        values = [{"post_id": r.id, "model_version": version, "score": float(p), "is_legal": bool(p >= threshold),
                   "threshold": threshold, "pass_id": pass_id, "scored_at": now} for r, p in zip(rows, probs)]
        with engine.begin() as conn:  # the scores and the watermark: both or neither
            insert_ignore(conn, screen_scores, values, ["post_id", "model_version"])
            set_value(conn, key, rows[-1].id)
        scored += len(values)
        flagged += sum(v["is_legal"] for v in values)
        if on_chunk:
            on_chunk(scored)
    return {"scored": scored, "flagged": flagged}


# --------------------------------------------------------------------------- digest
def _digest_rows(conn: sa.engine.Connection, cfg: ScreenConfig, pass_id: int) -> list[dict[str, Any]]:
    q = (sa.select(posts.c.id, posts.c.source, posts.c.external_id, posts.c.title, posts.c.body, posts.c.node,
                   posts.c.created, posts.c.fetched_at, screen_digest.c.score, screen_digest.c.model_version)
         .join(screen_digest, screen_digest.c.post_id == posts.c.id).where(screen_digest.c.pass_id == pass_id))
    out = [{**post_view(cfg, r, as_utc(r["created"]) or as_utc(r["fetched_at"])),
            "external_id": r["external_id"], "model_version": r["model_version"]}
           for r in conn.execute(q).mappings()]
    out.sort(key=lambda p: (p["created"], p["id"]), reverse=True)  # newest first
    return out


def assign_digest(engine: Engine, cfg: ScreenConfig, pass_id: int, model_version: str,
                  hooks: Sequence[notify.Webhook]) -> dict[str, Any]:
    """Put every not-yet-listed legal post into this pass's digest and enqueue its notifications."""
    # Only scores this step has not looked at yet (a watermark on the score id): the work is the
    # number of new scores, not the number of posts ever flagged.
    key = f"digested:{model_version}"
    with engine.begin() as conn:
        mark = get_value(conn, key)
        q = (sa.select(screen_scores.c.id, screen_scores.c.post_id, screen_scores.c.score)
             .outerjoin(screen_digest, screen_digest.c.post_id == screen_scores.c.post_id)
             .where(screen_scores.c.id > mark, screen_scores.c.model_version == model_version,
                    screen_scores.c.is_legal.is_(True), screen_digest.c.post_id.is_(None)))
        rows = conn.execute(q).all()
        insert_ignore(conn, screen_digest, [{"post_id": r.post_id, "pass_id": pass_id, "score": float(r.score),
                                             "model_version": model_version} for r in rows], ["post_id"])
        newest = conn.execute(sa.select(sa.func.max(screen_scores.c.id))
                              .where(screen_scores.c.model_version == model_version)).scalar()
        set_value(conn, key, int(newest or 0))
        digest = digest_for(conn, cfg, pass_id)
        if hooks and digest["count"]:
            notify.enqueue(conn, pass_id, hooks, digest)
    return digest


def digest_for(conn: sa.engine.Connection, cfg: ScreenConfig, pass_id: int) -> dict[str, Any]:
    items = _digest_rows(conn, cfg, pass_id)
    return {"pass_id": pass_id, "count": len(items), "posts": items,
            "page": str(Path(cfg.out_dir).resolve() / "digests" / f"pass-{pass_id:06d}.html"),
            "url": cfg.digest_url.replace("{pass_id}", f"{pass_id:06d}") if cfg.digest_url else ""}


def write_digest_files(cfg: ScreenConfig, digest: dict[str, Any]) -> dict[str, str]:
    """``pass-NNNNNN.{html,csv,json}`` under ``out_dir/digests`` and a copy as ``latest.*``."""
    folder = Path(cfg.out_dir) / "digests"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"pass-{digest['pass_id']:06d}"
    contents = {"html": render_digest_html(digest), "json": json.dumps(digest, ensure_ascii=False, indent=1),
                "csv": _digest_csv(digest)}
    written = {}
    for ext, text in contents.items():
        for name in (stem, "latest"):
            path = folder / f"{name}.{ext}"
            tmp = path.with_suffix(f".{ext}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)  # a reader never sees half a file
        written[ext] = str(folder / f"{stem}.{ext}")
    return written


def _digest_csv(digest: dict[str, Any]) -> str:
    buf = io.StringIO()
    fields = ["created", "score", "source", "node", "title", "text", "url", "external_id", "model_version"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(digest["posts"])
    return "\ufeff" + buf.getvalue()  # BOM: Excel opens the Chinese text as UTF-8


def render_digest_html(digest: dict[str, Any]) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(p['created'][:16].replace('T', ' '))}</td><td class=score>{p['score']:.2f}</td>"
        f"<td>{html.escape(p['source'])}{' / ' + html.escape(p['node']) if p['node'] else ''}</td>"
        f"<td><a href=\"{html.escape(p['url'])}\">{html.escape(p['title'] or p['text'][:60])}</a>"
        f"<div class=text>{html.escape(p['text'][:300])}</div></td></tr>" for p in digest["posts"])
    empty = "" if digest["posts"] else "<p>本轮没有新的法律咨询。</p>"
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>法律咨询摘要 · 第 {digest['pass_id']} 轮</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.5rem;vertical-align:top;text-align:left}}
.score{{font-variant-numeric:tabular-nums}}.text{{color:#555;font-size:.9rem;margin-top:.25rem}}</style></head>
<body><h1>法律咨询摘要 · 第 {digest['pass_id']} 轮</h1>
<p>{digest['count']} 条新帖被模型判为法律咨询（最新的在前）。分数是模型给出的 P(法律咨询)。</p>{empty}
<table><thead><tr><th>发帖时间 (UTC)</th><th>分数</th><th>来源</th><th>帖子</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


def write_pending_digests(engine: Engine, cfg: ScreenConfig) -> list[int]:
    """Write the files of every pass whose digest is in the database but not on disk yet."""
    with engine.connect() as conn:
        ids = conn.execute(sa.select(screen_passes.c.id).where(screen_passes.c.digest_written.is_(False),
                                                               screen_passes.c.status != "running")
                           .order_by(screen_passes.c.id)).scalars().all()
    done = []
    for pass_id in ids:
        with engine.connect() as conn:
            digest = digest_for(conn, cfg, pass_id)
        if digest["count"]:
            write_digest_files(cfg, digest)
        with engine.begin() as conn:
            conn.execute(sa.update(screen_passes).where(screen_passes.c.id == pass_id).values(digest_written=True))
        done.append(pass_id)
    return done


# --------------------------------------------------------------------------- the pass
def run_pass(cfg: ScreenConfig, scorer: Optional[Scorer] = None, client: Any = None,
             on_stage: Optional[Callable[[str], None]] = None, notify_session: Any = None) -> dict[str, Any]:
    """One pass; returns its summary (also kept in ``screen_passes``). Safe to kill at any point."""
    stage = on_stage or (lambda name: None)
    hooks = notify.parse_webhooks(cfg.webhooks)  # a bad webhook, folder or database fails before any work
    check_writable_folder(cfg.out_dir, "out_dir")
    engine = open_db(cfg.db_url)
    try:
        if scorer is None:
            from lawclf.predict import Predictor

            scorer = Predictor(cfg.model_dir)
        version = scorer_version(scorer)
    except BaseException:
        engine.dispose()
        raise
    t0 = time.perf_counter()
    try:
        with engine.begin() as conn:
            # A pass still "running" was killed (runs are never concurrent: the schedulers forbid it).
            conn.execute(sa.update(screen_passes).where(screen_passes.c.status == "running")
                         .values(status="interrupted", finished_at=utcnow()))
            pass_id = conn.execute(sa.insert(screen_passes).values(
                started_at=utcnow(), status="running", model_version=version, new_posts=0, scored=0,
                flagged=0, digest_written=False, problems="").returning(screen_passes.c.id)).scalar_one()
        try:
            return _steps(cfg, engine, scorer, version, client, pass_id, hooks, stage, notify_session, t0)
        except BaseException as exc:  # recorded, then raised: `screen status` shows what broke
            ended = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
            with engine.begin() as conn:
                conn.execute(sa.update(screen_passes).where(screen_passes.c.id == pass_id).values(
                    status=ended, finished_at=utcnow(), problems=f"{exc.__class__.__name__}: {exc}"))
            raise
    finally:
        engine.dispose()


def _steps(cfg: ScreenConfig, engine: Engine, scorer: Scorer, version: str, client: Any, pass_id: int,
           hooks: Sequence[notify.Webhook], stage: Callable[[str], None], notify_session: Any,
           t0: float) -> dict[str, Any]:
    problems: list[str] = []
    stage("collect")
    try:
        got = collect(cfg, engine, client)
    except (ValueError, FileNotFoundError):
        raise  # a configuration error: the pass fails and says why
    except Exception as exc:  # a source that is down must not stop scoring what we have
        got = {"new": 0, "failures": [{"task": "collect", "error": f"{exc.__class__.__name__}: {exc}"}]}
    problems += [f"{f['task']}: {f['error']}" for f in got["failures"]]
    _record(engine, pass_id, new_posts=got["new"])  # each count as soon as it is known: a killed pass shows its work
    stage("score")
    counts = score_new(engine, scorer, pass_id, cfg.score_chunk, version=version)
    _record(engine, pass_id, scored=counts["scored"])
    stage("digest")
    digest = assign_digest(engine, cfg, pass_id, version, hooks)
    _record(engine, pass_id, flagged=digest["count"])
    stage("notify")
    sent = deliver(cfg, engine, notify_session) if hooks else {"sent": 0, "retrying": 0, "failed": 0}
    if sent["failed"] or sent["retrying"]:
        problems.append(f"notifications: {sent['failed']} given up, {sent['retrying']} to retry")
    with engine.begin() as conn:
        conn.execute(sa.update(screen_passes).where(screen_passes.c.id == pass_id).values(
            status="partial" if problems else "ok", finished_at=utcnow(), problems="\n".join(problems)))
    stage("files")
    write_pending_digests(engine, cfg)
    return {"pass_id": pass_id, "status": "partial" if problems else "ok", "model_version": version,
            "new_posts": got["new"], "scored": counts["scored"], "flagged": digest["count"],
            "notifications": sent, "problems": problems, "seconds": round(time.perf_counter() - t0, 2),
            "digest": digest["page"] if digest["count"] else ""}


def deliver(cfg: ScreenConfig, engine: Engine, session: Any = None) -> dict[str, int]:
    """Deliver what is due in the outbox with the configured timeouts, budget and age limit."""
    return notify.deliver(engine, timeout_s=cfg.notify_timeout_s, budget_s=cfg.notify_budget_s,
                          max_age_s=cfg.notify_max_age_h * 3600, max_attempts=cfg.notify_max_attempts,
                          session=session)


def notify_pending(cfg: ScreenConfig, retry_failed: bool = False, session: Any = None) -> dict[str, Any]:
    """``lawclf screen notify``: deliver every queued notification now, without a pass and without
    waiting out its back-off (the receiver is known to be back); with ``retry_failed``, queue the
    given-up deliveries again first (after an outage longer than ``notify_max_age_h``)."""
    engine = open_db(cfg.db_url)
    try:
        requeued = notify.retry_failed(engine) if retry_failed else 0
        notify.due_now(engine)
        return {"requeued": requeued, **deliver(cfg, engine, session)}
    finally:
        engine.dispose()


def _record(engine: Engine, pass_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(screen_passes).where(screen_passes.c.id == pass_id).values(**values))


def status(cfg: ScreenConfig, last: int = 10) -> dict[str, Any]:
    """The last passes and what the database holds, for ``lawclf screen status``."""
    engine = open_db(cfg.db_url, writable=False)  # monitoring may read a replica
    try:
        with engine.connect() as conn:
            passes = conn.execute(sa.select(screen_passes).order_by(screen_passes.c.id.desc()).limit(last)).mappings().all()
            n_posts = conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one()
            by_version = conn.execute(sa.select(screen_scores.c.model_version, sa.func.count(),
                                                sa.func.sum(sa.case((screen_scores.c.is_legal.is_(True), 1), else_=0)))
                                      .group_by(screen_scores.c.model_version)).all()
            notes = conn.execute(sa.select(screen_notifications.c.status, sa.func.count())
                                 .group_by(screen_notifications.c.status)).all()
            n_reviews = conn.execute(sa.select(sa.func.count(sa.distinct(screen_reviews.c.post_id)))).scalar_one()
            n_listed = conn.execute(sa.select(sa.func.count()).select_from(screen_digest)).scalar_one()
            undelivered = conn.execute(sa.select(screen_notifications.c.url, screen_notifications.c.status,
                                                 screen_notifications.c.attempts, screen_notifications.c.last_error)
                                       .where(screen_notifications.c.status != "sent")
                                       .order_by(screen_notifications.c.id.desc()).limit(10)).all()
            # A node walk with a `pending` mark has not yet reached the posts stored before it
            # began (a kill, a failed page, the page cap): posts may be waiting there.
            open_walks = conn.execute(sa.select(collect_store.walk_marks.c.task)
                                      .where(collect_store.walk_marks.c.pending.is_not(None))
                                      .order_by(collect_store.walk_marks.c.task)).scalars().all()
    finally:
        engine.dispose()

    def iso(value: Any) -> Any:
        return as_utc(value).isoformat() if isinstance(value, dt.datetime) else value

    counts = {s: n for s, n in notes}
    last_status = passes[0]["status"] if passes else "ok"
    problems = ([f"the last pass ended {last_status}"] if last_status in ("failed", "partial") else []) + \
        ([f"{counts['failed']} notification(s) given up: `lawclf screen notify --retry-failed` sends them again"]
         if counts.get("failed") else []) + \
        ([f"{len(open_walks)} node walk(s) not yet back to the posts stored before: {', '.join(open_walks)}"]
         if open_walks else [])
    return {"healthy": not problems, "problems": problems,
            "posts": n_posts, "digested": n_listed, "reviewed_posts": n_reviews,
            "scores": [{"model_version": v, "scored": n, "legal": int(k or 0)} for v, n, k in by_version],
            "notifications": counts, "open_walks": list(open_walks),
            "undelivered": [{"url": notify.redact(u), "status": s, "attempts": a, "error": e}
                            for u, s, a, e in undelivered],
            "passes": [{k: iso(v) for k, v in p.items()} for p in passes]}
