"""The review API (queues, reviews, auth, errors) and the export that feeds `lawclf prepare`."""

from __future__ import annotations

import base64
import json

import pytest

from lawclf.config import ConfigError, DataConfig, ScreenConfig
from lawclf.screen import job
from lawclf.screen.review import check_exposure, create_review_app, export_reviews
from lawclf_dev.fake_v2ex import FakeV2EX, topics_from_texts

TEXTS = ["公司拖欠工资三个月，我该怎么申请劳动仲裁？",      # 0.9 legal
         "借了朋友五千块钱一直没还，我该怎么办？",           # 0.53 uncertain, flagged
         "周末去杭州玩有什么推荐的地方？",                   # 0.1
         "装修公司延期两个月交房怎么办",                     # 0.42 uncertain, not flagged
         "离婚时房子只写了男方名字，女方能分到吗？"]         # 0.9 legal
SCORES = dict(zip(TEXTS, [0.9, 0.53, 0.1, 0.42, 0.9]))


class TableScorer:
    threshold, version = 0.5, "v1"

    def predict_proba(self, texts):
        return [SCORES[t] for t in texts]


@pytest.fixture
def screened(tmp_path):
    with FakeV2EX(nodes={}, latest=list(reversed(topics_from_texts(TEXTS, first_id=10)))) as fake:
        cfg = ScreenConfig(db_url=f"sqlite:///{tmp_path}/s.db", out_dir=str(tmp_path / "out"), base_url=fake.url,
                           feeds="latest", requests_per_hour=3_600_000, reviews_out_dir=str(tmp_path / "reviews"),
                           uncertain_band=0.1)
        job.run_pass(cfg, TableScorer())
    return cfg


def _client(cfg, **kw):
    app = create_review_app(ScreenConfig(**{**cfg.__dict__, **kw}))
    app.testing = True
    return app.test_client()


def _ids(resp) -> list[str]:
    return [p["title"] for p in resp.get_json()["posts"]]


def test_queues(screened):
    client = _client(screened)
    flagged = client.get("/api/posts?queue=flagged")
    assert flagged.status_code == 200
    assert _ids(flagged) == [TEXTS[4], TEXTS[1], TEXTS[0]]  # newest first
    assert _ids(client.get("/api/posts?queue=uncertain")) == [TEXTS[1], TEXTS[3]]  # nearest the threshold first
    assert _ids(client.get("/api/posts?queue=flagged&source=qa")) == []
    assert client.get("/api/posts?queue=flagged&date=2001-01-01").get_json()["posts"] == []
    page = client.get("/")
    assert page.status_code == 200 and "是法律咨询" in page.get_data(as_text=True)
    assert "http://" not in page.get_data(as_text=True).replace('"http://"', "")  # no external assets


def test_a_review_is_stored_and_leaves_the_uncertain_queue(screened):
    client = _client(screened)
    post_id = client.get("/api/posts?queue=uncertain").get_json()["posts"][0]["id"]
    resp = client.post("/api/reviews", json={"post_id": post_id, "label": 0, "reviewer": "张律师"})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["reviewer"] == "张律师" and body["score"] == pytest.approx(0.53) and body["model_version"] == "v1"
    assert _ids(client.get("/api/posts?queue=uncertain")) == [TEXTS[3]]
    (reviewed,) = client.get("/api/posts?queue=reviewed").get_json()["posts"]
    assert reviewed["review"]["label"] == 0


@pytest.mark.parametrize("body, status, code", [
    ({"post_id": 1, "label": 2}, 400, "bad_label"),
    ({"post_id": "1", "label": 1}, 400, "bad_post_id"),
    ({"post_id": 1, "label": True}, 400, "bad_label"),
    ({"post_id": 99999, "label": 1}, 404, "unknown_post"),
    ([1, 2], 400, "bad_json"),
])
def test_bad_reviews_get_clear_4xx(screened, body, status, code):
    resp = _client(screened).post("/api/reviews", json=body)
    assert resp.status_code == status and resp.get_json()["error"]["code"] == code


def test_other_bad_requests(screened):
    client = _client(screened)
    assert client.post("/api/reviews", data="post_id=1&label=1").status_code == 415  # a cross-site form
    assert client.get("/api/posts?queue=all").get_json()["error"]["code"] == "bad_queue"
    assert client.get("/api/posts?date=yesterday").get_json()["error"]["code"] == "bad_date"
    assert client.get("/api/posts?limit=0").status_code == 400
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"


