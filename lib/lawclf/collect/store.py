"""Storage for collected posts and crawl progress, through SQLAlchemy 2 Core.

A SQLite file by default (zero set-up) or PostgreSQL by URL. Posts are keyed by
``(source, external_id)`` and written with the dialect's ``INSERT ... ON CONFLICT DO
UPDATE``, so crawling or importing the same thing twice never duplicates a row.
Crawl progress lives in the same database and is written in the same transaction
as the page's posts: after a crash the database holds either both or neither.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

posts = sa.Table(
    "posts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("external_id", sa.String(128), nullable=False),
    sa.Column("title", sa.Text, nullable=False, default=""),
    sa.Column("body", sa.Text, nullable=False, default=""),
    sa.Column("node", sa.String(128)),
    sa.Column("created", sa.DateTime(timezone=True)),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("source", "external_id", name="uq_posts_source_external_id"),
)

#: One row per crawl task (``v2:node:python``, ``v1:node:python``): the next page to fetch.
crawl_state = sa.Table(
    "crawl_state", metadata,
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("next_page", sa.Integer, nullable=False, default=1),
    sa.Column("done", sa.Boolean, nullable=False, default=False),
    sa.Column("pages_fetched", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: Where each node walk of the screening job (``v2ex.refresh``) may stop: ``mark`` is the walk key
#: (``last_touched``, else the topic id) of the newest topic when the last *complete* walk began —
#: everything at or below it is stored — and ``pending`` the newest when the unfinished walk began.
walk_marks = sa.Table(
    "walk_marks", metadata,
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("mark", sa.Float),
    sa.Column("pending", sa.Float),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: Requests that still failed after every retry (the page is retried on the next run).
crawl_failures = sa.Table(
    "crawl_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("page", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

POST_FIELDS = ("source", "external_id", "title", "body", "node", "created", "label")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def redact_url(url: str) -> str:
    """The database URL with its password hidden, for printing and logs (a URL that does not parse
    is shown up to its ``@``, where a password would end)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.rsplit("@", 1)[-1] if "@" in url else url


class DatabaseError(ValueError):
    """The database a setting names cannot be used; the message is one line that names the setting."""


def error_detail(exc: BaseException, limit: int = 300) -> str:
    """A database error as one short line: the driver's own message (SQLAlchemy wraps it, with the
    statement and a link, over several lines)."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:limit]


#: The dialects the upserts are written for (``_insert_for``).
DIALECTS = ("sqlite", "postgresql")


def open_db(url: str, setting: str = "db_url", writable: bool = True) -> Engine:
    """Engine for ``url`` with the tables created; a SQLite file's folder is created too.

    Everything that can be wrong with the database is found here, before any work, and raised as
    :class:`DatabaseError` naming ``setting``: a URL that does not parse, a dialect other than
    SQLite or PostgreSQL, a missing driver, a server that does not answer, a file or folder that
    cannot be created and (``writable``) a database that cannot be written.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"{setting}: {redact_url(url)!r} is not a database URL; expected sqlite:///path/to/file.db or "
                            "postgresql+psycopg://user:password@host/database") from None
    backend = parsed.get_backend_name()
    if backend not in DIALECTS:
        raise DatabaseError(f"{setting}: {backend!r} databases are not supported ({redact_url(url)}); "
                            "use sqlite:///… or postgresql+psycopg://…")
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:") and "mode=ro" not in url:
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"{setting}: cannot create the folder {folder} for {parsed.database} "
                                f"({exc.strerror or exc})") from None
    try:
        engine = sa.create_engine(url, future=True)
    except ModuleNotFoundError as exc:
        raise DatabaseError(f"{setting}: the driver for {redact_url(url)} is not installed ({exc.name}); "
                            "for PostgreSQL: pip install 'psycopg[binary]'") from None
    try:
        metadata.create_all(engine)
        if writable:  # a read-only file or replica fails here, not halfway through a pass
            with engine.begin() as conn:
                conn.execute(sa.delete(crawl_state).where(sa.false()))
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(f"{setting}: cannot {'write' if writable else 'open'} {redact_url(url)}: "
                            f"{error_detail(exc)}") from None
    return engine


def _insert_for(conn: Connection):
    """The dialect's INSERT with ON CONFLICT support (SQLite and PostgreSQL)."""
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:  # a plain INSERT would duplicate or fail on re-runs: say so instead
        raise NotImplementedError(f"upserts are implemented for sqlite and postgresql, not {name!r}")
    return insert


