"""Mirror's decision rules as pure functions: the ratio guard at its exact boundary, the
configured ratio, the denominator, and staged removals across runs."""

from __future__ import annotations

from target_omnisend.mirror import decide

ABSENT = [f"m{i}@example.com" for i in range(5)]


def test_the_ratio_guard_allows_exactly_the_configured_share_and_refuses_one_more() -> None:
    at_limit = decide(10, ABSENT, {}, "run", max_ratio=0.5, confirm_runs=1)
    assert at_limit.refused is None and at_limit.remove == ABSENT  # 5 of 10 = 50 %: allowed
    over = decide(9, ABSENT, {}, "run", max_ratio=0.5, confirm_runs=1)  # 5 of 9 = 56 %
    assert over.refused is not None and over.remove == [] and over.staged == {}
    assert "5 of 9 tagged contacts (56%)" in over.refused


def test_the_configured_ratio_is_the_one_applied() -> None:
    assert decide(100, ABSENT, {}, "run", max_ratio=0.04, confirm_runs=1).refused is not None
    assert decide(100, ABSENT, {}, "run", max_ratio=0.05, confirm_runs=1).remove == ABSENT
    assert decide(6, ABSENT, {}, "run", max_ratio=0.9, confirm_runs=1).remove == ABSENT


def test_the_denominator_is_everyone_carrying_the_tag() -> None:
    # 5 absent of 20 tagged is 25 %: refused at 0.2, allowed at 0.25 — whatever the
    # number present (15) would suggest.
    assert decide(20, ABSENT, {}, "run", max_ratio=0.2, confirm_runs=1).refused is not None
    assert decide(20, ABSENT, {}, "run", max_ratio=0.25, confirm_runs=1).refused is None


def test_removals_wait_for_consecutive_absences() -> None:
    first = decide(10, ABSENT, {}, "run1", max_ratio=0.5, confirm_runs=2)
    assert first.remove == [] and first.staged == dict.fromkeys(ABSENT, 1)
    previous = {email: (runs, "run1") for email, runs in first.staged.items()}
    second = decide(10, ABSENT[:2], previous, "run2", max_ratio=0.5, confirm_runs=2)
    assert second.remove == ABSENT[:2] and second.staged == {}
    # The same run looked at twice (a retried mirror) does not count twice.
    again = decide(10, ABSENT, previous, "run1", max_ratio=0.5, confirm_runs=2)
    assert again.remove == [] and again.staged == dict.fromkeys(ABSENT, 1)
    # Absent three runs in a row with confirm_runs 3.
    third = decide(10, ABSENT[:1], {ABSENT[0]: (2, "run2")}, "run3", max_ratio=0.5, confirm_runs=3)
    assert third.remove == ABSENT[:1]


def test_nobody_tagged_means_nothing_to_do() -> None:
    empty = decide(0, [], {}, "run", max_ratio=0.0, confirm_runs=1)
    assert empty.refused is None and empty.remove == [] and empty.staged == {}
