"""The fingerprint store behind "send only what changed", one interface for both backends.

Rows live in *partitions*: one per (account, stream, mapping). A partition holds, per
email, the fingerprint of the last contact body Omnisend confirmed. Two pipelines that
share the file (two segments, or one segment mapped two ways) each keep their own
partition, so a mapping change in one never touches the other's rows; a mapping change
simply starts a new, empty partition (everything is sent once), and partitions unused
for `PARTITION_TTL_DAYS` are dropped.

Rows are written only after Omnisend confirmed the write (and the segment tag), and
committed before STATE is emitted, so a crash can only make the next run send more,
never less. A lost or deleted store costs a full send and restarts mirror's staging,
which is why a new or empty store is announced in one line (and why ephemeral runners
keep it in PostgreSQL).

The store also keeps mirror mode's *staged removals* per (account, tag): how many
consecutive complete runs a tagged member was absent from (see `mirror.py`), and the
Omnisend saved segment the target made per (account, segment name), with the tag its
rule follows (see `segments.py`): a re-run reads that one segment instead of paging
through all of them. Losing it costs one listing.

A dry run opens the store read-only (`ReadOnlyStore`): it diffs against the real
fingerprints and previews staged removals, and cannot write a row.

Where it lives: an SQLite file (the default) or a PostgreSQL schema (`store_backends.py`
connects, locks and sets up). The tables and every statement are written once here, on
SQLAlchemy Core; a new table is one `Table(...)` below, and the layout version goes up
only when existing rows must change (a function in `_MIGRATIONS` does that, in place).
Runs of one pipeline (the same partition) never interleave: a run takes its partition's
lock when it first uses it, waits for it up to `lock_timeout`, and holds it until it
closes the store. Every database error becomes one `StoreError` line naming the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    delete,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from target_omnisend.mapping import NEW_CONTACT_STATUS_DATE
from target_omnisend.store_backends import (
    Backend,
    PipelineLock,
    StoreError,
    StoreUnusable,
    backend_for,
    memory_engine,
    store_failure,
)

__all__ = [
    "LAYOUT_VERSION",
    "FingerprintStore",
    "ReadOnlyStore",
    "StoreError",
    "StoreUnusable",
    "account_scope",
    "fingerprint",
    "partition_key",
]

#: Confirmed fingerprints held before a delivery thread writes them itself (~1 MB).
_MAX_QUEUED = 10_000
PARTITION_TTL_DAYS = 90
DEFAULT_SCHEMA = "target_omnisend"
#: How long a run waits for another run of the same pipeline to close the store.
DEFAULT_LOCK_TIMEOUT = 60.0

#: 1: the partitioned tables (tags and streams joined by NUL, which PostgreSQL text
#: cannot hold); 2: tags and streams as JSON arrays, partitions' last run, this version.
LAYOUT_VERSION = 2

# -- the layout, declared once for both backends ------------------------------------------

METADATA = MetaData()
LAYOUT = Table(
    "store_layout",
    METADATA,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
PARTITIONS = Table(
    "partitions",
    METADATA,
    Column("part", Text, primary_key=True),
    Column("scope", Text, nullable=False),
    Column("stream", Text, nullable=False),
    Column("config_hash", Text, nullable=False),
    Column("tags", Text, nullable=False),  # JSON array
    Column("last_used", Float, nullable=False),
    #: The run that last used the partition: a run that had to wait for it treats that
    #: run's staged removals as its own (two overlapping runs are one confirmation).
    Column("last_run", Text, nullable=False, server_default=""),
)
FINGERPRINTS = Table(
    "contact_fingerprints",
    METADATA,
    Column("part", Text, primary_key=True),
    Column("email", Text, primary_key=True),
    Column("fp", LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)
ABSENCES = Table(
    "mirror_absences",
    METADATA,
    Column("scope", Text, primary_key=True),
    Column("tag", Text, primary_key=True),
    Column("email", Text, primary_key=True),
    Column("runs", Integer, nullable=False),
    Column("last_run", Text, nullable=False),
    sqlite_with_rowid=False,
)
SEGMENTS = Table(
    "saved_segments",
    METADATA,
    Column("scope", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("segment_id", Text, nullable=False),
    Column("tag", Text, nullable=False),
    Column("streams", Text, nullable=False),  # JSON array
    sqlite_with_rowid=False,
)
#: The release before partitions (layout 0): its rows cannot be placed in a partition
#: (no mapping hash), so upgrading drops them and costs one full send.
_LAYOUT_0_TABLES = ("fingerprints", "scopes")


def _drop_layout_0(conn: Connection) -> None:
    for name in _LAYOUT_0_TABLES:
        Table(name, MetaData()).drop(conn, checkfirst=True)


def _layout_1_to_2(conn: Connection) -> None:
    """Layout 1 joined tags and streams with NUL; layout 2 keeps JSON arrays, and the
    run that last used each partition. Layout 1 also left layout 0's tables behind
    (unused): they go too. Only SQLite files have layout 1."""
    _drop_layout_0(conn)
    columns = {column["name"] for column in inspect(conn).get_columns(PARTITIONS.name)}
    if "last_run" not in columns:  # (a store upgraded from layout 0 has it already)
        conn.exec_driver_sql("ALTER TABLE partitions ADD COLUMN last_run TEXT NOT NULL DEFAULT ''")
    for table, column in ((PARTITIONS, "tags"), (SEGMENTS, "streams")):
        keys = [c for c in table.primary_key.columns]
        for row in conn.execute(select(*keys, table.c[column])).all():
            joined = row[-1]
            if joined.startswith("["):
                continue
            where = [key == value for key, value in zip(keys, row[:-1], strict=True)]
            values = {column: _encode_list(joined.split("\0") if joined else [])}
            conn.execute(update(table).where(*where).values(values))


#: Layout n -> n + 1, run in order inside the upgrade's transaction (after the current
#: tables exist). The old tables and encodings are gone when it commits.
_MIGRATIONS = {0: _drop_layout_0, 1: _layout_1_to_2}
assert sorted(_MIGRATIONS) == list(range(LAYOUT_VERSION))


def _encode_list(values: Iterable[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False)


def _decode_list(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _layout_version(conn: Connection, schema: str | None, display: str) -> int | None:
    """The store's layout: None when it holds none of our tables (a new store)."""
    names = set(inspect(conn).get_table_names(schema=schema))
    if LAYOUT.name in names:
        value = conn.execute(select(LAYOUT.c.value).where(LAYOUT.c.name == "version")).scalar()
        try:
            return int(value or "")
        except ValueError:
            raise StoreUnusable(
                f"the fingerprint store {display} has an unreadable layout version ({value!r})"
            ) from None
    if FINGERPRINTS.name in names:
        return 1
    if names.intersection(_LAYOUT_0_TABLES):
        return 0
    return None


