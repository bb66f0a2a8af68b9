"""The V2EX crawler against a local fake server (tests/fixtures/v2ex): never the internet.

Rate limits, server errors, malformed JSON, dropped connections and crashes mid-run
(an exception after page N, and a real SIGKILL of a crawler process) followed by a
resume that loses nothing and duplicates nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from lawclf.collect import store
from lawclf.collect.v2ex import FetchError, V2EXClient, crawl
from lawclf_dev.fake_v2ex import FakeClock, FakeV2EX

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v2ex" / "topics.json"
NODES = json.loads(FIXTURE.read_text(encoding="utf-8"))["nodes"]
PY_IDS = {str(t["id"]) for t in NODES["python"]}      # 25 topics: pages of 10 -> 3 pages
CAREER_IDS = {str(t["id"]) for t in NODES["career"]}  # 23 topics -> 3 pages


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake(clock):
    with FakeV2EX.from_fixture(FIXTURE, per_page=10, token="secret-token", clock=clock) as server:
        yield server


@pytest.fixture
def engine(tmp_path):
    eng = store.open_db(f"sqlite:///{tmp_path / 'collect.db'}")
    yield eng
    eng.dispose()


def client_for(fake, clock, **kwargs) -> V2EXClient:
    kwargs.setdefault("requests_per_hour", 3600)
    return V2EXClient(base_url=fake.url, clock=clock, sleep=clock.sleep, rng=random.Random(0),
                      timeout=5, **kwargs)


def stored_ids(engine, source="v2ex") -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.posts.c.external_id).where(store.posts.c.source == source)).scalars())


def node_requests(fake, node: str) -> list[int]:
    return [int(q["page"]) for path, q in fake.requests if q.get("node_name") == node]


def test_v1_crawl_feeds_and_nodes_dedupes_by_topic_id(fake, clock, engine):
    summary = crawl(engine, client_for(fake, clock), nodes=["python", "career"], feeds=["latest", "hot"],
                    max_pages=10, progress=False)
    ids = stored_ids(engine)
    assert len(ids) == len(set(ids))  # the feeds repeat node topics: still one row each
    feed_only = {"940001", "940002", str(NODES["apple"][2]["id"])}
    assert set(ids) == PY_IDS | CAREER_IDS | feed_only
    assert summary["new"] == len(ids) and summary["failures"] == []
    assert node_requests(fake, "python") == [1, 2, 3, 4]  # page 4 is empty: the node is done
    with engine.connect() as conn:
        state = store.get_state(conn, "v1:node:python")
        row = conn.execute(sa.select(store.posts).where(store.posts.c.external_id == "910001")).mappings().one()
    assert state["done"] and state["next_page"] == 5
    assert row["node"] == "python" and row["label"] == 0 and row["title"].startswith("Python")
    assert "demo_user" not in json.dumps({k: str(v) for k, v in row.items()})  # no user names stored

    # A second run does not refetch finished nodes and changes nothing.
    before = len(fake.requests)
    again = crawl(engine, client_for(fake, clock), nodes=["python", "career"], max_pages=10, progress=False)
    assert len(fake.requests) == before and again["pages"] == 0
    assert sorted(stored_ids(engine)) == sorted(ids)


def test_an_endpoint_that_ignores_page_is_not_crawled_forever(fake, clock, engine):
    fake.v1_pagination = False
    crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=50, progress=False)
    assert node_requests(fake, "python") == [1, 2]  # page 2 == page 1: stop
    assert set(stored_ids(engine)) == {str(t["id"]) for t in NODES["python"][:10]}
    with engine.connect() as conn:
        assert store.get_state(conn, "v1:node:python")["done"]


def test_unknown_feed_fails_before_any_request(fake, clock, engine):
    with pytest.raises(ValueError, match="unknown feed"):
        crawl(engine, client_for(fake, clock), nodes=["python"], feeds=["latest", "newest"], progress=False)
    assert fake.requests == []


def test_v2_with_token_uses_pagination_and_bearer(fake, clock, engine):
    client = client_for(fake, clock, token="secret-token")
    summary = crawl(engine, client, nodes=["python"], max_pages=10, progress=False)
    assert set(stored_ids(engine)) == PY_IDS
    assert [q["p"] for path, q in fake.requests] == ["1", "2", "3"]  # stops at pagination.pages
    assert summary["api"] == "v2"
    with engine.connect() as conn:
        assert store.get_state(conn, "v2:node:python")["done"]


def test_v2_bad_token_is_not_retried(fake, clock, engine):
    summary = crawl(engine, client_for(fake, clock, token="wrong"), nodes=["python"], progress=False)
    assert len(fake.requests) == 1
    assert "HTTP 401" in summary["failures"][0]["error"]


def test_max_pages_stops_and_a_later_run_carries_on(fake, clock, engine):
    crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=2, progress=False)
    assert len(stored_ids(engine)) == 20
    crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=10, progress=False)
    assert node_requests(fake, "python") == [1, 2, 3, 4]
    assert sorted(stored_ids(engine)) == sorted(PY_IDS)


def test_429_honours_retry_after(fake, clock, engine):
    fake.add_fault("node_name=python&page=2", "429", times=2, retry_after="42")
    summary = crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=10, progress=False)
    assert clock.sleeps.count(42.0) == 2
    assert summary["retries"] == 2 and summary["failures"] == []
    assert set(stored_ids(engine)) == PY_IDS


def test_500_and_dropped_connections_back_off_then_succeed(fake, clock, engine):
    fake.add_fault("node_name=python&page=1", "500", times=2)
    fake.add_fault("node_name=python&page=3", "drop", times=1)
    client = client_for(fake, clock, backoff_base=4.0)
    summary = crawl(engine, client, nodes=["python"], max_pages=10, progress=False)
    assert summary["retries"] == 3 and summary["failures"] == []
    assert set(stored_ids(engine)) == PY_IDS
    backoffs = [s for s in clock.sleeps if s not in (1.0,)]
    assert len(clock.sleeps) >= 3 and all(0 <= s <= 16 for s in backoffs)


def test_rate_limit_headers_make_us_wait_for_the_reset(fake, clock, engine):
    fake.add_fault("node_name=python&page=1", "exhausted")
    start = clock()
    crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=2, progress=False)
    # The window advertised by the server is one hour: the next request waits for it.
    assert any(s >= fake.window_s for s in clock.sleeps)
    assert clock() - start >= fake.window_s
    assert node_requests(fake, "python") == [1, 2]


def test_a_lower_advertised_limit_slows_us_down(fake, clock, engine):
    fake.rate_limit = 60  # the server says 60/hour; our own budget is 3600/hour
    crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=3, progress=False)
    assert clock.sleeps[-2:] == pytest.approx([60.0, 60.0])  # one request a minute after the first answer


def test_malformed_json_is_retried_then_recorded_and_resumed(fake, clock, engine):
    fake.add_fault("node_name=python&page=2", "malformed", times=3)
    client = client_for(fake, clock, max_retries=2)
    summary = crawl(engine, client, nodes=["python", "career"], max_pages=10, progress=False)
    # Page 2 failed 3 times (1 + 2 retries): recorded, python stops there, career goes on.
    assert [f["page"] for f in summary["failures"]] == [2]
    assert "malformed JSON" in summary["failures"][0]["error"]
    assert set(stored_ids(engine)) == {str(t["id"]) for t in NODES["python"][:10]} | CAREER_IDS
    with engine.connect() as conn:
        assert store.get_state(conn, "v1:node:python")["next_page"] == 2
        assert conn.execute(sa.select(sa.func.count()).select_from(store.crawl_failures)).scalar_one() == 1

    crawl(engine, client_for(fake, clock), nodes=["python", "career"], max_pages=10, progress=False)
    assert node_requests(fake, "python") == [1, 2, 2, 2, 2, 3, 4]
    ids = stored_ids(engine)
    assert len(ids) == len(set(ids)) and set(ids) == PY_IDS | CAREER_IDS


def test_get_json_raises_after_bounded_retries(fake, clock):
    fake.add_fault("latest", "500", times=10)
    client = client_for(fake, clock, max_retries=3)
    with pytest.raises(FetchError, match="HTTP 500 after 4 attempts"):
        client.feed("latest")
    assert len(fake.requests) == 4


def test_crash_after_page_n_then_resume_loses_and_duplicates_nothing(fake, clock, engine):
    pages_seen = []

    def crash_after_four(task, page):
        pages_seen.append((task, page))
        if len(pages_seen) == 4:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        crawl(engine, client_for(fake, clock), nodes=["python", "career"], max_pages=10,
              progress=False, on_page=crash_after_four)
    # python pages 1-4 are committed (4 is the empty page); career untouched.
    assert set(stored_ids(engine)) == PY_IDS
    crawl(engine, client_for(fake, clock), nodes=["python", "career"], max_pages=10, progress=False)
    ids = stored_ids(engine)
    assert len(ids) == len(PY_IDS | CAREER_IDS) == len(set(ids))
    assert set(ids) == PY_IDS | CAREER_IDS
    assert node_requests(fake, "python") == [1, 2, 3, 4]
    assert node_requests(fake, "career") == [1, 2, 3, 4]


def test_page_rows_and_progress_commit_together(fake, clock, engine, monkeypatch):
    """A crash between writing a page's posts and its progress leaves neither behind."""
    real_set_state = store.set_state
    calls = []

    def crash_on_second_page(conn, task, *args):
        calls.append(task)
        if len(calls) == 2:
            raise RuntimeError("crash inside the transaction")
        real_set_state(conn, task, *args)

    monkeypatch.setattr(store, "set_state", crash_on_second_page)
    with pytest.raises(RuntimeError, match="inside the transaction"):
        crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=10, progress=False)
    assert set(stored_ids(engine)) == {str(t["id"]) for t in NODES["python"][:10]}  # page 2 rolled back
    monkeypatch.setattr(store, "set_state", real_set_state)
    crawl(engine, client_for(fake, clock), nodes=["python"], max_pages=10, progress=False)
    assert node_requests(fake, "python") == [1, 2, 2, 3, 4]
    assert sorted(stored_ids(engine)) == sorted(PY_IDS)