def upsert_posts(conn: Connection, rows: Iterable[Mapping[str, Any]],
                 new_keys: Optional[set[tuple[str, str]]] = None) -> dict[str, int]:
    """Insert or update posts by ``(source, external_id)``; returns ``{"new", "updated"}`` counts.

    Within one call the last row for a key wins (a page can repeat a topic). ``new_keys``, when
    given, receives the ``(source, external_id)`` of every post this call inserted.
    """
    now = utcnow()
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        clean = {k: row.get(k) for k in POST_FIELDS}
        clean["external_id"] = str(clean["external_id"])
        clean["title"] = clean["title"] or ""
        clean["body"] = clean["body"] or ""
        clean["fetched_at"] = now
        by_key[(str(clean["source"]), str(clean["external_id"]))] = clean
    if not by_key:
        return {"new": 0, "updated": 0}
    existing = _existing_keys(conn, by_key)
    if new_keys is not None:
        new_keys.update(k for k in by_key if k not in existing)
    insert = _insert_for(conn)
    stmt = insert(posts).values(list(by_key.values()))
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "external_id"],
        set_={c: stmt.excluded[c] for c in ("title", "body", "node", "created", "label", "fetched_at")},
    )
    conn.execute(stmt)
    return {"new": len(by_key) - len(existing), "updated": len(existing)}


def _existing_keys(conn: Connection, by_key: Mapping[tuple[str, str], Any]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for source in {s for s, _ in by_key}:
        ids = [e for s, e in by_key if s == source]
        q = sa.select(posts.c.external_id).where(posts.c.source == source, posts.c.external_id.in_(ids))
        found.update((source, e) for e in conn.execute(q).scalars())
    return found


def get_state(conn: Connection, task: str) -> dict[str, Any]:
    """Progress of one crawl task (a fresh task starts at page 1)."""
    row = conn.execute(sa.select(crawl_state).where(crawl_state.c.task == task)).mappings().first()
    if row is None:
        return {"task": task, "next_page": 1, "done": False, "pages_fetched": 0}
    return dict(row)


def set_state(conn: Connection, task: str, next_page: int, done: bool, pages_fetched: int) -> None:
    insert = _insert_for(conn)
    values = dict(task=task, next_page=next_page, done=done, pages_fetched=pages_fetched, updated_at=utcnow())
    stmt = insert(crawl_state).values(values)
    stmt = stmt.on_conflict_do_update(index_elements=["task"],
                                      set_={k: stmt.excluded[k] for k in values if k != "task"})
    conn.execute(stmt)


def get_walk_marks(conn: Connection, task: str) -> tuple[Optional[float], Optional[float]]:
    """``(mark, pending)`` of one node walk (see :data:`walk_marks`); ``(None, None)`` before its first."""
    row = conn.execute(sa.select(walk_marks.c.mark, walk_marks.c.pending)
                       .where(walk_marks.c.task == task)).first()
    return (None, None) if row is None else (row[0], row[1])


def set_walk_marks(conn: Connection, task: str, mark: Optional[float], pending: Optional[float]) -> None:
    insert = _insert_for(conn)
    values = dict(task=task, mark=mark, pending=pending, updated_at=utcnow())
    stmt = insert(walk_marks).values(values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["task"],
                                            set_={k: stmt.excluded[k] for k in values if k != "task"}))


def record_failure(conn: Connection, task: str, page: int, error: str) -> None:
    conn.execute(sa.insert(crawl_failures).values(task=task, page=page, error=error[:2000], at=utcnow()))


def iter_posts(engine: Engine, label: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Posts in insertion order (optionally one label), streamed."""
    q = sa.select(posts).order_by(posts.c.id)
    if label is not None:
        q = q.where(posts.c.label == label)
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True).execute(q).mappings():
            yield dict(row)


def stats(engine: Engine) -> dict[str, Any]:
    """Counts per source/label, crawl tasks and recorded failures."""
    with engine.connect() as conn:
        by_source = conn.execute(
            sa.select(posts.c.source, posts.c.label, sa.func.count())
            .group_by(posts.c.source, posts.c.label).order_by(posts.c.source, posts.c.label)
        ).all()
        tasks = conn.execute(sa.select(crawl_state).order_by(crawl_state.c.task)).mappings().all()
        failures = conn.execute(sa.select(sa.func.count()).select_from(crawl_failures)).scalar_one()
    return {
        "posts": sum(n for _, _, n in by_source),
        "by_source": [{"source": s, "label": lab, "count": n} for s, lab, n in by_source],
        "tasks": [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in t.items()} for t in tasks],
        "failures": failures,
    }
