"""Issue 7, fault matrix: whatever Omnisend (or the network) does, every record a tap
hands over ends in exactly one place — stored by the server, or in the rejected file
with a reason — or the run exits non-zero with one line and no STATE past the last
record the server holds.

The target runs as a real subprocess against the local Omnisend-compatible server. The
input is paced like a real tap (a page of records, a STATE saying how far it got, a
short pause) and the SDK's drain cadence is shortened from 5 minutes to a fraction of a
second, so STATE messages are emitted *during* the run. Each STATE is checked the
moment it appears on stdout, against what the server holds at that moment.

The helpers here are shared by test_resume, test_bad_input and test_security.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import REPO, TARGET_BIN, read_jsonl, stored_email
from tests.omnisend_server import FaultRule, OmnisendServer

pytestmark = pytest.mark.e2e

STREAM = "s"
SCHEMA = {
    "type": "SCHEMA",
    "stream": STREAM,
    "schema": {
        "type": "object",
        "properties": {
            "i": {"type": "integer"},
            "email": {"type": ["string", "null"]},
            "first_name": {"type": ["string", "null"]},
        },
    },
    "key_properties": [],
}


def email_of(i: int) -> str:
    return f"user{i:05d}@example.com"


def make_records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"i": i, "email": email_of(i), "first_name": f"Name{i}"} for i in range(start, start + n)
    ]


def state_message(offset: int) -> dict[str, Any]:
    return {"type": "STATE", "value": {"bookmarks": {STREAM: {"offset": offset}}}}


def pages(
    records: list[dict[str, Any]], every: int = 100, start: int = 0, schema: dict | None = None
) -> list[list[dict[str, Any]]]:
    """Singer messages in pages: each page is `every` records then a STATE with the
    offset (absolute position in the tap's output) reached after them."""
    out: list[list[dict[str, Any]]] = [[schema or SCHEMA]]
    for first in range(0, len(records), every):
        chunk = records[first : first + every]
        page = [{"type": "RECORD", "stream": STREAM, "record": r} for r in chunk]
        page.append(state_message(start + first + len(chunk)))
        out.append(page)
    return out


def to_bytes(messages: Iterable[dict[str, Any] | str]) -> bytes:
    return b"".join(
        (m if isinstance(m, str) else json.dumps(m, ensure_ascii=False)).encode() + b"\n"
        for m in messages
    )


def held_emails(server: OmnisendServer) -> set[str]:
    return {stored_email(c) for c in server.contacts()}


def rejected_indexes(path: Path) -> set[int]:
    return {r["record"]["i"] for r in read_jsonl(path) if isinstance(r.get("record"), dict)}


@dataclass
class Checkpoint:
    """A STATE the target emitted, and what the server and the rejected file held
    at the moment it appeared on stdout."""

    state: dict[str, Any]
    held: set[str]
    rejected: set[int]

    @property
    def offset(self) -> int:
        return int(self.state["bookmarks"][STREAM]["offset"])


@dataclass
class LiveRun:
    returncode: int
    stdout: str
    stderr: str
    checkpoints: list[Checkpoint] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def states(self) -> list[dict[str, Any]]:
        return [c.state for c in self.checkpoints]

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "| ERROR" in line]


def _connection_checks(server: OmnisendServer | None) -> int:
    return server.count(method="GET", path_prefix="/contacts") if server is not None else 0


def write_config(config: dict[str, Any], workdir: Path) -> Path:
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return path


