"""Notifications: each receiver's message format, retries with back-off, never blocking a pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

import pytest
import sqlalchemy as sa

from lawclf.config import ScreenConfig
from lawclf.screen import job, notify
from lawclf.screen.store import screen_notifications
from lawclf.testing.fake_v2ex import FakeClock, FakeV2EX, topics_from_texts
from lawclf.testing.fake_webhook import FakeWebhook

DIGEST = {"pass_id": 3, "count": 12, "page": "/tmp/x.html", "posts": [
    {"id": i, "title": f"劳动仲裁问题 {i}", "text": f"劳动仲裁问题 {i}", "score": 0.9, "url": f"https://www.v2ex.com/t/{i}",
     "source": "v2ex", "node": "qna", "created": "2026-01-01T00:00:00+00:00", "external_id": str(i),
     "model_version": "v1"} for i in range(12)]}


def test_parse_webhooks():
    hooks = notify.parse_webhooks("wecom=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k, https://example.org/h")
    assert hooks == [notify.Webhook("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
                     notify.Webhook("json", "https://example.org/h")]
    with pytest.raises(ValueError, match="KIND=http"):
        notify.parse_webhooks("wecom=qyapi.weixin.qq.com")


def test_each_receiver_gets_its_own_format():
    wecom = notify.message("wecom", DIGEST)
    assert wecom["msgtype"] == "markdown" and "12 条新的法律咨询" in wecom["markdown"]["content"]
    assert "另有 2 条" in wecom["markdown"]["content"] and len(wecom["markdown"]["content"].encode()) <= 4096
    ding = notify.message("dingtalk", DIGEST)
    assert ding["msgtype"] == "markdown" and ding["markdown"]["title"].startswith("lawclf")
    feishu = notify.message("feishu", DIGEST)
    assert feishu["msg_type"] == "text" and "https://www.v2ex.com/t/0" in feishu["content"]["text"]
    generic = notify.message("json", DIGEST)
    assert generic["event"] == "lawclf.screen.digest" and len(generic["posts"]) == 12


def test_wecom_markdown_stays_under_its_size_limit():
    long = {**DIGEST, "posts": [{**p, "title": "很长的标题" * 60} for p in DIGEST["posts"]]}
    assert len(notify.message("wecom", long)["markdown"]["content"].encode()) <= 4096


def test_signed_robots(monkeypatch):
    monkeypatch.setenv("LAWCLF_DINGTALK_SECRET", "SECabc")
    monkeypatch.setenv("LAWCLF_FEISHU_SECRET", "fs")
    url, _ = notify._request_for("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=t", {}, lambda: 1700000000.0)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    expected = base64.b64encode(hmac.new(b"SECabc", b"1700000000000\nSECabc", hashlib.sha256).digest()).decode()
    assert query["timestamp"] == ["1700000000000"] and query["sign"] == [expected]
    _, body = notify._request_for("feishu", "https://open.feishu.cn/x", {"msg_type": "text"}, lambda: 1700000000.0)
    assert body["timestamp"] == "1700000000"
    assert body["sign"] == base64.b64encode(hmac.new(b"1700000000\nfs", b"", hashlib.sha256).digest()).decode()


def _outbox(tmp_path, hooks):
    engine = job.open_db(f"sqlite:///{tmp_path}/n.db")
    with engine.begin() as conn:
        notify.enqueue(conn, 1, hooks, DIGEST)
    return engine


def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(screen_notifications).order_by(screen_notifications.c.id)).mappings().all()


def test_failures_are_retried_with_backoff_inside_the_budget(tmp_path):
    with FakeWebhook() as hook:
        engine = _outbox(tmp_path, [notify.Webhook("wecom", hook.url + "/wecom")])
        hook.fail_next(1, status=503)
        hook.fail_next(1, status=200)  # 200 with errcode: the robot's own way of refusing
        clock = FakeClock(time.time())
        counts = notify.deliver(engine, budget_s=60, clock=clock, sleep=clock.sleep)
        assert counts == {"sent": 1, "retrying": 0, "failed": 0}
        assert hook.attempts == 3 and len(hook.received) == 1
        assert len(clock.sleeps) == 2 and 0 < clock.sleeps[0] < clock.sleeps[1]  # growing back-off
        assert _rows(engine)[0]["status"] == "sent" and _rows(engine)[0]["attempts"] == 3


def test_a_receiver_that_is_down_waits_for_the_next_pass(tmp_path):
    with FakeWebhook() as hook:
        engine = _outbox(tmp_path, [notify.Webhook("json", hook.url + "/hook")])
        hook.fail_next(50, status=503)
        clock = FakeClock(time.time())
        start = clock.now
        counts = notify.deliver(engine, budget_s=10, clock=clock, sleep=clock.sleep)
        assert counts["retrying"] == 1 and counts["sent"] == 0
        assert clock.now - start <= 10 + 1e-6  # never past its budget
        row = _rows(engine)[0]
        assert row["status"] == "pending" and row["last_error"].startswith("HTTP 503")

        hook._failures.clear()
        clock.now += 3600  # the next pass, an hour later
        assert notify.deliver(engine, budget_s=10, clock=clock, sleep=clock.sleep)["sent"] == 1
        assert hook.received[0][1]["event"] == "lawclf.screen.digest"


def test_a_configuration_error_is_given_up_at_once(tmp_path):
    with FakeWebhook() as hook:
        engine = _outbox(tmp_path, [notify.Webhook("json", hook.url + "/hook")])
        hook.fail_next(1, status=404)
        clock = FakeClock(time.time())
        assert notify.deliver(engine, clock=clock, sleep=clock.sleep)["failed"] == 1
        assert hook.attempts == 1 and _rows(engine)[0]["status"] == "failed"


def test_an_unreachable_receiver_does_not_block_the_pass(tmp_path):
    topics = topics_from_texts(["公司拖欠工资三个月，我该怎么申请劳动仲裁？"], first_id=1)
    with FakeV2EX(nodes={}, latest=topics) as fake, FakeWebhook() as hook:
        dead = "http://127.0.0.1:9/unreachable"  # the discard port: connection refused
        cfg = ScreenConfig(db_url=f"sqlite:///{tmp_path}/s.db", out_dir=str(tmp_path / "out"), base_url=fake.url,
                           feeds="latest", requests_per_hour=3_600_000, notify_budget_s=1.0,
                           webhooks=f"json={dead},feishu={hook.url}/feishu")

        class Always:
            threshold, version = 0.5, "v1"

            def predict_proba(self, texts):
                return [0.9] * len(texts)

        result = job.run_pass(cfg, Always())
        assert result["status"] == "partial" and result["notifications"]["sent"] == 1
        assert "1 to retry" in result["problems"][-1]
        assert result["seconds"] < 15
        assert "劳动仲裁" in hook.received[0][1]["content"]["text"]
        status = job.status(cfg)
        assert status["notifications"] == {"pending": 1, "sent": 1}
        (waiting,) = status["undelivered"]
        assert waiting["url"] == dead and waiting["status"] == "pending" and "ConnectionError" in waiting["error"]
