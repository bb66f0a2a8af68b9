"""Optional stage 00: collect your own data (``lawclf collect``, notebook 00).

* ``v2ex``      crawl V2EX topics (non-legal side) politely and resumably into the database
* ``import-qa`` import a Q&A dump, CSV or JSONL (legal side)
* ``export``    write ``legal.jsonl`` + ``nonlegal.jsonl`` for ``lawclf prepare --data-dir``
* ``stats``     what the database holds: posts per source, crawl progress, failures

The database is a SQLite file by default or PostgreSQL by URL (``--db-url``)::

    lawclf collect v2ex --nodes python,career --max-pages 3
    lawclf collect import-qa --qa-path my_qa.csv --qa-body-fields question
    lawclf collect export --out-dir runs/collect/data
    lawclf prepare --data-dir runs/collect/data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

from lawclf.config import CollectConfig, add_config_args, config_from_args

__all__ = ["crawl_v2ex", "import_qa_dump", "export", "db_stats", "cli", "split_list"]


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (comma-separated config values)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def make_client(cfg: CollectConfig, **overrides: Any):
    """A :class:`~lawclf.collect.v2ex.V2EXClient` from the config (token from V2EX_TOKEN when unset)."""
    from lawclf.collect.v2ex import V2EXClient

    kwargs: dict[str, Any] = dict(
        base_url=cfg.base_url, token=cfg.token or os.environ.get("V2EX_TOKEN", ""),
        requests_per_hour=cfg.requests_per_hour, max_retries=cfg.max_retries,
        backoff_base=cfg.backoff_base, backoff_max=cfg.backoff_max, timeout=cfg.timeout,
        user_agent=cfg.user_agent)
    kwargs.update(overrides)
    return V2EXClient(**kwargs)


def crawl_v2ex(cfg: CollectConfig, client=None, on_page=None) -> dict[str, Any]:
    """Crawl the configured V2EX feeds and nodes into ``cfg.db_url``; returns a summary."""
    from lawclf.collect import store, v2ex

    engine = store.open_db(cfg.db_url)
    try:
        return v2ex.crawl(engine, client or make_client(cfg), nodes=split_list(cfg.nodes),
                          feeds=split_list(cfg.feeds), max_pages=cfg.max_pages, progress=cfg.progress,
                          on_page=on_page)
    finally:
        engine.dispose()


def import_qa_dump(cfg: CollectConfig) -> dict[str, Any]:
    """Import ``cfg.qa_path`` into ``cfg.db_url`` with the configured columns."""
    from lawclf.collect import qa, store

    if not cfg.qa_path:
        raise ValueError("no Q&A file given: set qa_path (--qa-path)")
    engine = store.open_db(cfg.db_url)
    try:
        return qa.import_qa(engine, cfg.qa_path, title_field=cfg.qa_title_field,
                            body_fields=split_list(cfg.qa_body_fields), id_field=cfg.qa_id_field,
                            source=cfg.qa_source, label=cfg.qa_label, lenient=cfg.lenient,
                            node_field=cfg.qa_node_field)
    finally:
        engine.dispose()


def export(cfg: CollectConfig) -> dict[str, Any]:
    """Write the two-file JSONL layout to ``cfg.out_dir``; returns the counts."""
    from lawclf.collect import store
    from lawclf.collect.jsonl import export_jsonl

    engine = store.open_db(cfg.db_url)
    try:
        return export_jsonl(engine, cfg.out_dir, cfg.min_chars, cfg.max_chars)
    finally:
        engine.dispose()


def db_stats(cfg: CollectConfig) -> dict[str, Any]:
    from lawclf.collect import store

    engine = store.open_db(cfg.db_url)
    try:
        return store.stats(engine)
    finally:
        engine.dispose()


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``lawclf collect {v2ex,import-qa,export,stats} [options]``."""
    parser = argparse.ArgumentParser(prog="lawclf collect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"v2ex": "crawl V2EX topics into the database",
             "import-qa": "import a Q&A dump (CSV/JSONL) into the database",
             "export": "write legal.jsonl + nonlegal.jsonl", "stats": "show what the database holds"}
    for name, help_ in helps.items():
        add_config_args(sub.add_parser(name, help=help_), CollectConfig)
    args = parser.parse_args(argv)
    cfg = config_from_args(CollectConfig, args)
    actions = {"v2ex": crawl_v2ex, "import-qa": import_qa_dump, "export": export, "stats": db_stats}
    try:
        result = actions[args.command](cfg)
    except (ValueError, FileNotFoundError) as exc:  # bad input: a clear message, no traceback
        print(f"lawclf collect {args.command}: {exc}", file=sys.stderr)
        return 2
    from lawclf.collect.store import redact_url

    print(f"[collect] database: {redact_url(cfg.db_url)}", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    if args.command == "v2ex" and result["failures"]:
        print(f"[collect] {len(result['failures'])} request(s) failed after retries; "
              "they are recorded in crawl_failures and retried on the next run", file=sys.stderr)
        return 1
    return 0
