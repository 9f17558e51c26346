"""Issue 7, crash and resume: kill -9 the target mid-run, re-run the tap from the last
STATE the target printed, and every contact is in Omnisend — none lost — with the
second run's counters reconciling."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import read_jsonl, stored_email
from tests.omnisend_server import OmnisendServer
from tests.test_faults import (
    STREAM,
    LiveRun,
    assert_reconciled,
    assert_states_cover_only_final_records,
    held_emails,
    make_records,
    pages,
    run_live,
)

pytestmark = pytest.mark.e2e

TOTAL = 3000


@pytest.fixture
def laggy_server() -> Iterator[OmnisendServer]:
    """Every request takes 5-20 ms and batches 150 ms: work is always in flight."""
    with OmnisendServer(api_keys=(API_KEY,), latency=(0.005, 0.02), batch_delay=0.15) as srv:
        yield srv


@pytest.fixture
def resume_config(laggy_server: OmnisendServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "api_key": API_KEY,
        "api_url": laggy_server.url,
        "rejected_records_path": str(tmp_path / "rejected.jsonl"),
        "summary_path": str(tmp_path / "summary.json"),
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
        "batch_poll_interval": 0.05,
        "requests_per_minute": 100_000,
        "tags_requests_per_minute": 100_000,
    }


def _tags_settled(server: OmnisendServer, emails: set[str]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        tagged = {
            stored_email(c)
            for c in server.contacts()
            if f"segment:{STREAM}" in (c.get("tags") or [])
        }
        if tagged >= emails:
            return True
        time.sleep(0.1)
    return False


def _kill_mid_run(
    server: OmnisendServer,
    config: dict[str, Any],
    records: list[dict[str, Any]],
    tmp_path: Path,
    kill_after_states: int,
) -> LiveRun:
    """The first night: input paced so work is always in flight, killed with SIGKILL
    once `kill_after_states` STATE messages are out."""
    first = run_live(
        server,
        config,
        pages(records),
        tmp_path,
        drain_seconds=0.3,
        page_pause=0.2,  # ~6 s of input: several checkpoints come out before the end
        kill_after_states=kill_after_states,
    )
    assert first.returncode == -9, first.stderr[-2000:]
    assert_states_cover_only_final_records(first, records)
    return first


@pytest.mark.parametrize("kill_after_states", [1, 4])
def test_kill_9_mid_run_then_resume_from_the_last_state_loses_nothing(
    laggy_server: OmnisendServer,
    resume_config: dict,
    tmp_path: Path,
    kill_after_states: int,
) -> None:
    records = make_records(TOTAL)

    first = _kill_mid_run(laggy_server, resume_config, records, tmp_path, kill_after_states)
    assert len(first.checkpoints) == kill_after_states
    resume_at = first.checkpoints[-1].offset
    assert 0 < resume_at < TOTAL, "the kill must land mid-run"
    assert not (tmp_path / "summary.json").exists()
    # The tap restarts from the bookmark the target last confirmed.
    assert first.checkpoints[-1].state == {"bookmarks": {STREAM: {"offset": resume_at}}}

    rest = records[resume_at:]
    second = run_live(laggy_server, resume_config, pages(rest, start=resume_at), tmp_path)

    counts = assert_reconciled(second, rest, laggy_server, tmp_path, expect_rejected=set())
    assert held_emails(laggy_server) == {r["email"] for r in records}, "a contact was lost"
    # Records past the bookmark that the killed run had confirmed are skipped as
    # unchanged (their fingerprints were committed once confirmed, at the latest with
    # the STATE); the rest are sent.
    assert counts["delivered"] + counts["unchanged"] == len(rest)
    assert _tags_settled(laggy_server, {r["email"] for r in records}), "a contact lost its tag"
    assert read_jsonl(tmp_path / "rejected.jsonl") == []


def test_resume_without_the_fingerprint_store_resends_and_still_loses_nothing(
    laggy_server: OmnisendServer, resume_config: dict, tmp_path: Path
) -> None:
    """The store is an optimisation: losing it (or disabling it) costs re-sends only."""
    resume_config["fingerprint_store_path"] = ""
    records = make_records(1500)
    first = _kill_mid_run(laggy_server, resume_config, records, tmp_path, kill_after_states=2)
    resume_at = first.checkpoints[-1].offset
    rest = records[resume_at:]
    second = run_live(laggy_server, resume_config, pages(rest, start=resume_at), tmp_path)
    counts = assert_reconciled(second, rest, laggy_server, tmp_path, expect_rejected=set())
    assert counts["unchanged"] == 0 and counts["delivered"] == len(rest)
    assert held_emails(laggy_server) == {r["email"] for r in records}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["batches"] >= len(rest) // 100