def run_live(
    server: OmnisendServer | None,
    config: dict[str, Any],
    input_pages: list[list[dict[str, Any] | str]] | bytes,
    workdir: Path,
    *,
    drain_seconds: float = 0.2,
    page_pause: float = 0.1,
    kill_after_states: int | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> LiveRun:
    """Run the target on paced input; snapshot the server at every STATE it prints.

    `kill_after_states`: SIGKILL the target right after it printed that many STATEs.
    """
    # STATE comes out at every checkpoint (`state_interval`): short here, so a test of a
    # few seconds sees several.
    command = [str(TARGET_BIN)]
    if args is not None:
        command += args
        env = {"TARGET_OMNISEND_STATE_INTERVAL": str(drain_seconds), **(env or {})}
    else:
        config = {**config, "state_interval": drain_seconds}
        command += ["--config", str(write_config(config, workdir))]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    err_chunks: list[bytes] = []
    started = time.monotonic()

    connected_before = _connection_checks(server)

    def feed() -> None:
        # A tap starts producing once the target is up: wait for its connection check,
        # or the whole input would sit in the pipe before the target reads a line.
        deadline = time.monotonic() + 30
        while (
            server is not None
            and _connection_checks(server) == connected_before
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        try:
            if isinstance(input_pages, bytes):
                stdin.write(input_pages)
            else:
                for page in input_pages:
                    stdin.write(to_bytes(page))
                    stdin.flush()
                    if page_pause:
                        time.sleep(page_pause)
        except (BrokenPipeError, ValueError, OSError):
            pass  # the target stopped reading (failed or killed): that is what we test
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def drain_stderr() -> None:
        err_chunks.append(stderr.read())

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain_stderr)]
    for thread in threads:
        thread.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(timeout, expire)
    watchdog.start()
    rejected_path = Path(config.get("rejected_records_path") or workdir / "rejected.jsonl")
    checkpoints: list[Checkpoint] = []
    out_lines: list[str] = []
    try:
        for raw in stdout:
            line = raw.decode()
            out_lines.append(line)
            if not line.strip().startswith("{"):
                continue
            state = json.loads(line)
            held = held_emails(server) if server is not None else set()
            checkpoints.append(Checkpoint(state, held, rejected_indexes(rejected_path)))
            if kill_after_states is not None and len(checkpoints) >= kill_after_states:
                proc.kill()
                break
        returncode = proc.wait()
    finally:
        watchdog.cancel()
    for thread in threads:
        thread.join(timeout=30)
    assert not timed_out.is_set(), f"target did not finish within {timeout}s"
    return LiveRun(
        returncode,
        "".join(out_lines),
        b"".join(err_chunks).decode("utf-8", "replace"),
        checkpoints,
        time.monotonic() - started,
    )


# -- the promises, as assertions ---------------------------------------------------------


def assert_states_cover_only_final_records(
    run: LiveRun, records: list[dict[str, Any]], start: int = 0
) -> None:
    """Every STATE emitted covers only records the server held (or that were in the
    rejected file) when the STATE appeared. `start` = offset of records[0]."""
    previous = start
    for checkpoint in run.checkpoints:
        assert checkpoint.offset >= previous, "STATE went backwards"
        previous = checkpoint.offset
        missing = [
            r["i"]
            for r in records[: checkpoint.offset - start]
            if r["email"] not in checkpoint.held and r["i"] not in checkpoint.rejected
        ]
        assert not missing, (
            f"STATE offset {checkpoint.offset} emitted while records {missing[:5]} "
            f"({len(missing)} in all) were neither stored nor rejected"
        )


def assert_reconciled(
    run: LiveRun,
    records: list[dict[str, Any]],
    server: OmnisendServer,
    workdir: Path,
    *,
    expect_rejected: set[int] | None = None,
    stored_before: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, Any]:
    """A completed run: every record in exactly one place, and the counters agree with
    the server and the rejected file. Returns the stream's summary counters."""
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert_states_cover_only_final_records(run, records, start=records[0]["i"] if records else 0)
    assert run.checkpoints, "a completed run must emit its final STATE"
    assert run.checkpoints[-1].offset == (records[-1]["i"] + 1 if records else 0)

    held = held_emails(server)
    rejected = read_jsonl(workdir / "rejected.jsonl")
    rejected_idx = [r["record"]["i"] for r in rejected]
    assert len(rejected_idx) == len(set(rejected_idx)), "a record was rejected twice"
    assert all(r["reason"] and r["code"] for r in rejected)
    for record in records:
        stored = record["email"] in held and record["email"] not in stored_before
        assert stored != (record["i"] in rejected_idx), (
            f"record {record['i']} is {'in both places' if stored else 'nowhere'}"
        )
    if expect_rejected is not None:
        assert set(rejected_idx) == expect_rejected

    counts = json.loads((workdir / "summary.json").read_text())["streams"][STREAM]
    assert counts["received"] == len(records)
    assert counts["rejected"] == len(rejected)
    assert (
        counts["delivered"] + counts["rejected"] + counts["merged_duplicates"] + counts["unchanged"]
        == counts["received"]
    ), counts
    assert counts["delivered"] + counts["unchanged"] == len(records) - len(rejected)
    line = (
        f"received={len(records)} delivered={counts['delivered']} rejected={len(rejected)} "
        f"unchanged={counts['unchanged']}"
    )
    assert line in run.stderr
    return counts


