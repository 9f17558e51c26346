"""Fixed-window rate limiting per account and endpoint group, with Omnisend's headers.

Windows are anchored at an account's first request (then back to back), so a test with
a one-second window is not at the mercy of where the wall clock's second boundary falls.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

UNLIMITED = 1_000_000


@dataclass(frozen=True)
class Quota:
    """The outcome of one hit: allowed or not, and what the headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(self.remaining),
            "X-Rate-Limit-Reset": str(self.reset),
        }


class FixedWindowLimiter:
    """`limits` maps a group ("default", "tags") to requests per window (None = unlimited)."""

    def __init__(
        self,
        limits: dict[str, int | None],
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.limits = limits
        self.window = window_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._anchor: dict[tuple[str, str], float] = {}
        self._used: dict[tuple[str, str], tuple[int, int]] = {}  # key -> (window index, used)

    def reset(self) -> None:
        with self._lock:
            self._anchor.clear()
            self._used.clear()

    def _window(self, key: tuple[str, str], now: float) -> tuple[int, int, int]:
        anchor = self._anchor.setdefault(key, now)
        index = int((now - anchor) // self.window)
        seconds_left = anchor + (index + 1) * self.window - now
        window_index, used = self._used.get(key, (index, 0))
        if window_index != index:
            used = 0
        return index, used, max(1, math.ceil(seconds_left))

    def hit(self, account: str, group: str) -> Quota:
        """Count one request; refused requests do not use up the window."""
        limit = self.limits.get(group)
        key = (account, group)
        with self._lock:
            index, used, reset = self._window(key, self.clock())
            cap = UNLIMITED if limit is None else limit
            if used >= cap:
                self._used[key] = (index, used)
                return Quota(False, cap, 0, reset)
            used += 1
            self._used[key] = (index, used)
            return Quota(True, cap, cap - used, reset)

    def exhausted(self, account: str, group: str) -> Quota:
        """What a 429 would say right now, without counting (for the rate_limit fault)."""
        limit = self.limits.get(group)
        with self._lock:
            _, _, reset = self._window((account, group), self.clock())
        return Quota(False, UNLIMITED if limit is None else limit, 0, reset)
