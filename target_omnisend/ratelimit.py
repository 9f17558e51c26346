"""Pacing that keeps us inside Omnisend's fixed-window rate limit.

Omnisend counts requests per account in fixed windows and reports the window on every
response (`X-Rate-Limit-Limit/Remaining/Reset`). A local budget keeps concurrent
workers from overshooting; the headers re-align that budget with the server's window,
so a run spends its whole allowance in each window instead of guessing a steady rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class WindowLimiter:
    """A fixed-window request budget for one endpoint group, corrected by the server."""

    def __init__(
        self,
        requests_per_minute: float,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configured_limit = max(1, int(requests_per_minute * window_seconds / 60.0))
        self.limit = self._configured_limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._remaining = self.limit
        self._window_end: float | None = None
        self.waited_seconds = 0.0

    def acquire(self) -> None:
        """Block until the current window has budget left, then spend one request."""
        with self._cond:
            while True:
                now = self._clock()
                if self._window_end is None or now >= self._window_end:
                    self._window_end = now + self.window_seconds
                    self._remaining = self.limit
                if self._remaining > 0:
                    self._remaining -= 1
                    return
                # Short waits: a header or a window change may free budget sooner.
                self._cond.wait(timeout=min(self._window_end - now, 0.25))
                self.waited_seconds += self._clock() - now

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adopt the server's view of the window: its limit (never above ours), its
        remaining budget and when it resets."""
        limit = _header_number(headers, "X-Rate-Limit-Limit")
        remaining = _header_number(headers, "X-Rate-Limit-Remaining")
        reset = _header_number(headers, "X-Rate-Limit-Reset")
        if remaining is None or reset is None:
            return
        with self._cond:
            if limit is not None and limit > 0:
                self.limit = min(self._configured_limit, int(limit))
            now = self._clock()
            server_end = now + max(reset, 0.0)
            if self._window_end is None or abs(server_end - self._window_end) > 1.5:
                self._window_end = server_end
                self._remaining = min(self.limit, int(remaining))
            else:
                self._remaining = min(self._remaining, int(remaining))
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """The server said 429: nothing goes out until the time it named (Retry-After,
        retryAfter or the window reset, in that order), then a fresh window starts."""
        with self._cond:
            self._remaining = 0
            self._window_end = self._clock() + max(seconds, 0.0)


#: Omnisend's own budgets for saved segments, per brand, apart from the 400/min backend.
SEGMENT_WRITES_PER_MINUTE = 15
SEGMENT_READS_PER_MINUTE = 100


class RateLimits:
    """One limiter per Omnisend endpoint group: tags have their own, much lower limit."""

    def __init__(self, requests_per_minute: float, tags_requests_per_minute: float) -> None:
        self.groups = {
            "default": WindowLimiter(requests_per_minute),
            "tags": WindowLimiter(tags_requests_per_minute),
            "segments_write": WindowLimiter(SEGMENT_WRITES_PER_MINUTE),  # POST/PUT /segments
            "segments_read": WindowLimiter(SEGMENT_READS_PER_MINUTE),  # GET/DELETE /segments
        }

    def __getitem__(self, group: str) -> WindowLimiter:
        return self.groups[group]
