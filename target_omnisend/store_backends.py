"""Where the fingerprint store lives: an SQLite file (the embedded default) or a schema
in a PostgreSQL database. One job: connect, lock and set up. The SQL itself is written
once, on SQLAlchemy Core, in `store.py`; a backend differs only in

- how it connects (a file, or a URL whose password never reaches a log line),
- how a write transaction begins (SQLite takes its write lock up front, so two runs
  sharing the file wait for each other instead of failing mid-transaction),
- how one pipeline's runs are kept from interleaving (an OS file lock beside the file,
  a session advisory lock in PostgreSQL: both vanish with the process that held them,
  so a crashed run never leaves a stale lock behind),
- how a read-only (dry run) copy of an older layout is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from singer_sdk.exceptions import FatalSyncError
from sqlalchemy import Connection, Engine, NullPool, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from target_omnisend.privacy import one_line_error

#: How long SQLite waits for another run's write transaction on the same file.
SQLITE_BUSY_TIMEOUT = 60.0
PG_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")
#: Advisory-lock namespace of this target (first of PostgreSQL's two 32-bit lock keys).
_PG_LOCK_CLASS = 0x0F5E_7D01


class StoreError(FatalSyncError):
    """The fingerprint store cannot be used (at open or later): one line naming the
    store (never its password). The run stops with exit 1 and no STATE."""


class StoreUnusable(StoreError):
    """The store exists but is not one this release can read (or it stays locked)."""


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.split(":", 1)[0].lower() in PG_SCHEMES


class PipelineLock(Protocol):
    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...


class Backend(Protocol):
    """How one kind of store connects, locks and sets up (see the module docstring)."""

    display: str
    #: PostgreSQL schema holding the tables (None: SQLite's main database).
    schema: str | None
    secrets: tuple[str, ...]
    #: Emails per IN list (SQLite builds may allow only 999 host parameters).
    chunk: int
    begin_sql: str

    #: The dialect's INSERT (its `on_conflict_do_update` has the same API in both).
    def insert(self, table: Table) -> Any: ...
    #: One connection for the run, in autocommit (None: read-only and no store there).
    def connect(self, *, read_only: bool) -> Connection | None: ...
    #: Before the setup transaction (SQLite: WAL).
    def prepare(self, conn: Connection) -> None: ...
    #: First thing inside the setup transaction (PostgreSQL: lock, create the schema).
    def set_up(self, conn: Connection) -> None: ...
    #: A dry run's private copy of an older layout, to upgrade without writing.
    def copy_to_memory(self, conn: Connection) -> Connection: ...
    #: The lock that keeps two runs of one pipeline (a partition) apart.
    def pipeline_lock(self, conn: Connection, key: str) -> PipelineLock: ...
    #: What a failing store raises (each becomes one `StoreError` line).
    def errors(self) -> tuple[type[BaseException], ...]: ...


def _retry_locked(action: Callable[[], Any], deadline: float) -> Any:
    """Opening a new store switches it to WAL, which needs a moment of exclusive access
    that SQLite's busy handler does not wait for: two runs starting together would see
    'database is locked'. Retry such statements until the busy timeout."""
    while True:
        try:
            return action()
        except (sqlite3.OperationalError, SQLAlchemyError) as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def memory_engine() -> Engine:
    """An empty SQLite store in memory: what a dry run reads when there is no store."""
    return create_engine(
        "sqlite://",
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"check_same_thread": False},
    )


class _FileLock:
    """flock on a file beside the store: per open file, released by the OS with the
    process (a killed run never leaves a stale lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class SqliteFile:
    """The embedded default: one file in the working directory (or anywhere)."""

    chunk = 500
    begin_sql = "BEGIN IMMEDIATE"
    schema = None
    secrets: tuple[str, ...] = ()

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.display = str(self.path)

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def errors(self) -> tuple[type[BaseException], ...]:
        return (SQLAlchemyError, sqlite3.Error, OSError)

    def connect(self, *, read_only: bool) -> Connection | None:
        if read_only and not self.path.exists():
            return None
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = self.path.resolve().as_uri() + ("?mode=ro" if read_only else "")

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(
                uri, uri=True, check_same_thread=False, timeout=SQLITE_BUSY_TIMEOUT
            )

        engine = create_engine(
            "sqlite://",
            creator=creator,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",  # transactions are begun by hand (begin_sql)
        )
        return engine.connect()

    def prepare(self, conn: Connection) -> None:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
        _retry_locked(lambda: conn.exec_driver_sql("PRAGMA journal_mode=WAL").fetchone(), deadline)
        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")

    def set_up(self, conn: Connection) -> None:
        del conn  # BEGIN IMMEDIATE already holds the file's write lock

    def copy_to_memory(self, conn: Connection) -> Connection:
        """A dry run on an older layout reads the store as the upgrade would leave it:
        the file is copied into memory (SQLite's backup API reads it, writes nothing)
        and upgraded there. Costs the store's size in memory, once."""
        memory = memory_engine().connect()
        source = conn.connection.dbapi_connection
        target = memory.connection.dbapi_connection
        assert isinstance(source, sqlite3.Connection) and isinstance(target, sqlite3.Connection)
        source.backup(target)
        conn.close()
        return memory

    def pipeline_lock(self, conn: Connection, key: str) -> PipelineLock:
        """Beside the file itself, symlinks resolved (as `connect` does): one store
        reached by two paths is one set of locks."""
        del conn
        real = self.path.resolve()
        return _FileLock(real.parent / f"{real.name}.locks" / f"{key}.lock")


class _AdvisoryLock:
    """A session-level advisory lock on the store's own connection: released when the
    run closes the store, or by the server when the run's connection dies."""

    def __init__(self, conn: Connection, key: int) -> None:
        self.conn = conn
        self.key = key

    def try_acquire(self) -> bool:
        sql = text("SELECT pg_try_advisory_lock(:c, :k)")
        return bool(self.conn.execute(sql, {"c": _PG_LOCK_CLASS, "k": self.key}).scalar())

    def release(self) -> None:
        with contextlib.suppress(SQLAlchemyError):
            sql = text("SELECT pg_advisory_unlock(:c, :k)")
            self.conn.execute(sql, {"c": _PG_LOCK_CLASS, "k": self.key})


def _int32(*parts: str) -> int:
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _pg_driver() -> str:
    """psycopg 3 (the `[postgres]` extra), else psycopg2 if that is what is installed."""
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return driver
    raise StoreUnusable(
        "a PostgreSQL fingerprint_store_path needs a PostgreSQL driver: "
        "pip install 'target-omnisend[postgres]'"
    )


class PostgresSchema:
    """A schema of a PostgreSQL database (created on first use), reached by URL."""

    chunk = 10_000  # one array parameter, whatever its length
    begin_sql = "BEGIN"

    def __init__(
        self, url: str, schema: str, password: str | None, lock_wait: float = SQLITE_BUSY_TIMEOUT
    ) -> None:
        #: PostgreSQL waits for a table lock forever by default: a session someone left
        #: open in psql would hang every run. Bounded like SQLite's busy timeout, by the
        #: lock-timeout setting (at least a second: brief row locks of other pipelines
        #: are normal, and PostgreSQL reads 0 as "wait forever").
        self.lock_wait_ms = max(int(lock_wait * 1000), 1000)
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise StoreUnusable(
                "fingerprint_store_path looks like a PostgreSQL URL but cannot be read; "
                "expected postgresql://user@host:port/dbname"
            ) from None
        if "@" in (parsed.host or ""):
            # An '@' left unencoded in the password (`user:p@ss@host`): the URL reads as
            # host 'ss@host', and showing it (or the driver's "could not translate host
            # name") would show the rest of the password.
            raise StoreUnusable(
                "fingerprint_store_path's URL has more than one '@' before its host: write "
                "an '@' in the user name or password as %40, or give the password in "
                "fingerprint_store_password"
            )
        if parsed.password is None and password:
            parsed = parsed.set(password=password)
        self.url: URL = parsed.set(drivername=_pg_driver())
        self.schema = schema
        # libpq also takes the password as a query parameter (`?password=…`), which
        # `hide_password` does not hide: it is masked like the userinfo's.
        query = parsed.query.get("password")
        in_query = (query,) if isinstance(query, str) else tuple(query or ())
        self.secrets = tuple(s for s in (parsed.password, password, *in_query) if s)
        shown = parsed.difference_update_query(["password"]).render_as_string(hide_password=True)
        if in_query:
            shown += ("&" if "?" in shown else "?") + "password=***"
        self.display = f"{shown} (schema {schema})"

    def insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def errors(self) -> tuple[type[BaseException], ...]:
        return (SQLAlchemyError, OSError)

    def connect(self, *, read_only: bool) -> Connection | None:
        engine = create_engine(
            self.url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",  # transactions are begun by hand (begin_sql)
            connect_args={
                "connect_timeout": 10,
                "application_name": "target-omnisend",  # what pg_stat_activity shows
                # A run may sit idle on its connection for the length of a rate-limited
                # send: keepalives stop a firewall from silently dropping it, and a dead
                # peer is found in about a minute instead of never.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        )

        @event.listens_for(engine, "connect")
        def _session(dbapi_connection: Any, record: Any) -> None:
            del record
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {self.lock_wait_ms}")
                # The server's side of the same keepalives: a run whose network was cut
                # leaves its pipeline lock (a session advisory lock) for about a minute,
                # not the server's default two hours of "still using the store".
                for name, value in (("idle", 30), ("interval", 10), ("count", 3)):
                    cursor.execute(f"SET tcp_keepalives_{name} = {value}")
                if read_only:
                    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

        conn = engine.connect().execution_options(schema_translate_map={None: self.schema})
        if read_only and not self._schema_exists(conn):
            conn.close()
            return None
        return conn

    def _schema_exists(self, conn: Connection) -> bool:
        sql = text("SELECT 1 FROM pg_namespace WHERE nspname = :s")
        return conn.execute(sql, {"s": self.schema}).first() is not None

    def prepare(self, conn: Connection) -> None:
        del conn

    def set_up(self, conn: Connection) -> None:
        """Two runs setting up one new store at once: the first creates the schema and
        tables, the second waits (an advisory lock held until the setup transaction
        ends), then finds them made."""
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:c, :k)"),
            {"c": _PG_LOCK_CLASS, "k": _int32("setup", self.schema)},
        )
        if not self._schema_exists(conn):
            quoted = conn.dialect.identifier_preparer.quote_identifier(self.schema)
            conn.exec_driver_sql(f"CREATE SCHEMA {quoted}")

    def copy_to_memory(self, conn: Connection) -> Connection:
        del conn
        raise StoreUnusable(
            f"the fingerprint store {self.display} has an older layout; a dry run cannot "
            "upgrade it: run once without dry_run"
        )

    def pipeline_lock(self, conn: Connection, key: str) -> PipelineLock:
        return _AdvisoryLock(conn, _int32(self.schema, key))


def backend_for(
    location: str | Path, schema: str, password: str | None, lock_wait: float = SQLITE_BUSY_TIMEOUT
) -> Backend:
    if is_postgres(location):
        return PostgresSchema(str(location), schema, password, lock_wait)
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0][:40]
        raise StoreUnusable(
            f"fingerprint_store_path is a {scheme}:// URL; it takes a file path (SQLite) or "
            "a postgresql://user@host:port/dbname URL"
        )
    return SqliteFile(location)


def store_failure(backend: Backend, what: str, exc: BaseException) -> StoreError:
    """One line naming the store and what failed, with no password in it."""
    orig = getattr(exc, "orig", None)
    reason = " ".join(str(orig or exc).split()) or type(exc).__name__
    if getattr(orig, "sqlstate", None) == "55P03":  # lock_not_available: lock_timeout hit
        reason = (
            "another session holds a lock on its tables longer than "
            "fingerprint_store_lock_timeout (a transaction left open in psql?)"
        )
    if len(reason) > 300:
        reason = reason[:300] + "…"
    message = (
        f"the fingerprint store {backend.display} failed while {what} ({reason}); fix or "
        "replace it (a new store costs one full send) or set fingerprint_store_path"
    )
    return StoreError(one_line_error(message, backend.secrets))