def test_a_token_protects_everything_but_health(screened):
    client = _client(screened, review_token="s3cret")
    assert client.get("/healthz").status_code == 200
    denied = client.get("/api/posts")
    assert denied.status_code == 401 and "Basic" in denied.headers["WWW-Authenticate"]
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    basic = base64.b64encode("王律师:s3cret".encode()).decode()
    assert client.get("/api/posts", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    post_id = client.get("/api/posts", headers={"Authorization": "Bearer s3cret"}).get_json()["posts"][0]["id"]
    resp = client.post("/api/reviews", json={"post_id": post_id, "label": 1, "reviewer": "someone else"},
                       headers={"Authorization": f"Basic {basic}"})
    assert resp.get_json()["reviewer"] == "王律师"  # the logged-in user, not what the body claims


def test_off_loopback_needs_a_token(monkeypatch):
    monkeypatch.delenv("LAWCLF_REVIEW_TOKEN", raising=False)
    check_exposure(ScreenConfig(review_host="127.0.0.1"))
    with pytest.raises(ConfigError, match="review_token"):
        check_exposure(ScreenConfig(review_host="0.0.0.0"))
    monkeypatch.setenv("LAWCLF_REVIEW_TOKEN", "t")
    check_exposure(ScreenConfig(review_host="0.0.0.0"))


def test_exported_reviews_feed_prepare(screened, tmp_path):
    from lawclf.data import prepare
    from lawclf.sample import write_sample
    from lawclf.text import normalise_text

    client = _client(screened)
    posts = {p["title"]: p["id"] for p in client.get("/api/posts?queue=flagged").get_json()["posts"]}
    client.post("/api/reviews", json={"post_id": posts[TEXTS[1]], "label": 1})
    client.post("/api/reviews", json={"post_id": posts[TEXTS[1]], "label": 0})  # changed their mind: newest wins
    client.post("/api/reviews", json={"post_id": posts[TEXTS[0]], "label": 1})

    base = tmp_path / "base"
    write_sample(base)
    # a base row with the same text as a reviewed post: the review's label must win
    with open(base / "legal.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": TEXTS[1], "source": "base"}, ensure_ascii=False) + "\n")
    cfg = ScreenConfig(**{**screened.__dict__, "merge_data_dir": str(base)})
    counts = export_reviews(cfg)
    assert counts["posts"] == 2 and counts["reviews"] == 3 and counts["merged_overridden"] == 1
    out = tmp_path / "reviews"
    nonlegal = [json.loads(line) for line in (out / "nonlegal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(r["text"] == TEXTS[1] and r["source"] == "review:v2ex" for r in nonlegal)

    summary = prepare(DataConfig(data_dir=str(out), run_dir=str(tmp_path / "run")), plots=False)
    assert summary["counts"]["conflict_texts"] == 0
    rows = [json.loads(line) for split in ("train", "validation", "test")
            for line in (tmp_path / "run" / "splits" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["text"]: r["label"] for r in rows}[normalise_text(TEXTS[1])] == 0


def test_the_review_page_runs_on_a_background_thread_and_stops(screened):
    import requests

    from lawclf.screen.review import ReviewServer

    srv = ReviewServer(screened).start()
    try:
        assert srv.url.startswith("http://127.0.0.1:")
        assert requests.get(srv.url + "/", timeout=10).status_code == 200
        posts = requests.get(srv.url + "/api/posts?queue=flagged", timeout=10).json()["posts"]
        assert [p["title"] for p in posts] == [TEXTS[4], TEXTS[1], TEXTS[0]]
    finally:
        srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url + "/healthz", timeout=2)
    with pytest.raises(ConfigError, match="loopback only"):
        ReviewServer(ScreenConfig(**{**screened.__dict__, "review_host": "0.0.0.0", "review_token": "t" * 32}))


# --------------------------------------------------------------------------- who may write
def _first_id(client, **kw):
    return client.get("/api/posts", **kw).get_json()["posts"][0]["id"]


def test_a_rebinding_page_cannot_write_reviews(screened):
    """DNS rebinding: the attacker's page, its name pointed at 127.0.0.1, sends its own name as Host."""
    client = _client(screened)
    post_id = _first_id(client)
    attacker = {"Host": "attacker.example:8010", "Origin": "http://attacker.example:8010"}
    resp = client.post("/api/reviews", json={"post_id": post_id, "label": 1}, headers=attacker)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "wrong_host"
    assert client.get("/api/posts", headers={"Host": "attacker.example:8010"}).status_code == 403
    assert client.get("/api/posts?queue=reviewed").get_json()["posts"] == []  # nothing was written
    assert client.get("/healthz", headers={"Host": "10.1.2.3:8010"}).status_code == 200  # probes by pod address
    for host in ("127.0.0.1:8010", "localhost:8010", "[::1]:8010"):
        assert client.get("/api/posts", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://attacker.example:8010"])
def test_writes_from_another_origin_are_refused(screened, origin):
    client = _client(screened)
    resp = client.post("/api/reviews", json={"post_id": _first_id(client), "label": 1},
                       headers={"Host": "127.0.0.1:8010", "Origin": origin})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "wrong_origin"
    same = client.post("/api/reviews", json={"post_id": _first_id(client), "label": 1},
                       headers={"Host": "127.0.0.1:8010", "Origin": "http://127.0.0.1:8010"})
    assert same.status_code == 201


def test_a_public_name_is_allowed_once_configured(screened):
    auth = {"Authorization": "Bearer t0ken"}
    open_to_any = _client(screened, review_token="t0ken", review_host="0.0.0.0")
    assert open_to_any.get("/api/posts", headers={**auth, "Host": "10.0.0.5:8010"}).status_code == 200
    named = _client(screened, review_token="t0ken", review_host="0.0.0.0",
                    review_allowed_hosts="review.lawfirm.example, *.internal.example")
    for host, status in [("review.lawfirm.example", 200), ("a.internal.example:8443", 200),
                         ("10.0.0.5:8010", 403), ("review.lawfirm.example.evil.example", 403)]:
        assert named.get("/api/posts", headers={**auth, "Host": host}).status_code == status, host
    resp = named.post("/api/reviews", json={"post_id": _first_id(named, headers={**auth, "Host": "review.lawfirm.example"}),
                                            "label": 0},
                      headers={**auth, "Host": "review.lawfirm.example", "Origin": "https://evil.example"})
    assert resp.status_code == 403


def test_colabs_proxy_is_allowed_in_colab_only(screened, monkeypatch):
    from lawclf import colab

    client = _client(screened)
    proxied = {"Host": "localhost:8010", "Origin": "https://8010-m-s-abc123.us-east1-0.prod.colab.dev"}
    body = {"post_id": _first_id(client), "label": 1}
    assert client.post("/api/reviews", json=body, headers=proxied).status_code == 403
    monkeypatch.setattr(colab, "in_colab", lambda: True)
    assert client.post("/api/reviews", json=body, headers=proxied).status_code == 201


# --------------------------------------------------------------------------- errors are JSON
def test_an_out_of_range_id_is_a_400(screened):
    resp = _client(screened).post("/api/reviews", json={"post_id": 99999999999999999999999, "label": 1})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_post_id"
    assert _client(screened).post("/api/reviews", json={"post_id": 0, "label": 1}).status_code == 400


def test_a_failed_database_write_is_a_json_503(screened):
    import sqlalchemy as sa

    path = sa.engine.make_url(screened.db_url).database
    readonly = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    app = create_review_app(screened, engine=readonly)
    client = app.test_client()
    resp = client.post("/api/reviews", json={"post_id": _first_id(client), "label": 1})
    assert resp.status_code == 503 and resp.is_json
    assert resp.get_json()["error"]["code"] == "database_unavailable" and "readonly" in resp.get_json()["error"]["message"]


def test_a_server_error_is_json_too(screened, monkeypatch):
    from lawclf.screen import review

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(review, "add_review", broken)
    client = _client(screened)
    resp = client.post("/api/reviews", json={"post_id": _first_id(client), "label": 1})
    assert resp.status_code == 500 and resp.get_json()["error"]["code"] == "internal_error"
    assert "secret" not in resp.get_data(as_text=True)
    assert client.delete("/api/reviews").get_json()["error"]["code"] == "method_not_allowed"


def test_queues_page_on_past_the_first_page(screened):
    client = _client(screened)
    first = client.get("/api/posts?queue=flagged&limit=2").get_json()
    second = client.get("/api/posts?queue=flagged&limit=2&offset=2").get_json()
    assert first["has_more"] is True and second["has_more"] is False and second["offset"] == 2
    assert _ids(client.get("/api/posts?queue=flagged")) == [p["title"] for p in first["posts"] + second["posts"]]
    assert all(p["is_legal"] for p in first["posts"])  # the model's verdict is on each card
    assert client.get("/api/posts?offset=-1").get_json()["error"]["code"] == "bad_offset"
    wrong_queue = client.get("/api/posts?queue=uncertain&date=2026-01-01")
    assert wrong_queue.status_code == 400 and "flagged queue only" in wrong_queue.get_json()["error"]["message"]


def test_the_page_shows_verdict_three_decimals_zone_and_a_reviewer_field(screened):
    page = _client(screened).get("/").get_data(as_text=True)
    assert "模型判为" in page and "toFixed(3)" in page and "timeZone" in page
    assert 'id="reviewer"' in page and 'id="more"' in page
