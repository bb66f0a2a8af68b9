"""Screening tables, beside the collected ``posts`` in the same database.

* ``screen_scores``   one row per (post, model version): score, label, threshold, pass, time.
                      A new model version adds rows; older versions' rows stay (the history).
* ``screen_state``    watermarks: the highest post id each model version has scored, the
                      progress of each node walk. Written in the same transaction as the work
                      they describe, so a kill loses nothing and repeats nothing.
* ``screen_passes``   one row per pass: when, what it found, how it ended (``lawclf screen status``).
* ``screen_digest``   each post judged legal enters one digest, once, whatever model re-scores it.
* ``screen_notifications``  an outbox: one delivery per (pass, webhook), retried until sent.
* ``screen_reviews``  a reviewer's label for a post, with who and when; every click is kept,
                      the newest wins at export.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lawclf.collect.store import _insert_for, metadata, posts, utcnow

screen_scores = sa.Table(
    "screen_scores", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id"), nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("is_legal", sa.Boolean, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("pass_id", sa.Integer, nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("post_id", "model_version", name="uq_screen_scores_post_version"),
)
sa.Index("ix_screen_scores_version_legal", screen_scores.c.model_version, screen_scores.c.is_legal)

screen_state = sa.Table(
    "screen_state", metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

screen_passes = sa.Table(
    "screen_passes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    #: running, ok, partial (some requests or deliveries failed), failed, interrupted
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("new_posts", sa.Integer, nullable=False, default=0),
    sa.Column("scored", sa.Integer, nullable=False, default=0),
    sa.Column("flagged", sa.Integer, nullable=False, default=0),
    sa.Column("digest_written", sa.Boolean, nullable=False, default=False),
    sa.Column("problems", sa.Text, nullable=False, default=""),
)

screen_digest = sa.Table(
    "screen_digest", metadata,
    sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id"), primary_key=True),
    sa.Column("pass_id", sa.Integer, nullable=False, index=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
)

screen_notifications = sa.Table(
    "screen_notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pass_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    #: pending, sent, failed (given up)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    #: When the delivery was queued (or queued again by ``--retry-failed``): its age, for giving up.
    #: Added after the first release: :func:`upgrade` adds it to older databases.
    sa.Column("queued_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("pass_id", "url", name="uq_screen_notifications_pass_url"),
)

screen_reviews = sa.Table(
    "screen_reviews", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id"), nullable=False, index=True),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("reviewer", sa.String(200), nullable=False),
    sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
    #: The model's view when the reviewer decided (what the correction corrects).
    sa.Column("model_version", sa.String(200)),
    sa.Column("score", sa.Float),
)


def upgrade(engine: sa.engine.Engine) -> None:
    """Bring a database made by an older release up to these tables (``create_all`` adds missing
    tables, not missing columns). Each step is idempotent; rows get the value they would have had."""
    columns = {c["name"] for c in sa.inspect(engine).get_columns("screen_notifications")}
    if "queued_at" not in columns:
        kind = screen_notifications.c.queued_at.type.compile(dialect=engine.dialect)
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE screen_notifications ADD COLUMN queued_at {kind}"))
            started = (sa.select(screen_passes.c.started_at).where(screen_passes.c.id == screen_notifications.c.pass_id)
                       .scalar_subquery())
            conn.execute(sa.update(screen_notifications).values(queued_at=started))


def get_value(conn: Connection, key: str, default: int = 0) -> int:
    value = conn.execute(sa.select(screen_state.c.value).where(screen_state.c.key == key)).scalar()
    return default if value is None else int(value)


def set_value(conn: Connection, key: str, value: int) -> None:
    insert = _insert_for(conn)
    stmt = insert(screen_state).values(key=key, value=int(value), updated_at=utcnow())
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}))


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING (a second pass racing the first cannot duplicate a row)."""
    if rows:
        conn.execute(_insert_for(conn)(table).values(rows).on_conflict_do_nothing(index_elements=keys))


@overload
def as_utc(value: dt.datetime) -> dt.datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """SQLite returns naive datetimes for timezone-aware columns: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


__all__ = ["metadata", "posts", "screen_scores", "screen_state", "screen_passes", "screen_digest",
           "screen_notifications", "screen_reviews", "upgrade", "get_value", "set_value", "insert_ignore", "as_utc", "utcnow"]
