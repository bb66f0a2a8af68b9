"""The collect stage against a real PostgreSQL (started by scripts/start-postgres.sh in .ci/run).

Each test gets its own schema (``search_path``), so runs never see each other's rows.
Without a reachable server the tests skip with a message, except under CI=true, where
they fail: CI is supposed to have started one.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from lawclf.collect import store
from lawclf.collect.jsonl import export_jsonl
from lawclf.collect.qa import import_qa
from lawclf.collect.v2ex import V2EXClient, crawl
from lawclf_dev.fake_v2ex import FakeClock, FakeV2EX

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v2ex"
NODES = json.loads((FIXTURES / "topics.json").read_text(encoding="utf-8"))["nodes"]
ALL_IDS = {str(t["id"]) for node in ("python", "career") for t in NODES[node]}
#: What scripts/start-postgres.sh creates; LAWCLF_TEST_PG_URL overrides it.
DEFAULT_URL = "postgresql+psycopg://lawclf:lawclf@127.0.0.1:5432/lawclf_test"


@pytest.fixture(scope="module")
def pg_url() -> str:
    url = os.environ.get("LAWCLF_TEST_PG_URL", DEFAULT_URL)
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # no driver, no server, bad credentials: all mean "no PostgreSQL here"
        message = (f"PostgreSQL not reachable at {sa.engine.make_url(url).render_as_string(hide_password=True)} "
                   f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                   "start one with `sudo bash scripts/start-postgres.sh` or set LAWCLF_TEST_PG_URL")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def schema_url(pg_url):
    """A fresh schema for one test; the URL sets it as the search_path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    yield f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def stored_ids(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.posts.c.external_id).where(store.posts.c.source == "v2ex")).scalars())


def test_crawl_with_faults_and_crash_then_resume(schema_url, tmp_path):
    engine = store.open_db(schema_url)
    assert engine.dialect.name == "postgresql"
    clock = FakeClock()
    with FakeV2EX.from_fixture(FIXTURES / "topics.json", per_page=10, clock=clock) as fake:
        fake.add_fault("node_name=python&page=2", "429", times=1, retry_after="30")
        fake.add_fault("node_name=career&page=1", "malformed", times=1)
        client = V2EXClient(base_url=fake.url, requests_per_hour=3600, clock=clock, sleep=clock.sleep, timeout=5)
        seen = []

        def crash_after_five(task, page):
            seen.append(page)
            if len(seen) == 5:
                raise KeyboardInterrupt("simulated crash")

        with pytest.raises(KeyboardInterrupt):
            crawl(engine, client, nodes=["python", "career"], feeds=["latest"], max_pages=10,
                  progress=False, on_page=crash_after_five)
        summary = crawl(engine, client, nodes=["python", "career"], max_pages=10, progress=False)
    assert 30.0 in clock.sleeps and summary["failures"] == []
    ids = stored_ids(engine)
    feed_only = {"940001", "940002", str(NODES["apple"][2]["id"])}
    assert len(ids) == len(set(ids)) and set(ids) == ALL_IDS | feed_only
    with engine.connect() as conn:
        assert store.get_state(conn, "v1:node:career")["done"]

    # The Q&A import is idempotent here too, and the export reads PostgreSQL.
    assert import_qa(engine, FIXTURES / "qa_sample.csv")["new"] == 22
    assert import_qa(engine, FIXTURES / "qa_sample.csv")["updated"] == 22
    counts = export_jsonl(engine, tmp_path / "out")
    assert counts["legal"] == 22 and counts["nonlegal"] + counts["duplicates"] + counts["too_short"] == len(ids)
    assert store.stats(engine)["posts"] == 22 + len(ids)
    engine.dispose()


def test_upsert_updates_edited_posts(schema_url):
    engine = store.open_db(schema_url)
    row = {"source": "v2ex", "external_id": "7", "title": "旧标题", "body": "正文", "node": "python", "label": 0}
    with engine.begin() as conn:
        assert store.upsert_posts(conn, [row]) == {"new": 1, "updated": 0}
    with engine.begin() as conn:
        assert store.upsert_posts(conn, [{**row, "title": "新标题"}, {**row, "external_id": "8"}]) == {"new": 1, "updated": 1}
    with engine.connect() as conn:
        titles = dict(conn.execute(sa.select(store.posts.c.external_id, store.posts.c.title)).all())
    assert titles == {"7": "新标题", "8": "旧标题"}
    engine.dispose()


def test_killed_crawler_process_resumes_into_postgres(schema_url):
    with FakeV2EX.from_fixture(FIXTURES / "topics.json", per_page=10) as server:
        server.add_fault("node_name=python&page=3", "hang")
        server.kill_crawler_when_hanging(schema_url, "python,career")
        engine = store.open_db(schema_url)
        assert set(stored_ids(engine)) == {str(t["id"]) for t in NODES["python"][:20]}
        crawl(engine, V2EXClient(base_url=server.url, requests_per_hour=3_600_000, timeout=5),
              nodes=["python", "career"], max_pages=10, progress=False)
    ids = stored_ids(engine)
    engine.dispose()
    assert len(ids) == len(set(ids)) and set(ids) == ALL_IDS
    python_pages = [int(q["page"]) for _, q in server.requests if q.get("node_name") == "python"]
    assert python_pages == [1, 2, 3, 3, 4]
