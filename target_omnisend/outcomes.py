"""Where every record ends: delivered, rejected (with a reason, in the rejected file) or
merged into a later duplicate. Counted per stream, thread-safe, summarised at the end."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from target_omnisend.privacy import mask_email, one_line_error

#: Per stream and reason, this many rejections or warnings are logged one by one; the
#: rest are counted (progress lines, summary): a source with the wrong email column must
#: not turn into a log line per profile.
LOGGED_PER_REASON = 3


@dataclass
class StreamCounts:
    """Counters of one stream (segment); `received` = delivered + rejected + merged +
    unchanged + in flight, at every barrier."""

    received: int = 0
    delivered: int = 0
    unchanged: int = 0
    rejected: int = 0
    merged_duplicates: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "delivered": self.delivered,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "merged_duplicates": self.merged_duplicates,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "warnings": dict(self.warnings),
        }


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


class Outcomes:
    """The run's ledger. The rejected file holds personal data by design (it is how a
    user fixes and replays records), so it is written only where the user points it."""

    def __init__(self, rejected_records_path: str | None, logger: logging.Logger) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.logger = logger
        self._path = Path(rejected_records_path) if rejected_records_path else None
        self._file: Any = None
        self._lock = threading.Lock()
        self._logged: Counter[tuple[str, str, str]] = Counter()
        self.streams: dict[str, StreamCounts] = {}
        #: Per stream: what mirror mode did, or why it left Omnisend alone.
        self.mirror: dict[str, dict[str, Any]] = {}

    def _counts(self, stream: str) -> StreamCounts:
        counts = self.streams.get(stream)
        if counts is None:
            counts = self.streams[stream] = StreamCounts()
        return counts

    def received(self, stream: str) -> None:
        with self._lock:
            self._counts(stream).received += 1

    def merged(self, stream: str) -> None:
        with self._lock:
            self._counts(stream).merged_duplicates += 1

    def warned(self, stream: str, warning: str) -> None:
        """Count a per-record warning (its text names a field, never a value); the first
        few of each kind are logged too."""
        with self._lock:
            self._counts(stream).warnings[warning] += 1
            note = self._log_note(stream, "warning", warning)
        if note is not None:  # on one line: a field name may hold a line break
            self.logger.warning("%s", one_line_error(f"Stream '{stream}': {warning}{note}", ()))

    def _log_note(self, stream: str, kind: str, reason: str) -> str | None:
        """None when this occurrence is past the cap (counted only); else what to add
        to its log line (the last one logged says the rest are counted). Call locked."""
        key = (stream, kind, reason)
        self._logged[key] += 1
        seen = self._logged[key]
        if seen > LOGGED_PER_REASON:
            return None
        if seen == LOGGED_PER_REASON:
            return (
                " (further ones of this kind are counted in the progress lines and the "
                "summary, not logged)"
            )
        return ""

    def delivered(self, stream: str, count: int) -> None:
        with self._lock:
            self._counts(stream).delivered += count

    def unchanged(self, stream: str, count: int = 1) -> None:
        with self._lock:
            self._counts(stream).unchanged += count

    def rejected(
        self, stream: str, record: Any, code: str, reason: str, email: str | None = None
    ) -> None:
        """Count and persist a rejection; the log line masks the email."""
        line = json.dumps(
            {
                "stream": stream,
                "code": code,
                "reason": reason,
                "record": record,
                "run_id": self.run_id,
                "rejected_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
            default=_json_default,
            ensure_ascii=False,
        )
        with self._lock:
            counts = self._counts(stream)
            counts.rejected += 1
            counts.rejected_by_reason[code] += 1
            note = self._log_note(stream, "rejected", code)
            if self._path is not None:
                if self._file is None:
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    # Bytes that were not UTF-8 (lone surrogates) are kept as \udcXX
                    # escapes: the line stays valid JSON and reads back as it came.
                    self._file = self._path.open("a", encoding="utf-8", errors="backslashreplace")
                self._file.write(line + "\n")
                self._file.flush()
        if note is not None:
            self.logger.warning(
                "Rejected a record of stream '%s'%s: %s%s",
                stream,
                f" ({mask_email(email)})" if email else "",
                reason,
                note,
            )

    def sync(self) -> None:
        """Make rejections durable before a STATE message says they are final."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def totals(self) -> dict[str, Any]:
        with self._lock:
            return {name: counts.as_dict() for name, counts in self.streams.items()}
