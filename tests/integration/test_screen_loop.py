"""The screening loop end to end: `lawclf screen run` processes with the exported int8 model against
the fake V2EX server, one of them SIGKILLed mid-pass; a webhook receiver; the review page in
headless Chromium; the reviews exported for `lawclf prepare`.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from _browser import browser  # noqa: F401 (pytest fixture)

from lawclf.config import RunPaths, ScreenConfig
from lawclf.screen import job
from lawclf.screen.store import posts, screen_digest, screen_scores
from lawclf_dev.fake_v2ex import FakeV2EX, topics_from_texts
from lawclf_dev.fake_webhook import FakeWebhook
from lawclf_dev.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _texts(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (RunPaths(run_dir).split_file("test")).read_text(encoding="utf-8").splitlines()]
    return rows[:60]


def _cmd(cfg: ScreenConfig) -> list[str]:
    return [sys.executable, "-m", "lawclf", "screen", "run", "--db-url", cfg.db_url, "--model-dir", cfg.model_dir,
            "--out-dir", cfg.out_dir, "--base-url", cfg.base_url, "--nodes", cfg.nodes, "--feeds", cfg.feeds,
            "--max-pages", str(cfg.max_pages), "--requests-per-hour", "3600000", "--webhooks", cfg.webhooks]


@pytest.fixture(scope="module")
def loop(exported_run_dir, tmp_path_factory):
    """Three scheduled passes, the first killed in the middle of its node walk."""
    tmp = tmp_path_factory.mktemp("screen")
    rows = _texts(exported_run_dir)
    first, later = rows[:40], rows[40:]
    topics = topics_from_texts([r["text"] for r in first], first_id=1000, node="qna")
    with FakeV2EX(nodes={"qna": list(reversed(topics))}, per_page=10) as fake, FakeWebhook() as hook:
        cfg = ScreenConfig(db_url=f"sqlite:///{tmp}/screen.db", model_dir=str(RunPaths(exported_run_dir).onnx),
                           out_dir=str(tmp / "out"), base_url=fake.url, nodes="qna", feeds="latest", max_pages=10,
                           webhooks=f"json={hook.url}/hook,wecom={hook.url}/wecom?key=demo")
        fake.add_fault("page=3", "hang")
        proc = subprocess.Popen(_cmd(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert fake.hanging.wait(60), "the pass never reached page 3"
        proc.kill()  # SIGKILL: no handler runs, the pass row stays "running"
        proc.wait(30)
        proc.stderr.close()
        fake.release.set()

        results = []
        for new in ([], later):  # the next scheduled pass, then one after new posts appeared
            if new:
                fake.publish(topics_from_texts([r["text"] for r in new], first_id=2000, node="qna"), node="qna")
            done = subprocess.run(_cmd(cfg), capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            results.append(json.loads(done.stdout))
        yield {"cfg": cfg, "rows": rows, "results": results, "hook": hook, "tmp": tmp}


def test_every_post_is_stored_and_scored_exactly_once(loop):
    cfg = loop["cfg"]
    engine = job.open_db(cfg.db_url)
    with engine.connect() as conn:
        ids = conn.execute(sa.select(posts.c.external_id)).scalars().all()
        scores = conn.execute(sa.select(screen_scores.c.post_id, screen_scores.c.is_legal)).all()
        digested = set(conn.execute(sa.select(screen_digest.c.post_id)).scalars())
    engine.dispose()
    expected = {str(1000 + i) for i in range(40)} | {str(2000 + i) for i in range(len(loop["rows"]) - 40)}
    assert sorted(ids) == sorted(expected)  # every topic, once
    assert len(scores) == len({p for p, _ in scores}) == len(expected)  # every post scored once
    assert digested == {p for p, legal in scores if legal}  # every legal one in exactly one digest
    statuses = [p["status"] for p in job.status(cfg)["passes"]]
    assert statuses == ["ok", "ok", "interrupted"]
    # the model is the served one: its scores on the labelled texts are better than chance
    assert sum(r["flagged"] for r in loop["results"]) > 0


def test_the_digest_and_the_webhooks_get_the_legal_ones(loop):
    cfg, hook = loop["cfg"], loop["hook"]
    engine = job.open_db(cfg.db_url)
    with engine.connect() as conn:
        digested = {str(e) for e in conn.execute(sa.select(posts.c.external_id).join(
            screen_digest, screen_digest.c.post_id == posts.c.id)).scalars()}
    engine.dispose()
    sent = {p["external_id"] for path, body in hook.received if path == "/hook" for p in body["posts"]}
    assert sent == digested
    assert sum(1 for path, _ in hook.received if path == "/wecom") == sum(
        1 for path, _ in hook.received if path == "/hook")
    last = loop["results"][-1]
    if last["flagged"]:
        page = Path(last["digest"]).read_text(encoding="utf-8")
        assert page.count("<tr><td>") == last["flagged"]


def test_reviewing_in_chromium_then_export_feeds_prepare(loop, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    cfg, tmp = loop["cfg"], loop["tmp"]
    port = free_port()
    token = "review-s3cret"
    server = subprocess.Popen([sys.executable, "-m", "lawclf", "screen", "review", "--db-url", cfg.db_url,
                               "--review-host", "127.0.0.1", "--review-port", str(port), "--review-token", token],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        auth = "Basic " + base64.b64encode(f"李律师:{token}".encode()).decode()
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": auth}})
        browser.get(url + "/")
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".post"))
        cards = browser.find_elements(By.CSS_SELECTOR, ".post")
        meta = cards[0].find_element(By.CSS_SELECTOR, ".meta").text
        assert "模型判为法律咨询" in meta and re.search(r"分数 \d\.\d{3}（阈值 \d\.\d{3}）", meta), meta
        assert re.search(r"发帖 .*（.+）", meta), meta  # the time with its zone named
        first_id = int(cards[0].get_attribute("data-post-id"))
        second_id = int(cards[1].get_attribute("data-post-id")) if len(cards) > 1 else None
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("n")  # keyboard: the selected (first) post is not legal
        WebDriverWait(browser, 10).until(lambda d: "已标为不是" in cards[0].text)
        if second_id is not None:
            WebDriverWait(browser, 5).until(lambda d: "selected" in cards[1].get_attribute("class"))
            cards[1].find_element(By.CSS_SELECTOR, "button[data-label='1']").click()  # the button
            WebDriverWait(browser, 10).until(lambda d: "已标为法律咨询" in cards[1].text)
        # the uncertain queue lists posts nearest the threshold first
        queue = browser.find_element(By.ID, "queue")
        queue.send_keys(Keys.DOWN)
        WebDriverWait(browser, 10).until(lambda d: "拿不准" in queue.get_attribute("value") or
                                         queue.get_attribute("value") == "uncertain")
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] if hasattr(browser, "get_log") else []
        assert not logs, logs
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})

        req = urllib.request.Request(url + "/api/posts?queue=reviewed", headers={"Authorization": auth})
        reviewed = {p["id"]: p["review"] for p in json.loads(urllib.request.urlopen(req, timeout=5).read())["posts"]}
    finally:
        server.terminate()
        server.wait(10)
        server.stderr.close()
    assert reviewed[first_id]["label"] == 0 and reviewed[first_id]["reviewer"] == "李律师"
    if second_id is not None:
        assert reviewed[second_id]["label"] == 1

    out = tmp / "reviews"
    done = subprocess.run([sys.executable, "-m", "lawclf", "screen", "export-reviews", "--db-url", cfg.db_url,
                           "--reviews-out-dir", str(out), "--merge-data-dir", str(Path("data/sample").resolve())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["posts"] == len(reviewed)
    prepared = subprocess.run([sys.executable, "-m", "lawclf", "prepare", "--data-dir", str(out),
                               "--run-dir", str(tmp / "retrain")], capture_output=True, text=True, timeout=120)
    assert prepared.returncode == 0, prepared.stderr
    assert (tmp / "retrain" / "splits" / "train.jsonl").exists()
