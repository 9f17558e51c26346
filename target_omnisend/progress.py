"""A progress line at a steady interval, so a long nightly run shows it is alive and
how fast it goes (a Singer target cannot know the input's length: no ETA is guessed)."""

from __future__ import annotations

import logging
import threading
import time

from target_omnisend.outcomes import Outcomes


class ProgressReporter:
    def __init__(self, outcomes: Outcomes, logger: logging.Logger, interval: float) -> None:
        self.outcomes = outcomes
        self.logger = logger
        self.interval = interval
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="omnisend-progress", daemon=True)
        if interval > 0:
            self._thread.start()

    def line(self) -> str:
        totals = self.outcomes.totals().values()
        received = sum(t["received"] for t in totals)
        delivered = sum(t["delivered"] for t in totals)
        unchanged = sum(t["unchanged"] for t in totals)
        rejected = sum(t["rejected"] for t in totals)
        merged = sum(t["merged_duplicates"] for t in totals)
        warnings = sum(sum(t["warnings"].values()) for t in totals)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        pending = received - delivered - unchanged - rejected - merged
        return (
            f"Progress: received={received} delivered={delivered} unchanged={unchanged} "
            f"rejected={rejected} warnings={warnings} in_flight={pending} "
            f"rate={received / elapsed:.0f} rec/s "
            f"delivered_rate={delivered / elapsed:.0f}/s elapsed={elapsed:.0f}s"
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.logger.info("%s", self.line())

    def stop(self) -> None:
        self._stop.set()
