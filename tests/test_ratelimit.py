"""Pacing: a fixed-window budget that follows Omnisend's rate-limit headers."""

from __future__ import annotations

import threading

from target_omnisend.ratelimit import WindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_is_spent_then_refilled_when_the_window_ends() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(3, clock=clock)
    for _ in range(3):
        limiter.acquire()
    blocked = threading.Event()
    done = threading.Event()

    def fourth() -> None:
        blocked.set()
        limiter.acquire()
        done.set()

    worker = threading.Thread(target=fourth, daemon=True)
    worker.start()
    blocked.wait(1)
    assert not done.wait(0.2)  # budget exhausted: the fourth request waits
    clock.now += 60
    assert done.wait(2)


def test_server_headers_lower_the_remaining_budget_and_align_the_window() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(400, clock=clock)
    limiter.acquire()
    limiter.observe(
        {"X-Rate-Limit-Limit": "400", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "7"}
    )
    done = threading.Event()
    threading.Thread(target=lambda: (limiter.acquire(), done.set()), daemon=True).start()
    assert not done.wait(0.2)
    clock.now += 7.1
    assert done.wait(2)


def test_server_limit_below_ours_wins_but_never_raises_ours() -> None:
    limiter = WindowLimiter(400, clock=FakeClock())
    limiter.observe(
        {"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "99", "X-Rate-Limit-Reset": "60"}
    )
    assert limiter.limit == 100
    limiter.observe(
        {"X-Rate-Limit-Limit": "100000", "X-Rate-Limit-Remaining": "99", "X-Rate-Limit-Reset": "60"}
    )
    assert limiter.limit == 400


def test_pause_after_429_blocks_until_the_given_time() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(400, clock=clock)
    limiter.pause(5)
    done = threading.Event()
    threading.Thread(target=lambda: (limiter.acquire(), done.set()), daemon=True).start()
    assert not done.wait(0.2)
    clock.now += 5.5
    assert done.wait(2)
