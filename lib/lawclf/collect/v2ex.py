"""A polite V2EX API client and a resumable crawler.

* API v1 (public, no token): ``/api/topics/latest.json``, ``/api/topics/hot.json`` and
  ``/api/topics/show.json?node_name=…&page=…``; about 120 requests an hour per IP.
* API v2 (personal token, ``Authorization: Bearer …``): ``/api/v2/nodes/{node}/topics?p=…``;
  600 requests an hour.

Politeness: a token bucket spaces requests evenly inside our hourly budget; when the
server sends rate-limit headers, a lower ``X-Rate-Limit-Limit`` slows the bucket down and
``X-Rate-Limit-Remaining: 0`` makes us wait for ``X-Rate-Limit-Reset``. 429, 5xx, network errors and
malformed JSON are retried with exponential back-off and jitter (``Retry-After`` wins);
a request that keeps failing raises :class:`FetchError`, which the crawler records in
the database instead of crashing. Clock, sleep and randomness are injectable so the
tests never wait.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

import requests
from sqlalchemy.engine import Engine

from lawclf.collect import store

V1_PER_HOUR = 120
V2_PER_HOUR = 600
SOURCE = "v2ex"
FEEDS = ("latest", "hot")
NONLEGAL = 0


class FetchError(RuntimeError):
    """A request that still failed after every retry (or that must not be retried)."""


class TokenBucket:
    """At most ``per_hour`` requests an hour, spaced evenly (a burst of ``burst``)."""

    def __init__(self, per_hour: float, burst: float = 1.0,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        if per_hour <= 0:
            raise ValueError(f"requests per hour must be positive, got {per_hour}")
        self.rate = per_hour / 3600.0  # tokens per second
        self.capacity = burst
        self.tokens = burst
        self.clock, self.sleep = clock, sleep
        self.last = clock()

    @property
    def per_hour(self) -> float:
        return self.rate * 3600.0

    def slow_down_to(self, per_hour: float) -> None:
        """Lower the rate (never raise it): the server's advertised limit wins over ours."""
        if 0 < per_hour < self.per_hour:
            self.rate = per_hour / 3600.0

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds slept."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        waited = 0.0
        if self.tokens < 1.0:
            waited = (1.0 - self.tokens) / self.rate
            self.sleep(waited)
            self.last = self.clock()
            self.tokens = 1.0
        self.tokens -= 1.0
        return waited


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    slept_s: float = 0.0


