"""Pacing: a sliding-window budget that uses Omnisend's rate-limit headers when they come,
bounds every wait they imply and says so when a wait is long."""

from __future__ import annotations

import logging
import threading

import pytest

from target_omnisend.errors import Cancelled
from target_omnisend.ratelimit import WindowLimiter, reset_seconds

EPOCH = 1_790_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _send(limiter: WindowLimiter) -> None:
    """One request that is answered at once."""
    limiter.answered(limiter.acquire())


def test_budget_is_spent_then_refilled_as_the_window_slides() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(3, clock=clock)
    for _ in range(3):
        _send(limiter)
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


def _acquire_in_background(limiter: WindowLimiter) -> threading.Event:
    done = threading.Event()
    threading.Thread(target=lambda: (limiter.acquire(), done.set()), daemon=True).start()
    return done


def test_sliding_window_never_allows_more_than_the_limit_in_any_window() -> None:
    """Spending the budget at the end of one minute leaves none at the start of the
    next: a fixed-window client would send twice the limit across the boundary."""
    clock = FakeClock()
    limiter = WindowLimiter(3, clock=clock)
    clock.now += 59
    for _ in range(3):
        _send(limiter)
    clock.now += 2  # a fixed window would have reset here
    done = _acquire_in_background(limiter)
    assert not done.wait(0.2)
    clock.now += 58
    assert done.wait(2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7.0),
        (EPOCH + 42, 42.0),
        ((EPOCH + 42) * 1000, 42.0),
        (EPOCH - 1, 0.0),  # whole seconds: the reset second has just begun
        (EPOCH - 5, None),
    ],
)
def test_reset_is_read_as_seconds_or_as_a_timestamp(value: float, expected: float | None) -> None:
    assert reset_seconds(value, EPOCH) == expected


def test_reset_as_epoch_pauses_until_then_not_for_decades() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(400, clock=clock, wall_clock=lambda: EPOCH)
    limiter.observe({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(EPOCH + 3)})
    done = _acquire_in_background(limiter)
    assert not done.wait(0.2)
    clock.now += 3.1
    assert done.wait(2)


def test_an_hour_long_reset_is_cut_to_max_wait_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = WindowLimiter(400, clock=clock, max_wait=30)
    with caplog.at_level(logging.INFO):
        limiter.observe({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "3600"})
        done = _acquire_in_background(limiter)
        assert not done.wait(0.3)
    assert "resets in 3600 s; waiting at most max_wait (30 s)" in caplog.text
    assert "waiting 30 s for Omnisend's rate-limit window" in caplog.text
    clock.now += 30.1
    assert done.wait(2)


def test_other_traffic_on_the_brand_uses_up_our_budget_too() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(10, clock=clock)
    limiter.acquire()
    # We sent 1 of 10, yet only 2 remain: another integration sent 7.
    limiter.observe({"X-Rate-Limit-Limit": "10", "X-Rate-Limit-Remaining": "2"})
    limiter.acquire()
    limiter.acquire()
    done = _acquire_in_background(limiter)
    assert not done.wait(0.2)
    clock.now += 61
    assert done.wait(2)


def test_missing_or_garbled_headers_change_nothing() -> None:
    """No headers, or headers that are not numbers: the configured budget (2) stands,
    all of it and no more."""
    clock = FakeClock()
    limiter = WindowLimiter(2, clock=clock)
    limiter.observe({})
    limiter.observe({"X-Rate-Limit-Remaining": "soon", "X-Rate-Limit-Reset": "later"})
    limiter.observe({"X-Rate-Limit-Limit": "NaN", "X-Rate-Limit-Remaining": "inf"})
    assert limiter.limit == 2
    both = threading.Event()  # (in the background: a regression blocks, it must not hang)
    threading.Thread(
        target=lambda: (_send(limiter), _send(limiter), both.set()), daemon=True
    ).start()
    assert both.wait(2)  # the whole configured budget is still there
    third = _acquire_in_background(limiter)
    assert not third.wait(0.2)  # ... and no more
    clock.now += 60.1
    assert third.wait(2)


def test_cancel_wakes_a_waiting_request_at_once() -> None:
    limiter = WindowLimiter(1, clock=FakeClock())
    limiter.acquire()
    raised = threading.Event()

    def waiter() -> None:
        try:
            limiter.acquire()
        except Cancelled:
            raised.set()

    threading.Thread(target=waiter, daemon=True).start()
    assert not raised.wait(0.2)
    limiter.cancel()
    assert raised.wait(1)


def test_a_request_counts_from_its_answer_not_from_when_it_was_sent() -> None:
    """The server counts a request somewhere between our send and its answer: only a
    window after the answer is it surely gone from a sliding window's count."""
    clock = FakeClock()
    limiter = WindowLimiter(1, clock=clock)
    stamp = limiter.acquire()
    clock.now += 3  # a slow answer
    limiter.answered(stamp)
    clock.now += 58  # 61 s after sending, 58 s after the answer
    done = _acquire_in_background(limiter)
    assert not done.wait(0.2)
    clock.now += 2.1
    assert done.wait(2)


def test_one_slow_request_does_not_slow_the_others() -> None:
    """No margin as long as the slowest request is added to every request: each one
    counts from its own answer."""
    clock = FakeClock()
    limiter = WindowLimiter(2, clock=clock)
    slow = limiter.acquire()
    fast = limiter.acquire()
    clock.now += 0.1
    limiter.answered(fast)
    clock.now += 1.9
    limiter.answered(slow)  # took 2 s
    clock.now = 1000.0 + 60.2  # a window after the fast answer, not after the slow one
    done = _acquire_in_background(limiter)
    assert done.wait(2)