def assert_failed_cleanly(run: LiveRun, records: list[dict[str, Any]], *expected: str) -> None:
    """A failed run: exit 1, exactly one ERROR line naming the cause, no traceback, no
    STATE past what the server holds, and no final STATE."""
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert len(run.error_lines) == 1, run.error_lines
    for text in expected:
        assert text in run.error_lines[0], run.error_lines[0]
    assert_states_cover_only_final_records(run, records)
    assert all(c.offset < len(records) for c in run.checkpoints), "STATE advanced to the end"


# -- fixtures ------------------------------------------------------------------------------


#: Where Omnisend's documentation is silent the local server can be told to behave each
#: plausible way; the fault matrix runs against each (issue 13).
CHARACTERS: dict[str, dict[str, Any]] = {
    "documented": {},
    "busy_oldest_first": {
        "batch_list_order": "oldest_first",
        "foreign_batches": 300,
        "foreign_batches_per_minute": 120,
        "rate_limit_reset": "epoch",
    },
    "unordered_unechoed": {
        "batch_list_order": "unordered",
        "foreign_batches": 300,
        "items_order": "shuffled",
        "echo_item_request": False,
        "rate_limit_headers": False,
    },
}


@pytest.fixture
def slow_server(request: pytest.FixtureRequest) -> Iterable[OmnisendServer]:
    """Batches take a moment to process, as Omnisend's do: a STATE written before its
    batches were confirmed would be caught holding records the server does not have."""
    character = CHARACTERS[getattr(request, "param", "documented")]
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.1, **character) as srv:
        yield srv


@pytest.fixture
def fault_config(slow_server: OmnisendServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "api_key": API_KEY,
        "api_url": slow_server.url,
        "rejected_records_path": str(tmp_path / "rejected.jsonl"),
        "summary_path": str(tmp_path / "summary.json"),
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
        "batch_poll_interval": 0.05,
        "request_timeout": 2,
        "max_retries": 4,
        # The local server has no rate limit unless a fault says so: no client pacing.
        "requests_per_minute": 100_000,
        "tags_requests_per_minute": 100_000,
    }


N = 600  # 6 Omnisend batches, 6 pages with a STATE each


def _run(
    server: OmnisendServer, config: dict, tmp_path: Path, n: int = N, **kwargs: Any
) -> tuple[LiveRun, list[dict[str, Any]]]:
    records = make_records(n)
    config.setdefault("batch_size", 100)
    return run_live(server, config, pages(records), tmp_path, **kwargs), records


# -- faults the run survives: everything accounted for --------------------------------------

