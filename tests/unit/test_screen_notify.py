"""Notifications: each receiver's message format, retries with back-off, never blocking a pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.parse

import pytest
import sqlalchemy as sa

from lawclf.config import ScreenConfig
from lawclf.screen import job, notify
from lawclf.screen.store import screen_notifications
from lawclf_dev.fake_v2ex import FakeClock, FakeV2EX, topics_from_texts
from lawclf_dev.fake_webhook import FakeWebhook

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


# --------------------------------------------------------------------------- delivery guarantees
def test_an_outage_of_hours_delivers_and_only_age_gives_up(tmp_path):
    """Given up by age (24 h), not by attempts: 40 failed attempts over a day-long outage keep
    the delivery queued; one that is still failing after 24 h is given up."""
    with FakeWebhook() as hook:
        engine = _outbox(tmp_path, [notify.Webhook("feishu", hook.url + "/feishu")])
        hook.fail_next(10_000, status=500)
        clock = FakeClock(time.time())
        start = clock.now
        while clock.now - start < 20 * 3600:  # a pass every 30 minutes, each with a 20 s budget
            counts = notify.deliver(engine, budget_s=20, clock=clock, sleep=clock.sleep)
            assert counts["failed"] == 0, f"given up after {(clock.now - start) / 3600:.1f} h"
            clock.now += 1800
        assert _rows(engine)[0]["attempts"] >= 40 and _rows(engine)[0]["status"] == "pending"
        hook._failures.clear()  # the receiver is back
        assert notify.deliver(engine, budget_s=20, clock=clock, sleep=clock.sleep)["sent"] == 1

    (tmp_path / "b").mkdir()
    with FakeWebhook() as hook:
        engine = _outbox(tmp_path / "b", [notify.Webhook("json", hook.url + "/hook")])
        hook.fail_next(10_000, status=500)
        clock = FakeClock(time.time())
        start = clock.now
        failed_at = None
        while failed_at is None and clock.now - start < 30 * 3600:
            if notify.deliver(engine, budget_s=20, max_age_s=24 * 3600, clock=clock, sleep=clock.sleep)["failed"]:
                failed_at = clock.now - start
            clock.now += 1800
        assert failed_at is not None and 24 * 3600 <= failed_at < 25 * 3600


def test_the_receiver_down_for_150_seconds_over_four_passes_loses_nothing(tmp_path):
    """The issue's reproduction: 500s for 150 s across 4 back-to-back passes, then recovery."""
    with FakeWebhook() as hook:
        engine = _outbox(tmp_path, [notify.Webhook("feishu", hook.url + "/feishu")])
        clock = FakeClock(time.time())
        start = clock.now
        for _ in range(4):
            while_down = 150 - (clock.now - start)
            if while_down > 0:
                hook.fail_next(1000, status=500)
            counts = notify.deliver(engine, budget_s=20, clock=clock, sleep=clock.sleep)
            hook._failures.clear()
            assert counts["failed"] == 0
            clock.now += 30
        clock.now = start + 151
        notify.deliver(engine, budget_s=20, clock=clock, sleep=clock.sleep)
        clock.now += 3600
        notify.deliver(engine, budget_s=20, clock=clock, sleep=clock.sleep)
        assert _rows(engine)[0]["status"] == "sent" and len(hook.received) == 1


def test_retry_failed_sends_again_and_status_says_until_then(tmp_path):
    with FakeWebhook() as hook:
        cfg = ScreenConfig(db_url=f"sqlite:///{tmp_path}/n.db", out_dir=str(tmp_path / "out"))
        engine = _outbox(tmp_path, [notify.Webhook("json", hook.url + "/hook")])
        hook.fail_next(1, status=404)  # a configuration error: given up at once
        assert notify.deliver(engine)["failed"] == 1
        status = job.status(cfg)
        assert not status["healthy"] and "--retry-failed" in status["problems"][0]
        from lawclf.screen import cli

        assert cli(["status", "--db-url", cfg.db_url]) == 1
        assert cli(["notify", "--db-url", cfg.db_url, "--retry-failed"]) == 0  # the key was fixed meanwhile
        assert _rows(engine)[0]["status"] == "sent" and len(hook.received) == 1
        assert job.status(cfg)["healthy"] and cli(["status", "--db-url", cfg.db_url]) == 0
        assert cli(["notify", "--db-url", cfg.db_url]) == 0 and len(hook.received) == 1  # nothing due: nothing sent


def test_a_kill_before_the_reply_sends_again_with_the_same_delivery_id(tmp_path):
    """At least once: the attempt is recorded before the request, so a pass killed while the reply
    is pending leaves the row to be sent again; the JSON receiver can drop the copy by its id."""
    with FakeWebhook() as hook:
        engine = _outbox(tmp_path, [notify.Webhook("json", hook.url + "/hook")])

        class KilledAfterSending:
            def post(self, url, **kwargs):
                import requests

                requests.post(url, **kwargs)  # the receiver gets it ...
                raise SystemExit(137)  # ... and the pass dies before recording the reply

        with pytest.raises(SystemExit):
            notify.deliver(engine, session=KilledAfterSending())
        row = _rows(engine)[0]
        assert row["status"] == "pending" and row["attempts"] == 1 and row["last_error"] == notify.NO_REPLY
        assert notify.deliver(engine)["sent"] == 1
        (first, second) = [body for _, body in hook.received]
        assert first["delivery_id"] == second["delivery_id"] == f"lawclf-{row['id']}"


