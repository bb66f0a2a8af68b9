"""Notifications for a pass's digest: a generic JSON webhook and the group robots of WeCom
(企业微信), DingTalk (钉钉) and Feishu (飞书).

Deliveries are an outbox in the database (``screen_notifications``): a pass enqueues one row per
webhook in the same transaction as its digest, then delivers what is due within a time budget.
A failed delivery is retried with exponential back-off and jitter, on this pass if the budget
allows, else on a later one; it never makes a pass wait longer than its budget, and a receiver
that is down loses nothing. A delivery is given up by *age* (``max_age_s``, 24 h by default), not
by a count of attempts, so an outage of hours on a 30-minute timer still delivers;
``lawclf screen notify --retry-failed`` queues what was given up again.

Delivery is at least once: each attempt is recorded *before* its request, and a row whose
reply never arrived (a kill mid-request) is sent again, so a receiver may see a message twice
in that window. The JSON body and its ``Idempotency-Key`` header carry a ``delivery_id`` a
receiver can de-duplicate on; the chat robots have no such key.

Chat bodies are built from posters' titles: the markup each robot interprets (markdown, HTML
tags, links) is neutralised and line breaks folded, so a title cannot restyle the message or
add a link. DingTalk and Feishu robots with "加签" (signing) enabled read their secret from
``LAWCLF_DINGTALK_SECRET`` / ``LAWCLF_FEISHU_SECRET``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lawclf.config import http_url_problem
from lawclf.screen.store import as_utc, screen_notifications, utcnow

KINDS = ("json", "wecom", "dingtalk", "feishu")
#: Posts listed in one chat message (the robots cap message size: WeCom markdown at 4,096 bytes).
MAX_LISTED = 10
#: The JSON webhook lists at most this many posts (``count`` says how many there are) with texts
#: cut to ``MAX_JSON_TEXT`` characters (titles to ``MAX_JSON_TITLE``), so its body stays under
#: 100 KB whatever a pass finds; the digest page (``digest_url``) lists them all.
MAX_JSON_POSTS = 50
MAX_JSON_TEXT = 300
MAX_JSON_TITLE = 200
#: Characters the chat robots read as markup (markdown emphasis, links, headings, quotes, code,
#: HTML tags such as WeCom's ``<font>``), replaced by their full-width forms: the title still
#: reads the same to a person, and renders as text.
_MARKUP = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in "*_`[]()<>#~|!\\"})


@dataclass(frozen=True)
class Webhook:
    kind: str
    url: str


def parse_webhooks(spec: str) -> list[Webhook]:
    """``"wecom=https://…,json=https://…"`` -> webhooks; a bare URL is a generic JSON webhook."""
    hooks = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        kind, sep, url = item.partition("=")
        if not sep or kind.strip().lower() not in KINDS:
            kind, url = "json", item
        kind, url = kind.strip().lower(), url.strip()
        problem = webhook_problem(kind, url)
        if problem:
            raise ValueError(f"webhooks: {redact(item)}: {problem}")
        hooks.append(Webhook(kind, url))
    return hooks


#: The query parameter each robot's URL must carry (its key); without it every send is refused.
_REQUIRED_KEY = {"wecom": "key", "dingtalk": "access_token"}


def webhook_problem(kind: str, url: str) -> str:
    """Why ``url`` cannot work for ``kind`` (empty when it can): a wrong scheme, no host, a robot URL
    without its key. Checked before any work, so a typo fails the pass at once instead of being
    retried as a network error on every later pass."""
    problem = http_url_problem(url)  # the check every address setting gets
    if problem:
        return f"{problem} (each webhook is KIND=http(s)://… with KIND one of {', '.join(KINDS)})"
    parts = urllib.parse.urlsplit(url)
    if parts.port == 0:
        return "port 0 cannot be reached"
    key = _REQUIRED_KEY.get(kind)
    if key and not urllib.parse.parse_qs(parts.query).get(key, [""])[0]:
        return f"a {kind} robot URL needs its {key}=… (copy the whole address the robot's settings show)"
    if kind == "feishu" and parts.path.rstrip("/").rsplit("/", 1)[-1] in ("", "hook"):
        return "a feishu robot URL ends in its hook id (…/open-apis/bot/v2/hook/<id>)"
    return ""


def redact(url: str) -> str:
    """A webhook URL without its query (robot keys and tokens live there)."""
    return url.split("?", 1)[0] + ("?…" if "?" in url else "")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def plain(text: str, markup: bool = True) -> str:
    """A poster's text as one line of plain text for a chat message: whitespace (line breaks
    included, which would start a new quote or heading) folded to single spaces and, where the
    receiver reads markup, its markup characters made inert."""
    one_line = " ".join(text.split())
    return one_line.translate(_MARKUP) if markup else one_line


def _text_lines(digest: dict[str, Any], markup: bool) -> tuple[str, list[str]]:
    n = digest["count"]
    title = f"lawclf: {n} 条新的法律咨询" if n else "lawclf: 本轮没有新的法律咨询"
    lines = [f"{plain(_short(p['title'] or p['text']), markup)} ({p['score']:.2f}) {p['url']}"
             for p in digest["posts"][:MAX_LISTED]]
    more = f" {digest['url']}" if digest.get("url") else ""
    if n > MAX_LISTED:
        lines.append(f"…另有 {n - MAX_LISTED} 条，见摘要页{more}")
    elif more:
        lines.append(f"摘要页{more}")
    return title, lines


def _json_body(digest: dict[str, Any]) -> dict[str, Any]:
    """The generic webhook's body: the digest without local paths, bounded in size."""
    listed = [{**p, "text": _short(p["text"], MAX_JSON_TEXT), "title": _short(p["title"] or "", MAX_JSON_TITLE)}
              for p in digest["posts"][:MAX_JSON_POSTS]]
    return {"event": "lawclf.screen.digest", "pass_id": digest["pass_id"], "count": digest["count"],
            "listed": len(listed), "digest_url": digest.get("url", ""), "posts": listed}


