"""Other integrations of the same brand: contact batches the target did not create.

A busy account already holds batches from a shop platform's daily sync or an ESP when
a run starts, and more arrive during it, so "our" batches are rarely alone on the first
page of GET /batches. `ForeignBatches.seed` adds `count` finished contact batches spread
over today (UTC midnight up to now; every `error_every`-th has one failed item);
`start_trickle` adds one more every `60 / per_minute` seconds while the server runs,
processed after the usual batch delay. Their contacts belong to the other integration
and are not stored: only the batch records exist, so the target's own contacts stay
what `OmnisendServer.contacts()` shows.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timezone

from .errors import ApiError
from .scheduler import Scheduler
from .store import Account, Batch, Store, utc_now

DOMAIN = "shop-sync.example"


class ForeignBatches:
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        count: int = 0,
        per_minute: float = 0.0,
        items: int = 5,
        error_every: int = 7,
        batch_delay: float = 0.0,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.count = count
        self.per_minute = per_minute
        self.items = max(1, items)
        self.error_every = error_every
        self.batch_delay = batch_delay
        self._serial = itertools.count()

    def _add(self, account: Account, created: float | None) -> tuple[Batch, bool]:
        """A new foreign batch, and whether it is one of those with a failed item."""
        serial = next(self._serial)
        bodies = [
            {"identifiers": [{"type": "email", "id": f"c{serial}.{i}@{DOMAIN}"}]}
            for i in range(self.items)
        ]
        batch = self.store.add_batch(
            account,
            method="POST",
            endpoint="contacts",
            generation="2026-03-15",
            items=bodies,
            fault=None,
            created=created,
            foreign=True,
        )
        return batch, self.error_every > 0 and serial % self.error_every == self.error_every - 1

    def _finish(self, batch: Batch, failing: bool) -> None:
        """Mark it done as the other integration's batch would be: one bad item now and then."""
        with self.store.lock:
            for index, item in enumerate(batch.items):
                if failing and index == 0:
                    item.status, item.response_code = "failed", 400
                    item.error = ApiError(400, "Invalid email address", slug="validation-failed")
                else:
                    item.status, item.response_code = "finished", 201
            batch.status = "finished"
            batch.started_at = batch.started_at or batch.created_at
            batch.ended_at = batch.created_at if batch.ended_at is None else batch.ended_at

    def seed(self) -> None:
        """`count` finished batches per account, created earlier today (oldest first)."""
        if self.count <= 0:
            return
        now = time.time()
        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        start = midnight.timestamp()
        span = max(0.0, now - 1.0 - start)
        for account in self.store.accounts.values():
            for n in range(self.count):
                created = start + span * n / self.count
                self._finish(*self._add(account, created))

    def start_trickle(self) -> None:
        if self.per_minute > 0:
            self.scheduler.call_later(60.0 / self.per_minute, self._tick)

    def _tick(self) -> None:
        for account in self.store.accounts.values():
            batch, failing = self._add(account, None)
            self.scheduler.call_later(
                self.batch_delay, lambda b=batch, f=failing: self._finish_now(b, f)
            )
        self.start_trickle()

    def _finish_now(self, batch: Batch, failing: bool) -> None:
        with self.store.lock:
            batch.started_at = batch.ended_at = utc_now()
        self._finish(batch, failing)
