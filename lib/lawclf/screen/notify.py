"""Notifications for a pass's digest: a generic JSON webhook and the group robots of WeCom
(企业微信), DingTalk (钉钉) and Feishu (飞书).

Deliveries are an outbox in the database (``screen_notifications``): a pass enqueues one row per
webhook in the same transaction as its digest, then delivers what is due within a time budget.
A failed delivery is retried with exponential back-off and jitter, on this pass if the budget
allows, else on a later one; it never makes a pass wait longer than its budget, and a receiver
that is down loses nothing. DingTalk and Feishu robots with "加签" (signing) enabled read their
secret from ``LAWCLF_DINGTALK_SECRET`` / ``LAWCLF_FEISHU_SECRET``.
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

from lawclf.screen.store import as_utc, screen_notifications, utcnow

KINDS = ("json", "wecom", "dingtalk", "feishu")
#: Posts listed in one chat message (the robots cap message size: WeCom markdown at 4,096 bytes).
MAX_LISTED = 10


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
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook {item!r}: expected KIND=http(s)://… with KIND one of {', '.join(KINDS)}")
        hooks.append(Webhook(kind, url))
    return hooks


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _text_lines(digest: dict[str, Any]) -> tuple[str, list[str]]:
    n = digest["count"]
    title = f"lawclf: {n} 条新的法律咨询" if n else "lawclf: 本轮没有新的法律咨询"
    lines = [f"{_short(p['title'] or p['text'])} ({p['score']:.2f}) {p['url']}" for p in digest["posts"][:MAX_LISTED]]
    if n > MAX_LISTED:
        lines.append(f"…另有 {n - MAX_LISTED} 条，见摘要页")
    return title, lines


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
        return {"event": "lawclf.screen.digest", **digest}
    title, lines = _text_lines(digest)
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
         "status": "pending", "attempts": 0, "next_attempt_at": now, "last_error": ""} for h in hooks],
        ["pass_id", "url"])


def deliver(engine: Engine, timeout_s: float = 5.0, budget_s: float = 20.0, max_attempts: int = 8,
            backoff_base: float = 1.0, backoff_max: float = 3600.0, session: Optional[requests.Session] = None,
            clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
            rng: Optional[random.Random] = None) -> dict[str, int]:
    """Send what is due in the outbox; retry failures with back-off while ``budget_s`` lasts.

    Returns ``{"sent", "retrying", "failed"}`` for this call. A 4xx other than 408/429 is a
    configuration error (wrong key, bad URL): it is given up at once instead of retried.
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
            try:
                resp = session.post(url, json=payload, timeout=min(timeout_s, max(0.1, deadline - clock())))
                error = _accepted(row["kind"], resp)
                permanent = error is not None and 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
            except requests.RequestException as exc:
                error, permanent = f"{exc.__class__.__name__}: {exc}", False
            attempts = row["attempts"] + 1
            values: dict[str, Any] = {"attempts": attempts, "last_error": error or ""}
            if error is None:
                values.update(status="sent", sent_at=utcnow())
                counts["sent"] += 1
                retrying.discard(row["id"])
            elif permanent or attempts >= max_attempts:
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