SURVIVABLE: dict[str, Callable[[], list[FaultRule]]] = {
    "429_storm": lambda: [
        FaultRule(kind="rate_limit", after=1, times=40, headers={"Retry-After": "0.02"})
    ],
    "5xx_burst": lambda: [
        FaultRule(method="POST", path="/batches", kind="status", status=503, times=3),
        FaultRule(method="GET", path="/batches", kind="status", status=502, times=2),
        FaultRule(method="POST", path="/contacts/tags", kind="status", status=500, times=1),
    ],
    "slower_than_timeout": lambda: [
        FaultRule(method="POST", path="/batches", kind="delay", seconds=1.2, times=2),
        FaultRule(method="GET", path="/batches", kind="delay", seconds=1.2, times=1),
    ],
    "reset_before_applying": lambda: [
        FaultRule(method="POST", path="/batches", kind="reset", apply=False, times=3),
        FaultRule(method="GET", path="/batches", kind="reset", apply=False, times=2),
    ],
    "reset_after_applying": lambda: [
        FaultRule(method="POST", path="/batches", kind="reset", apply=True, times=3),
        FaultRule(method="POST", path="/contacts/tags", kind="reset", apply=True, times=1),
    ],
    "malformed_body": lambda: [
        FaultRule(method="POST", path="/batches", kind="malformed", times=2),
        FaultRule(method="POST", path="/batches", kind="malformed", apply=True, times=1),
        FaultRule(method="GET", path="/batches", kind="malformed", status=502, times=2),
    ],
    "batch_stopped": lambda: [FaultRule(kind="batch_stopped", times=3)],
    "batch_stuck_once": lambda: [FaultRule(kind="batch_stuck", times=1)],
}


@pytest.mark.parametrize("slow_server", list(CHARACTERS), indirect=True)
@pytest.mark.parametrize("fault", list(SURVIVABLE))
def test_run_survives_fault_with_every_record_accounted_for(
    fault: str, slow_server: OmnisendServer, fault_config: dict, tmp_path: Path
) -> None:
    if fault == "batch_stuck_once":
        fault_config["batch_timeout"] = 1
    fault_config["request_timeout"] = 0.5
    for rule in SURVIVABLE[fault]():
        slow_server.add_fault(rule)
    run, records = _run(slow_server, fault_config, tmp_path)

    counts = assert_reconciled(run, records, slow_server, tmp_path, expect_rejected=set())
    assert counts["delivered"] == N
    assert all(fired > 0 for _, fired in slow_server.fault_hits()), slow_server.fault_hits()
    assert len(run.checkpoints) >= 2, "STATE should be emitted during the run, not only at the end"
    contacts = {stored_email(c): c for c in slow_server.contacts()}
    assert all(contacts[r["email"]]["firstName"] == r["first_name"] for r in records)


@pytest.mark.parametrize("slow_server", list(CHARACTERS), indirect=True)
def test_per_item_errors_reject_only_those_items(
    slow_server: OmnisendServer, fault_config: dict, tmp_path: Path
) -> None:
    slow_server.add_fault(FaultRule(kind="item_error", email_pattern=r"user\d{4}7@", status=400))
    # A transient per-item failure is retried in a new batch, then delivered.
    slow_server.add_fault(
        FaultRule(kind="item_error", email_pattern=r"user\d{4}3@", status=500, times=20)
    )
    run, records = _run(slow_server, fault_config, tmp_path)

    refused = {r["i"] for r in records if r["i"] % 10 == 7}
    assert_reconciled(run, records, slow_server, tmp_path, expect_rejected=refused)
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert {r["code"] for r in rejected} == {"refused_by_omnisend"}
    assert all(r["record"]["email"] == email_of(r["record"]["i"]) for r in rejected)
    assert all(email_of(i) not in run.stderr for i in refused)  # masked in the log


def test_batches_stopped_every_time_end_in_the_rejected_file_with_a_reason(
    slow_server: OmnisendServer, fault_config: dict, tmp_path: Path
) -> None:
    """Omnisend stops every batch half-way: the unprocessed half is re-sent (3 attempts
    per item), and what never gets processed is rejected — never lost, never silent."""
    slow_server.add_fault(FaultRule(kind="batch_stopped"))
    run, records = _run(slow_server, fault_config, tmp_path, n=200)

    counts = assert_reconciled(run, records, slow_server, tmp_path)
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert rejected and {r["code"] for r in rejected} == {"delivery_failed"}
    assert all("3 attempts" in r["reason"] for r in rejected)
    assert counts["delivered"] > 0


# -- faults that end the run: loud, one line, STATE never ahead of the server --------------

