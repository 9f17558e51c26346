"""Tag calls for contacts new to a segment: a queue of its own, apart from batch slots.

A contact new to a segment is delivered only once its segment tag is set. Tag calls take
up to 250 emails and have their own, much lower limit (60/min), so they are grouped, but
a partly filled call must never wait for company for long: a re-run where newcomers are
sparse would otherwise hold them (and, before this queue existed, the batch slots they
came from) forever. So a chunk goes out when it is full *or* `flush_after` seconds after
its first email arrived, and at once when a barrier asks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from target_omnisend.errors import Cancelled

T = TypeVar("T")
TAG_CHUNK = 250  # Omnisend: at most 250 emails per tags call


def tag_calls(emails: Sequence[str]) -> Iterator[list[str]]:
    """The emails of one tag change, cut into calls of at most 250."""
    for start in range(0, len(emails), TAG_CHUNK):
        yield list(emails[start : start + TAG_CHUNK])


class TagChunks(Generic[T]):
    """Groups values (items or emails) by tag set into tag calls of ≤ 250 each. Not
    thread-safe: the caller holds its own lock."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, ...], list[T]] = {}

    def add(self, tags: tuple[str, ...], value: T) -> list[T] | None:
        """Buffer one value; return a full chunk for `tags` when it is complete."""
        buffer = self._buffers.setdefault(tags, [])
        buffer.append(value)
        return self._buffers.pop(tags) if len(buffer) >= TAG_CHUNK else None

    def drain(self) -> list[tuple[tuple[str, ...], list[T]]]:
        """Every partly filled chunk, emptied."""
        chunks = [(tags, values) for tags, values in self._buffers.items() if values]
        self._buffers.clear()
        return chunks


class TagQueue(Generic[T]):
    """One worker thread sending tag calls: full chunks first, then partly filled ones
    once they are `flush_after` seconds old (or when `flush()` asks)."""

    def __init__(
        self,
        send: Callable[[tuple[str, ...], list[T]], None],
        on_error: Callable[[BaseException], None],
        *,
        flush_after: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._on_error = on_error
        self.flush_after = flush_after
        self._clock = clock
        self._cond = threading.Condition()
        self._chunks: TagChunks[T] = TagChunks()
        self._ready: list[tuple[tuple[str, ...], list[T]]] = []
        self._oldest: dict[tuple[str, ...], float] = {}
        self._queued = 0
        self._flush_requested = False
        self._stopped = False
        self._worker = threading.Thread(target=self._run, name="omnisend-tags", daemon=True)
        self._worker.start()

    @property
    def backlog(self) -> int:
        """Values waiting for (or in) a tag call."""
        with self._cond:
            return self._queued

    def add(self, tags: tuple[str, ...], values: list[T]) -> None:
        with self._cond:
            for value in values:
                self._oldest.setdefault(tags, self._clock())
                full = self._chunks.add(tags, value)
                if full is not None:
                    self._oldest.pop(tags, None)
                    self._ready.append((tags, full))
            self._queued += len(values)
            self._cond.notify_all()

    def flush(self) -> None:
        """A barrier is waiting: partly filled chunks go now."""
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _next_chunk(self) -> tuple[tuple[str, ...], list[T]]:
        """Wait for a chunk that is due (caller holds the lock)."""
        while True:
            if self._stopped:
                raise Cancelled()
            if self._ready:
                return self._ready.pop(0)
            now = self._clock()
            due = self._flush_requested or any(
                now - first >= self.flush_after for first in self._oldest.values()
            )
            if due:
                self._flush_requested = False
                self._oldest.clear()
                self._ready.extend(self._chunks.drain())
                continue
            self._cond.wait(timeout=0.25)

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    tags, values = self._next_chunk()
                self._send(tags, values)
            except Cancelled:
                return
            except BaseException as exc:  # any failure must stop the run, loudly
                self._on_error(exc)
                return
            with self._cond:
                self._queued -= len(values)