# --------------------------------------------------------------------------- what the messages carry
HOSTILE = {**DIGEST, "count": 2, "posts": [
    {**DIGEST["posts"][0], "title": "**加粗** <font color=\"warning\">红字</font> [点我](javascript:alert(1))"},
    {**DIGEST["posts"][1], "title": "正常标题\n# 假标题\n> 假引用 `code` ~~删~~ |表| ![图](http://x/y.png)"}]}


@pytest.mark.parametrize("kind", ["wecom", "dingtalk"])
def test_posters_cannot_put_markup_in_the_chat(kind):
    body = notify.message(kind, HOSTILE)["markdown"]
    text = body.get("content") or body["text"]
    for markup in ("**加粗", "<font", "](javascript", "![图]", "`code`", "~~删~~"):
        assert markup not in text, (kind, markup)
    assert "加粗" in text and "红字" in text and "点我" in text  # still readable
    assert not any(line.lstrip("-> ").startswith("#") and "假标题" in line for line in text.splitlines())
    assert sum("假标题" in line for line in text.splitlines()) == 1 and "假引用" in text  # one line per post


def test_feishu_text_keeps_the_characters_but_not_the_line_breaks():
    text = notify.message("feishu", HOSTILE)["content"]["text"]
    assert "**加粗**" in text and "正常标题 # 假标题 > 假引用" in text


def test_the_json_body_is_bounded_and_carries_no_local_path():
    many = {**DIGEST, "count": 127, "url": "https://lawyer.example/digests/pass-000003.html",
            "posts": [{**DIGEST["posts"][0], "id": i, "text": "劳动合同纠纷" * 400, "title": "标题" * 500} for i in range(127)]}
    body = notify.message("json", many)
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert len(raw) < 100_000 and body["count"] == 127 and body["listed"] == notify.MAX_JSON_POSTS
    assert all(len(p["text"]) <= notify.MAX_JSON_TEXT and len(p["title"]) <= notify.MAX_JSON_TITLE for p in body["posts"])
    assert "page" not in body and "/tmp/x.html" not in raw.decode()
    assert body["digest_url"] == many["url"]
    assert many["url"] in notify.message("wecom", many)["markdown"]["content"]


@pytest.mark.parametrize("spec, says", [
    ("wecom=http://", "no host"),
    ("json=https:///hook", "no host"),
    ("wecom=https://qyapi.weixin.qq.com/cgi-bin/webhook/send", "needs its key="),
    ("wecom=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=", "needs its key="),
    ("dingtalk=https://oapi.dingtalk.com/robot/send", "access_token"),
    ("feishu=https://open.feishu.cn/open-apis/bot/v2/hook/", "hook id"),
    ("json=ftp://example.org/x", "http(s)"),
    ("json=http://example.org:99999/x", "not a URL"),
])
def test_a_webhook_that_cannot_work_fails_before_any_work(tmp_path, spec, says):
    with pytest.raises(ValueError, match=re.escape(says)) as err:
        notify.parse_webhooks(spec)
    assert "webhooks:" in str(err.value) and "key=k" not in str(err.value)
    cfg = ScreenConfig(db_url=f"sqlite:///{tmp_path}/s.db", out_dir=str(tmp_path / "out"), webhooks=spec)
    with pytest.raises(ValueError, match=re.escape(says)):
        job.run_pass(cfg, object())  # type: ignore[arg-type]  (the scorer is never reached)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("field, value", [("base_url", "ftp://www.v2ex.com"), ("base_url", "http://"),
                                          ("digest_url", "digests/latest.html"), ("post_url", "t/{id}")])
def test_a_bad_address_setting_is_refused_naming_it(field, value):
    from lawclf.config import ConfigError

    with pytest.raises(ConfigError, match=f"ScreenConfig.{field}"):
        ScreenConfig(**{field: value})


def test_an_older_database_gains_the_queued_at_column(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = job.open_db(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE screen_notifications DROP COLUMN queued_at"))
        conn.execute(sa.text("INSERT INTO screen_passes (id, started_at, status, model_version, new_posts, scored, "
                             "flagged, digest_written, problems) VALUES (1, '2026-01-02 03:04:05', 'ok', 'v', 0, 0, 0, 1, '')"))
        conn.execute(sa.text("INSERT INTO screen_notifications (pass_id, kind, url, payload, status, attempts, "
                             "next_attempt_at, last_error) VALUES (1, 'json', 'http://x/h', '{}', 'pending', 3, "
                             "'2026-01-02 04:00:00', '')"))
    engine.dispose()
    engine = job.open_db(url)  # what every command does first
    row = _rows(engine)[0]
    assert notify.as_utc(row["queued_at"]).isoformat().startswith("2026-01-02T03:04:05")
    job.open_db(url).dispose()  # idempotent
