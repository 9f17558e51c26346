"""A single background worker that runs jobs at a given time.

Batches and tag requests are asynchronous in Omnisend: they are accepted first and
applied later. One worker thread keeps that ordering deterministic (jobs due at the same
moment run in submission order) while HTTP handler threads return immediately.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._generation = 0  # bumped by clear(): jobs of an older generation are dropped
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._running: int | None = None  # sequence number of the job running now

    def start(self) -> None:
        with self._cond:
            self._stopped = False
        self._thread = threading.Thread(target=self._run, name="omnisend-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()
            self._generation += 1
            self._cond.notify_all()  # `wait_for_scheduled` has nothing left to wait for

    def call_later(self, delay: float, job: Callable[[], None]) -> None:
        with self._cond:
            due = time.monotonic() + max(0.0, delay)
            heapq.heappush(self._heap, (due, next(self._seq), self._generation, job))
            self._cond.notify_all()

    def wait_for_scheduled(self, timeout: float) -> bool:
        """Wait until every job scheduled before this call has run (or was cleared);
        jobs scheduled meanwhile, such as a foreign integration's next tick, are not
        waited for. False when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            mark = next(self._seq)
            while any(seq < mark for _, seq, _, _ in self._heap) or (
                self._running is not None and self._running < mark
            ):
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    return False
                self._cond.wait(left)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, seq, generation, job = heapq.heappop(self._heap)
                if generation != self._generation:
                    self._cond.notify_all()
                    continue
                self._running = seq
            try:
                job()
            except Exception:  # a broken job must not kill the worker
                log.exception("background job failed")
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
