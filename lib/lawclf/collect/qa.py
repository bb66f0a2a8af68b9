"""Import a Q&A dump (CSV or JSONL) as posts, usually the legal side (label 1).

Column names are configurable: a title column, one or more body columns joined in
order (``question,content``), an optional id column. Without an id the key is a hash
of the text, so importing the same file twice never duplicates a row. Bad lines
stop the import with ``file:line: reason`` (or, lenient, are counted and reported).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from sqlalchemy.engine import Engine

from lawclf.collect import store

BATCH = 500


class QAInputError(ValueError):
    """A bad line in a Q&A dump; the message starts with ``file:line:``."""


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) pairs; a JSON syntax error is yielded as the exception."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, QAInputError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            _ = reader.fieldnames  # reads the header, so the line numbers below count it
            line_start = reader.line_num + 1
            for record in reader:
                if None in record:  # more cells than header columns
                    yield line_start, QAInputError(f"{path}:{line_start}: {len(record) + len(record[None]) - 1} "
                                                   f"cells but the header has {len(reader.fieldnames or [])}")
                else:
                    yield line_start, record
                line_start = reader.line_num + 1  # a quoted cell may span lines; report where the row starts
    else:
        raise QAInputError(f"{path}: unsupported file type {suffix!r}; expected .csv, .tsv or .jsonl")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_qa(path: str | os.PathLike[str], title_field: str = "title",
            body_fields: Sequence[str] = ("question", "content"), id_field: str = "id",
            source: str = "qa", label: int = 1, lenient: bool = False,
            rejected: Optional[list[str]] = None, node_field: str = "category") -> Iterator[dict[str, Any]]:
    """Post rows from a Q&A dump. Bad lines raise :class:`QAInputError` (or go to ``rejected``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: Q&A file not found")
    wanted = [f for f in (title_field, *body_fields) if f]
    if not wanted:
        raise ValueError("no text columns configured: set a title field and/or body fields")
    checked_columns = False
    for lineno, record in _records(path):
        if not checked_columns and isinstance(record, dict):
            if not any(f in record for f in wanted):
                # Wrong column names make every line fail: stop even when lenient, naming what exists.
                raise QAInputError(f"{path}:{lineno}: none of the text columns {wanted} found; "
                                   f"columns here: {sorted(record)}")
            checked_columns = True
        try:
            if isinstance(record, Exception):
                raise record
            if not isinstance(record, dict):
                raise QAInputError(f"{path}:{lineno}: expected an object, got {type(record).__name__}")
            title = _text(record.get(title_field)) if title_field else ""
            body = "\n".join(t for t in (_text(record.get(f)) for f in body_fields if f) if t)
            if not title and not body:
                raise QAInputError(f"{path}:{lineno}: empty text (columns {wanted} are all empty)")
            ext = _text(record.get(id_field)) if id_field else ""
            if not ext:
                ext = "sha1:" + hashlib.sha1(f"{title}\n{body}".encode("utf-8")).hexdigest()[:20]
            node = (_text(record.get(node_field)) if node_field else "") or None
            yield {"source": source, "external_id": ext, "title": title, "body": body, "node": node,
                   "created": None, "label": label}
        except QAInputError as exc:
            if not lenient or rejected is None:
                raise
            if rejected is not None:
                rejected.append(str(exc))


def import_qa(engine: Engine, path: str | os.PathLike[str], title_field: str = "title",
              body_fields: Sequence[str] = ("question", "content"), id_field: str = "id",
              source: str = "qa", label: int = 1, lenient: bool = False,
              node_field: str = "category") -> dict[str, Any]:
    """Upsert a Q&A dump into the database in batches; returns counts and rejected lines."""
    rejected: list[str] = []
    rows = read_qa(path, title_field, body_fields, id_field, source, label, lenient, rejected, node_field)
    total = {"read": 0, "new": 0, "updated": 0}
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:
            counts = store.upsert_posts(conn, batch)
        total["new"] += counts["new"]
        total["updated"] += counts["updated"]
        batch.clear()

    # Strict mode validates the whole file before writing, so a bad line leaves nothing half-imported.
    if not lenient:
        all_rows = list(rows)
        rows = iter(all_rows)
    for row in rows:
        total["read"] += 1
        batch.append(row)
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    return {**total, "rejected": len(rejected), "rejected_lines": rejected}