class V2EXClient:
    """GET JSON from the V2EX API with rate limiting and retries.

    Args:
        base_url: API root (``https://www.v2ex.com``; tests use a local fake server).
        token: personal access token; when set, v2 endpoints are used and the budget is 600/hour.
        requests_per_hour: our own budget (0 = the API's published limit).
        clock, sleep, rng: injectable for tests (wall-clock seconds; the reset header is epoch time).
    """

    def __init__(self, base_url: str = "https://www.v2ex.com", token: str = "", requests_per_hour: int = 0,
                 max_retries: int = 5, backoff_base: float = 2.0, backoff_max: float = 600.0,
                 timeout: float = 30.0, user_agent: str = "lawclf-collect/0.1",
                 session: Optional[requests.Session] = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, rng: Optional[random.Random] = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        per_hour = requests_per_hour or (V2_PER_HOUR if token else V1_PER_HOUR)
        self.bucket = TokenBucket(per_hour, clock=clock, sleep=self._sleep)
        self.max_retries, self.backoff_base, self.backoff_max = max_retries, backoff_base, backoff_max
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = user_agent
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.clock, self._raw_sleep = clock, sleep
        self.rng = rng or random.Random()
        self.stats = ClientStats()
        #: Epoch second at which the server's window resets, when it said we have none left.
        self._blocked_until = 0.0

    @property
    def api_version(self) -> str:
        return "v2" if self.token else "v1"

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.slept_s += seconds
            self._raw_sleep(seconds)

    def _backoff(self, attempt: int) -> float:
        """Exponential back-off with full jitter: uniform(0, min(max, base * 2**attempt))."""
        return self.rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt))

    def _note_rate_headers(self, headers: Any) -> None:
        limit = headers.get("X-Rate-Limit-Limit")
        remaining, reset = headers.get("X-Rate-Limit-Remaining"), headers.get("X-Rate-Limit-Reset")
        try:
            if limit is not None:
                self.bucket.slow_down_to(float(limit))
            if remaining is not None and reset is not None and int(remaining) <= 0:
                self._blocked_until = float(reset)
        except ValueError:
            pass  # a malformed header must not stop the crawl; the bucket still paces us

    def _retry_after(self, headers: Any) -> Optional[float]:
        value = headers.get("Retry-After")
        if value is None:
            reset = headers.get("X-Rate-Limit-Reset")
            try:
                return max(0.0, float(reset) - self.clock()) if reset is not None else None
            except ValueError:
                return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:  # the other form Retry-After may take: an HTTP date
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - self.clock())
        except (TypeError, ValueError):
            return None  # unreadable: fall back to our own back-off

    def get_json(self, path: str, params: Optional[dict[str, Any]] = None) -> Any:
        """GET ``base_url + path`` and decode JSON, retrying transient failures."""
        url = self.base_url + path
        last_error = ""
        for attempt in range(self.max_retries + 1):
            wait_reset = self._blocked_until - self.clock()
            if wait_reset > 0:
                self._sleep(wait_reset + 1.0)  # one spare second: clocks differ
            self.bucket.acquire()
            self.stats.requests += 1
            retry_wait: Optional[float] = None
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                last_error = f"network error: {exc.__class__.__name__}: {exc}"
            else:
                self._note_rate_headers(resp.headers)
                if resp.status_code == 429 or resp.status_code >= 500:
                    last_error = f"HTTP {resp.status_code}"
                    retry_wait = self._retry_after(resp.headers) if resp.status_code in (429, 503) else None
                elif resp.status_code >= 400:  # 401/403/404: retrying will not help
                    raise FetchError(f"GET {resp.url}: HTTP {resp.status_code}: {resp.text[:200]}")
                else:
                    try:
                        return resp.json()
                    except ValueError as exc:
                        last_error = f"malformed JSON ({exc})"
            if attempt == self.max_retries:
                break
            self.stats.retries += 1
            self._sleep(retry_wait if retry_wait is not None else self._backoff(attempt))
        raise FetchError(f"GET {url} {params or ''}: {last_error} after {self.max_retries + 1} attempts")

    # ------------------------------------------------------------------ endpoints
    def feed(self, name: str) -> list[dict[str, Any]]:
        """v1 ``latest`` or ``hot`` topics (one page, no pagination)."""
        if name not in FEEDS:
            raise ValueError(f"unknown feed {name!r}; expected one of {FEEDS}")
        return _topic_list(self.get_json(f"/api/topics/{name}.json"), f"feed {name}")

    def node_page(self, node: str, page: int) -> tuple[list[dict[str, Any]], Optional[int]]:
        """One page of a node's topics and the number of pages when the API says (v2 does)."""
        if self.token:
            data = self.get_json(f"/api/v2/nodes/{node}/topics", {"p": page})
            if not isinstance(data, dict) or not data.get("success", False):
                message = data.get("message") if isinstance(data, dict) else repr(data)[:200]
                raise FetchError(f"node {node!r} page {page}: API error: {message}")
            pages = (data.get("pagination") or {}).get("pages")
            return _topic_list(data.get("result"), f"node {node} page {page}"), pages
        data = self.get_json("/api/topics/show.json", {"node_name": node, "page": page})
        return _topic_list(data, f"node {node} page {page}"), None


def _topic_list(data: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(t, dict) and "id" in t for t in data):
        raise FetchError(f"{what}: expected a list of topics with ids, got {json.dumps(data)[:200]}")
    return data


def topic_to_row(topic: dict[str, Any], node: Optional[str] = None) -> dict[str, Any]:
    """A V2EX topic as a ``posts`` row. Only the text is kept: no user names or avatars."""
    import datetime as dt

    created = topic.get("created")
    node_name = node or (topic.get("node") or {}).get("name")
    return {
        "source": SOURCE,
        "external_id": str(topic["id"]),
        "title": topic.get("title") or "",
        "body": topic.get("content") or "",  # markdown; stripped at export
        "node": node_name,
        "created": dt.datetime.fromtimestamp(created, dt.timezone.utc) if isinstance(created, (int, float)) else None,
        "label": NONLEGAL,
    }


