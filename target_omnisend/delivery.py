"""The delivery engine: batches in flight while the SDK keeps reading.

Senders post batches concurrently; one poller confirms them with a single list
request for all batches in flight (polling is paid from the same rate limit as
writes, so it is kept to a few percent of requests). Contacts new to a segment are
then tagged through the tags endpoint, 250 emails a call, on its own lower limit.

Accounting is per item: every item handed in gets exactly one final outcome
(delivered or rejected). A submitted batch holds one of a bounded number of slots
until all its items are final, which gives back-pressure: memory stays flat however
long the input. `wait_idle()` is the barrier the target calls before it emits STATE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from target_omnisend.api import problem_summary
from target_omnisend.client import OmnisendClient, RequestRefused
from target_omnisend.errors import Cancelled, DeliveryError
from target_omnisend.mapping import email_of

T = TypeVar("T")
FINAL_BATCH_STATES = frozenset({"finished", "stopped"})
TAG_CHUNK = 250  # Omnisend: at most 250 emails per tags call


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


@dataclass
class _Ticket:
    """One submitted batch; its slot is freed when its last item is final."""

    emails: list[str]
    open_items: int


@dataclass(slots=True)
class Item:
    """One contact on its way, with the source record kept for the rejected file."""

    stream: str
    email: str
    body: dict[str, Any]
    record: Any
    payload: str = ""
    fingerprint: bytes | None = None
    tags: tuple[str, ...] = ()
    attempts: int = 0
    ticket: _Ticket | None = field(default=None, repr=False)


class OutcomeSink(Protocol):
    """Where final outcomes go."""

    def delivered_items(self, items: list[Item]) -> None: ...

    def rejected_item(self, item: Item, code: str, reason: str) -> None: ...


@dataclass
class _Job:
    items: list[Item]
    batch_id: str | None = None
    submitted_at: float = 0.0
    resent_after_timeout: bool = False


@dataclass
class EngineStats:
    batches_sent: int = 0
    polls: int = 0
    items_fetches: int = 0
    resent_items: int = 0
    tag_calls: int = 0


class DeliveryEngine:
    """Concurrent, bounded, confirmable delivery of contact batches."""

    def __init__(
        self,
        client: OmnisendClient,
        sink: OutcomeSink,
        *,
        max_concurrency: int = 4,
        max_pending_batches: int = 64,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        sends_per_poll: int = 30,
        batch_timeout: float = 900.0,
        max_item_attempts: int = 3,
        logger: logging.Logger | None = None,
    ) -> None:
        self.client = client
        self.sink = sink
        self.logger = logger or logging.getLogger("target-omnisend.delivery")
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.sends_per_poll = sends_per_poll
        self.batch_timeout = batch_timeout
        self.max_item_attempts = max_item_attempts
        self.stats = EngineStats()
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="omnisend-send")
        # Tag calls wait on a 60/min budget: a thread of their own keeps them from
        # starving contact writes.
        self._tag_pool = ThreadPoolExecutor(1, thread_name_prefix="omnisend-tags")
        self._slots = threading.Semaphore(max_pending_batches)
        self._cond = threading.Condition()
        self._tracked: dict[str, _Job] = {}
        self._open_items = 0
        self._sends_since_poll = 0
        self._waiters = 0
        self._tag_chunks: TagChunks[Item] = TagChunks()
        self._inflight_emails: Counter[str] = Counter()
        self._error: BaseException | None = None
        self._closed = False
        self._poller = threading.Thread(target=self._poll_loop, name="omnisend-poll", daemon=True)
        self._poller.start()

    # -- public -----------------------------------------------------------------------

    def submit(self, items: list[Item]) -> None:
        """Hand over one batch (≤ 100 items). Blocks while too many are unconfirmed."""
        if not items:
            return
        self.raise_if_failed()
        emails = [item.email for item in items]
        with self._cond:
            clash = any(email in self._inflight_emails for email in emails)
        if clash:
            # The same contact is still in an unconfirmed batch: Omnisend may apply
            # batches in any order, so the newer data waits for the older write.
            self.wait_idle()
        while not self._slots.acquire(timeout=0.5):
            self.raise_if_failed()
            self._nudge()
        ticket = _Ticket(emails=emails, open_items=len(items))
        for item in items:
            item.ticket = ticket
        with self._cond:
            self._inflight_emails.update(emails)
            self._open_items += len(items)
        self._start(_Job(items=items))

    def wait_idle(self) -> None:
        """Barrier: return once every submitted item has a final outcome."""
        with self._cond:
            self._waiters += 1
            self._cond.notify_all()
        try:
            while True:
                self._flush_tags()
                with self._cond:
                    if not self._open_items or self._error is not None:
                        break
                    self._cond.wait(timeout=0.2)
        finally:
            with self._cond:
                self._waiters -= 1
        self.raise_if_failed()

    def in_flight(self, email: str) -> bool:
        """Submitted and not yet final (the latest version of a contact must not be
        skipped as unchanged while an older one may still land after it)."""
        with self._cond:
            return email in self._inflight_emails

    def cancel(self) -> None:
        """Blocked `submit()`/`wait_idle()` calls raise `Cancelled`; nothing new is posted."""
        self._fail(Cancelled("the run was cancelled"))

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        failed = self._error is not None
        self._pool.shutdown(wait=not failed, cancel_futures=failed)
        self._tag_pool.shutdown(wait=not failed, cancel_futures=failed)
        self._poller.join(timeout=5)

    # -- sending ----------------------------------------------------------------------

    def _start(self, job: _Job) -> None:
        self._pool.submit(self._guarded, self._send, job)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # any failure must stop the run, loudly
            self._fail(exc)

    def _send(self, job: _Job) -> None:
        if self._error is not None:
            return
        try:
            batch_id = self.client.create_batch([item.payload for item in job.items])
        except RequestRefused as exc:
            self._refused(job, exc)
            return
        with self._cond:
            self.stats.batches_sent += 1
            self._sends_since_poll += 1
            job.batch_id = batch_id
            job.submitted_at = time.monotonic()
            self._tracked[batch_id] = job
            self._cond.notify_all()

    def _refused(self, job: _Job, exc: RequestRefused) -> None:
        """A batch refused as a whole must not take its good items down with it: split
        until the refusal names single items, which are rejected with the reason."""
        if len(job.items) == 1:
            self._reject(job.items[0], "refused_by_omnisend", exc.reason)
            return
        middle = len(job.items) // 2
        for part in (job.items[:middle], job.items[middle:]):
            self._start(_Job(items=part))

    # -- confirming -------------------------------------------------------------------

    def _nudge(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _poll_due(self, last_poll: float) -> bool:
        elapsed = time.monotonic() - last_poll
        if elapsed < self.poll_interval:
            return False
        return bool(
            self._waiters
            or self._sends_since_poll >= self.sends_per_poll
            or elapsed >= self.max_poll_interval
        )

    def _poll_loop(self) -> None:
        last_poll = 0.0
        while True:
            with self._cond:
                while not self._closed and not (self._tracked and self._poll_due(last_poll)):
                    self._cond.wait(timeout=min(self.poll_interval, 0.25))
                if (self._closed and not self._tracked) or self._error is not None:
                    return
                self._sends_since_poll = 0
            last_poll = time.monotonic()
            try:
                self._poll_once()
            except BaseException as exc:  # any failure must stop the run, loudly
                self._fail(exc)
                return

    def _poll_once(self) -> None:
        with self._cond:
            tracked = dict(self._tracked)
        self.stats.polls += 1
        listed = {str(b.get("batchID")): b for b in self.client.recent_batches()}
        now = time.monotonic()
        for batch_id, job in tracked.items():
            batch = listed.get(batch_id)
            if batch is None and now - job.submitted_at > self.max_poll_interval:
                # Older than the newest page (other tools share the account): ask directly.
                batch = self.client.get_batch(batch_id)
            if batch is not None and batch.get("status") in FINAL_BATCH_STATES:
                with self._cond:
                    self._tracked.pop(batch_id, None)
                self._settle(job, batch)
            elif now - job.submitted_at > self.batch_timeout:
                self._timed_out(job)

    def _timed_out(self, job: _Job) -> None:
        with self._cond:
            self._tracked.pop(job.batch_id or "", None)
        if job.resent_after_timeout:
            raise DeliveryError(
                f"Omnisend has not finished batch {job.batch_id} after "
                f"{self.batch_timeout:.0f}s, even after re-sending it; try again later"
            )
        self.logger.warning(
            "Batch %s unfinished after %.0fs; re-sending its %d contacts",
            job.batch_id,
            self.batch_timeout,
            len(job.items),
        )
        self._start(_Job(items=job.items, resent_after_timeout=True))

    def _settle(self, job: _Job, batch: dict[str, Any]) -> None:
        """Turn a final batch into per-item outcomes; unfinished items go out again."""
        if batch.get("status") == "finished" and not int(batch.get("errorsCount") or 0):
            self._delivered(job.items)
            return
        self.stats.items_fetches += 1
        results = self._item_results(job)
        delivered: list[Item] = []
        retry: list[Item] = []
        for item in job.items:
            code, response = results.get(item.email, (None, None))
            if code is not None and 200 <= code < 300:
                delivered.append(item)
            elif code is not None and 400 <= code < 500 and code != 429:
                self._reject(item, "refused_by_omnisend", problem_summary(response, code))
            else:
                item.attempts += 1
                if item.attempts >= self.max_item_attempts:
                    why = f"HTTP {code}" if code else f"batch {batch.get('status')}"
                    self._reject(
                        item,
                        "delivery_failed",
                        f"Omnisend did not process it in {item.attempts} attempts ({why})",
                    )
                else:
                    retry.append(item)
        if delivered:
            self._delivered(delivered)
        if retry:
            self.stats.resent_items += len(retry)
            self._start(_Job(items=retry))

    def _item_results(self, job: _Job) -> dict[str, tuple[int | None, Any]]:
        """Match per-item results to our items by the email in each item's request,
        falling back to position when the request is not echoed."""
        results: dict[str, tuple[int | None, Any]] = {}
        for position, entry in enumerate(self.client.batch_items(job.batch_id or "")):
            email = email_of(entry.get("request"))
            if email is None and position < len(job.items):
                email = job.items[position].email
            code = entry.get("responseCode")
            results[email or ""] = (int(code) if code else None, entry.get("response"))
        return results

    # -- tagging contacts new to a segment ----------------------------------------------

    def _delivered(self, items: list[Item]) -> None:
        untagged = [item for item in items if not item.tags]
        if untagged:
            self._final(untagged, None)
        full: list[list[Item]] = []
        with self._cond:
            for item in items:
                if item.tags:
                    chunk = self._tag_chunks.add(item.tags, item)
                    if chunk is not None:
                        full.append(chunk)
        for chunk in full:
            self._tag_pool.submit(self._guarded, self._tag, chunk)

    def _flush_tags(self) -> None:
        """At a barrier, partly filled tag calls go out rather than wait for company."""
        with self._cond:
            chunks = self._tag_chunks.drain()
        for _, chunk in chunks:
            self._tag_pool.submit(self._guarded, self._tag, chunk)

    def _tag(self, items: list[Item]) -> None:
        emails = [item.email for item in items]
        self.client.add_tags(list(items[0].tags), emails)
        with self._cond:
            self.stats.tag_calls += 1
        self._final(items, None)

    # -- bookkeeping ------------------------------------------------------------------

    def _reject(self, item: Item, code: str, reason: str) -> None:
        self._final([item], (code, reason))

    def _final(self, items: list[Item], rejection: tuple[str, str] | None) -> None:
        """The one place an item becomes final: report it, then free its slot."""
        if rejection is None:
            self.sink.delivered_items(items)
        else:
            for item in items:
                self.sink.rejected_item(item, *rejection)
        released: list[_Ticket] = []
        with self._cond:
            self._open_items -= len(items)
            for item in items:
                ticket = item.ticket
                if ticket is None:
                    continue
                ticket.open_items -= 1
                if ticket.open_items == 0:
                    released.append(ticket)
                    for email in ticket.emails:
                        self._inflight_emails[email] -= 1
                        if self._inflight_emails[email] <= 0:
                            del self._inflight_emails[email]
            self._cond.notify_all()
        for _ in released:
            self._slots.release()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()
