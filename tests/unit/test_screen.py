"""The screening pass: each post stored and scored once, digests, history, crashes at every step."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from lawclf.config import ScreenConfig
from lawclf.screen import job
from lawclf.screen.store import posts, screen_digest, screen_passes, screen_scores
from lawclf_dev.fake_v2ex import FakeV2EX, topics_from_texts

LEGAL = ["公司拖欠工资三个月，我该怎么申请劳动仲裁？", "离婚时房子只写了男方名字，女方能分到吗？",
         "租房押金房东不退，可以去法院起诉吗？", "交通事故对方全责但拒绝赔偿怎么办？"]
OTHER = ["大家平时用什么键盘写代码？", "周末去杭州玩有什么推荐的地方？", "Python 和 Go 哪个更适合做后端？",
         "新买的显示器有坏点，值得换吗？", "程序员三十岁以后都去做什么了？", "有没有好用的记账软件推荐"]


class KeywordScorer:
    """A stand-in model: legal words -> 0.9, '怎么办' alone -> 0.55 (uncertain), else 0.1."""

    threshold = 0.5

    def __init__(self, version: str = "v1", fail_after: int = -1):
        self.version = version
        self.calls = 0
        self.fail_after = fail_after

    def predict_proba(self, texts):
        if self.calls == self.fail_after:
            raise RuntimeError("simulated crash while scoring")
        self.calls += 1
        words = ("仲裁", "离婚", "起诉", "赔偿", "律师", "合同")
        return [0.9 if any(w in t for w in words) else 0.55 if "怎么办" in t else 0.1 for t in texts]


@pytest.fixture
def fake():
    topics = topics_from_texts(LEGAL[:2] + OTHER[:3], first_id=100, node="qna")
    with FakeV2EX(nodes={"qna": list(reversed(topics))}, latest=list(reversed(topics)), per_page=3) as server:
        yield server


def _cfg(tmp_path, fake, **kw) -> ScreenConfig:
    values = dict(db_url=f"sqlite:///{tmp_path}/screen.db", out_dir=str(tmp_path / "out"), base_url=fake.url,
                  feeds="latest", nodes="qna", max_pages=5, requests_per_hour=3_600_000)
    return ScreenConfig(**{**values, **kw})


def _client(fake):
    from lawclf.collect.v2ex import V2EXClient

    return V2EXClient(base_url=fake.url, requests_per_hour=3_600_000, max_retries=0)


def _snapshot(cfg: ScreenConfig) -> dict:
    engine = job.open_db(cfg.db_url)
    with engine.connect() as conn:
        post_ids = conn.execute(sa.select(posts.c.external_id).order_by(posts.c.external_id)).scalars().all()
        scores = conn.execute(sa.select(screen_scores.c.post_id, screen_scores.c.model_version)).all()
        digest = conn.execute(sa.select(screen_digest.c.post_id)).scalars().all()
    engine.dispose()
    return {"posts": post_ids, "scores": sorted(scores), "digest": sorted(digest)}


def test_two_passes_store_and_score_each_post_once(tmp_path, fake):
    cfg = _cfg(tmp_path, fake)
    first = job.run_pass(cfg, KeywordScorer(), _client(fake))
    assert first["status"] == "ok", first["problems"]
    assert (first["new_posts"], first["scored"], first["flagged"]) == (5, 5, 2)

    fake.publish(topics_from_texts(LEGAL[2:] + OTHER[3:5], first_id=200, node="qna"), node="qna")
    second = job.run_pass(cfg, KeywordScorer(), _client(fake))
    assert (second["new_posts"], second["scored"], second["flagged"]) == (4, 4, 2)  # only the new ones

    snap = _snapshot(cfg)
    assert len(snap["posts"]) == len(set(snap["posts"])) == 9
    assert len(snap["scores"]) == len(set(snap["scores"])) == 9
    third = job.run_pass(cfg, KeywordScorer(), _client(fake))  # nothing new: nothing to do
    assert (third["new_posts"], third["scored"], third["flagged"]) == (0, 0, 0)

    digest = json.loads((tmp_path / "out" / "digests" / f"pass-{second['pass_id']:06d}.json").read_text())
    assert [p["title"] for p in digest["posts"]] == [LEGAL[3], LEGAL[2]]  # newest first
    assert digest["posts"][0]["url"] == "https://www.v2ex.com/t/201"
    assert (tmp_path / "out" / "digests" / "latest.html").read_text() == \
        (tmp_path / "out" / "digests" / f"pass-{second['pass_id']:06d}.html").read_text()


def test_a_node_walk_stops_at_the_first_page_that_reaches_what_was_stored(tmp_path, fake):
    cfg = _cfg(tmp_path, fake, feeds="")
    job.run_pass(cfg, KeywordScorer(), _client(fake))
    fake.requests.clear()
    fake.publish(topics_from_texts(["又一个新问题：合同到期公司不续签有补偿吗？"], first_id=300), node="qna")
    result = job.run_pass(cfg, KeywordScorer(), _client(fake))
    pages = [q.get("page") for path, q in fake.requests if path == "/api/topics/show.json"]
    assert result["new_posts"] == 1
    assert pages == ["1"]  # page 1 had the new post and reached the posts stored before: stop


def test_a_feed_that_overlaps_page_one_does_not_end_the_walk(tmp_path):
    topics = topics_from_texts(OTHER * 5, first_id=1, node="qna")  # 30 topics, 3 per page
    newest_first = list(reversed(topics))
    with FakeV2EX(nodes={"qna": newest_first}, latest=newest_first[:3], per_page=3) as server:
        cfg = _cfg(tmp_path, server, max_pages=20)
        result = job.run_pass(cfg, KeywordScorer(), _client(server))
    assert result["new_posts"] == 30  # the feed brought page 1's topics first; the walk went on


def test_a_new_model_version_keeps_the_history_and_lists_nothing_twice(tmp_path, fake):
    cfg = _cfg(tmp_path, fake)
    job.run_pass(cfg, KeywordScorer("v1"), _client(fake))
    result = job.run_pass(cfg, KeywordScorer("v2"), _client(fake))
    assert result["scored"] == 5 and result["flagged"] == 0  # re-scored, already in a digest
    versions = [v for _, v in _snapshot(cfg)["scores"]]
    assert versions.count("v1") == versions.count("v2") == 5
    status = job.status(cfg)
    assert {s["model_version"]: s["scored"] for s in status["scores"]} == {"v1": 5, "v2": 5}
    assert [p["model_version"] for p in status["passes"]] == ["v2", "v1"]


@pytest.mark.parametrize("crash_at", ["collect", "score", "digest", "notify", "files", "scorer"])
def test_a_crash_at_any_step_loses_nothing_and_duplicates_nothing(tmp_path, fake, crash_at):
    reference = _cfg(tmp_path / "ref", fake)
    job.run_pass(reference, KeywordScorer(), _client(fake))
    expected = _snapshot(reference)

    cfg = _cfg(tmp_path / "crash", fake, score_chunk=2)

    def crash(stage: str) -> None:
        if stage == crash_at:
            raise RuntimeError(f"simulated crash at {stage}")

    scorer = KeywordScorer(fail_after=1 if crash_at == "scorer" else -1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        job.run_pass(cfg, scorer, _client(fake), on_stage=crash)
    after = job.run_pass(cfg, KeywordScorer(), _client(fake))
    assert after["status"] == "ok"
    got = _snapshot(cfg)
    assert got["posts"] == expected["posts"]
    assert len(got["scores"]) == len(expected["scores"]) and len(set(got["scores"])) == len(got["scores"])
    assert len(got["digest"]) == len(expected["digest"]) == 2
    engine = job.open_db(cfg.db_url)
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(screen_passes.c.status).order_by(screen_passes.c.id)).scalars().all()
        digested_passes = set(conn.execute(sa.select(screen_digest.c.pass_id)).scalars())
    engine.dispose()
    assert statuses == ["failed", "ok"]
    # the digest files exist for whichever pass the posts were listed in
    for pass_id in digested_passes:
        assert (tmp_path / "crash" / "out" / "digests" / f"pass-{pass_id:06d}.html").exists()


def test_a_source_that_is_down_does_not_stop_the_pass(tmp_path, fake):
    cfg = _cfg(tmp_path, fake)
    job.run_pass(cfg, KeywordScorer(), _client(fake))
    fake.add_fault("/api/topics/latest.json", "500", times=5)
    fake.add_fault("node_name=qna", "500", times=5)
    result = job.run_pass(cfg, KeywordScorer(), _client(fake))
    assert result["status"] == "partial" and len(result["problems"]) == 2
    assert job.status(cfg)["passes"][0]["status"] == "partial"


def test_configuration_errors_are_named(tmp_path, fake):
    with pytest.raises(ValueError, match="unknown source"):
        job.run_pass(_cfg(tmp_path, fake, sources="v2ex,rss"), KeywordScorer(), _client(fake))
    with pytest.raises(ValueError, match="KIND=http"):
        job.run_pass(_cfg(tmp_path, fake, webhooks="slack=ftp://x"), KeywordScorer(), _client(fake))


def test_the_file_source_imports_new_posts(tmp_path, fake):
    path = tmp_path / "new.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "title": t, "content": ""}, ensure_ascii=False)
                              for i, t in enumerate(LEGAL[:2])) + "\n", encoding="utf-8")
    cfg = _cfg(tmp_path, fake, sources="file", import_path=str(path))
    result = job.run_pass(cfg, KeywordScorer(), _client(fake))
    assert (result["new_posts"], result["flagged"]) == (2, 2)
    again = job.run_pass(cfg, KeywordScorer(), _client(fake))
    assert again["new_posts"] == 0


def test_digest_html_escapes_post_text(tmp_path):
    html_text = job.render_digest_html({"pass_id": 1, "count": 1, "posts": [
        {"created": "2026-01-01T00:00:00+00:00", "score": 0.9, "source": "v2ex", "node": "", "title": "<script>x</script>",
         "text": "<b>y</b>", "url": "https://example.org/t/1\" onclick=\"x"}]})
    assert "<script>x" not in html_text and "&lt;script&gt;" in html_text and '" onclick' not in html_text


def test_status_is_unhealthy_while_a_node_walk_is_open(tmp_path, fake):
    """A burst beyond the page cap leaves the walk open: `screen status` exits 1 and names the
    node until a later pass has walked back to the posts stored before."""
    from lawclf.screen import cli

    cfg = _cfg(tmp_path, fake, feeds="", max_pages=2)
    assert job.run_pass(cfg, KeywordScorer(), client=_client(fake))["status"] == "ok"  # the node's baseline
    fake.publish(topics_from_texts([f"新帖 {i}" for i in range(12)], first_id=500), node="qna")  # 4 pages
    assert job.run_pass(cfg, KeywordScorer(), client=_client(fake))["status"] == "partial"
    status = job.status(cfg)
    assert not status["healthy"] and len(status["open_walks"]) == 1 and "qna" in status["open_walks"][0]
    assert cli(["status", "--db-url", cfg.db_url]) == 1
    for _ in range(3):
        job.run_pass(cfg, KeywordScorer(), client=_client(fake))
    status = job.status(cfg)
    assert status["healthy"] and status["open_walks"] == [] and status["problems"] == []
    assert cli(["status", "--db-url", cfg.db_url]) == 0


@pytest.mark.parametrize("url, says", [
    ("not a url", "is not a database URL"),
    ("mysql://u@db.example/x", "'mysql' databases are not supported"),
    ("nonsense://x", "'nonsense' databases are not supported"),
    ("postgresql+psycopg://u:secret@127.0.0.1:1/x", "cannot write postgresql+psycopg://u:***@127.0.0.1:1/x"),
    ("READONLY", "cannot write"),
    ("UNDER_A_FILE", "cannot create the folder"),
])
@pytest.mark.parametrize("command", [["screen", "run"], ["screen", "notify"], ["collect", "stats"]])
def test_a_database_that_cannot_be_used_is_one_line_naming_the_setting(tmp_path, capsys, url, says, command):
    from lawclf.cli import main

    if url == "READONLY":
        path = tmp_path / "ro.db"
        job.open_db(f"sqlite:///{path}").dispose()
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    elif url == "UNDER_A_FILE":
        (tmp_path / "a-file").write_text("x")
        url = f"sqlite:///{tmp_path}/a-file/screen.db"
    assert main([*command, "--db-url", url, "--model-dir", str(tmp_path / "no-model")]
                if command[1] == "run" else [*command, "--db-url", url]) == 2
    err = capsys.readouterr().err
    assert "db_url: " in err and says in err, err
    assert "Traceback" not in err and "secret" not in err
    assert len([line for line in err.splitlines() if not line.startswith("[")]) == 1, err


@pytest.mark.parametrize("command, setting", [(["screen", "run"], "out_dir"), (["screen", "export-reviews"], "reviews_out_dir")])
def test_a_folder_that_cannot_be_written_fails_before_any_work(tmp_path, capsys, command, setting):
    from lawclf.cli import main

    (tmp_path / "a-file").write_text("x")
    blocked = str(tmp_path / "a-file" / "out")  # under a file: cannot be created, even by root
    flag = "--" + setting.replace("_", "-")
    assert main([*command, "--db-url", f"sqlite:///{tmp_path}/s.db", flag, blocked,
                 "--model-dir", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert f"{setting}: cannot write in {blocked}" in err and "Traceback" not in err
    assert not (tmp_path / "s.db").exists() or command[1] == "export-reviews"