def _signed(secret: str, timestamp: str, dingtalk: bool) -> str:
    key_msg = f"{timestamp}\n{secret}".encode()
    if dingtalk:  # DingTalk: HMAC(key=secret, msg="ts\nsecret"), base64, URL-encoded into the query
        mac = hmac.new(secret.encode(), key_msg, hashlib.sha256).digest()
        return urllib.parse.quote_plus(base64.b64encode(mac).decode())
    # Feishu: HMAC(key="ts\nsecret", msg=""), base64, in the body
    return base64.b64encode(hmac.new(key_msg, b"", hashlib.sha256).digest()).decode()


def message(kind: str, digest: dict[str, Any]) -> dict[str, Any]:
    """The request body each receiver expects for one digest."""
    if kind == "json":
        return _json_body(digest)
    title, lines = _text_lines(digest, markup=kind != "feishu")  # Feishu "text" messages render no markup
    if kind == "wecom":
        body = "\n".join([f"**{title}**"] + [f"> {line}" for line in lines])
        while len(body.encode()) > 4000 and lines:  # WeCom rejects markdown over 4,096 bytes
            lines = lines[:-1]
            body = "\n".join([f"**{title}**"] + [f"> {line}" for line in lines] + ["> …"])
        return {"msgtype": "markdown", "markdown": {"content": body}}
    if kind == "dingtalk":
        return {"msgtype": "markdown", "markdown": {"title": title,
                                                    "text": "\n\n".join([f"### {title}"] + [f"- {x}" for x in lines])}}
    if kind == "feishu":
        return {"msg_type": "text", "content": {"text": "\n".join([title] + lines)}}
    raise ValueError(f"unknown webhook kind {kind!r}")


def _request_for(kind: str, url: str, payload: dict[str, Any], now: Callable[[], float]) -> tuple[str, dict]:
    if kind == "dingtalk" and os.environ.get("LAWCLF_DINGTALK_SECRET"):
        ts = str(int(now() * 1000))
        sign = _signed(os.environ["LAWCLF_DINGTALK_SECRET"], ts, dingtalk=True)
        url = f"{url}{'&' if '?' in url else '?'}timestamp={ts}&sign={sign}"
    if kind == "feishu" and os.environ.get("LAWCLF_FEISHU_SECRET"):
        ts = str(int(now()))
        payload = {"timestamp": ts, "sign": _signed(os.environ["LAWCLF_FEISHU_SECRET"], ts, dingtalk=False), **payload}
    return url, payload


def _accepted(kind: str, resp: requests.Response) -> Optional[str]:
    """None when the receiver took the message, else why not. The robots answer HTTP 200 with an
    error code in the body for a bad key or a throttled bot, so the body is read too."""
    if not 200 <= resp.status_code < 300:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    if kind == "json":
        return None
    try:
        body = resp.json()
    except ValueError:
        return f"unreadable answer: {resp.text[:200]}"
    code = body.get("errcode", body.get("code", body.get("StatusCode", 0))) if isinstance(body, dict) else 0
    return None if code in (0, "0") else f"receiver error {code}: {json.dumps(body, ensure_ascii=False)[:200]}"


def enqueue(conn: sa.engine.Connection, pass_id: int, hooks: Sequence[Webhook], digest: dict[str, Any]) -> None:
    """One outbox row per webhook for this pass (called inside the digest's transaction)."""
    from lawclf.screen.store import insert_ignore

    now = utcnow()
    insert_ignore(conn, screen_notifications, [
        {"pass_id": pass_id, "kind": h.kind, "url": h.url, "payload": json.dumps(message(h.kind, digest), ensure_ascii=False),
         "status": "pending", "attempts": 0, "next_attempt_at": now, "queued_at": now, "last_error": ""} for h in hooks],
        ["pass_id", "url"])


