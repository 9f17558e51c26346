"""The embedded fingerprint store behind "send only what changed".

One row per (account, stream, email): the fingerprint of the last contact body Omnisend
confirmed and the run that last saw the email. Rows are written only after Omnisend
confirmed the write, and committed before STATE is emitted, so a crash can only make
the next run send more, never less. A lost or deleted store costs a full send.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

_CHUNK = 500  # SQLite's default limit on host parameters is 999 (older builds)


def fingerprint(payload: str, run_started_at: str) -> bytes:
    """Of the exact JSON sent (bodies are built in a fixed key order, so equal contacts
    give equal text). Stable across runs: the run's own timestamp (used for undated
    explicit statuses) must not make every contact look changed."""
    text = payload.replace(run_started_at, "<run>")
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def account_scope(api_url: str, api_key: str) -> str:
    """The account is known only through its key: a hash of it, never the key."""
    return hashlib.blake2b(f"{api_url}\0{api_key}".encode(), digest_size=12).hexdigest()


#: Confirmed fingerprints held before a delivery thread writes them itself (~1 MB).
_MAX_QUEUED = 10_000
#: How long a write waits for another run sharing the store to finish its transaction.
_BUSY_TIMEOUT = 60.0


class FingerprintStore:
    """SQLite-backed fingerprints; thread-safe (delivery confirms from worker threads)."""

    def __init__(self, path: str | Path, scope: str, config_hash: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = scope
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued: list[tuple[str, str, str, bytes, str]] = []
        # Short write transactions and a patient busy timeout: runs that share the store
        # (two scheduled segments of one project) take turns instead of failing with
        # "database is locked", which a whole-run transaction made them do.
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS fingerprints (
                scope TEXT NOT NULL, stream TEXT NOT NULL, email TEXT NOT NULL,
                fp BLOB NOT NULL, seen_run TEXT,
                PRIMARY KEY (scope, stream, email)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS scopes (
                scope TEXT PRIMARY KEY, config_hash TEXT NOT NULL
            );
            """
        )
        with self._transaction():
            self.invalidated = self._check_config(config_hash)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _check_config(self, config_hash: str) -> bool:
        """A different mapping means different bodies: forget what was sent."""
        row = self._db.execute(
            "SELECT config_hash FROM scopes WHERE scope = ?", (self.scope,)
        ).fetchone()
        if row and row[0] == config_hash:
            return False
        self._db.execute("DELETE FROM fingerprints WHERE scope = ?", (self.scope,))
        self._db.execute(
            "INSERT OR REPLACE INTO scopes (scope, config_hash) VALUES (?, ?)",
            (self.scope, config_hash),
        )
        return row is not None

    def _rows_for(
        self, columns: str, stream: str, emails: Sequence[str], where: str = "", *args: Any
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of this scope and stream for the given emails, queried in chunks."""
        with self._lock:
            self._flush()
            for start in range(0, len(emails), _CHUNK):
                chunk = emails[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                yield from self._db.execute(
                    f"SELECT {columns} FROM fingerprints WHERE scope = ? AND stream = ? "
                    f"{where} AND email IN ({marks})",
                    (self.scope, stream, *args, *chunk),
                ).fetchall()

    def known(self, stream: str, emails: Sequence[str]) -> dict[str, bytes]:
        """Fingerprints on record for these emails (absent = never confirmed)."""
        return dict(self._rows_for("email, fp", stream, emails))

    def confirm(self, stream: str, rows: Iterable[tuple[str, bytes]], run_id: str) -> None:
        """Queued, not written: confirmations arrive on delivery threads, and SQLite from
        a thread that must win the GIL back for every row stalled them behind the busy
        reading thread (seconds per 100k contacts, holding batch slots). The queue is
        written by whichever thread next reads or commits, so nothing reads around it."""
        queued = [(self.scope, stream, email, fp, run_id) for email, fp in rows]
        with self._queue_lock:
            self._queued.extend(queued)
            full = len(self._queued) >= _MAX_QUEUED
        if full:  # nothing has read for a while (full_refresh never does): bound memory
            with self._lock:
                self._flush()

    def _flush(self) -> None:
        """Write the queue, if any, in a transaction of its own; an empty queue takes no
        write lock (reads flush first and must not queue behind other runs' writes).
        Caller holds `_lock`."""
        with self._queue_lock:
            if not self._queued:
                return
        with self._transaction():
            self._write_queued()

    def _write_queued(self) -> None:
        """Caller holds `_lock` and is inside a transaction."""
        with self._queue_lock:
            queued, self._queued = self._queued, []
        if queued:
            self._db.executemany(
                "INSERT OR REPLACE INTO fingerprints (scope, stream, email, fp, seen_run) "
                "VALUES (?, ?, ?, ?, ?)",
                queued,
            )

    def mark_seen(self, stream: str, emails: Iterable[str], run_id: str) -> None:
        with self._lock, self._transaction():
            self._write_queued()
            self._db.executemany(
                "UPDATE fingerprints SET seen_run = ? WHERE scope = ? AND stream = ? AND email = ?",
                ((run_id, self.scope, stream, email) for email in emails),
            )

    def seen_in_run(self, stream: str, emails: Sequence[str], run_id: str) -> set[str]:
        rows = self._rows_for("email", stream, emails, "AND seen_run = ?", run_id)
        return {email for (email,) in rows}

    def forget(self, stream: str, emails: Iterable[str]) -> None:
        with self._lock, self._transaction():
            self._write_queued()
            self._db.executemany(
                "DELETE FROM fingerprints WHERE scope = ? AND stream = ? AND email = ?",
                ((self.scope, stream, email) for email in emails),
            )

    def commit(self) -> None:
        """Durable before STATE: called at the delivery barrier. (Everything written
        earlier is committed already: a fingerprint is only ever written for a contact
        Omnisend confirmed, so committing it early can only save a re-send.)"""
        with self._lock:
            self._flush()

    def close(self) -> None:
        with self._lock:
            self._flush()
            self._db.close()
