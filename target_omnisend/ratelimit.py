"""Pacing that keeps us inside Omnisend's rate limit, whatever the server says or omits.

Omnisend counts requests per brand, across every key and integration of that brand;
the 2026-03-15 docs describe a *sliding* window. So the budget here is a sliding log:
at most `limit` requests in any `window_seconds`, which is never over a sliding window
and never over a fixed one either (the older docs' model), at full throughput.

The rate-limit headers are optional hints (2026-03-15 may not send them at all): a
`Remaining` lower than ours means other traffic is using the brand's budget, so we
count that traffic too; `Remaining: 0` with a `Reset` pauses until then. Every pause
the server asks for is bounded by `max_wait` and every wait longer than a few seconds
is logged once, so a run never stalls silently.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping

from target_omnisend.errors import Cancelled

#: A wait longer than this is worth one log line.
NOTICEABLE_WAIT = 5.0
#: Reset values above this are Unix timestamps (seconds), not "seconds left".
_EPOCH_SECONDS = 1_000_000_000
#: ... and above this, Unix timestamps in milliseconds.
_EPOCH_MILLISECONDS = 100_000_000_000


def header_number(headers: Mapping[str, str], name: str) -> float | None:
    """A numeric header, or None when it is missing or not a number."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None  # NaN and infinity are no hints


def reset_seconds(value: float, now_epoch: float) -> float | None:
    """Seconds until a `X-Rate-Limit-Reset` value, read as seconds left (documented) or,
    when it is obviously a timestamp, as a Unix time in seconds or milliseconds. None
    when it makes no sense (a timestamp well in the past): the caller ignores it."""
    if value >= _EPOCH_MILLISECONDS:
        value = value / 1000.0 - now_epoch
    elif value >= _EPOCH_SECONDS:
        value = value - now_epoch
    if -2.0 <= value < 0:  # a whole-second timestamp that has just passed: now
        return 0.0
    return value if value >= 0 else None


