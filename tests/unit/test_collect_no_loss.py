"""The screening job's crawl (collect.v2ex.refresh) loses no post: kills, failed pages and the page cap
only leave a node walk to be carried on, never end it early (issue: nothing lost under faults)."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from lawclf.collect import store
from lawclf.collect.v2ex import V2EXClient, refresh
from lawclf_dev.fake_v2ex import FakeV2EX, topics_from_texts


class Killed(BaseException):
    """A SIGKILL stand-in: raised from the commit hook, so nothing after that commit runs."""


class KillAfter:
    """``on_page`` hook: kills (raises :class:`Killed`) after the ``n``-th commit of a pass (0 = never)."""

    def __init__(self, n: int):
        self.n, self.commits = n, 0

    def __call__(self, task: str, page: int) -> None:
        self.commits += 1
        if self.commits == self.n:
            raise Killed


def _client(fake: FakeV2EX) -> V2EXClient:
    return V2EXClient(base_url=fake.url, requests_per_hour=3_600_000, max_retries=0)


def _stored(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(store.posts.c.external_id)).scalars())


def _topics(n: int, first_id: int):
    return topics_from_texts([f"帖子 {first_id + i}" for i in range(n)], first_id=first_id)


@pytest.fixture
def engine(tmp_path):
    return store.open_db(f"sqlite:///{tmp_path}/s.db")


def test_a_pass_killed_after_the_feed_leaves_the_node_walk_for_the_next_pass(engine):
    with FakeV2EX(nodes={"qna": []}, per_page=20) as fake:
        fake.publish(_topics(20, 1), node="qna")
        refresh(engine, _client(fake), nodes=["qna"], max_pages=30)  # the baseline walk
        fake.publish(_topics(400, 1000), node="qna")

        def kill_after_the_feed(task: str, page: int) -> None:
            if task.endswith("feed:latest"):
                raise Killed

        with pytest.raises(Killed):
            refresh(engine, _client(fake), nodes=["qna"], max_pages=30, on_page=kill_after_the_feed)
        assert len(_stored(engine)) == 40  # 20 old + the feed's 20
        second = refresh(engine, _client(fake), nodes=["qna"], max_pages=30)
    assert second["gaps"] == [] and second["failures"] == []
    assert _stored(engine) == {str(i) for i in range(1, 21)} | {str(i) for i in range(1000, 1400)}


def test_a_failed_first_page_does_not_end_the_walk_next_pass(engine):
    with FakeV2EX(nodes={"qna": []}, per_page=20) as fake:
        fake.publish(_topics(20, 1), node="qna")
        refresh(engine, _client(fake), nodes=["qna"], max_pages=10)
        fake.publish(_topics(100, 1000), node="qna")
        fake.add_fault("node_name=qna", "500")  # page 1 of the node fails once; the feed still works
        first = refresh(engine, _client(fake), nodes=["qna"], max_pages=10)
        assert first["failures"] and len(_stored(engine)) == 40
        second = refresh(engine, _client(fake), nodes=["qna"], max_pages=10)
    assert second["failures"] == [] and len(_stored(engine)) == 120


def test_a_burst_beyond_the_page_cap_is_a_gap_then_closed(engine):
    with FakeV2EX(nodes={"qna": []}, per_page=20) as fake:
        fake.publish(_topics(20, 1), node="qna")
        refresh(engine, _client(fake), nodes=["qna"], feeds=[], max_pages=3)
        fake.publish(_topics(100, 1000), node="qna")  # 5 pages of new posts, 3 pages a pass
        first = refresh(engine, _client(fake), nodes=["qna"], feeds=[], max_pages=3)
        assert len(first["gaps"]) == 1 and first["gaps"][0] in first["failures"]  # the pass is partial
        assert len(_stored(engine)) == 80
        fake.publish(_topics(5, 2000), node="qna")  # posted meanwhile: pages shift, a resumed walk re-reads some
        gaps = [refresh(engine, _client(fake), nodes=["qna"], feeds=[], max_pages=3)["gaps"] for _ in range(3)]
    assert gaps[-1] == [] and len(_stored(engine)) == 125
    assert sum(bool(g) for g in gaps) <= 1  # closed by the second pass after the burst, at the latest


def test_a_nodes_first_walk_is_its_baseline_capped_without_a_gap(engine):
    with FakeV2EX(nodes={"qna": []}, per_page=20) as fake:
        fake.publish(_topics(200, 1), node="qna")
        first = refresh(engine, _client(fake), nodes=["qna"], feeds=[], max_pages=3)
        assert first["gaps"] == [] and len(_stored(engine)) == 60
        fake.publish(_topics(3, 500), node="qna")
        fake.requests.clear()
        second = refresh(engine, _client(fake), nodes=["qna"], feeds=[], max_pages=3)
    assert second["new"] == 3 and [q["page"] for _, q in fake.requests] == ["1"]


@pytest.mark.parametrize("seed", range(6))
def test_random_kills_failures_and_bursts_lose_nothing(engine, seed):
    """A seeded loop: bursts of new posts, random kills after a commit and random failed pages; then
    quiet passes. Invariant: every published post is stored once. Replay a failure with its seed."""
    rng = random.Random(seed)
    published: set[str] = set()
    next_id = 1
    faults = 0
    with FakeV2EX(nodes={"qna": []}, per_page=10) as fake:
        def publish(n: int) -> None:
            nonlocal next_id
            fake.publish(_topics(n, next_id), node="qna")
            published.update(str(i) for i in range(next_id, next_id + n))
            next_id += n

        publish(15)
        refresh(engine, _client(fake), nodes=["qna"], max_pages=4)
        for _ in range(25):
            publish(rng.choice([0, 1, 5, 12, 35, 60]))
            if rng.random() < 0.3:
                fake.add_fault("node_name=qna", rng.choice(["500", "503", "drop"]))
                faults += 1
            maybe_kill = KillAfter(rng.randint(1, 6) if rng.random() < 0.4 else 0)

            try:
                refresh(engine, _client(fake), nodes=["qna"], max_pages=rng.randint(1, 4), on_page=maybe_kill)
            except Killed:
                faults += 1
        fake.faults.clear()
        for _ in range(30):  # quiet passes close every gap
            if not refresh(engine, _client(fake), nodes=["qna"], max_pages=4)["gaps"]:
                break
    assert faults > 5
    missing = published - _stored(engine)
    assert not missing, f"seed {seed}: {len(missing)} published posts never stored, e.g. {sorted(missing)[:5]}"
