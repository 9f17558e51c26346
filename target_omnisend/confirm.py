"""Finding our batches' statuses in Omnisend's batch list, whatever order it comes in.

`GET /batches` lists up to 250 batches per request, which is what keeps confirmation
cheap: one request for every batch in flight instead of one each. But the order of that
list is not documented, and the account's other integrations add their own batches, so
ours may be anywhere in it. The watcher therefore walks the list from where it last found
our unfinished batches (learned each poll, so newest-first and oldest-first lists both
cost a page or two), wraps around once, and stops as soon as every batch it expects has
been seen. A batch it keeps missing (an unordered list, a huge account, a batch stuck for
minutes) is looked up on its own, at a growing interval: correct always, cheap usually.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from target_omnisend.api import BatchPage, BatchStatus
from target_omnisend.client import RequestRefused

#: Batches are listed by creation day, in a time zone the docs do not name: asking from
#: the day that was current 14 hours earlier covers every zone (UTC-12 to UTC+14).
DAY_MARGIN = dt.timedelta(hours=14)
#: How far Omnisend's clock may be behind ours when we seek our batches by createdAt.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: A seek stops narrowing once our batches are known to start within one page.
PAGE = 250
#: Concurrent posts are answered in any order: a batch we learn of late may be listed a
#: little before the first one we knew of, so a walk starts this many entries earlier.
ANCHOR_SLACK = 16
#: The gallop stops here whatever the list answers: a server that ignores `offset`
#: (always its first page) would otherwise keep it doubling for ever.
SEEK_LIMIT = 2**22

PageKey = dict[str, str] | str | None


class BatchLister(Protocol):
    """The two reads the watcher needs (an `OmnisendClient`)."""

    def list_batches(self, page: PageKey, date_from: str, limit: int = 250) -> BatchPage: ...

    def get_batch(self, batch_id: str) -> BatchStatus | None: ...


@dataclass
class _Watch:
    submitted: float  # monotonic
    created_day: str  # earliest listing day that can hold it
    created_after: dt.datetime  # Omnisend's createdAt is later than this
    misses: int = 0
    next_lookup: float = 0.0
    lookup_gap: float = 0.0


@dataclass
class WatchStats:
    list_requests: int = 0
    lookups: int = 0
    seeks: int = 0


@dataclass
class _Walk:
    """What one pass over the list found, in list order."""

    found: dict[str, BatchStatus] = field(default_factory=dict)
    #: (when we submitted it, where to start a walk to find it) per expected batch seen
    hits: list[tuple[float, PageKey]] = field(default_factory=list)
    #: Every entry seen so far in non-decreasing createdAt order (an oldest-first list)
    #: or in non-increasing order (newest-first).
    ascending: bool = True
    descending: bool = True
    #: The server pages by offset (so positions can be asked for).
    offsets: bool = True
    last_created: dt.datetime | None = None

    def anchor(self) -> tuple[bool, PageKey]:
        """Where the next walk should start, if this one learned it. A list whose
        createdAt only ever went down is newest-first: start at the top. Otherwise start
        at the first of ours (oldest-first: everything newer comes after it). Our own
        submit times are no guide: concurrent posts return in any order."""
        if not self.hits:
            return False, None
        if self.descending and not self.ascending:
            return True, None
        return True, self.hits[0][1]


class BatchWatcher:
    """Tracks batch ids from `watch()` to `forget()` and reports what Omnisend says."""

    def __init__(
        self,
        client: BatchLister,
        *,
        max_pages: int = 4,
        misses_before_lookup: int = 2,
        max_lookups: int = 8,
        min_stale_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.max_pages = max_pages
        self.misses_before_lookup = misses_before_lookup
        self.max_lookups = max_lookups
        self.min_stale_after = min_stale_after
        self.stats = WatchStats()
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._watched: dict[str, _Watch] = {}
        self._start: PageKey = None
        self._start_day = ""
        self._typical_age = 0.0  # how long batches usually take to finish

    def watch(self, batch_id: str) -> None:
        now = self._wall_clock()
        day = (now - DAY_MARGIN).date().isoformat()
        with self._lock:
            self._watched[batch_id] = _Watch(self._clock(), day, now - CLOCK_SKEW)

    def forget(self, batch_id: str) -> None:
        with self._lock:
            watch = self._watched.pop(batch_id, None)
        if watch is not None:
            age = self._clock() - watch.submitted
            typical = self._typical_age
            self._typical_age = age if not typical else 0.9 * typical + 0.1 * age

    @property
    def typical_age(self) -> float:
        """How long our batches usually take from post to final (0 until one has)."""
        return self._typical_age

    def __len__(self) -> int:
        with self._lock:
            return len(self._watched)

    def poll(self) -> dict[str, BatchStatus]:
        """The status of every watched batch found this time (final or not)."""
        now = self._clock()
        with self._lock:
            watched = dict(self._watched)
        if not watched:
            return {}
        stale_after = max(self.min_stale_after, 4 * self._typical_age)
        expected = {
            batch_id
            for batch_id, watch in watched.items()
            if watch.misses < self.misses_before_lookup and now - watch.submitted < stale_after
        }
        day = min(w.created_day for w in watched.values())
        # Only laggards left: their own lookups below are all it takes.
        walk = self._walk(watched, expected, day) if expected else _Walk()
        with self._lock:
            for batch_id in expected:
                watch = self._watched.get(batch_id)
                if watch is not None:
                    watch.misses = 0 if batch_id in walk.found else watch.misses + 1
        lookups = 0
        for batch_id, watch in sorted(watched.items(), key=lambda pair: pair[1].next_lookup):
            if batch_id in walk.found or batch_id in expected or now < watch.next_lookup:
                continue
            if lookups >= self.max_lookups:
                break  # the rest next time: lookups must never crowd out the writes
            lookups += 1
            # Missed too often or slow: ask for it directly, less and less often.
            watch.lookup_gap = min(max(2 * watch.lookup_gap, 5.0), 60.0)
            watch.next_lookup = now + watch.lookup_gap
            self.stats.lookups += 1
            status = self._lookup(batch_id)
            if status is not None:
                walk.found[batch_id] = status
        return walk.found

    # -- internals ----------------------------------------------------------------------

    def _walk(self, watched: dict[str, _Watch], expected: set[str], day: str) -> _Walk:
        """Page through the list from the learned start until every expected batch is
        seen, the list has been covered once, or the page budget is spent. In a list in
        no createdAt order ours can be anywhere among the foreign batches: there a page
        more is read while more of ours are missing than pages beyond the budget were
        read, as it costs no more than the lookups it saves, and usually far less."""
        if day != self._start_day:
            self._start, self._start_day = None, day
        start = self._start
        walk = _Walk()
        key, wrapped, pages = start, start is None, 0
        while pages < self.max_pages or (
            not walk.ascending
            and not walk.descending
            and pages - self.max_pages < len(expected - walk.found.keys())
        ):
            page = self.client.list_batches(key, day)
            pages += 1
            self.stats.list_requests += 1
            self._note(walk, page, key, watched, expected)
            if expected <= walk.found.keys():
                break
            if page.following is None:
                if wrapped:
                    break
                key, wrapped = None, True
            else:
                key = page.following
            if wrapped and start is not None and key == start:
                break
        learned, anchor = walk.anchor()
        if learned:
            self._start = anchor
        elif expected and walk.ascending and walk.offsets and key is not None:
            # Oldest first, ours beyond the page budget (other integrations' batches
            # first): find where ours begin by createdAt, once, instead of paging.
            since = min(w.created_after for w in watched.values())
            self._start = {"offset": str(self._seek(day, since))}
        return walk

    def _seek(self, day: str, since: dt.datetime) -> int:
        """Offset of the first batch created after `since` in an oldest-first list:
        galloping then bisecting with one-entry pages, to within one page."""
        low, high = 0, PAGE
        while high < SEEK_LIMIT and self._created_before(day, high, since):
            low, high = high, high * 2
        while high - low > PAGE // 2:
            middle = (low + high) // 2
            if self._created_before(day, middle, since):
                low = middle
            else:
                high = middle
        return low

    def _created_before(self, day: str, offset: int, since: dt.datetime) -> bool:
        """Whether the batch at `offset` exists and was created before `since`."""
        self.stats.seeks += 1
        self.stats.list_requests += 1
        page = self.client.list_batches({"offset": str(offset)}, day, limit=1)
        created = _parse_time(page.batches[0].created_at) if page.batches else None
        return created is not None and created < since

    @staticmethod
    def _note(
        walk: _Walk, page: BatchPage, key: PageKey, watched: dict[str, _Watch], expected: set[str]
    ) -> None:
        walk.offsets = walk.offsets and page.offset is not None
        for position, batch in enumerate(page.batches):
            created = _parse_time(batch.created_at)
            previous = walk.last_created
            if created is None or (previous is not None and created < previous):
                walk.ascending = False
            if created is None or (previous is not None and created > previous):
                walk.descending = False
            walk.last_created = created or previous
            if batch.batch_id not in watched:
                continue
            walk.found[batch.batch_id] = batch
            # Where to start next time: exactly here when the server pages by offset,
            # else the page this came from.
            here: PageKey = (
                {"offset": str(max(page.offset + position - ANCHOR_SLACK, 0))}
                if page.offset is not None
                else key
            )
            if batch.batch_id in expected:
                walk.hits.append((watched[batch.batch_id].submitted, here))

    def _lookup(self, batch_id: str) -> BatchStatus | None:
        try:
            return self.client.get_batch(batch_id)
        except RequestRefused:
            # Unknown to Omnisend (e.g. purged): nothing to wait for; its items go again.
            return BatchStatus(batch_id, "missing")


def _parse_time(text: str | None) -> dt.datetime | None:
    """An ISO 8601 createdAt as an aware datetime (UTC when it names no zone)."""
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