# -- keys -----------------------------------------------------------------------------------


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


# -- the statements -------------------------------------------------------------------------


class _OneOf(ColumnElement[bool]):
    """`column` is one of the list bound as `name`. Written once; rendered per dialect:
    an IN list expanded per call in SQLite, `= ANY(array)` in PostgreSQL — one
    parameter, so the statement stays short and the driver reuses it (an IN list of
    thousands of placeholders cost more CPU to build and parse than the lookup)."""

    inherit_cache = True
    type = Boolean(create_constraint=False)
    _is_implicitly_boolean = True  # a predicate: no `= 1` in SQLite's WHERE
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


@compiles(_OneOf)
def _one_of_in_list(element: _OneOf, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(_OneOf, "postgresql")
def _one_of_array(element: _OneOf, compiler: Any, **kw: Any) -> str:
    array = bindparam(element.name, type_=postgresql.ARRAY(Text))
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(array, **kw)})"


_KNOWN = select(FINGERPRINTS.c.email, FINGERPRINTS.c.fp).where(
    FINGERPRINTS.c.part == bindparam("part"), _OneOf(FINGERPRINTS.c.email, "emails")
)
_ABSENT = select(ABSENCES.c.email, ABSENCES.c.runs, ABSENCES.c.last_run).where(
    ABSENCES.c.scope == bindparam("scope"),
    ABSENCES.c.tag == bindparam("tag"),
    _OneOf(ABSENCES.c.email, "emails"),
)
_FORGET = delete(FINGERPRINTS).where(
    _OneOf(FINGERPRINTS.c.part, "parts"), _OneOf(FINGERPRINTS.c.email, "emails")
)