def retry_failed(engine: Engine) -> int:
    """Queue every given-up delivery again, due now and with a fresh age; returns how many."""
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(sa.update(screen_notifications).where(screen_notifications.c.status == "failed")
                              .values(status="pending", attempts=0, next_attempt_at=now, queued_at=now))
    return int(result.rowcount or 0)


def due_now(engine: Engine) -> int:
    """Make every pending delivery due now (its back-off is skipped, its age kept); returns how many."""
    with engine.begin() as conn:
        result = conn.execute(sa.update(screen_notifications).where(screen_notifications.c.status == "pending")
                              .values(next_attempt_at=utcnow()))
    return int(result.rowcount or 0)


#: What a row says while its request is out: if the pass is killed before the reply, the next one
#: finds this and sends again (at least once).
NO_REPLY = "sent; no reply recorded (the pass ended before the answer): sent again"


def deliver(engine: Engine, timeout_s: float = 5.0, budget_s: float = 20.0, max_age_s: float = 86400.0,
            max_attempts: int = 0, backoff_base: float = 1.0, backoff_max: float = 1800.0,
            session: Optional[requests.Session] = None, clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep, rng: Optional[random.Random] = None) -> dict[str, int]:
    """Send what is due in the outbox; retry failures with back-off while ``budget_s`` lasts.

    Returns ``{"sent", "retrying", "failed"}`` for this call. A failed delivery is given up once it
    has been queued for ``max_age_s`` (or after ``max_attempts`` attempts, when that is not 0); a
    4xx other than 408/429 is a configuration error (wrong key, bad URL): given up at once.
    """
    session = session or requests.Session()
    rng = rng or random.Random()
    deadline = clock() + budget_s
    counts = {"sent": 0, "retrying": 0, "failed": 0}
    retrying: set[int] = set()
    while True:
        now_dt = dt.datetime.fromtimestamp(clock(), dt.timezone.utc)
        with engine.connect() as conn:
            pending = conn.execute(sa.select(screen_notifications).where(screen_notifications.c.status == "pending")
                                   .order_by(screen_notifications.c.next_attempt_at)).mappings().all()
        due = [row for row in pending if as_utc(row["next_attempt_at"]) <= now_dt]
        if not due:
            upcoming = [as_utc(row["next_attempt_at"]).timestamp() for row in pending]
            if upcoming and min(upcoming) < deadline:  # the next retry fits in the budget: wait for it
                sleep(max(0.0, min(upcoming) - clock()))
                continue
            break
        for row in due:
            if clock() >= deadline:
                break
            url, payload = _request_for(row["kind"], row["url"], json.loads(row["payload"]), clock)
            headers = {}
            if row["kind"] == "json":  # the receiver can drop a second copy of the same delivery
                payload = {**payload, "delivery_id": f"lawclf-{row['id']}"}
                headers["Idempotency-Key"] = payload["delivery_id"]
            attempts = row["attempts"] + 1
            with engine.begin() as conn:  # recorded before the request: a kill now means "send again"
                conn.execute(sa.update(screen_notifications).where(screen_notifications.c.id == row["id"])
                             .values(attempts=attempts, last_error=NO_REPLY))
            try:
                resp = session.post(url, json=payload, headers=headers,
                                    timeout=min(timeout_s, max(0.1, deadline - clock())))
                error = _accepted(row["kind"], resp)
                permanent = error is not None and 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
            except requests.RequestException as exc:
                error, permanent = f"{exc.__class__.__name__}: {exc}", False
            values: dict[str, Any] = {"last_error": error or ""}
            queued = as_utc(row["queued_at"] or row["next_attempt_at"]).timestamp()
            too_old = clock() - queued >= max_age_s or (max_attempts and attempts >= max_attempts)
            if error is None:
                values.update(status="sent", sent_at=utcnow())
                counts["sent"] += 1
                retrying.discard(row["id"])
            elif permanent or too_old:
                values["status"] = "failed"
                counts["failed"] += 1
                retrying.discard(row["id"])
            else:
                wait = rng.uniform(0.5, 1.0) * min(backoff_max, backoff_base * 2 ** (attempts - 1))
                values["next_attempt_at"] = dt.datetime.fromtimestamp(clock() + wait, dt.timezone.utc)
                retrying.add(row["id"])
            with engine.begin() as conn:
                conn.execute(sa.update(screen_notifications).where(screen_notifications.c.id == row["id"]).values(**values))
        if clock() >= deadline:
            break
    counts["retrying"] = len(retrying)
    return counts
