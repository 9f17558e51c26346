"""Attacks on the run pipeline's promises (issue 14), each through the real CLI against
the local Omnisend: cancel at any moment, dry runs on odd stores, mirror on partial or
odd input, shared stores, the newest version of a contact, counters that reconcile.

Every test states the promise it attacks in its name; the README's "Sync modes, tags and
re-runs" and "Reliability → Cancel, dry run, partial reads, shared stores" are the spec.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
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
from tests.test_omnisend_server import eventually

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
    """Who carries `tag`, once every tag call the target sent has been applied (Omnisend
    answers 202 and applies it later)."""
    assert server.settle(), "the server still had requests or writes pending after 10 s"
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


@pytest.fixture
def segments_config(mirror_config: dict[str, Any]) -> dict[str, Any]:
    """Mirror, one segment tag per stream (`segment:{stream_name}`)."""
    mirror_config["segment_tag"] = "segment:{stream_name}"
    return mirror_config


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


# -- mirror ---------------------------------------------------------------------------------


def test_an_untag_applied_but_never_confirmed_does_not_leave_a_returning_member_untagged(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """Mirror removes the tag, the answer is lost (connection reset after applying, every
    retry): the run fails. When the members come back, they must be tagged again — not
    skipped as 'unchanged' by fingerprints that still say they were delivered and tagged."""
    mirror_config.update(max_retries=1, mirror_max_removal_ratio=0.6)
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    server.add_fault(FaultRule(method="DELETE", path="/contacts/tags", kind="reset", apply=True))
    failed = run_target(mirror_config, full_read(range(5)), workdir=tmp_path)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert tagged(server) == members(0, 5)  # the untag was applied
    server.clear_faults()
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    assert tagged(server) == members(0, 10)


def test_a_mixed_case_email_omnisend_lists_under_the_tag_counts_as_its_present_member(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """Another tool (or a release before lower-casing) created `Member3@Example.com` with
    the segment tag. Its member is in the segment: that contact keeps the tag."""
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    create_contact(
        server.url, API_KEY, "Member3@Example.COM", "nonSubscribed", "2000-01-01T00:00:00Z", [TAG]
    )
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    assert tagged(server) == members(0, 10) | {"Member3@Example.COM"}
    assert summary(mirror_config)["mirror"][TAG]["removed"] == 0


def test_an_input_with_activate_version_and_no_records_removes_nobody_even_at_ratio_one(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """An empty full read looks exactly like a broken source. Even a user who allows any
    share of leavers (ratio 1.0) does not mean 'an empty read empties the segment'."""
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    mirror_config["mirror_max_removal_ratio"] = 1.0
    run = ok(run_target(mirror_config, full_read([]), workdir=tmp_path))
    assert tagged(server) == members(0, 10)
    assert summary(mirror_config)["mirror"][TAG]["removed"] == 0
    assert "removed nothing" in run.stderr


def test_with_ratio_one_a_read_that_still_has_members_may_remove_all_the_others(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """The other side of the line drawn above: ratio 1.0 means 'any share'; one member
    present makes the read a real one."""
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    mirror_config["mirror_max_removal_ratio"] = 1.0
    ok(run_target(mirror_config, full_read([0]), workdir=tmp_path))
    assert tagged(server) == members(0, 1)


@pytest.mark.parametrize("confirm_runs", [1, 2, 3])
def test_a_leaver_loses_the_tag_after_exactly_mirror_confirm_runs_complete_runs(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path, confirm_runs: int
) -> None:
    mirror_config["mirror_confirm_runs"] = confirm_runs
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    for run in range(1, 4):
        ok(run_target(mirror_config, full_read(range(9)), workdir=tmp_path))
        expected = members(0, 9) if run >= confirm_runs else members(0, 10)
        assert tagged(server) == expected, f"after {run} run(s) without member9"


def test_an_incremental_run_between_two_complete_runs_does_not_count_as_one(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """Staged removals count complete runs in a row; a run without ACTIVATE_VERSION
    (incremental) neither advances nor clears the stage."""
    mirror_config["mirror_confirm_runs"] = 2
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    ok(run_target(mirror_config, full_read(range(9)), workdir=tmp_path))
    incremental = [schema(), record(0), state({"bookmarks": {}})]
    ok(run_target(mirror_config, incremental, workdir=tmp_path))
    assert tagged(server) == members(0, 10)
    ok(run_target(mirror_config, full_read(range(9)), workdir=tmp_path))
    assert tagged(server) == members(0, 9)


def test_two_streams_one_tag_with_one_read_incompletely_removes_nothing(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    both = [*full_read(range(0, 10), "vip_eu"), *full_read(range(10, 20), "vip_us")]
    ok(run_target(mirror_config, both, workdir=tmp_path))
    assert tagged(server) == members(0, 20)
    # vip_us is read incrementally this time (no ACTIVATE_VERSION), with one record.
    partial = [*full_read(range(0, 10), "vip_eu"), schema("vip_us"), record(10, "vip_us")]
    run = ok(run_target(mirror_config, partial, workdir=tmp_path))
    assert tagged(server) == members(0, 20)
    assert "vip_us" in summary(mirror_config)["mirror"][TAG]["skipped"]
    assert "removed nothing" in run.stderr


def test_a_stream_renamed_by_a_stream_map_is_mirrored_under_its_new_name(
    server: OmnisendServer, segments_config: dict[str, Any], tmp_path: Path
) -> None:
    """ACTIVATE_VERSION names the tap's stream; the sink (and tag) use the alias."""
    store_config = {**segments_config, "stream_maps": {"vip": {"__alias__": "gold_members"}}}
    ok(run_target(store_config, full_read(range(10)), workdir=tmp_path))
    assert tagged(server, "segment:gold_members") == members(0, 10)
    ok(run_target(store_config, full_read(range(8)), workdir=tmp_path))
    assert tagged(server, "segment:gold_members") == members(0, 8)
    assert tagged(server, "segment:vip") == set()


