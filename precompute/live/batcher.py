"""A bounded request queue in front of the engine, with one thread that batches forwards.

Requests for the same SAEs that wait together go through the model as one batch (higher
throughput under concurrent clients); a full queue refuses at once (HTTP 503 with
Retry-After) instead of letting latency grow without bound. A failing batch is retried one
request at a time, so one bad request never fails the others, and nothing kills the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

log = logging.getLogger("saescope.worker")


class QueueFull(Exception):
    """The worker has `max_queue` requests waiting; the client should retry later."""


@dataclass
class Job:
    key: tuple
    """Jobs with equal keys may share a forward; None-keyed jobs run alone."""
    items: list
    run: Callable[[list], list]
    """Takes the items of one or more jobs (concatenated) and returns one result per item."""
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(self, max_batch: int = 8, max_queue: int = 64):
        self.max_batch, self.max_queue = max_batch, max_queue
        self._q: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._held: deque[Job] = deque()
        self.n_batches = self.n_jobs = 0
        self._thread = threading.Thread(target=self._loop, name="saescope-batcher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._q.qsize() + len(self._held)

    def submit(self, key: tuple | None, items: list, run: Callable[[list], list]) -> Future:
        job = Job(key, items, run)
        try:
            self._q.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    def _next(self) -> Job:
        return self._held.popleft() if self._held else self._q.get()

    def _collect(self, first: Job) -> list[Job]:
        """`first` and the waiting jobs with its key, up to max_batch items; others wait their turn."""
        batch, n_items = [first], len(first.items)
        if first.key is None:
            return batch
        while n_items < self.max_batch:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                break
            if job.key == first.key and n_items + len(job.items) <= self.max_batch:
                batch.append(job)
                n_items += len(job.items)
            else:
                self._held.append(job)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect(self._next())
            self.n_batches += 1
            self.n_jobs += len(batch)
            try:
                self._run(batch)
            except BaseException:  # never let the thread die
                log.exception("batch failed")

    def _run(self, batch: list[Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        items = [it for j in live for it in j.items]
        try:
            results = live[0].run(items)
        except Exception as e:
            if len(live) == 1:
                live[0].future.set_exception(e)
                return
            for job in live:  # find the culprit: each request alone
                try:
                    job.future.set_result(job.run(job.items))
                except Exception as err:
                    job.future.set_exception(err)
            return
        pos = 0
        for job in live:
            job.future.set_result(results[pos : pos + len(job.items)])
            pos += len(job.items)
