"""Both fingerprint-store backends as tests reach them: an SQLite file in the test's
directory, or a fresh schema in the throwaway PostgreSQL cluster of
`tests/test_postgres_e2e.py` (started by the suite itself). Shared by the store tests."""

from __future__ import annotations

import fcntl
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from target_omnisend.store import FingerprintStore
from tests.test_postgres_e2e import Cluster

#: Trust authentication accepts any password: this one must never reach any output.
PASSWORD = "pg-s3cret-Hunter2-do-not-log"


@dataclass
class Where:
    """One store location: the settings a user would give, and probes for the tests."""

    kind: str
    path: str
    schema: str = "target_omnisend"
    cluster: Cluster | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The target's settings for this store."""
        return {"fingerprint_store_path": self.path, "fingerprint_store_schema": self.schema}

    def open(self, scope: str = "scope", config_hash: str = "hash", **kw: Any) -> FingerprintStore:
        cls = kw.pop("cls", FingerprintStore)
        return cls(self.path, scope, config_hash, schema=self.schema, **kw)

    def table(self, name: str) -> str:
        return f'"{self.schema}".{name}' if self.kind == "postgres" else name

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run SQL on the store from outside the target (as a user inspecting it would)."""
        if self.kind == "postgres":
            url = self.path.replace("postgresql://", "postgresql+psycopg://", 1)
        else:
            url = f"sqlite:///{self.path}"
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                if self.kind == "postgres":  # as the README says: SET search_path TO …
                    conn.execute(text(f'SET search_path TO "{self.schema}"'))
                result = conn.execute(text(statement))
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def pipeline_locked(self) -> bool:
        """Does some run hold a pipeline lock on this store right now?"""
        if self.kind == "postgres":
            assert self.cluster is not None
            query = "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"
            return self.cluster.rows("postgres", query) != [{"n": "0"}]
        locks = Path(self.path).parent / f"{Path(self.path).name}.locks"
        for lock in locks.glob("*.lock") if locks.exists() else []:
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(fd)
        return False

    def kill_connections(self) -> None:
        """What a database restart or a network cut does to a run's connection."""
        assert self.cluster is not None
        mine = "FROM pg_stat_activity WHERE application_name = 'target-omnisend'"
        # The timeout makes the call wait until the backends are gone (PostgreSQL 14+).
        self.cluster.psql("postgres", f"SELECT pg_terminate_backend(pid, 10000) {mine};")
        assert self.cluster.rows("postgres", f"SELECT count(*) AS n {mine}") == [{"n": "0"}]


def pg_url(cluster: Cluster, password: str = PASSWORD) -> str:
    return f"postgresql://postgres:{password}@127.0.0.1:{cluster.port}/postgres"


def where_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if kind == "sqlite":
        return Where("sqlite", str(tmp_path / "store" / "fingerprints.sqlite"))
    cluster: Cluster = request.getfixturevalue("cluster")
    return Where("postgres", pg_url(cluster), f"t_{uuid.uuid4().hex[:12]}", cluster)
