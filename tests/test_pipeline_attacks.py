"""Attacks on the run pipeline's promises (issue 14), each through the real CLI against
the local Omnisend: cancel at any moment, dry runs on odd stores, mirror on partial or
odd input, shared stores, the newest version of a contact, counters that reconcile.

Every test states the promise it attacks in its name; the README's "Sync modes, tags and
re-runs" and "Reliability → Cancel, dry run, partial reads, shared stores" are the spec.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import (
    TARGET_BIN,
    create_contact,
    encode,
    read_jsonl,
    run_target,
    stored_email,
)
from tests.omnisend_server import FaultRule, OmnisendServer

DATA = Path(__file__).parent / "data_files" / "attacks"
TAG = "segment:vip"
SCHEMA = {
    "type": "object",
    "properties": {
        "email": {"type": "string"},
        "first_name": {"type": ["string", "null"]},
        "loyalty_tier": {"type": ["string", "null"]},
    },
}


# -- building input ---------------------------------------------------------------------


def email(i: int) -> str:
    return f"member{i}@example.com"


def members(start: int, stop: int) -> set[str]:
    return {email(i) for i in range(start, stop)}


def schema(stream: str = "vip", properties: dict[str, Any] | None = None) -> dict[str, Any]:
    body = SCHEMA if properties is None else {"type": "object", "properties": properties}
    return {"type": "SCHEMA", "stream": stream, "schema": body, "key_properties": ["email"]}


def activate(stream: str = "vip") -> dict[str, Any]:
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": 1}


def record(i: int, stream: str = "vip", tier: str = "gold", **extra: Any) -> dict[str, Any]:
    body = {"email": email(i), "first_name": f"M{i}", "loyalty_tier": tier, **extra}
    return {"type": "RECORD", "stream": stream, "record": body}


def state(value: Any) -> dict[str, Any]:
    return {"type": "STATE", "value": value}


def full_read(
    indices: Iterable[int], stream: str = "vip", tier: str = "gold"
) -> list[dict[str, Any]]:
    """A tap's full-table read of one segment: SCHEMA, ACTIVATE_VERSION, records, STATE."""
    rows = list(indices)
    return [
        schema(stream),
        activate(stream),
        *(record(i, stream, tier) for i in rows),
        state({"bookmarks": {stream: {"rows": len(rows)}}}),
    ]


# -- reading what happened --------------------------------------------------------------


def tagged(server: OmnisendServer, tag: str = TAG) -> set[str]:
    return {stored_email(c) for c in server.contacts() if tag in (c.get("tags") or [])}


def held(server: OmnisendServer) -> set[str]:
    return {stored_email(c) for c in server.contacts()}


def summary(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(config["summary_path"]).read_text())


def ok(run: Any) -> Any:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run


def reconciles(counts: dict[str, Any]) -> bool:
    parts = ("delivered", "rejected", "merged_duplicates", "unchanged")
    return counts["received"] == sum(counts[p] for p in parts)


@pytest.fixture
def store_config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    config["fingerprint_store_path"] = str(tmp_path / "store" / "fingerprints.sqlite")
    config["summary_path"] = str(tmp_path / "summary.json")
    config["segment_tag"] = TAG
    return config


@pytest.fixture
def mirror_config(store_config: dict[str, Any]) -> dict[str, Any]:
    store_config.update(sync_mode="mirror", mirror_confirm_runs=1)
    return store_config


# -- dry run ------------------------------------------------------------------------------


def _old_schema_store(path: Path) -> bytes:
    """A store as the release before partitions left it (tables `fingerprints`, `scopes`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE fingerprints (
                scope TEXT NOT NULL, stream TEXT NOT NULL, email TEXT NOT NULL,
                fp BLOB NOT NULL, seen_run TEXT, PRIMARY KEY (scope, stream, email)
            ) WITHOUT ROWID;
            CREATE TABLE scopes (scope TEXT PRIMARY KEY, config_hash TEXT NOT NULL);
            INSERT INTO scopes VALUES ('s', 'h');
            INSERT INTO fingerprints VALUES ('s', 'vip', 'member0@example.com', x'00', NULL);
            """
        )
    db.close()
    return path.read_bytes()


def test_dry_run_on_a_store_from_an_older_release_previews_and_leaves_it_alone(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    path = Path(mirror_config["fingerprint_store_path"])
    before = _old_schema_store(path)
    dry = {**mirror_config, "dry_run": True, "dry_run_path": str(tmp_path / "dry.jsonl")}
    run = ok(run_target(dry, full_read(range(10)), workdir=tmp_path))
    assert run.stdout.strip() == ""
    assert path.read_bytes() == before
    planned = read_jsonl(tmp_path / "dry.jsonl")
    batches = [p["body"] for p in planned if p["path"].endswith("/batches")]
    assert sum(len(body["items"]) for body in batches) == 10
    assert not Path(str(path) + "-wal").exists()
    assert held(server) == set()