def crawl(engine: Engine, client: V2EXClient, nodes: Iterable[str] = (), feeds: Iterable[str] = (),
          max_pages: int = 5, progress: bool = True,
          on_page: Optional[Callable[[str, int], None]] = None) -> dict[str, Any]:
    """Fetch feeds once and nodes page by page into the database, resuming where a run stopped.

    Each page's topics and the task's next page are committed in one transaction, so a
    crash loses at most the page in flight and never duplicates a topic. A page that
    keeps failing is recorded in ``crawl_failures`` and its node stops there; the next
    run retries it. ``on_page(task, page)`` runs after each commit (tests use it to crash).
    """
    if progress:  # tqdm.auto picks the notebook widget when there is one
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    nodes, feeds = [n for n in nodes if n], [f for f in feeds if f]
    unknown = [f for f in feeds if f not in FEEDS]
    if unknown:  # before any request: a typo should not cost a crawl
        raise ValueError(f"unknown feed(s) {unknown}; expected some of {FEEDS}")
    summary: dict[str, Any] = {"api": client.api_version, "pages": 0, "topics": 0, "new": 0, "failures": []}
    with engine.connect() as conn:
        plan = {n: store.get_state(conn, _task(client, n)) for n in nodes}
    todo = sum(max(0, max_pages - s["next_page"] + 1) for s in plan.values() if not s["done"]) + len(feeds)
    bar = tqdm(total=todo, desc="V2EX pages", unit="page", disable=not progress)

    def save(task: str, topics: list[dict], node: Optional[str], state: Optional[tuple[int, bool, int]], page: int):
        with engine.begin() as conn:  # posts + progress: one transaction
            counts = store.upsert_posts(conn, [topic_to_row(t, node) for t in topics])
            if state is not None:
                store.set_state(conn, task, *state)
        summary["pages"] += 1
        summary["topics"] += len(topics)
        summary["new"] += counts["new"]
        bar.update(1)
        if on_page:
            on_page(task, page)

    def fail(task: str, page: int, exc: Exception):
        _record_failure(engine, summary, task, page, exc)
        bar.write(f"[collect] {task} page {page} failed: {exc}")

    for name in feeds:
        task = f"v1:feed:{name}"
        try:
            save(task, client.feed(name), None, None, 1)
        except FetchError as exc:
            fail(task, 1, exc)
    for node, state in plan.items():
        task = _task(client, node)
        page, fetched, done = state["next_page"], state["pages_fetched"], state["done"]
        previous_ids: Optional[list] = None
        while not done and page <= max_pages:
            try:
                topics, pages = client.node_page(node, page)
            except FetchError as exc:
                fail(task, page, exc)
                break
            # An empty page, or the last page the API announced, ends the node for good. So does a
            # page identical to the previous one: the endpoint ignored `page`, more requests would
            # only fetch the same topics again.
            ids = [t["id"] for t in topics]
            done = not topics or (pages is not None and page >= pages) or ids == previous_ids
            if ids == previous_ids:
                bar.write(f"[collect] {task}: page {page} repeats page {page - 1}; the API does not paginate here")
            save(task, topics, node, (page + 1, done, fetched + 1), page)
            page, fetched, previous_ids = page + 1, fetched + 1, ids
    bar.close()
    summary.update(requests=client.stats.requests, retries=client.stats.retries, slept_s=round(client.stats.slept_s, 1))
    return summary


def _record_failure(engine: Engine, summary: dict[str, Any], task: str, page: int, exc: Exception) -> None:
    """A request that failed after every retry: into ``crawl_failures`` (retried next run) and the summary."""
    with engine.begin() as conn:
        store.record_failure(conn, task, page, str(exc))
    summary["failures"].append({"task": task, "page": page, "error": str(exc)})


def _task(client: V2EXClient, node: str) -> str:
    # v1 and v2 paginate differently, so their progress is kept apart.
    return f"{client.api_version}:node:{node}"


def walk_key(topic: Mapping[str, Any]) -> float:
    """Where a topic sits in a node's listing: its ``last_touched`` (V2EX lists a node by activity),
    else its id (the fake server and created-ordered lists). Newer = larger."""
    value = topic.get("last_touched")
    return float(value if isinstance(value, (int, float)) else topic["id"])


