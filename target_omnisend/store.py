"""The embedded fingerprint store behind "send only what changed".

Rows live in *partitions*: one per (account, stream, mapping). A partition holds, per
email, the fingerprint of the last contact body Omnisend confirmed. Two pipelines that
share the file (two segments, or one segment mapped two ways) each keep their own
partition, so a mapping change in one never touches the other's rows; a mapping change
simply starts a new, empty partition (everything is sent once), and partitions unused
for `PARTITION_TTL_DAYS` are dropped.

Rows are written only after Omnisend confirmed the write (and the segment tag), and
committed before STATE is emitted, so a crash can only make the next run send more,
never less. A lost or deleted store costs a full send.

The store also keeps mirror mode's *staged removals* per (account, tag): how many
consecutive complete runs a tagged member was absent from (see `mirror.py`), and the
Omnisend saved segment the target made per (account, segment name), with the tag its
rule follows (see `segments.py`): a re-run reads that one segment instead of paging
through all of them. Losing it costs one listing.

A dry run opens the store read-only (`ReadOnlyStore`): it diffs against the real
fingerprints and previews staged removals, and cannot write a row.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from target_omnisend.mapping import NEW_CONTACT_STATUS_DATE

_CHUNK = 500  # SQLite's default limit on host parameters is 999 (older builds)
#: Confirmed fingerprints held before a delivery thread writes them itself (~1 MB).
_MAX_QUEUED = 10_000
#: How long a write waits for another run sharing the store to finish its transaction.
_BUSY_TIMEOUT = 60.0
PARTITION_TTL_DAYS = 90

_TABLES = {
    "partitions": """CREATE TABLE IF NOT EXISTS partitions (
    part TEXT PRIMARY KEY, scope TEXT NOT NULL, stream TEXT NOT NULL,
    config_hash TEXT NOT NULL, tags TEXT NOT NULL, last_used REAL NOT NULL
)""",
    "contact_fingerprints": """CREATE TABLE IF NOT EXISTS contact_fingerprints (
    part TEXT NOT NULL, email TEXT NOT NULL, fp BLOB NOT NULL,
    PRIMARY KEY (part, email)
) WITHOUT ROWID""",
    "mirror_absences": """CREATE TABLE IF NOT EXISTS mirror_absences (
    scope TEXT NOT NULL, tag TEXT NOT NULL, email TEXT NOT NULL,
    runs INTEGER NOT NULL, last_run TEXT NOT NULL,
    PRIMARY KEY (scope, tag, email)
) WITHOUT ROWID""",
    "saved_segments": """CREATE TABLE IF NOT EXISTS saved_segments (
    scope TEXT NOT NULL, name TEXT NOT NULL, segment_id TEXT NOT NULL, tag TEXT NOT NULL,
    streams TEXT NOT NULL, PRIMARY KEY (scope, name)
) WITHOUT ROWID""",
}
_SCHEMA = ";\n".join(_TABLES.values()) + ";"


class StoreUnusable(Exception):
    """The store file exists but is not a store this target can read (or stays locked)."""


def fingerprint(payload: str, run_started_at: str, default_status_date: str = "") -> bytes:
    """Of the exact JSON sent (bodies are built in a fixed key order, so equal contacts
    give equal text). Stable across runs: the run's own timestamp (used for undated
    explicit statuses) must not make every contact look changed, nor the default
    status's date, which moves back at every run (`mapping.default_status_date`); it
    reads as the fixed date earlier releases sent, so their fingerprints still match."""
    text = payload.replace(run_started_at, "<run>")
    if default_status_date:
        text = text.replace(default_status_date, NEW_CONTACT_STATUS_DATE)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def account_scope(api_url: str, api_key: str) -> str:
    """The account is known only through its key: a hash of it, never the key."""
    return hashlib.blake2b(f"{api_url}\0{api_key}".encode(), digest_size=12).hexdigest()


def partition_key(scope: str, stream: str, config_hash: str) -> str:
    return hashlib.blake2b(f"{scope}\0{stream}\0{config_hash}".encode(), digest_size=12).hexdigest()


def _retry_locked(action: Any, deadline: float) -> Any:
    """Opening a new store switches it to WAL, which needs a moment of exclusive access
    that SQLite's busy handler does not wait for: two runs starting together would see
    'database is locked'. Retry such statements until the busy timeout."""
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class FingerprintStore:
    """SQLite-backed fingerprints and staged removals; thread-safe (delivery confirms
    from worker threads)."""

    def __init__(self, path: str | Path, scope: str, config_hash: str) -> None:
        self.path = Path(path)
        self.scope = scope
        self.config_hash = config_hash
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued: list[tuple[str, str, bytes]] = []
        self._parts: dict[str, str] = {}
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            raise StoreUnusable(
                f"the fingerprint store {self.path} cannot be used ({exc}); move it aside (the "
                "next run then sends every contact once) or set fingerprint_store_path"
            ) from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT
        )
        deadline = time.monotonic() + _BUSY_TIMEOUT
        _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL").fetchone(), deadline)
        db.execute("PRAGMA synchronous=NORMAL")
        _retry_locked(lambda: db.executescript(_SCHEMA), deadline)
        return db

    # -- partitions -------------------------------------------------------------------

    def part(self, stream: str, tags: Sequence[str] = ()) -> str:
        """This pipeline's partition for a stream, registered (with the tags its members
        carry, so mirror can forget them by tag) on first use in a run."""
        part = self._parts.get(stream)
        if part is None:
            part = partition_key(self.scope, stream, self.config_hash)
            self._register(part, stream, tags)
            self._parts[stream] = part
        return part

    def _register(self, part: str, stream: str, tags: Sequence[str]) -> None:
        now = time.time()
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO partitions VALUES (?, ?, ?, ?, ?, ?)",
                (part, self.scope, stream, self.config_hash, "\0".join(tags), now),
            )
            stale = [
                row[0]
                for row in self._db.execute(
                    "SELECT part FROM partitions WHERE last_used < ?",
                    (now - PARTITION_TTL_DAYS * 86_400,),
                )
            ]
            for old in stale:
                self._db.execute("DELETE FROM contact_fingerprints WHERE part = ?", (old,))
                self._db.execute("DELETE FROM partitions WHERE part = ?", (old,))

    def is_new_mapping(self, stream: str) -> bool:
        """True when this account and stream were exported before, but never with this
        mapping: everything of the stream is sent again (and the user is told why)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT config_hash FROM partitions WHERE scope = ? AND stream = ?",
                (self.scope, stream),
            ).fetchall()
        return bool(rows) and all(row[0] != self.config_hash for row in rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- fingerprints -----------------------------------------------------------------

    def _select(
        self, sql: str, key: Sequence[Any], values: Sequence[str]
    ) -> Iterator[tuple[Any, ...]]:
        """`sql` with `{marks}` for the IN list, run over `values` in chunks."""
        with self._lock:
            self._flush()
            for start in range(0, len(values), _CHUNK):
                chunk = values[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                yield from self._db.execute(sql.format(marks=marks), (*key, *chunk)).fetchall()

    def known(self, part: str, emails: Sequence[str]) -> dict[str, bytes]:
        """Fingerprints on record for these emails (absent = never confirmed)."""
        sql = "SELECT email, fp FROM contact_fingerprints WHERE part = ? AND email IN ({marks})"
        return dict(self._select(sql, (part,), emails))

    def confirm(self, part: str, rows: Iterable[tuple[str, bytes]]) -> None:
        """Queued, not written: confirmations arrive on delivery threads, and SQLite from
        a thread that must win the GIL back for every row stalled them behind the busy
        reading thread. The queue is written by whichever thread next reads or commits,
        so nothing reads around it."""
        queued = [(part, email, fp) for email, fp in rows]
        with self._queue_lock:
            self._queued.extend(queued)
            full = len(self._queued) >= _MAX_QUEUED
        if full:  # nothing has read for a while (full_refresh never does): bound memory
            with self._lock:
                self._flush()

    def _flush(self) -> None:
        """Write the queue, if any, in a transaction of its own; an empty queue takes no
        write lock. Caller holds `_lock`."""
        with self._queue_lock:
            queued, self._queued = self._queued, []
        if queued:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO contact_fingerprints (part, email, fp) "
                    "VALUES (?, ?, ?)",
                    queued,
                )

    def forget_tagged(self, tag: str, emails: Sequence[str]) -> None:
        """These members lost `tag` in Omnisend: forget them in every partition of this
        account whose members carry it, so any pipeline that still exports them tags
        them again rather than trusting an 'unchanged' fingerprint."""
        with self._lock:
            self._flush()
            parts = [
                part
                for part, tags in self._db.execute(
                    "SELECT part, tags FROM partitions WHERE scope = ?", (self.scope,)
                )
                if tag in tags.split("\0")
            ]
            with self._transaction():
                for part in parts:
                    self._db.executemany(
                        "DELETE FROM contact_fingerprints WHERE part = ? AND email = ?",
                        ((part, email) for email in emails),
                    )

    # -- staged mirror removals -------------------------------------------------------

    def absences(self, tag: str, emails: Sequence[str]) -> dict[str, tuple[int, str]]:
        """For members absent now: (consecutive complete runs absent, last such run)."""
        sql = (
            "SELECT email, runs, last_run FROM mirror_absences "
            "WHERE scope = ? AND tag = ? AND email IN ({marks})"
        )
        return {e: (r, run) for e, r, run in self._select(sql, (self.scope, tag), emails)}

    def record_absences(self, tag: str, counts: dict[str, int], run_id: str) -> None:
        """Replace the tag's staged absences with `counts` (members present again, or no
        longer tagged, drop out)."""
        with self._lock, self._transaction():
            self._db.execute(
                "DELETE FROM mirror_absences WHERE scope = ? AND tag = ?", (self.scope, tag)
            )
            self._db.executemany(
                "INSERT INTO mirror_absences VALUES (?, ?, ?, ?, ?)",
                ((self.scope, tag, email, runs, run_id) for email, runs in counts.items()),
            )

    # -- membership across pipelines (issue 19) ----------------------------------------
    # Portable SQL only (no INSERT OR REPLACE): these carry over to any backend as is.

    def members(self, parts: Sequence[str], keep: Callable[[str], bool]) -> list[str]:
        """Emails confirmed in these partitions (the contacts Omnisend holds for them, as
        sent) for which `keep` is true; read in one pass, only the kept ones held."""
        kept: list[str] = []
        with self._lock:
            self._flush()
            for part in parts:
                cursor = self._db.execute(
                    "SELECT email FROM contact_fingerprints WHERE part = ?", (part,)
                )
                kept.extend(email for (email,) in cursor if keep(email))
        return kept

    def drop_members(self, parts: Sequence[str], drop: Callable[[str], bool]) -> None:
        """Forget the rows of these partitions for which `drop` is true: after a trusted
        complete read, a pipeline holds exactly that read's members (see `mirror.py`)."""
        gone = [(part, email) for part in parts for email in self.members([part], drop)]
        if not gone:
            return
        with self._lock, self._transaction():
            self._db.executemany(
                "DELETE FROM contact_fingerprints WHERE part = ? AND email = ?", gone
            )

    def held_elsewhere(self, tag: str, streams: Sequence[str], emails: Sequence[str]) -> set[str]:
        """Of `emails`, those another pipeline writing `tag` holds: confirmed in a
        partition of this account whose members carry the tag, of a stream not among
        `streams` (this pipeline's own partitions, older mappings included, are not
        another pipeline). Compared as spelled and lower-cased (the safe direction)."""
        with self._lock:
            parts = [
                part
                for part, stream, tags in self._db.execute(
                    "SELECT part, stream, tags FROM partitions WHERE scope = ?", (self.scope,)
                ).fetchall()
                if stream not in streams and tag in tags.split("\0")
            ]
        if not parts or not emails:
            return set()
        spellings: dict[str, list[str]] = {}
        for email in emails:
            for spelling in {email, email.strip().lower()}:
                spellings.setdefault(spelling, []).append(email)
        found: set[str] = set()
        sql = "SELECT email FROM contact_fingerprints WHERE part = ? AND email IN ({marks})"
        for part in parts:
            for (spelling,) in self._select(sql, (part,), list(spellings)):
                found.update(spellings[spelling])
        return found

    def staged(self, tag: str) -> list[str]:
        """Every member of `tag` with a staged removal."""
        with self._lock:
            return [
                email
                for (email,) in self._db.execute(
                    "SELECT email FROM mirror_absences WHERE scope = ? AND tag = ?",
                    (self.scope, tag),
                )
            ]

    def clear_absences(self, tag: str, emails: Sequence[str]) -> None:
        """These members are present again: their staged removals are void."""
        if not emails:
            return
        with self._lock, self._transaction():
            self._db.executemany(
                "DELETE FROM mirror_absences WHERE scope = ? AND tag = ? AND email = ?",
                ((self.scope, tag, email) for email in emails),
            )

    # -- saved segments -----------------------------------------------------------------

    def saved_segment(self, name: str) -> tuple[str, str, tuple[str, ...]] | None:
        """(segmentID, tag the target wrote its rule for or "", streams) of the segment
        this account's runs keep under `name`, if any."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT segment_id, tag, streams FROM saved_segments "
                    "WHERE scope = ? AND name = ?",
                    (self.scope, name),
                ).fetchone()
            except sqlite3.OperationalError:  # a read-only store from before the table
                return None
        return (row[0], row[1], tuple(row[2].split("\0"))) if row else None

    def remember_segment(
        self, name: str, segment_id: str, tag: str, streams: Sequence[str]
    ) -> None:
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO saved_segments VALUES (?, ?, ?, ?, ?)",
                (self.scope, name, segment_id, tag, "\0".join(streams)),
            )

    def forget_segment(self, name: str) -> None:
        with self._lock, self._transaction():
            self._db.execute(
                "DELETE FROM saved_segments WHERE scope = ? AND name = ?", (self.scope, name)
            )

    def commit(self) -> None:
        """Durable before STATE: called at every checkpoint."""
        with self._lock:
            self._flush()

    def close(self) -> None:
        with self._lock:
            self._flush()
            self._db.close()


class ReadOnlyStore(FingerprintStore):
    """The store as a dry run sees it: the same reads, no writes (a missing file reads
    as empty). A dry run must leave the store exactly as the next real run needs it."""

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            db.executescript(_SCHEMA)
            return db
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(
            uri, uri=True, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT
        )
        # A store from an older release lacks tables a real run would create (empty):
        # the dry run reads them as empty too, from temporary tables outside the file.
        present = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        for name, statement in _TABLES.items():
            if name not in present:
                db.execute(statement.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE"))
        return db

    def part(self, stream: str, tags: Sequence[str] = ()) -> str:
        del tags
        return partition_key(self.scope, stream, self.config_hash)

    def confirm(self, part: str, rows: Iterable[tuple[str, bytes]]) -> None:
        del part, rows

    def forget_tagged(self, tag: str, emails: Sequence[str]) -> None:
        del tag, emails

    def record_absences(self, tag: str, counts: dict[str, int], run_id: str) -> None:
        del tag, counts, run_id

    def drop_members(self, parts: Sequence[str], drop: Callable[[str], bool]) -> None:
        del parts, drop

    def clear_absences(self, tag: str, emails: Sequence[str]) -> None:
        del tag, emails

    def remember_segment(
        self, name: str, segment_id: str, tag: str, streams: Sequence[str]
    ) -> None:
        del name, segment_id, tag, streams

    def forget_segment(self, name: str) -> None:
        del name

    def commit(self) -> None:
        pass

    def close(self) -> None:
        self._db.close()
