"""Server-side micro-batching: concurrent requests grouped into one predictor call."""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Optional


class Overloaded(RuntimeError):
    """The queue already holds ``max_queue`` texts: the caller should answer 503 at once."""


class MicroBatcher:
    """Groups concurrent requests into one predictor call.

    Each request puts its texts on a queue and waits on a future. One thread takes the
    first waiting job, then everything already queued, then (only when ``wait_ms`` > 0) waits
    up to ``wait_ms`` for more until ``max_size`` texts are collected, runs ``predict_many``
    once and hands each request its slice of the results. Under load a batch forms while the
    previous one runs, so no wait is needed for batches to form (the default, 0); a lone
    request then goes to the model at once. ``predict_many`` cuts the batch by length
    (:func:`lawclf.predict.length_groups`), so mixing short and long texts wastes little.

    Admission control: at most ``max_queue`` texts wait at a time (0 = no bound); beyond
    that :meth:`submit` raises :class:`Overloaded` at once, so a burst cannot leave a
    backlog that outlives it. A job whose caller gave up (``future.cancel()``) is dropped
    before it reaches the model.

    The thread is started lazily in the process that uses it: Gunicorn forks workers
    after loading the app, and threads do not survive a fork.
    """

    def __init__(self, predict_many: Callable[[list[str]], list[dict]], max_size: int = 32,
                 wait_ms: float = 0.0, max_queue: int = 0):
        self._predict_many = predict_many
        self.max_queue = max(0, int(max_queue))
        self._waiting = 0  # texts queued and not yet taken into a batch
        self.max_size = max(1, int(max_size))
        self.wait_s = max(0.0, float(wait_ms)) / 1000.0
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Optional[tuple[list[str], Future]]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        #: Sizes (texts) of the latest batches run in this process (bounded: a server runs for months).
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)

    def submit(self, texts: list[str]) -> Future:
        """Queue ``texts``; the future resolves to their results (same order)."""
        self._ensure_running()
        fut: Future = Future()
        with self._lock:
            if self.max_queue and self._waiting + len(texts) > self.max_queue and self._waiting:
                raise Overloaded(f"{self._waiting} texts are already waiting (limit {self.max_queue})")
            self._waiting += len(texts)
        self._queue.put((list(texts), fut))
        return fut

    @property
    def waiting(self) -> int:
        """Texts queued and not yet taken into a batch."""
        return self._waiting

    def predict(self, texts: list[str], timeout: Optional[float] = None) -> list[dict]:
        return self.submit(texts).result(timeout=timeout)

    @property
    def healthy(self) -> bool:
        """True unless the thread was started in this process and has died."""
        return self._thread is None or self._pid != os.getpid() or self._thread.is_alive()

    def close(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=5)
            self._thread = None

    def _ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's queue and thread are not ours
                self._queue = queue.Queue()
                self._waiting = 0
                self._pid = os.getpid()
                self.batch_sizes.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lawclf-microbatch", daemon=True)
                self._thread.start()

    def _collect(self, first: tuple[list[str], Future]) -> tuple[list[tuple[list[str], Future]], bool]:
        jobs, n = [first], len(first[0])
        deadline = time.monotonic() + self.wait_s
        while n < self.max_size:
            try:  # whatever is queued already, then whatever arrives before the deadline
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job[0])
        return jobs, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            with self._lock:
                self._waiting -= sum(len(texts) for texts, _ in jobs)
            jobs = [j for j in jobs if j[1].set_running_or_notify_cancel()]  # callers that gave up: dropped
            texts = [t for job_texts, _ in jobs for t in job_texts]
            try:
                results = self._predict_many(texts) if texts else []
                if len(results) != len(texts):
                    raise RuntimeError(f"predictor returned {len(results)} results for {len(texts)} texts")
            except BaseException as exc:  # every waiting request gets the error, the thread lives on
                for _, fut in jobs:
                    fut.set_exception(exc)
            else:
                self.batch_sizes.append(len(texts))
                start = 0
                for job_texts, fut in jobs:
                    fut.batch_size = len(texts)  # type: ignore[attr-defined]  # logged with the request
                    fut.set_result(results[start:start + len(job_texts)])
                    start += len(job_texts)
            if stop:
                return



__all__ = ["MicroBatcher", "Overloaded"]
