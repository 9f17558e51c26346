"""Scriptable faults: what Omnisend (or the network in front of it) does on a bad day.

A test adds `FaultRule`s; each request, batch and batch item consults the rules of its
phase in order and the first one that matches fires. Counters live in the book, not in
the rule, so one rule object can be re-added after `clear_faults()`.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

# When each kind is consulted: per HTTP request, per accepted batch, per batch/contact item.
REQUEST_KINDS = frozenset(("status", "rate_limit", "delay", "reset", "malformed"))
BATCH_KINDS = frozenset(("batch_stopped", "batch_stuck", "batch_short"))
ITEM_KINDS = frozenset(("item_error",))
KINDS = REQUEST_KINDS | BATCH_KINDS | ITEM_KINDS
DEFAULT_STATUS = {"status": 500, "rate_limit": 429, "malformed": 200, "item_error": 400}


@dataclass
class FaultRule:
    """One scripted misbehaviour.

    method/path: match the HTTP method (None = any) and a path prefix relative to the
    version root, e.g. "/batches" (None = any); `path_pattern` narrows it further with a
    regular expression (e.g. r"/statistics$" for one sub-resource). `after` lets the
    first N matches through, `times` caps how often it fires (None = forever),
    `probability` fires at random from the server's seeded RNG.

    kinds: "status" (respond `status` + problem, or `body` verbatim, without applying),
    "rate_limit" (429 + retryAfter as if the window were exhausted), "delay" (sleep
    `seconds`, then handle normally; with `apply=True` handle first, then sleep before
    answering: "it was done, but the client timed out"), "reset" (drop the connection;
    `apply=True` applies the request first: "succeeded but the response was lost"),
    "malformed" (non-JSON body with `status`, default 200; honours `apply`),
    "batch_stopped" (batch ends `stopped` after half its items), "batch_stuck" (batch
    stays `inProgress`), "batch_short" (the last item is silently skipped, yet the batch
    says `finished` with no errors, so finishedCount < totalCount), "item_error" (items
    whose email matches `email_pattern` fail with `status`, default 400, and `body` as the
    problem's detail when it is a string).
    """

    method: str | None = None
    path: str | None = None
    kind: str = "status"
    status: int | None = None
    times: int | None = None
    body: Any = None
    headers: dict[str, str] | None = None
    after: int = 0
    probability: float = 1.0
    seconds: float = 0.0
    apply: bool = False
    email_pattern: str | None = None
    path_pattern: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        for pattern in (self.email_pattern, self.path_pattern):
            if pattern is not None:
                re.compile(pattern)

    @property
    def effective_status(self) -> int:
        return self.status if self.status is not None else DEFAULT_STATUS.get(self.kind, 500)


@dataclass
class _Armed:
    rule: FaultRule
    seen: int = 0
    fired: int = 0
    pattern: re.Pattern[str] | None = field(default=None)
    path_pattern: re.Pattern[str] | None = field(default=None)


class FaultBook:
    """The active rules and their counters; thread-safe, seeded randomness."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[_Armed] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def add(self, rule: FaultRule) -> FaultRule:
        pattern = re.compile(rule.email_pattern) if rule.email_pattern is not None else None
        path = re.compile(rule.path_pattern) if rule.path_pattern is not None else None
        with self._lock:
            self._rules.append(_Armed(rule, pattern=pattern, path_pattern=path))
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def fired(self) -> list[tuple[FaultRule, int]]:
        """How often each rule has fired so far."""
        with self._lock:
            return [(armed.rule, armed.fired) for armed in self._rules]

    def match(
        self, kinds: frozenset[str], method: str, path: str, email: str | None = None
    ) -> FaultRule | None:
        """Consume and return the first rule of `kinds` that fires for this event."""
        with self._lock:
            for armed in self._rules:
                rule = armed.rule
                if rule.kind not in kinds:
                    continue
                if rule.method is not None and rule.method.upper() != method.upper():
                    continue
                if rule.path is not None and not path.startswith(rule.path):
                    continue
                if armed.path_pattern is not None and not armed.path_pattern.search(path):
                    continue
                if armed.pattern is not None and not (email and armed.pattern.search(email)):
                    continue
                armed.seen += 1
                if armed.seen <= rule.after:
                    continue
                if rule.times is not None and armed.fired >= rule.times:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                armed.fired += 1
                return rule
        return None
