"""Rate limiting per brand (account) and endpoint group, with Omnisend's headers.

Two shapes of window, because Omnisend's documentation describes both:
- "sliding" (default; the 2026-03-15 docs): a request is allowed when fewer than `limit`
  allowed requests happened in the last `window` seconds (an exact sliding log). A client
  that spends a whole budget just before a fixed boundary and again just after it is
  refused here, as the real API would refuse it.
- "fixed" (the v3/v5 docs' "seconds left in the period"): back-to-back windows anchored
  at an account's first request, so a one-second test window is not at the mercy of the
  wall clock's second boundary.

Other traffic on the same brand (a shop platform's sync, an ESP) is modelled by
`foreign`: requests per window per group, spread evenly from the limiter's creation and
charged lazily whenever the account is next seen. Refused requests never use up budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

UNLIMITED = 1_000_000
WINDOW_KINDS = ("sliding", "fixed")
RESET_STYLES = ("seconds", "epoch")


@dataclass(frozen=True)
class Quota:
    """The outcome of one hit: allowed or not, and what the headers say.

    `reset` is always seconds (from now); `retry_after` is when this request would be
    allowed (seconds, ≥ 1) and is what a 429's `retryAfter` carries."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int = 1

    def headers(self, reset_style: str = "seconds", epoch: float | None = None) -> dict[str, str]:
        """Omnisend's `X-Rate-Limit-*` headers; `reset_style="epoch"` sends Reset as a Unix
        timestamp (what some APIs do, and what a client must not wait out literally)."""
        reset = self.reset
        if reset_style == "epoch":
            reset = int((time.time() if epoch is None else epoch) + self.reset)
        return {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(self.remaining),
            "X-Rate-Limit-Reset": str(reset),
        }


@dataclass
class _Bucket:
    """One (account, group): allowed request times (sliding) or window counters (fixed)."""

    anchor: float
    times: deque[float] = field(default_factory=deque)
    window_index: int = 0
    used: int = 0
    foreign_next: float = 0.0


class RateLimiter:
    """`limits` maps a group ("default", "tags", "segments_write", …) to requests per
    window (None = unlimited); `foreign` maps a group to requests per window that other
    integrations of the same brand spend."""

    def __init__(
        self,
        limits: dict[str, int | None],
        window_seconds: float,
        kind: str = "sliding",
        foreign: dict[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if kind not in WINDOW_KINDS:
            raise ValueError(f"window kind must be one of {WINDOW_KINDS}")
        self.limits = limits
        self.window = window_seconds
        self.kind = kind
        self.foreign = {g: r for g, r in (foreign or {}).items() if r and r > 0}
        self.clock = clock
        self._lock = threading.Lock()
        self._born = clock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._born = self.clock()

    def _cap(self, group: str) -> int:
        limit = self.limits.get(group)
        return UNLIMITED if limit is None else limit

    def _bucket(self, key: tuple[str, str], now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(anchor=now, foreign_next=self._born)
        return bucket

    # -- fixed ----------------------------------------------------------------------------

    def _fixed_state(self, bucket: _Bucket, now: float) -> int:
        """Roll the window forward; return whole seconds left in it."""
        index = int((now - bucket.anchor) // self.window)
        if index != bucket.window_index:
            bucket.window_index, bucket.used = index, 0
        return max(1, math.ceil(bucket.anchor + (index + 1) * self.window - now))

    # -- sliding --------------------------------------------------------------------------

    def _expire(self, bucket: _Bucket, now: float) -> None:
        while bucket.times and bucket.times[0] <= now - self.window:
            bucket.times.popleft()

    def _used(self, bucket: _Bucket, now: float) -> int:
        if self.kind == "fixed":
            self._fixed_state(bucket, now)
            return bucket.used
        self._expire(bucket, now)
        return len(bucket.times)

    def _record(self, bucket: _Bucket, at: float) -> None:
        if self.kind == "fixed":
            bucket.used += 1
        else:
            bucket.times.append(at)

    def _charge_foreign(self, bucket: _Bucket, group: str, cap: int, now: float) -> None:
        """Spend what the other integrations spent since we last looked (evenly spread)."""
        rate = self.foreign.get(group)
        if not rate:
            return
        step = self.window / rate
        if bucket.foreign_next < now - self.window:  # long idle: only the last window counts
            skipped = math.ceil((now - self.window - bucket.foreign_next) / step)
            bucket.foreign_next += skipped * step
        while bucket.foreign_next <= now:
            at = bucket.foreign_next
            if self._used(bucket, at) < cap:
                self._record(bucket, at)
            bucket.foreign_next += step

    def _seconds(self, bucket: _Bucket, now: float, allowed: bool) -> tuple[int, int]:
        """(reset, retry_after): when the window frees up, and when one more fits."""
        if self.kind == "fixed":
            left = self._fixed_state(bucket, now)
            return left, left
        if not bucket.times:
            return max(1, math.ceil(self.window)), 1
        oldest = max(1, math.ceil(bucket.times[0] + self.window - now))
        return oldest, (oldest if not allowed else 1)

    def hit(self, account: str, group: str) -> Quota:
        """Count one request; refused requests do not use up the window."""
        cap = self._cap(group)
        with self._lock:
            now = self.clock()
            bucket = self._bucket((account, group), now)
            self._charge_foreign(bucket, group, cap, now)
            used = self._used(bucket, now)
            if used >= cap:
                reset, retry = self._seconds(bucket, now, allowed=False)
                return Quota(False, cap, 0, reset, retry)
            self._record(bucket, now)
            reset, retry = self._seconds(bucket, now, allowed=True)
            return Quota(True, cap, cap - used - 1, reset, retry)

    def exhausted(self, account: str, group: str) -> Quota:
        """What a 429 would say right now, without counting (for the rate_limit fault)."""
        cap = self._cap(group)
        with self._lock:
            now = self.clock()
            bucket = self._bucket((account, group), now)
            if self.kind == "fixed":
                reset = self._fixed_state(bucket, now)
                return Quota(False, cap, 0, reset, reset)
            self._expire(bucket, now)
            reset = (
                max(1, math.ceil(bucket.times[0] + self.window - now))
                if bucket.times
                else max(1, math.ceil(self.window))
            )
            return Quota(False, cap, 0, reset, reset)