FATAL: dict[str, tuple[Callable[[], list[FaultRule]], tuple[str, ...]]] = {
    "5xx_beyond_retries": (
        lambda: [FaultRule(method="POST", path="/batches", kind="status", status=500, after=2)],
        ("Omnisend did not accept POST /batches", "HTTP 500"),
    ),
    "timeouts_beyond_retries": (
        lambda: [FaultRule(method="POST", path="/batches", kind="delay", seconds=1.5, after=2)],
        ("Omnisend did not accept POST /batches", "Timeout"),
    ),
    "resets_beyond_retries": (
        lambda: [FaultRule(method="POST", path="/batches", kind="reset", after=2)],
        ("Omnisend did not accept POST /batches", "ConnectionError"),
    ),
    "malformed_beyond_retries": (
        lambda: [FaultRule(method="GET", path="/batches", kind="malformed", after=3)],
        ("Omnisend did not accept GET /batches", "not JSON"),
    ),
    "429_forever": (
        lambda: [
            FaultRule(
                method="POST",
                path="/batches",
                kind="rate_limit",
                after=2,
                headers={"Retry-After": "0.005"},
            )
        ],
        ("kept answering 429",),
    ),
    "batch_stuck_after_resend": (
        lambda: [FaultRule(kind="batch_stuck", after=2)],
        ("has not finished batch", "even after re-sending it"),
    ),
    "401_key_revoked_mid_run": (
        lambda: [FaultRule(kind="status", status=401, after=8)],
        ("Omnisend refused the API key (HTTP 401)",),
    ),
    "410_version_retired_mid_run": (
        lambda: [FaultRule(kind="status", status=410, after=8)],
        ("retired API version", "HTTP 410"),
    ),
}


@pytest.mark.parametrize("fault", list(FATAL))
def test_run_fails_loudly_without_state_past_the_server(
    fault: str, slow_server: OmnisendServer, fault_config: dict, tmp_path: Path
) -> None:
    rules, expected = FATAL[fault]
    fault_config.update(request_timeout=0.5, max_retries=2, batch_timeout=1)
    for rule in rules():
        slow_server.add_fault(rule)
    run, records = _run(slow_server, fault_config, tmp_path, n=1000, page_pause=0.15)

    assert_failed_cleanly(run, records, *expected)
    assert "No STATE was emitted past the last delivered record" in run.error_lines[0]
    # Nothing was rejected for a fault that is Omnisend's, not the record's.
    assert read_jsonl(tmp_path / "rejected.jsonl") == []
    assert not (tmp_path / "summary.json").exists()


def test_mid_run_failure_keeps_the_states_it_had_earned(
    slow_server: OmnisendServer, fault_config: dict, tmp_path: Path
) -> None:
    """The failure comes late: earlier STATEs were emitted (the server holds what they
    cover), none afterwards, and a re-run from the last one completes the segment."""
    fault_config.update(max_retries=1)
    slow_server.add_fault(FaultRule(method="POST", path="/batches", kind="status", after=6))
    run, records = _run(slow_server, fault_config, tmp_path, n=1200, page_pause=0.15)

    assert_failed_cleanly(run, records, "HTTP 500")
    assert run.checkpoints, "the first pages were delivered: their STATE must be emitted"
    resume_at = run.checkpoints[-1].offset
    assert 0 < resume_at < len(records)

    slow_server.clear_faults()
    (tmp_path / "rejected.jsonl").unlink(missing_ok=True)
    rest = records[resume_at:]
    rerun = run_live(slow_server, fault_config, pages(rest, start=resume_at), tmp_path)
    assert_reconciled(rerun, rest, slow_server, tmp_path, expect_rejected=set())
    assert held_emails(slow_server) == {r["email"] for r in records}


def test_a_batch_accepted_without_a_batch_id_is_sent_again(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """A 2xx whose body carries no batchID cannot be confirmed: the batch is re-sent
    (an upsert, safe to repeat) rather than failing the run or trusting it blindly."""
    server.add_fault(
        FaultRule(method="POST", path="/batches", kind="status", status=200, body="{}", times=2)
    )
    records = make_records(30)
    run = run_live(server, config, pages(records, every=30), tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert held_emails(server) == {r["email"] for r in records}
    assert server.count(method="POST", path_prefix="/batches", status=200) >= 3
