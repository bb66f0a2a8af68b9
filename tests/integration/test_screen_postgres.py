"""The screening pass, the review API and the export on a real PostgreSQL (same checks as on SQLite)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from test_collect_postgres import pg_url, schema_url  # noqa: F401 (pytest fixtures)

from lawclf.config import ScreenConfig
from lawclf.screen import job
from lawclf.screen.review import create_review_app, export_reviews
from lawclf.screen.store import screen_scores
from lawclf_dev.fake_v2ex import FakeV2EX, topics_from_texts

pytestmark = pytest.mark.integration

TEXTS = ["公司拖欠工资三个月，我该怎么申请劳动仲裁？", "周末去杭州玩有什么推荐的地方？", "借了朋友五千块钱一直没还，我该怎么办？",
         "离婚时房子只写了男方名字，女方能分到吗？", "有没有好用的记账软件推荐"]


class Scorer:
    threshold, version = 0.5, "pg-v1"

    def __init__(self, crash_after: int = -1):
        self.calls, self.crash_after = 0, crash_after

    def predict_proba(self, texts):
        if self.calls == self.crash_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        return [0.9 if ("仲裁" in t or "离婚" in t) else 0.55 if "怎么办" in t else 0.1 for t in texts]


def test_a_pass_crash_and_rerun_review_and_export_on_postgres(schema_url, tmp_path):  # noqa: F811
    topics = list(reversed(topics_from_texts(TEXTS, first_id=1, node="qna")))
    with FakeV2EX(nodes={"qna": topics}, latest=topics, per_page=2) as fake:
        cfg = ScreenConfig(db_url=schema_url, out_dir=str(tmp_path / "out"), base_url=fake.url, nodes="qna",
                           feeds="latest", max_pages=5, requests_per_hour=3_600_000, score_chunk=2,
                           reviews_out_dir=str(tmp_path / "reviews"))
        with pytest.raises(RuntimeError):
            job.run_pass(cfg, Scorer(crash_after=1))
        result = job.run_pass(cfg, Scorer())
    assert result["status"] == "ok" and result["flagged"] == 3  # 0.55 is over the threshold too
    engine = job.open_db(cfg.db_url)
    assert engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(screen_scores)).scalar_one() == 5
    engine.dispose()
    assert [p["status"] for p in job.status(cfg)["passes"]] == ["ok", "failed"]

    client = create_review_app(cfg).test_client()
    uncertain = client.get("/api/posts?queue=uncertain").get_json()["posts"]
    assert [p["title"] for p in uncertain] == [TEXTS[2]]
    assert client.post("/api/reviews", json={"post_id": uncertain[0]["id"], "label": 0}).status_code == 201
    assert export_reviews(cfg)["nonlegal"] == 1