class WindowLimiter:
    """A sliding-window request budget for one endpoint group, corrected by the server."""

    def __init__(
        self,
        requests_per_minute: float,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_wait: float = 300.0,
        name: str = "default",
        logger: logging.Logger | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._configured_limit = max(1, int(requests_per_minute * window_seconds / 60.0))
        self.limit = self._configured_limit
        self.window_seconds = window_seconds
        self.max_wait = max_wait
        self.name = name
        self.logger = logger or logging.getLogger("target-omnisend.ratelimit")
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        #: When each answered request inside the window was counted (the time its answer
        #: came, see `answered`), oldest first.
        self._sent: list[float] = []
        #: Requests on their way (by send time): they hold their budget, however long
        #: they take, until their answer starts their window.
        self._on_way: list[float] = []
        self._paused_until = 0.0
        self._announced_until = 0.0
        self._noted_bad_reset = False
        self._cancelled = False
        self._priority_waiting = 0
        self.waited_seconds = 0.0
        self.longest_wait = 0.0

    def acquire(self, *, priority: bool = False) -> float:
        """Block until the window has budget left, then spend one request; returns its
        stamp for `answered()`. A `priority` request (a confirmation read) goes before
        every waiting ordinary one: writes would otherwise take each freed slot while
        their own confirmations wait, holding batch slots, for the next window."""
        started: float | None = None
        with self._cond:
            if priority:
                self._priority_waiting += 1
            try:
                while True:
                    if self._cancelled:
                        raise Cancelled()
                    now = self._clock()
                    self._expire(now)
                    ready_at = self._ready_at(now)
                    if ready_at <= now and (priority or not self._priority_waiting):
                        self._on_way.append(now)
                        if started is not None:
                            waited = now - started
                            self.waited_seconds += waited
                            self.longest_wait = max(self.longest_wait, waited)
                        return now
                    started = now if started is None else started
                    self._announce(now, ready_at)
                    # Short waits: a header or a 429 elsewhere may change the plan.
                    self._cond.wait(timeout=max(min(ready_at - now, 0.25), 0.01))
            finally:
                if priority:
                    self._priority_waiting -= 1
                    self._cond.notify_all()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adopt the server's view when it gives one: its limit (never above ours), its
        remaining budget (lower than ours = other traffic on the brand) and, when
        nothing remains, when the window frees up."""
        remaining = header_number(headers, "X-Rate-Limit-Remaining")
        if remaining is None:
            return
        limit = header_number(headers, "X-Rate-Limit-Limit")
        reset = header_number(headers, "X-Rate-Limit-Reset")
        with self._cond:
            now = self._clock()
            if limit is not None and limit >= 1:  # a limit below one request is no limit
                self.limit = min(self._configured_limit, int(limit))
            self._expire(now)
            seconds = self._reset_seconds(reset) if reset is not None else None
            if reset is not None and seconds is None:
                return  # a Reset that makes no sense discredits the whole hint: a 429 will say
            ours = self.limit - len(self._sent) - len(self._on_way)
            theirs = max(int(remaining), 0)
            # Requests we cannot see used the budget: count them as ours, freed when the
            # server says its window resets (else a whole window from now).
            until = (
                min(seconds, self.window_seconds, self.max_wait) if seconds is not None else None
            )
            stamp = (
                now - self.window_seconds + (until if until is not None else self.window_seconds)
            )
            unseen = min(max(ours - theirs, 0), self.limit)
            if unseen:  # one splice, not one sorted insert each (a high limit made it O(n^2))
                at = bisect.bisect_right(self._sent, stamp)
                self._sent[at:at] = [stamp] * unseen
            # Nothing left: our own log already waits for its oldest request unless the
            # server counts requests we did not send; only then pause until its reset
            # (a sliding window's Reset is rounded up to whole seconds: pausing on every
            # "Remaining: 0" at the limit would throw away a second each time).
            if theirs == 0 and ours > 0 and seconds is not None:
                if seconds > self.max_wait:
                    self.logger.warning(
                        "Omnisend's rate-limit headers say the window resets in %.0f s; "
                        "waiting at most max_wait (%.0f s) before trying again",
                        seconds,
                        self.max_wait,
                    )
                self._pause_locked(now, min(seconds, self.max_wait))
            self._cond.notify_all()

    def answered(self, stamp: float) -> None:
        """The request spent at `stamp` has its answer (or failed): the server counted it
        somewhere between then and now, so from now on it counts as sent now. A server
        with a sliding window would otherwise still hold a request we already let go of
        and answer 429; and no request pays for another's latency (a margin as long as
        the slowest request, added to every one, lost a second per window)."""
        with self._cond:
            now = self._clock()
            with contextlib.suppress(ValueError):  # answered twice: counted once
                self._on_way.remove(stamp)
            bisect.insort(self._sent, now)
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """The server said 429 and named a time (the caller bounds it by `max_wait`):
        nothing of this group goes out before then."""
        with self._cond:
            self._pause_locked(self._clock(), max(seconds, 0.0))
            self._cond.notify_all()

    def cancel(self) -> None:
        """Every waiting and future `acquire` raises `Cancelled`."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def reset_hint(self, headers: Mapping[str, str]) -> float | None:
        """Seconds until the window resets according to the headers, if they say."""
        reset = header_number(headers, "X-Rate-Limit-Reset")
        if reset is None:
            return None
        with self._cond:
            return self._reset_seconds(reset)

    # -- internals ----------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        expired = bisect.bisect_right(self._sent, now - self.window_seconds)
        if expired:
            del self._sent[:expired]

    def _ready_at(self, now: float) -> float:
        ready = max(now, self._paused_until)
        excess = len(self._sent) + len(self._on_way) - self.limit
        if excess >= len(self._sent):
            return math.inf  # only an answer frees budget now (`answered` wakes us)
        if excess >= 0:
            ready = max(ready, self._sent[excess] + self.window_seconds)
        return ready

    def _pause_locked(self, now: float, seconds: float) -> None:
        self._paused_until = max(self._paused_until, now + seconds)

    def _announce(self, now: float, ready_at: float) -> None:
        """One line per long wait, however many threads share it (waiting for answers to
        requests on their way is bounded by the request timeout, not announced)."""
        if (
            math.isfinite(ready_at)
            and ready_at - now > NOTICEABLE_WAIT
            and ready_at > self._announced_until + 1.0
        ):
            self._announced_until = ready_at
            self.logger.info(
                "waiting %.0f s for Omnisend's rate-limit window (%s requests)",
                ready_at - now,
                self.name,
            )

    def _reset_seconds(self, reset: float) -> float | None:
        seconds = reset_seconds(reset, self._wall_clock())
        if seconds is None and not self._noted_bad_reset:
            self._noted_bad_reset = True
            self.logger.info(
                "Omnisend sent an X-Rate-Limit-Reset that is neither seconds left nor a future "
                "time; ignoring it and pacing by requests_per_minute alone"
            )
        return seconds


#: Omnisend's own budgets for saved segments, per brand, apart from the 400/min backend.
SEGMENT_WRITES_PER_MINUTE = 15
SEGMENT_READS_PER_MINUTE = 100


class RateLimits:
    """One limiter per Omnisend endpoint group: tags have their own, much lower limit."""

    def __init__(
        self,
        requests_per_minute: float,
        tags_requests_per_minute: float,
        *,
        max_wait: float = 300.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.max_wait = max_wait
        self.groups = {
            group: WindowLimiter(rpm, max_wait=max_wait, name=group, logger=logger)
            for group, rpm in (
                ("default", requests_per_minute),
                ("tags", tags_requests_per_minute),
                ("segments_write", SEGMENT_WRITES_PER_MINUTE),  # POST/PUT /segments
                ("segments_read", SEGMENT_READS_PER_MINUTE),  # GET/DELETE /segments
            )
        }

    def cancel(self) -> None:
        for limiter in self.groups.values():
            limiter.cancel()

    def __getitem__(self, group: str) -> WindowLimiter:
        return self.groups[group]
