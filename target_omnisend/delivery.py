"""The delivery engine: batches in flight while the SDK keeps reading.

Senders post batches concurrently; one poller confirms them through a `BatchWatcher`
(the batch list, read where our batches are, whatever its order; polling is paid from
the same rate limit as writes, so it is kept to a few percent of requests). Contacts new
to a segment then go to the `TagQueue`: tag calls of up to 250 emails on their own
lower limit, sent when full or a few seconds old.

Accounting is per item. Every item handed in gets exactly one final outcome (delivered
or rejected); a contact new to a segment is delivered only once its tag call succeeded,
so nothing is checkpointed untagged. A submitted batch holds one of a bounded number of
slots until Omnisend has confirmed (or refused) each of its items, not until tagging:
back-pressure keeps memory flat, and tagging cannot starve writes. `wait_idle()` is the
barrier the target calls before it emits STATE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from target_omnisend.api import BatchStatus, ItemResult, problem_summary
from target_omnisend.client import OmnisendClient, RequestRefused
from target_omnisend.confirm import BatchWatcher
from target_omnisend.errors import Cancelled, DeliveryError
from target_omnisend.tagging import TAG_CHUNK, TagQueue

#: Single-contact tag calls refused, with none accepted, before the tag itself is blamed.
MAX_TAG_REFUSALS = 8


@dataclass
class _Ticket:
    """One submitted batch; its slot is freed when its last item has left the batch
    stage (written, refused or given up on) — tagging happens after that."""

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
    #: Requests spent reading the batch list (the common confirmation path).
    polls: int = 0
    #: Rounds of confirmation (each one or a few list requests).
    poll_rounds: int = 0
    #: Per-batch `GET /batches/{id}` (only for batches the list keeps missing).
    batch_lookups: int = 0
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
        max_pending_batches: int = 96,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        batch_timeout: float = 900.0,
        max_item_attempts: int = 3,
        tag_flush_after: float = 3.0,
        max_tag_backlog: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.client = client
        self.sink = sink
        self.logger = logger or logging.getLogger("target-omnisend.delivery")
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        # Poll once this many batches await confirmation: late enough that one list read
        # confirms many, early enough that the batches still being posted (and those
        # Omnisend has not finished) fit in the slots left, so sending never stalls.
        self.poll_at = max(1, max_pending_batches - max(max_pending_batches // 4, 1))
        self.batch_timeout = batch_timeout
        self.max_item_attempts = max_item_attempts
        self.max_tag_backlog = max_tag_backlog or max(TAG_CHUNK, 100 * max_pending_batches)
        self.stats = EngineStats()
        self.watcher = BatchWatcher(client)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="omnisend-send")
        self._tags: TagQueue[Item] = TagQueue(self._tag, self._fail, flush_after=tag_flush_after)
        self._slots = threading.Semaphore(max_pending_batches)
        self._cond = threading.Condition()
        self._jobs: dict[str, _Job] = {}
        self._open_items = 0
        self._unsent = 0  # jobs handed to the senders, not yet posted (or refused)
        self._fruitless_polls = 0  # polls in a row that confirmed nothing
        self._tag_refusals = 0  # single-contact tag calls Omnisend refused
        self._waiters = 0
        self._writing: Counter[str] = Counter()  # emails in a batch not yet confirmed
        self._unfinal: Counter[str] = Counter()  # emails without a final outcome yet
        self._error: BaseException | None = None
        self._cancelled = False
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
        # The same contact still in an unconfirmed batch: Omnisend may apply batches in
        # any order, so the newer data waits for the older write.
        self._wait_until(lambda: not any(email in self._writing for email in emails))
        self._wait_until(lambda: self._tags.backlog < self.max_tag_backlog)
        while not self._slots.acquire(timeout=0.25):
            self.raise_if_failed()
        ticket = _Ticket(emails=emails, open_items=len(items))
        for item in items:
            item.ticket = ticket
        with self._cond:
            self._writing.update(emails)
            self._unfinal.update(emails)
            self._open_items += len(items)
        self._start(_Job(items=items))

    def wait_idle(self) -> None:
        """Barrier: return once every submitted item has a final outcome."""
        self._tags.flush()
        self._wait_until(lambda: not self._open_items, flush_tags=True)

    def in_flight(self, email: str) -> bool:
        """Submitted and not final yet (its write or its tag call is still on its way)."""
        with self._cond:
            return email in self._unfinal

    def raise_if_failed(self) -> None:
        if self._cancelled:
            raise Cancelled()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop now: no new batch is posted, and every thread waiting in `submit()` or
        `wait_idle()` raises `Cancelled` within a fraction of a second."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        self.client.cancel()
        self._tags.stop()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        abandon = self._error is not None or self._cancelled
        self._pool.shutdown(wait=not abandon, cancel_futures=abandon)
        self._tags.stop()
        self._poller.join(timeout=1 if abandon else 5)

    # -- waiting ----------------------------------------------------------------------

    def _wait_until(self, done: Callable[[], bool], *, flush_tags: bool = False) -> None:
        """Wait, counted as a waiter so the poller confirms promptly, until `done()`."""
        with self._cond:
            self._waiters += 1
            self._cond.notify_all()
            try:
                while True:
                    self.raise_if_failed()
                    if done():
                        return
                    self._cond.wait(timeout=0.2)
                    if flush_tags:
                        self._tags.flush()
            finally:
                self._waiters -= 1

    # -- sending ----------------------------------------------------------------------

    def _start(self, job: _Job) -> None:
        if not self._cancelled:
            with self._cond:
                self._unsent += 1
            self._pool.submit(self._guarded, self._send, job)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Cancelled:
            return
        except BaseException as exc:  # any failure must stop the run, loudly
            self._fail(exc)

    def _send(self, job: _Job) -> None:
        try:
            self._post(job)
        finally:
            with self._cond:
                self._unsent -= 1
                self._cond.notify_all()

    def _post(self, job: _Job) -> None:
        if self._error is not None or self._cancelled:
            return
        try:
            batch_id = self.client.create_batch([item.payload for item in job.items])
        except RequestRefused as exc:
            self._refused(job, exc)
            return
        with self._cond:
            self.stats.batches_sent += 1
            job.batch_id = batch_id
            job.submitted_at = time.monotonic()
            self._jobs[batch_id] = job
            self.watcher.watch(batch_id)
            if len(self._jobs) >= self.poll_at:
                self._cond.notify_all()  # the poller: time to confirm

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

    def _poll_due(self, last_poll: float) -> bool:
        """Polls are paid from the writes' budget, so each should confirm as many batches
        as it can: one when the unconfirmed batches near the slot limit; one for a
        waiting barrier once everything is posted and the oldest batch has had the time
        batches usually take (not spent before anything can be final); and at least one
        every `max_poll_interval` while any batch is unconfirmed. A rate-limited run
        sends in bursts; between them nothing is due. Polls that confirm nothing (Omnisend
        is slow with the batches) come less and less often, up to `max_poll_interval`."""
        if not self._jobs:
            return False
        now = time.monotonic()
        longest = max(self.max_poll_interval, self.poll_interval)
        gap = min(self.poll_interval * 2 ** min(self._fruitless_polls, 16), longest)
        if now - last_poll < gap:
            return False
        oldest = now - next(iter(self._jobs.values())).submitted_at
        if oldest >= longest or len(self._jobs) >= self.poll_at:
            return True
        # (Ages are measured at confirmation, so they include our own polling delays:
        # never wait longer than one poll interval for them.)
        usual = min(self.watcher.typical_age or self.poll_interval, self.poll_interval)
        return bool(self._waiters and not self._unsent and oldest >= usual)

    def _poll_loop(self) -> None:
        last_poll = 0.0
        while True:
            with self._cond:
                while not self._stopping() and not self._poll_due(last_poll):
                    self._cond.wait(timeout=min(self.poll_interval, 0.25))
                if self._stopping() and (not self._jobs or self._error or self._cancelled):
                    return
            last_poll = time.monotonic()
            try:
                self._poll_once()
            except Cancelled:
                return
            except BaseException as exc:  # any failure must stop the run, loudly
                self._fail(exc)
                return

    def _stopping(self) -> bool:
        return self._closed or self._cancelled or self._error is not None

    def _poll_once(self) -> None:
        statuses = self.watcher.poll()
        with self._cond:
            self.stats.poll_rounds += 1
            self.stats.polls = self.watcher.stats.list_requests
            self.stats.batch_lookups = self.watcher.stats.lookups
            jobs = dict(self._jobs)
        now = time.monotonic()
        settled = 0
        for batch_id, job in jobs.items():
            status = statuses.get(batch_id)
            if status is not None and (status.final or status.status == "missing"):
                settled += 1
                self._untrack(batch_id)
                self._settle(job, status)
            elif now - job.submitted_at > self.batch_timeout:
                self._untrack(batch_id)
                self._timed_out(job)
        with self._cond:
            self._fruitless_polls = 0 if settled else self._fruitless_polls + 1

    def _untrack(self, batch_id: str) -> None:
        with self._cond:
            self._jobs.pop(batch_id, None)
        self.watcher.forget(batch_id)

    def _timed_out(self, job: _Job) -> None:
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

    def _settle(self, job: _Job, status: BatchStatus) -> None:
        """Turn a final batch into per-item outcomes. Only a clean batch whose counts
        add up is taken whole; otherwise each item is matched to its own result by
        identity, and an item without one is checked again by sending it alone."""
        if status.all_written(len(job.items)):
            self._written(job.items)
            return
        results: dict[str, ItemResult] = {}
        listed: list[ItemResult] = []
        if status.status != "missing":
            with self._cond:
                self.stats.items_fetches += 1
            listed = self.client.batch_items(job.batch_id or "")
            results = {r.email: r for r in listed if r.email}
        if len(job.items) == 1 and len(listed) == 1 and job.items[0].email not in results:
            results[job.items[0].email] = listed[0]  # one item, one result: no ambiguity
        written: list[Item] = []
        retry: list[Item] = []
        unknown: list[Item] = []
        for item in job.items:
            result = results.get(item.email)
            code = result.code if result is not None else None
            if code is not None and 200 <= code < 300:
                written.append(item)
            elif code is not None and 400 <= code < 500 and code not in (408, 409, 425, 429):
                self._reject(item, "refused_by_omnisend", problem_summary(result.response, code))
            elif self._attempt(item, f"HTTP {code}" if code else f"batch {status.status}"):
                (retry if result is not None else unknown).append(item)
        if written:
            self._written(written)
        self.stats.resent_items += len(retry) + len(unknown)
        if retry:
            self._start(_Job(items=retry))
        if unknown and len(listed) > len(results):
            # Results we could not match to items: alone, each result is unambiguous.
            for item in unknown:
                self._start(_Job(items=[item]))
        elif unknown:
            self._start(_Job(items=unknown))

    def _attempt(self, item: Item, why: str) -> bool:
        """Count one failed attempt; False (and rejected) once attempts are used up."""
        item.attempts += 1
        if item.attempts < self.max_item_attempts:
            return True
        self._reject(
            item,
            "delivery_failed",
            f"Omnisend did not process it in {item.attempts} attempts ({why})",
        )
        return False

    # -- after the write: tagging contacts new to a segment -----------------------------

    def _written(self, items: list[Item]) -> None:
        """Omnisend confirmed these writes: their batch slot is free now; contacts new to
        a segment wait for their tag call before they count as delivered."""
        self._leave_batch(items)
        untagged = [item for item in items if not item.tags]
        if untagged:
            self._final(untagged, None)
        by_tags: dict[tuple[str, ...], list[Item]] = {}
        for item in items:
            if item.tags:
                by_tags.setdefault(item.tags, []).append(item)
        for tags, tagged in by_tags.items():
            self._tags.add(tags, tagged)

    def _tag(self, tags: tuple[str, ...], items: list[Item]) -> None:
        try:
            self.client.add_tags(list(tags), [item.email for item in items])
        except RequestRefused as exc:
            self._tag_refused(tags, items, exc)
            return
        with self._cond:
            self.stats.tag_calls += 1
        self._final(items, None)

    def _tag_refused(self, tags: tuple[str, ...], items: list[Item], exc: RequestRefused) -> None:
        """As with a refused batch, a refused tag call must not take the others down:
        split until the refusal names one contact, rejected with the reason (it is
        written, untagged, and not checkpointed: the next run tags it again). A tag that
        Omnisend refuses for everyone ends the run instead of costing a call a contact."""
        if len(items) > 1:
            middle = len(items) // 2
            for part in (items[:middle], items[middle:]):
                self._tag(tags, part)
            return
        with self._cond:
            self._tag_refusals += 1
            hopeless = self._tag_refusals >= MAX_TAG_REFUSALS and not self.stats.tag_calls
        if hopeless:
            raise DeliveryError(
                f"Omnisend refused every call tagging contacts with {', '.join(tags)} "
                f"({exc.reason}); check segment_tag and tags"
            )
        self._final(items, ("refused_by_omnisend", f"tag call refused: {exc.reason}"))

    # -- bookkeeping ------------------------------------------------------------------

    def _reject(self, item: Item, code: str, reason: str) -> None:
        self._leave_batch([item])
        self._final([item], (code, reason))

    def _leave_batch(self, items: list[Item]) -> None:
        """These items need nothing more from their batch: free slots that are done."""
        released = 0
        with self._cond:
            for item in items:
                self._drop(self._writing, item.email)
                ticket = item.ticket
                if ticket is None:
                    continue
                item.ticket = None
                ticket.open_items -= 1
                released += ticket.open_items == 0
            self._cond.notify_all()
        for _ in range(released):
            self._slots.release()

    def _final(self, items: list[Item], rejection: tuple[str, str] | None) -> None:
        """The one place an item becomes final: report it, then stop counting it."""
        if rejection is None:
            self.sink.delivered_items(items)
        else:
            for item in items:
                self.sink.rejected_item(item, *rejection)
        with self._cond:
            self._open_items -= len(items)
            for item in items:
                self._drop(self._unfinal, item.email)
            self._cond.notify_all()

    @staticmethod
    def _drop(counter: Counter[str], email: str) -> None:
        counter[email] -= 1
        if counter[email] <= 0:
            del counter[email]

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()