def refresh(engine: Engine, client: V2EXClient, nodes: Iterable[str] = (), feeds: Iterable[str] = ("latest",),
            max_pages: int = 3, task_prefix: str = "screen",
            on_page: Optional[Callable[[str, int], None]] = None) -> dict[str, Any]:
    """Fetch what is new: each feed once, each node page by page until the walk reaches what was stored.

    The screening job's crawl, unlike :func:`crawl`'s back-fill. A node walk ends at the first page
    that reaches the node's *mark* — the newest topic (:func:`walk_key`) when the last complete walk
    began, so everything at or below it is stored — or at the node's last page. Only then does the
    mark move up, to where this walk began. A walk cut short keeps its place instead: a kill, a failed
    request or the ``max_pages`` cap (pages per node per pass) leaves the next pass to carry on at the
    page it stopped at, then to walk again from page 1 for what was posted meanwhile. Pages shifted by
    new topics only repeat topics, which the upsert ignores; a topic bumped above the walk is newer
    than the mark, so the next walk sees it. Each page's topics, position and marks are committed in
    one transaction. A cap that stops a walk short of its mark is a *gap*, reported with the failures
    (the pass is ``partial``) until a later pass closes it; a node's first walk is its baseline: it
    ends at the cap without a gap (older topics are history, not new). Failed requests are recorded
    and reported, not raised.
    """
    nodes, feeds = [n for n in nodes if n], [f for f in feeds if f]
    unknown = [f for f in feeds if f not in FEEDS]
    if unknown:
        raise ValueError(f"unknown feed(s) {unknown}; expected some of {FEEDS}")
    summary: dict[str, Any] = {"pages": 0, "topics": 0, "new": 0, "failures": [], "gaps": []}

    def save(task: str, topics: list[dict], node: Optional[str], page: int,
             position: Optional[tuple[int, Optional[float], Optional[float]]] = None) -> None:
        with engine.begin() as conn:  # topics, walk position and marks: all or nothing
            counts = store.upsert_posts(conn, [topic_to_row(t, node) for t in topics])
            if position is not None:
                next_page, mark, pending = position
                store.set_state(conn, task, next_page, next_page == 1, 0)
                store.set_walk_marks(conn, task, mark, pending)
        summary["pages"] += 1
        summary["topics"] += len(topics)
        summary["new"] += counts["new"]
        if on_page:
            on_page(task, page)

    for name in feeds:
        task = f"{task_prefix}:feed:{name}"
        try:
            save(task, client.feed(name), None, 1)
        except FetchError as exc:
            _record_failure(engine, summary, task, 1, exc)
    for node in nodes:
        task = f"{task_prefix}:{_task(client, node)}"
        with engine.connect() as conn:
            page = store.get_state(conn, task)["next_page"]
            mark, pending = store.get_walk_marks(conn, task)
        if page == 1:
            pending = None  # a fresh walk: it begins at the newest topic of its page 1
        fresh_walk_done = page == 1  # after finishing an interrupted walk, walk once more from page 1
        fetched = 0
        while True:
            if fetched >= max_pages:
                if mark is None:  # the node's first walk: its baseline ends here
                    with engine.begin() as conn:
                        store.set_state(conn, task, 1, True, 0)
                        store.set_walk_marks(conn, task, pending, None)
                else:
                    gap = {"task": task, "page": page, "error": f"gap: {fetched} pages (max_pages) did not reach "
                           "the posts stored before; the next pass carries on from here"}
                    summary["gaps"].append(gap)
                    summary["failures"].append(gap)
                break
            try:
                topics, pages = client.node_page(node, page)
            except FetchError as exc:
                _record_failure(engine, summary, task, page, exc)
                break
            fetched += 1
            keys = [walk_key(t) for t in topics]
            if page == 1 and pending is None and keys:
                pending = max(keys)
            reached = (not topics or (pages is not None and page >= pages)
                       or (mark is not None and min(keys) <= mark))
            if not reached:
                save(task, topics, node, page, (page + 1, mark, pending))
                page += 1
                continue
            marks = [m for m in (mark, pending) if m is not None]
            mark, pending = (max(marks) if marks else None), None
            save(task, topics, node, page, (1, mark, None))
            if fresh_walk_done:
                break
            page, fresh_walk_done = 1, True
    summary.update(requests=client.stats.requests, retries=client.stats.retries)
    return summary