def test_killed_crawler_process_resumes_without_loss(tmp_path):
    """SIGKILL a real `lawclf collect v2ex` process while it waits for a page, then resume."""
    db_url = f"sqlite:///{tmp_path / 'collect.db'}"
    with FakeV2EX.from_fixture(FIXTURE, per_page=10) as server:
        server.add_fault("node_name=career&page=2", "hang")
        server.kill_crawler_when_hanging(db_url, "python,career")
        engine = store.open_db(db_url)
        try:
            assert set(stored_ids(engine)) == PY_IDS | {str(t["id"]) for t in NODES["career"][:10]}
            summary = crawl(engine, V2EXClient(base_url=server.url, requests_per_hour=3_600_000, timeout=5),
                            nodes=["python", "career"], max_pages=10, progress=False)
            ids = stored_ids(engine)
        finally:
            engine.dispose()
    assert summary["failures"] == []
    assert len(ids) == len(set(ids)) and set(ids) == PY_IDS | CAREER_IDS
    # After the kill only career page 2 onwards was fetched again; python was not refetched.
    assert node_requests(server, "python") == [1, 2, 3, 4]
    assert node_requests(server, "career") == [1, 2, 2, 3, 4]


def test_crawl_import_export_feeds_the_data_stage(fake, clock, engine, tmp_path):
    from lawclf import data
    from lawclf.collect.jsonl import export_jsonl
    from lawclf.collect.qa import import_qa
    from lawclf.config import DataConfig

    crawl(engine, client_for(fake, clock), nodes=["python", "career", "apple"], feeds=["latest", "hot"],
          max_pages=10, progress=False)
    import_qa(engine, FIXTURE.parent / "qa_sample.csv")
    out = tmp_path / "export"
    counts = export_jsonl(engine, out)
    assert counts["legal"] == 22 and counts["nonlegal"] >= 50
    for name, label in (("legal.jsonl", 1), ("nonlegal.jsonl", 0)):
        rows = [json.loads(line) for line in (out / name).read_text(encoding="utf-8").splitlines()]
        assert rows and all(set(r) == {"text", "label", "source"} and r["label"] == label for r in rows)
        assert len({r["text"] for r in rows}) == len(rows)
    summary = data.prepare(DataConfig(run_dir=str(tmp_path / "run"), data_dir=str(out)), plots=False)
    assert summary["counts"]["rejected"] == 0
    assert summary["per_label"]["loaded"] == {"non_legal": counts["nonlegal"], "legal": counts["legal"]}
    assert sum(s["total"] for s in summary["splits"].values()) == summary["counts"]["kept"] > 60