_MEMBERS_PAGE = (
    select(FINGERPRINTS.c.email)
    .where(FINGERPRINTS.c.part == bindparam("part"), FINGERPRINTS.c.email > bindparam("after"))
    .order_by(FINGERPRINTS.c.email)
    .limit(bindparam("page"))
)
_CLEAR = delete(ABSENCES).where(
    ABSENCES.c.scope == bindparam("scope"),
    ABSENCES.c.tag == bindparam("tag"),
    _OneOf(ABSENCES.c.email, "emails"),
)

# -- the store ------------------------------------------------------------------------------


class FingerprintStore:
    """Fingerprints, staged removals and saved segments, in either backend; thread-safe
    (delivery confirms from worker threads)."""

    read_only = False

    def __init__(
        self,
        path: str | Path,
        scope: str,
        config_hash: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        password: str | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        logger: logging.Logger | None = None,
        run_id: str = "",
    ) -> None:
        self.backend: Backend = backend_for(path, schema, password, lock_timeout)
        self.display = self.backend.display
        self.scope = scope
        self.config_hash = config_hash
        self.lock_timeout = lock_timeout
        #: This run's id, as mirror writes it into staged removals.
        self.run_id = run_id
        #: Runs of this run's pipelines it had to wait for: their staged removals count
        #: as this run's (overlapping runs read the same source: one confirmation).
        self.overlapped_runs: set[str] = set()
        self.logger = logger or logging.getLogger("target-omnisend")
        self._errors = self.backend.errors()
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued: list[dict[str, Any]] = []
        self._parts: dict[str, str] = {}
        self._held: list[PipelineLock] = []
        self._insert = self.backend.insert
        try:
            self._db = self._open()
        except self._errors as exc:
            raise store_failure(self.backend, "opening it", exc) from None

    # -- opening ----------------------------------------------------------------------

    def _open(self) -> Connection:
        conn = self.backend.connect(read_only=False)
        assert conn is not None
        try:
            self.backend.prepare(conn)
            with self._transaction(conn):
                self.backend.set_up(conn)
                version = _layout_version(conn, self.backend.schema, self.display)
                self._check_not_newer(version)
                METADATA.create_all(conn)
                self._upgrade(conn, version)
            self._announce(conn, version)
        except BaseException:
            with contextlib.suppress(*self._errors):
                conn.close()
            raise
        return conn

    def _check_not_newer(self, version: int | None) -> None:
        if version is not None and version > LAYOUT_VERSION:
            raise StoreUnusable(
                f"the fingerprint store {self.display} has layout version {version}, written by "
                f"a newer target-omnisend (this one reads up to {LAYOUT_VERSION}): upgrade "
                "target-omnisend, or set fingerprint_store_path to another store"
            )

    def _upgrade(self, conn: Connection, version: int | None) -> None:
        """Run the migrations from `version` (None: a new store needs none) and stamp
        the layout version; inside the caller's transaction."""
        if version == LAYOUT_VERSION:
            return
        for step in range(LAYOUT_VERSION if version is None else version, LAYOUT_VERSION):
            _MIGRATIONS[step](conn)
        stamp = self._insert(LAYOUT).values(name="version", value=str(LAYOUT_VERSION))
        conn.execute(
            stamp.on_conflict_do_update(
                index_elements=["name"], set_={"value": str(LAYOUT_VERSION)}
            )
        )

    def _announce(self, conn: Connection, version: int | None) -> None:
        """A new or empty store is said out loud: it means a full send, and mirror
        removals only start staging (an ephemeral runner loses its store every run)."""
        consequence = "every contact is sent, and mirror removals start staging from this run"
        if self.read_only:
            consequence = "the dry run diffs as if every contact were new"
        if version is None:
            self.logger.info("Fingerprint store %s is new: %s", self.display, consequence)
            return
        if version < LAYOUT_VERSION and not self.read_only:
            self.logger.info(
                "Fingerprint store %s upgraded in place from layout %d to %d",
                self.display,
                version,
                LAYOUT_VERSION,
            )
        mine = select(PARTITIONS.c.part).where(PARTITIONS.c.scope == self.scope).limit(1)
        if conn.execute(mine).first() is None:
            self.logger.info(
                "Fingerprint store %s is empty for this account: %s", self.display, consequence
            )

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Any database error, at any moment, ends the run in one line naming the store."""
        try:
            yield
        except self._errors as exc:
            raise store_failure(self.backend, what, exc) from None

    @contextlib.contextmanager
    def _transaction(self, conn: Connection | None = None) -> Iterator[Connection]:
        db = conn if conn is not None else self._db
        db.exec_driver_sql(self.backend.begin_sql)
        try:
            yield db
        except BaseException:
            with contextlib.suppress(*self._errors):
                db.exec_driver_sql("ROLLBACK")
            raise
        db.exec_driver_sql("COMMIT")

    # -- partitions -------------------------------------------------------------------

    def part(self, stream: str, tags: Sequence[str] = ()) -> str:
        """This pipeline's partition for a stream, registered (with the tags its members
        carry, so mirror can forget them by tag) on first use in a run, under the
        partition's lock: a second run of the same pipeline waits here."""
        part = self._parts.get(stream)
        if part is None:
            part = partition_key(self.scope, stream, self.config_hash)
            if self._claim(part, stream):  # waited: the run before overlapped this one
                self.overlapped_runs.update(self._last_runs(part))
            self._register(part, stream, tags)
            self._parts[stream] = part
        return part

    def _last_runs(self, part: str) -> list[str]:
        query = select(PARTITIONS.c.last_run).where(PARTITIONS.c.part == part)
        with self._lock, self._guard("reading its partitions"):
            return [run for run in self._db.execute(query).scalars() if run]

    def _claim(self, part: str, stream: str) -> bool:
        """Take the partition's lock; True if another run held it first."""
        with self._lock, self._guard("locking its partition"):
            lock = self.backend.pipeline_lock(self._db, part)
            if lock.try_acquire():
                self._held.append(lock)
                return False
        self.logger.info(
            "Another run of this pipeline (stream '%s') is using fingerprint store %s: waiting "
            "up to %.0f s for it to finish (fingerprint_store_lock_timeout)",
            stream,
            self.display,
            self.lock_timeout,
        )
        deadline = time.monotonic() + self.lock_timeout
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            with self._lock, self._guard("locking its partition"):
                if lock.try_acquire():
                    self._held.append(lock)
                    return True
        raise StoreError(
            f"another run of this pipeline (stream '{stream}') is still using the fingerprint "
            f"store {self.display} after {self.lock_timeout:g} s "
            "(fingerprint_store_lock_timeout); this run stops so that the two never interleave"
        )

    def _register(self, part: str, stream: str, tags: Sequence[str]) -> None:
        now = time.time()
        row = {
            "part": part,
            "scope": self.scope,
            "stream": stream,
            "config_hash": self.config_hash,
            "tags": _encode_list(tags),
            "last_used": now,
            "last_run": self.run_id,
        }
        upsert = self._insert(PARTITIONS).values(row)
        upsert = upsert.on_conflict_do_update(index_elements=["part"], set_=row)
        stale = select(PARTITIONS.c.part).where(
            PARTITIONS.c.last_used < now - PARTITION_TTL_DAYS * 86_400
        )
        with self._lock, self._guard("registering a stream"), self._transaction() as db:
            db.execute(upsert)
            old = list(db.execute(stale).scalars())
            if old:
                db.execute(delete(FINGERPRINTS).where(FINGERPRINTS.c.part.in_(old)))
                db.execute(delete(PARTITIONS).where(PARTITIONS.c.part.in_(old)))

    def is_new_mapping(self, stream: str) -> bool:
        """True when this account and stream were exported before, but never with this
        mapping: everything of the stream is sent again (and the user is told why)."""
        query = select(PARTITIONS.c.config_hash).where(
            PARTITIONS.c.scope == self.scope, PARTITIONS.c.stream == stream
        )
        with self._lock, self._guard("reading its partitions"):
            hashes = list(self._db.execute(query).scalars())
        return bool(hashes) and all(h != self.config_hash for h in hashes)

    # -- fingerprints -----------------------------------------------------------------

    def _select(self, query: Any, params: dict[str, Any], values: Sequence[str]) -> list[Any]:
        """`query` over `values` (its expanding `emails` list) in chunks."""
        rows: list[Any] = []
        chunk = self.backend.chunk
        with self._lock:
            self._flush()
            for start in range(0, len(values), chunk):
                emails = list(values[start : start + chunk])
                rows += self._db.execute(query, {**params, "emails": emails}).all()
        return rows

    def known(self, part: str, emails: Sequence[str]) -> dict[str, bytes]:
        """Fingerprints on record for these emails (absent = never confirmed)."""
        with self._guard("reading fingerprints"):
            return {email: bytes(fp) for email, fp in self._select(_KNOWN, {"part": part}, emails)}

    def confirm(self, part: str, rows: Iterable[tuple[str, bytes]]) -> None:
        """Queued, not written: confirmations arrive on delivery threads, and SQLite from
        a thread that must win the GIL back for every row stalled them behind the busy
        reading thread. The queue is written by whichever thread next reads or commits,
        so nothing reads around it."""
        queued = [{"part": part, "email": email, "fp": fp} for email, fp in rows]
        with self._queue_lock:
            self._queued.extend(queued)
            full = len(self._queued) >= _MAX_QUEUED
        if full:  # nothing has read for a while (full_refresh never does): bound memory
            with self._lock, self._guard("writing fingerprints"):
                self._flush()

    def _flush(self) -> None:
        """Write the queue, if any, in a transaction of its own; an empty queue takes no
        write lock. Caller holds `_lock`. The latest row per email wins (one statement
        may not touch a row twice in PostgreSQL)."""
        with self._queue_lock:
            queued, self._queued = self._queued, []
        if not queued:
            return
        latest = {(row["part"], row["email"]): row for row in queued}
        upsert = self._insert(FINGERPRINTS)
        upsert = upsert.on_conflict_do_update(
            index_elements=["part", "email"], set_={"fp": upsert.excluded.fp}
        )
        with self._guard("writing fingerprints"), self._transaction() as db:
            db.execute(upsert, list(latest.values()))

    def forget_tagged(self, tag: str, emails: Sequence[str]) -> None:
        """These members lost `tag` in Omnisend: forget them in every partition of this
        account whose members carry it, so any pipeline that still exports them tags
        them again rather than trusting an 'unchanged' fingerprint."""
        query = select(PARTITIONS.c.part, PARTITIONS.c.tags).where(PARTITIONS.c.scope == self.scope)
        chunk = self.backend.chunk
        with self._lock, self._guard("forgetting untagged members"):
            self._flush()
            rows = self._db.execute(query).all()
            parts = [part for part, tags in rows if tag in _decode_list(tags)]
            if not parts or not emails:
                return
            with self._transaction() as db:
                for start in range(0, len(emails), chunk):
                    batch = list(emails[start : start + chunk])
                    db.execute(_FORGET, {"parts": parts, "emails": batch})

    # -- staged mirror removals -------------------------------------------------------

    def absences(self, tag: str, emails: Sequence[str]) -> dict[str, tuple[int, str]]:
        """For members absent now: (consecutive complete runs absent, last such run)."""
        params = {"scope": self.scope, "tag": tag}
        with self._guard("reading staged removals"):
            return {e: (r, run) for e, r, run in self._select(_ABSENT, params, emails)}

    def record_absences(self, tag: str, counts: dict[str, int], run_id: str) -> None:
        """Replace the tag's staged absences with `counts` (members present again, or no
        longer tagged, drop out)."""
        rows = [
            {"scope": self.scope, "tag": tag, "email": email, "runs": runs, "last_run": run_id}
            for email, runs in counts.items()
        ]
        clear = delete(ABSENCES).where(ABSENCES.c.scope == self.scope, ABSENCES.c.tag == tag)
        with self._lock, self._guard("staging removals"), self._transaction() as db:
            db.execute(clear)
            if rows:
                db.execute(ABSENCES.insert(), rows)

    # -- membership across pipelines ------------------------------------------------

    def members(self, parts: Sequence[str], keep: Callable[[str], bool]) -> list[str]:
        """Emails confirmed in these partitions (the contacts Omnisend holds for them, as
        sent) for which `keep` is true; read in pages by email, only the kept ones held
        (a partition of a million members never sits in memory whole)."""
        kept: list[str] = []
        page = self.backend.chunk * 10
        with self._lock, self._guard("reading members"):
            self._flush()
            for part in parts:
                after = ""
                while True:
                    params = {"part": part, "after": after, "page": page}
                    emails = list(self._db.execute(_MEMBERS_PAGE, params).scalars())
                    kept.extend(email for email in emails if keep(email))
                    if len(emails) < page:
                        break
                    after = emails[-1]
        return kept

    def drop_members(self, parts: Sequence[str], drop: Callable[[str], bool]) -> None:
        """Forget the rows of these partitions for which `drop` is true: after a trusted
        complete read, a pipeline holds exactly that read's members (see `mirror.py`)."""
        chunk = self.backend.chunk
        for part in parts:
            gone = self.members([part], drop)
            if not gone:
                continue
            with self._lock, self._guard("trimming members"), self._transaction() as db:
                for start in range(0, len(gone), chunk):
                    batch = gone[start : start + chunk]
                    db.execute(_FORGET, {"parts": [part], "emails": batch})

    def held_elsewhere(self, tag: str, streams: Sequence[str], emails: Sequence[str]) -> set[str]:
        """Of `emails`, those another pipeline writing `tag` holds: confirmed in a
        partition of this account whose members carry the tag, of a stream not among
        `streams` (this pipeline's own partitions, older mappings included, are not
        another pipeline). Compared as spelled and lower-cased (the safe direction)."""
        query = select(PARTITIONS.c.part, PARTITIONS.c.stream, PARTITIONS.c.tags).where(
            PARTITIONS.c.scope == self.scope
        )
        with self._lock, self._guard("reading its partitions"):
            rows = self._db.execute(query).all()
        parts = [
            part
            for part, stream, tags in rows
            if stream not in streams and tag in _decode_list(tags)
        ]
        if not parts or not emails:
            return set()
        spellings: dict[str, list[str]] = {}
        for email in emails:
            for spelling in {email, email.strip().lower()}:
                spellings.setdefault(spelling, []).append(email)
        found: set[str] = set()
        with self._guard("reading other pipelines' members"):
            for part in parts:
                for spelling, _ in self._select(_KNOWN, {"part": part}, list(spellings)):
                    found.update(spellings[spelling])
        return found

    def staged(self, tag: str) -> list[str]:
        """Every member of `tag` with a staged removal."""
        query = select(ABSENCES.c.email).where(
            ABSENCES.c.scope == self.scope, ABSENCES.c.tag == tag
        )
        with self._lock, self._guard("reading staged removals"):
            return list(self._db.execute(query).scalars())

    def clear_absences(self, tag: str, emails: Sequence[str]) -> None:
        """These members are present again: their staged removals are void."""
        if not emails:
            return
        chunk = self.backend.chunk
        params = {"scope": self.scope, "tag": tag}
        with self._lock, self._guard("clearing staged removals"), self._transaction() as db:
            for start in range(0, len(emails), chunk):
                db.execute(_CLEAR, {**params, "emails": list(emails[start : start + chunk])})

    # -- saved segments -----------------------------------------------------------------

    def saved_segment(self, name: str) -> tuple[str, str, tuple[str, ...]] | None:
        """(segmentID, tag the target wrote its rule for or "", streams) of the segment
        this account's runs keep under `name`, if any."""
        query = select(SEGMENTS.c.segment_id, SEGMENTS.c.tag, SEGMENTS.c.streams).where(
            SEGMENTS.c.scope == self.scope, SEGMENTS.c.name == name
        )
        with self._lock, self._guard("reading saved segments"):
            row = self._db.execute(query).first()
        return (row[0], row[1], _decode_list(row[2])) if row else None

    def remember_segment(
        self, name: str, segment_id: str, tag: str, streams: Sequence[str]
    ) -> None:
        row = {
            "scope": self.scope,
            "name": name,
            "segment_id": segment_id,
            "tag": tag,
            "streams": _encode_list(streams),
        }
        upsert = self._insert(SEGMENTS).values(row)
        upsert = upsert.on_conflict_do_update(index_elements=["scope", "name"], set_=row)
        with self._lock, self._guard("saving a segment"), self._transaction() as db:
            db.execute(upsert)

    def forget_segment(self, name: str) -> None:
        gone = delete(SEGMENTS).where(SEGMENTS.c.scope == self.scope, SEGMENTS.c.name == name)
        with self._lock, self._guard("forgetting a segment"), self._transaction() as db:
            db.execute(gone)

    def commit(self) -> None:
        """Durable before STATE: called at every checkpoint."""
        with self._lock, self._guard("writing fingerprints"):
            self._flush()

    def close(self) -> None:
        """Write what is queued, release this run's pipeline locks, disconnect."""
        with self._lock, self._guard("closing it"):
            self._flush()
            for lock in self._held:
                lock.release()
            self._held = []
            self._db.close()


class ReadOnlyStore(FingerprintStore):
    """The store as a dry run sees it: the same reads, no writes (a missing store reads
    as empty, an older layout as the upgrade would leave it). A dry run must leave the
    store exactly as the next real run needs it."""

    read_only = True

    def _open(self) -> Connection:
        conn = self.backend.connect(read_only=True)
        version = None
        if conn is not None:
            version = _layout_version(conn, self.backend.schema, self.display)
            self._check_not_newer(version)
            names = set(inspect(conn).get_table_names(schema=self.backend.schema))
            if version is None:
                conn.close()
                conn = None
            elif version < LAYOUT_VERSION or not set(METADATA.tables) <= names:
                conn = self.backend.copy_to_memory(conn)  # upgraded there, not in place
            else:
                self._announce(conn, version)
                return conn
        conn = conn or memory_engine().connect()
        with self._transaction(conn):
            METADATA.create_all(conn)
            self._upgrade(conn, version)
        self._announce(conn, version)
        return conn

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
        with self._guard("closing it"):
            self._db.close()