def test_a_stream_dropped_by_a_stream_map_is_never_mirrored(
    server: OmnisendServer, segments_config: dict[str, Any], tmp_path: Path
) -> None:
    """`stream_maps: {vip: null}` filters the stream out; its ACTIVATE_VERSION must not
    turn into 'every member of segment:vip left'."""
    store_config = {**segments_config, "mirror_max_removal_ratio": 1.0}
    ok(run_target(store_config, full_read(range(10)), workdir=tmp_path))
    dropped = {**store_config, "stream_maps": {"vip": None}}
    ok(run_target(dropped, full_read(range(10)), workdir=tmp_path))
    assert tagged(server, "segment:vip") == members(0, 10)


def test_a_second_schema_for_the_stream_mid_read_keeps_the_read_complete(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """The tap widens the schema halfway (a new column): the SDK makes a new sink and
    re-registers the stream maps; the read is still the full read ACTIVATE_VERSION began."""
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    wider = {**SCHEMA["properties"], "city": {"type": ["string", "null"]}}
    messages = [
        schema(),
        activate(),
        *(record(i) for i in range(4)),
        schema(properties=wider),
        *(record(i, city="Vilnius") for i in range(4, 8)),
        state({"bookmarks": {"vip": {}}}),
    ]
    ok(run_target(mirror_config, messages, workdir=tmp_path))
    assert tagged(server) == members(0, 8)
    assert server.contact(email(5))["city"] == "Vilnius"


def test_full_refresh_under_mirror_sends_everything_and_still_untags_only_leavers(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    refresh = {**mirror_config, "full_refresh": True}
    ok(run_target(refresh, full_read(range(9)), workdir=tmp_path))
    assert summary(refresh)["streams"]["vip"]["delivered"] == 9
    assert tagged(server) == members(0, 9)
    # member9 comes back: tagged again although its data never changed.
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    assert tagged(server) == members(0, 10)


def test_a_member_omnisend_refuses_this_run_keeps_the_tag(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    server.add_fault(FaultRule(kind="item_error", email_pattern=r"^member[27]@"))
    ok(run_target(mirror_config, full_read(range(10), tier="platinum"), workdir=tmp_path))
    rejected = read_jsonl(Path(mirror_config["rejected_records_path"]))
    assert sorted(r["record"]["email"] for r in rejected) == [email(2), email(7)]
    assert tagged(server) == members(0, 10)


def test_the_same_member_in_two_segments_loses_only_the_tag_of_the_one_it_left(
    server: OmnisendServer, segments_config: dict[str, Any], tmp_path: Path
) -> None:
    store_config = segments_config
    both = [*full_read(range(0, 10), "gold"), *full_read(range(5, 15), "silver")]
    ok(run_target(store_config, both, workdir=tmp_path))
    # member5 leaves gold, stays in silver (same data): it keeps segment:silver.
    later = [
        *full_read([i for i in range(10) if i != 5], "gold"),
        *full_read(range(5, 15), "silver"),
    ]
    ok(run_target(store_config, later, workdir=tmp_path))
    assert tagged(server, "segment:gold") == members(0, 10) - {email(5)}
    assert tagged(server, "segment:silver") == members(5, 15)
    # ... and when it comes back to gold, it is tagged gold again.
    ok(run_target(store_config, both, workdir=tmp_path))
    assert tagged(server, "segment:gold") == members(0, 10)


# -- cancel -------------------------------------------------------------------------------


#: Requests a whole run of `_slow_tap`'s 300 members makes at least, with the cancel
#: tests' config: the key check, 6 batch posts, 2 or more list reads, 2 tag calls and 3
#: segment calls.
REQUESTS_PER_RUN = 15


def _slow_tap(stdin: Any, count: int, every: int, pause: float) -> None:
    """A tap that reads for a while: `every` records, a STATE ({"upto": last index}),
    a pause, and so on; it stops quietly when the target is gone."""
    try:
        stdin.write(encode([schema(), activate()]))
        for start in range(0, count, every):
            chunk = [record(i) for i in range(start, min(start + every, count))]
            stdin.write(encode([*chunk, state({"upto": start + len(chunk) - 1})]))
            stdin.flush()
            time.sleep(pause)
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.close()


def catches(pid: int, signum: int) -> bool:
    """Whether the process has its own handler for `signum` (Linux: SigCgt in
    /proc/<pid>/status). Before that, a signal is the interpreter's business."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    [mask] = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(int(mask, 16) >> (signum - 1) & 1)


def _cancel_after(
    config: dict[str, Any], moment: Callable[[int], bool], signum: int, workdir: Path
) -> tuple[int, list[dict[str, Any]], str]:
    """Run the target on a slow tap and signal it at `moment`: once that event has
    happened for the target's pid, or the run has ended."""
    (workdir / "config.json").write_text(json.dumps(config))
    with (workdir / "stdout").open("wb") as out, (workdir / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            [str(TARGET_BIN), "--config", str(workdir / "config.json")],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            cwd=workdir,
        )
        tap = threading.Thread(target=_slow_tap, args=(proc.stdin, 300, 30, 0.08))
        tap.start()
        assert eventually(lambda: moment(proc.pid) or proc.poll() is not None, timeout=60)
        proc.send_signal(signum)  # (nothing, if the run has ended)
        proc.wait(timeout=120)
        tap.join()
    stdout = (workdir / "stdout").read_text()
    states = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return proc.returncode, states, (workdir / "stderr").read_text("utf-8", "replace")


def test_a_signal_at_any_moment_ends_the_run_in_one_line_with_only_earned_states(
    tmp_path: Path,
) -> None:
    """20 cancels at seeded random moments, each after the k-th request Omnisend has
    answered (k = 0: at start-up, once the target handles signals; then mid-read,
    waiting for a batch slot, checkpoints, the end): exit 128+signal (or a clean finish
    when the signal came after the end), one ERROR line, and every STATE printed covers
    only members Omnisend holds *and* has tagged. A re-run from the last STATE then
    completes the segment."""
    rng = random.Random(14)
    outcomes: list[int] = []
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.15, latency=(0.0, 0.02)) as slow:
        for trial in range(20):
            slow.reset()
            workdir = tmp_path / f"trial{trial}"
            workdir.mkdir()
            config = {
                "api_key": API_KEY,
                "api_url": slow.url,
                "segment_tag": TAG,
                "max_pending_batches": 6,
                "batch_size": 50,
                "batch_poll_interval": 0.05,
                "state_interval": 0.2,
                "rejected_records_path": str(workdir / "rejected.jsonl"),
                "fingerprint_store_path": str(workdir / "fingerprints.sqlite"),
            }
            signum = rng.choice([signal.SIGTERM, signal.SIGINT])
            k = rng.randint(0, REQUESTS_PER_RUN + 1)  # the last: once the run has ended
            code, states, stderr = _cancel_after(
                config,
                lambda pid: (
                    catches(pid, signal.SIGTERM)
                    and slow.count() >= k  # noqa: B023
                    and k <= REQUESTS_PER_RUN  # noqa: B023
                ),
                signum,
                workdir,
            )
            where = f"trial {trial}: {signal.Signals(signum).name} after {k} requests"
            assert "Traceback" not in stderr, where
            if code == -signum:  # the signal came while the finished process was exiting
                assert "Run finished" in stderr, f"{where}: killed\n{stderr[-2000:]}"
                code = 0
            assert code in (0, 128 + signum), f"{where}: exit {code}\n{stderr[-2000:]}"
            outcomes.append(code)
            errors = [line for line in stderr.splitlines() if "ERROR" in line]
            assert len(errors) == (0 if code == 0 else 1), f"{where}: {errors}"
            for earned in states:
                covered = members(0, earned["upto"] + 1)
                assert covered <= tagged(slow), f"{where}: STATE {earned} covers unsent records"
            # The scheduler re-runs the tap from the last STATE.
            start = states[-1]["upto"] + 1 if states else 0
            rerun = [schema(), *(record(i) for i in range(start, 300)), state({"upto": 299})]
            ok(run_target(config, rerun, workdir=workdir, timeout=60))
            assert tagged(slow) == members(0, 300), where
    # The moments were spread: some runs were cancelled, some finished first.
    assert 0 in outcomes and {130, 143} & set(outcomes), outcomes


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_ends_the_run_in_one_line(
    tmp_path: Path, config: dict[str, Any], signum: int
) -> None:
    """As soon as the target handles signals (its first statement), while Python imports
    the SDK and before any handler of the SDK's exists. The moments before that, while
    the interpreter itself starts, are Python's own."""
    code, states, stderr = _cancel_after(
        config, lambda pid: catches(pid, signal.SIGTERM), signum, tmp_path
    )
    assert code == 128 + signum, stderr
    assert states == []
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cancelled" in errors[0], stderr


# -- back-pressure ----------------------------------------------------------------------


def test_few_batch_slots_on_a_first_export_do_not_deadlock_on_the_tag_chunk(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config.update(max_pending_batches=2, batch_size=100, fingerprint_store_path="")
    run = run_target(config, full_read(range(300)), workdir=tmp_path, timeout=30)
    ok(run)
    assert len(tagged(server)) == 300


# -- the newest version wins --------------------------------------------------------------


def _two_segments(store_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    store_config.update(
        segment_tag="segment:{stream_name}", custom_properties={"tier": "loyalty_tier"}, **extra
    )
    return store_config


def test_the_newest_record_of_an_email_wins_across_two_streams_and_drains(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    """member0 is platinum in segment a, then gold in segment b (the newest); segment b
    was met first. One record per drain: both versions wait in their segments' carry."""
    config = _two_segments(store_config, batch_size_rows=1)
    messages = [
        schema("b"),
        schema("a"),
        record(1, "b"),
        record(0, "a", "platinum"),
        record(0, "b", "gold"),
        state({"done": True}),
    ]
    ok(run_target(config, messages, workdir=tmp_path))
    assert server.contact(email(0))["customProperties"]["tier"] == "gold"
    assert server.settle()  # tag calls are asynchronous: applied after their 202
    assert sorted(server.contact(email(0))["tags"]) == ["segment:a", "segment:b"]
    # Unchanged in b's partition, yet a's newer version is waiting: gold must still win.
    messages[3:5] = [record(0, "a", "silver"), record(0, "b", "gold")]
    ok(run_target(config, messages, workdir=tmp_path))
    assert server.contact(email(0))["customProperties"]["tier"] == "gold"


def test_the_newest_record_of_an_email_wins_across_two_streams_in_one_drain(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    """The SDK drains sink by sink (b's first: it was made first); input order decides."""
    config = _two_segments(store_config)
    messages = [
        schema("b"),
        schema("a"),
        record(0, "a", "platinum"),
        record(0, "b", "gold"),
        state({"done": True}),
    ]
    ok(run_target(config, messages, workdir=tmp_path))
    assert server.contact(email(0))["customProperties"]["tier"] == "gold"


def test_the_newest_record_wins_when_an_older_one_is_still_in_a_slow_batch(
    tmp_path: Path,
) -> None:
    """batch_size_rows 1 and batch_size 1: every record is its own drain and batch; the
    three versions of member0 are in flight together on a slow server."""
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.3, items_order="reversed") as slow:
        config = {
            "api_key": API_KEY,
            "api_url": slow.url,
            "batch_size_rows": 1,
            "batch_size": 1,
            "batch_poll_interval": 0.05,
            "custom_properties": {"tier": "loyalty_tier"},
            "fingerprint_store_path": str(tmp_path / "fp.sqlite"),
            "rejected_records_path": str(tmp_path / "rejected.jsonl"),
        }
        ok(run_target(config, [schema(), record(0, tier="gold")], workdir=tmp_path))
        versions = ["platinum", "silver", "gold"]
        messages = [schema(), *(record(0, tier=t) for t in versions), record(1)]
        ok(run_target(config, messages, workdir=tmp_path))
        assert slow.contact(email(0))["customProperties"]["tier"] == "gold"


# -- counters and what Omnisend holds -----------------------------------------------------


def test_counters_reconcile_and_agree_with_what_omnisend_holds(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    """Duplicates within and across drains, schema failures, refusals, unchanged rows —
    and a record without its key property (the email), which the SDK made fatal."""
    config = {**store_config, "batch_size_rows": 7}
    ok(run_target(config, full_read(range(10)), workdir=tmp_path))
    server.add_fault(FaultRule(kind="item_error", email_pattern=r"^member1[12]@"))
    messages = [
        schema(),
        activate(),
        *(record(i) for i in range(10)),  # unchanged
        *(record(i, tier="silver") for i in range(10, 20)),
        *(record(i, tier="bronze") for i in range(15, 25)),  # 15..19 again, newer
        {"type": "RECORD", "stream": "vip", "record": {"email": 5, "first_name": "x"}},
        {"type": "RECORD", "stream": "vip", "record": {"first_name": "no email"}},
        state({"n": 1}),
    ]
    ok(run_target(config, messages, workdir=tmp_path))
    counts = summary(config)["streams"]["vip"]
    assert reconciles(counts), counts
    assert counts["unchanged"] == 10
    assert counts["rejected"] == 4  # 2 refused by Omnisend, 1 schema, 1 missing email
    assert counts["merged_duplicates"] == 5
    stored = {stored_email(c): c for c in server.contacts()}
    assert set(stored) == members(0, 25) - {email(11), email(12)}
    assert counts["delivered"] == 13  # 10..24, less the 2 refused
    for i in range(15, 25):
        assert stored[email(i)]["customProperties"]["loyalty_tier"] == "bronze"


def test_a_batch_that_says_finished_but_skipped_an_item_is_not_counted_as_delivered(
    store_config: dict[str, Any], tmp_path: Path
) -> None:
    """`inconsistent_batches`: every 2nd batch reports finished with no errors while its
    last item stays pending (finishedCount < totalCount). The STATE after it must not
    cover a contact Omnisend never stored."""
    with OmnisendServer(api_keys=(API_KEY,), inconsistent_batches=0.5) as odd:
        config = {**store_config, "api_url": odd.url, "batch_size": 10}
        run = ok(run_target(config, full_read(range(40)), workdir=tmp_path))
        assert run.states, "no STATE"
        counts = summary(config)["streams"]["vip"]
        assert counts["delivered"] + counts["rejected"] == 40
        assert len(held(odd)) == counts["delivered"]


# -- stores shared, locked, broken --------------------------------------------------------


def _start(config: dict[str, Any], payload: bytes, workdir: Path) -> subprocess.Popen[bytes]:
    """The target reading `payload` from a file: several start reading at once."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "input.singer").write_bytes(payload)
    with (workdir / "input.singer").open("rb") as tap_output:
        return subprocess.Popen(
            [str(TARGET_BIN), "--config", str(workdir / "config.json")],
            stdin=tap_output,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
        )


def test_two_pipelines_on_one_store_at_the_same_moment_keep_their_own_decisions(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    """Three pipelines at once on one new store: two segments, and the first segment
    mapped a second way. Twice: the second time every pipeline finds all unchanged."""
    other_mapping = {**store_config, "custom_properties": {"tier": "loyalty_tier"}}
    jobs = [
        (store_config, full_read(range(0, 300), "gold")),
        (store_config, full_read(range(200, 500), "silver")),
        (other_mapping, full_read(range(0, 300), "gold")),
    ]
    for attempt in range(2):
        procs = []
        for n, (config, messages) in enumerate(jobs):
            own = {**config, "summary_path": str(tmp_path / f"s{n}.json")}
            procs.append(_start(own, encode(messages), tmp_path / f"p{attempt}{n}"))
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert b"locked" not in err
        for n in range(3):
            streams = json.loads((tmp_path / f"s{n}.json").read_text())["streams"]
            ((name, counts),) = streams.items()
            assert counts["received"] == 300
            assert counts["unchanged"] == (0 if attempt == 0 else 300), (attempt, name, counts)


def test_a_store_held_locked_by_another_process_for_a_while_is_waited_for(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    path = Path(store_config["fingerprint_store_path"])
    ok(run_target(store_config, full_read(range(10)), workdir=tmp_path))
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
            " db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(3);"
            " db.execute('COMMIT')",
            str(path),
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    run = ok(run_target(store_config, full_read(range(12)), workdir=tmp_path))
    holder.wait(timeout=30)
    assert summary(store_config)["streams"]["vip"]["unchanged"] == 10
    assert run.states


def test_a_corrupt_store_stops_the_run_in_one_line_naming_the_file(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    path = Path(store_config["fingerprint_store_path"])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    run = run_target(store_config, full_read(range(5)), workdir=tmp_path)
    assert run.returncode == 1
    assert run.stdout == "" and held(server) == set()
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(path) in errors[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr


# -- odd input ----------------------------------------------------------------------------


def test_odd_state_values_pass_through_exactly(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    value = {
        "bookmarks": {"vip": {"replication_key_value": 0.1, "tiny": 1e-7, "huge": 1.5e300}},
        "big": 123456789012345678901234567890,
        "neg": -0.0,
        "text": "ünïcode ✓",
        "list": [1, 2.5, None, True],
    }
    raw = json.dumps({"type": "STATE", "value": value})
    run = ok(run_target(config, [schema(), record(0), raw], workdir=tmp_path))
    assert [json.loads(line) for line in run.stdout.splitlines()] == [value]


def test_an_email_that_differs_only_by_case_across_runs_is_one_unchanged_contact(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    ok(run_target(store_config, full_read(range(3)), workdir=tmp_path))
    shouted = [
        schema(),
        *(
            {
                "type": "RECORD",
                "stream": "vip",
                "record": {**record(i)["record"], "email": f"  MEMBER{i}@Example.COM "},
            }
            for i in range(3)
        ),
    ]
    ok(run_target(store_config, shouted, workdir=tmp_path))
    assert summary(store_config)["streams"]["vip"]["unchanged"] == 3
    assert held(server) == members(0, 3)


def test_empty_input_under_mirror_is_a_successful_run_that_changes_nothing(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    ok(run_target(mirror_config, full_read(range(5)), workdir=tmp_path))
    before = Path(mirror_config["fingerprint_store_path"]).read_bytes()
    run = ok(run_target(mirror_config, b"", workdir=tmp_path))
    assert run.stdout == ""
    assert tagged(server) == members(0, 5)
    assert server.count(method="DELETE") == 0
    assert Path(mirror_config["fingerprint_store_path"]).read_bytes() == before


# -- dry run previews -----------------------------------------------------------------------


def test_a_dry_run_previews_exactly_the_removals_the_real_run_then_makes(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """With staging (confirm_runs 2): after one complete run without members 7..9, the
    preview of the next run lists them, and the real run removes exactly them."""
    mirror_config["mirror_confirm_runs"] = 2
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    ok(run_target(mirror_config, full_read(range(7)), workdir=tmp_path))
    assert tagged(server) == members(0, 10)
    dry = {**mirror_config, "dry_run": True, "dry_run_path": str(tmp_path / "dry.jsonl")}
    preview = ok(run_target(dry, full_read(range(7)), workdir=tmp_path))
    assert preview.stdout == ""
    planned = read_jsonl(tmp_path / "dry.jsonl")
    previewed = {e for p in planned if p["method"] == "DELETE" for e in p["body"]["emails"]}
    assert previewed == members(7, 10)
    ok(run_target(mirror_config, full_read(range(7)), workdir=tmp_path))
    assert members(0, 10) - tagged(server) == previewed


def test_a_dry_run_without_a_store_creates_none(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    dry = {**mirror_config, "dry_run": True, "dry_run_path": str(tmp_path / "dry.jsonl")}
    run = ok(run_target(dry, full_read(range(5)), workdir=tmp_path))
    assert run.stdout == ""
    assert not Path(mirror_config["fingerprint_store_path"]).parent.exists()
    assert held(server) == set()
    assert server.count(method="POST") == 0


def test_a_signal_during_mirror_ends_in_one_line_and_returning_members_are_tagged_again(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """The last STATE is out, mirror is untagging (slowly) when SIGTERM comes."""
    mirror_config["mirror_max_removal_ratio"] = 0.6
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    server.add_fault(
        FaultRule(method="DELETE", path="/contacts/tags", kind="delay", seconds=3, apply=True)
    )
    proc = _start(mirror_config, encode(full_read(range(5))), tmp_path / "cancelled")
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline()) == {"bookmarks": {"vip": {"rows": 5}}}
    # The untag has reached Omnisend (and is applied); its answer takes 3 s.
    assert eventually(lambda: server.fault_hits()[0][1] >= 1, timeout=30)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr.decode()[-2000:]
    assert stdout == b""
    errors = [line for line in stderr.decode().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cancelled" in errors[0]
    assert tagged(server) == members(0, 5)  # once the untag under way has been answered
    server.clear_faults()
    ok(run_target(mirror_config, full_read(range(10)), workdir=tmp_path))
    assert tagged(server) == members(0, 10)


def test_a_signal_while_rejections_are_being_logged_ends_in_one_line(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """The reading thread is logging rejections (the first few per reason are logged, the
    rest counted) when the signal handler logs and flushes the same streams."""
    bad = [
        {"type": "RECORD", "stream": "vip", "record": {"email": f"bad{i}"}} for i in range(100_000)
    ]
    payload = encode([schema(), *bad])
    rng = random.Random(7)
    for trial in range(4):
        proc = _start({**config, "fingerprint_store_path": ""}, payload, tmp_path / f"t{trial}")
        assert proc.stderr is not None
        # Signal once the k-th rejection line is logged (at most 3 are: the cap).
        wanted, logged, before = rng.randint(1, 3), 0, []
        while logged < wanted:
            line = proc.stderr.readline()
            assert line, b"".join(before).decode()[-1000:]
            before.append(line)
            logged += b"WARNING" in line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        text = b"".join(before).decode() + err.decode()
        assert proc.returncode == 143, text[-1000:]
        assert "Traceback" not in text and "Logging error" not in text
        assert len([line for line in text.splitlines() if "ERROR" in line]) == 1


def test_one_stream_mapped_into_two_segments_is_mirrored_as_two_full_reads(
    server: OmnisendServer, segments_config: dict[str, Any], tmp_path: Path
) -> None:
    """stream_maps copies `vip` into `vip_copy`; the one ACTIVATE_VERSION covers both."""
    store_config = {**segments_config, "stream_maps": {"vip_copy": {"__source__": "vip"}}}
    ok(run_target(store_config, full_read(range(10)), workdir=tmp_path))
    for tag in ("segment:vip", "segment:vip_copy"):
        assert tagged(server, tag) == members(0, 10), tag
    ok(run_target(store_config, full_read(range(8)), workdir=tmp_path))
    for tag in ("segment:vip", "segment:vip_copy"):
        assert tagged(server, tag) == members(0, 8), tag
    ok(run_target(store_config, full_read(range(10)), workdir=tmp_path))
    for tag in ("segment:vip", "segment:vip_copy"):
        assert tagged(server, tag) == members(0, 10), tag
