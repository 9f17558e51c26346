"""Data safety by construction: cancel, dry run, partial reads, shared tags and stores,
stale versions and rejected members — each replayed from a Singer file under
`tests/data_files/pipeline/` through the real CLI against the local Omnisend."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import TARGET_BIN, create_contact, read_jsonl, run_target, stored_email
from tests.omnisend_server import OmnisendServer
from tests.test_omnisend_server import eventually

DATA = Path(__file__).parent / "data_files" / "pipeline"
TAG = "segment:vip"


def scenario(name: str) -> bytes:
    return (DATA / name).read_bytes()


def tagged(server: OmnisendServer, tag: str = TAG) -> set[str]:
    """Who carries `tag` once the tag calls Omnisend accepted (202) have been applied."""
    assert server.settle(), "the server still had requests or writes pending after 10 s"
    return {stored_email(c) for c in server.contacts() if tag in (c.get("tags") or [])}


def members(start: int, stop: int) -> set[str]:
    return {f"member{i}@example.com" for i in range(start, stop)}


def contacts_written(server: OmnisendServer) -> int:
    return sum(b["totalCount"] for b in server.batches())


@pytest.fixture
def store_config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    config["fingerprint_store_path"] = str(tmp_path / "store" / "fingerprints.sqlite")
    config["summary_path"] = str(tmp_path / "summary.json")
    return config


def summary(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(config["summary_path"]).read_text())


# -- 1. cancel ------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cancel_while_waiting_for_a_batch_slot_emits_no_state_it_has_not_earned(
    tmp_path: Path, signum: int
) -> None:
    """2 slots, slow batches, 500 records, STATE, 500 more, cancel once the fourth batch
    is posted: every STATE printed covers only contacts Omnisend holds, and the run says
    it was cancelled."""
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=1.0) as slow:
        config = {
            "api_key": API_KEY,
            "api_url": slow.url,
            "max_pending_batches": 2,
            "batch_poll_interval": 0.05,
            "rejected_records_path": str(tmp_path / "rejected.jsonl"),
            "fingerprint_store_path": "",
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        with (DATA / "cancel_mid_run.singer").open("rb") as tap_output:
            proc = subprocess.Popen(
                [str(TARGET_BIN), "--config", str(tmp_path / "config.json")],
                stdin=tap_output,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmp_path,
            )
            try:
                # Batch 4 posted: two slots have been freed and taken again, and the
                # reading thread waits for the next one.
                assert eventually(
                    lambda: slow.count(method="POST", path_prefix="/batches") >= 4, timeout=30
                )
                proc.send_signal(signum)
                stdout, stderr = proc.communicate(timeout=60)
            finally:
                proc.kill()  # a target that ignored the signal must not outlive the test
        held = {stored_email(c) for c in slow.contacts()}
    states = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    for state in states:
        assert members(0, state["upto"] + 1) <= held, f"STATE {state} covers unsent records"
    assert proc.returncode == 128 + signum
    errors = [line for line in stderr.decode().splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "cancelled" in errors[0] and "last STATE" in errors[0]
    assert "Traceback" not in stderr.decode()
    assert len(held) < 1000, "the cancel came too late to test anything"


# -- 2, 3. dry run --------------------------------------------------------------------


def _store_rows(path: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT * FROM contact_fingerprints").fetchall())


def test_dry_run_after_a_real_run_emits_no_state_and_leaves_the_store_alone(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    store_config.update(sync_mode="mirror", mirror_confirm_runs=1)
    real = run_target(store_config, scenario("full_read_100.singer"), workdir=tmp_path)
    assert real.returncode == 0, real.stderr[-2000:]
    assert len(real.states) == 1
    before = _store_rows(store_config["fingerprint_store_path"])
    assert len(before) == 100

    # A dry run with a changed mapping, on a read where 40 members left.
    dry = {
        **store_config,
        "dry_run": True,
        "dry_run_path": str(tmp_path / "dry.jsonl"),
        "custom_properties": {"tier": "loyalty_tier"},
        "mirror_max_removal_ratio": 0.9,
    }
    run = run_target(dry, scenario("tap_died_at_60_percent.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "", "a dry run must print no STATE"
    assert _store_rows(store_config["fingerprint_store_path"]) == before
    planned = read_jsonl(tmp_path / "dry.jsonl")
    removals = [p for p in planned if p["method"] == "DELETE"]
    # The preview names exactly the 40 absent members — not "everyone".
    assert {e for p in removals for e in p["body"]["emails"]} == members(60, 100)
    assert tagged(server) == members(0, 100)  # nothing was written

    # The next real run with the original mapping finds everything unchanged.
    again = run_target(store_config, scenario("full_read_100.singer"), workdir=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert summary(store_config)["streams"]["vip"]["unchanged"] == 100
    assert contacts_written(server) == 100


# -- 4. a tap that died after 60 % --------------------------------------------------


def test_mirror_on_a_partial_read_stages_and_a_complete_read_clears_the_stage(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    store_config["sync_mode"] = "mirror"
    first = run_target(store_config, scenario("full_read_100.singer"), workdir=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert tagged(server) == members(0, 100)

    died = run_target(store_config, scenario("tap_died_at_60_percent.singer"), workdir=tmp_path)
    assert died.returncode == 0, died.stderr[-2000:]
    assert tagged(server) == members(0, 100), "one partial read removed members"
    assert summary(store_config)["mirror"][TAG] == {
        "removed": 0,
        "tagged": 100,
        "staged": 40,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }

    # The next night the tap reads everything: the staged 40 are present, stage cleared.
    full = run_target(store_config, scenario("full_read_100.singer"), workdir=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    assert summary(store_config)["mirror"][TAG] == {
        "removed": 0,
        "tagged": 100,
        "staged": 0,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }
    # And a later partial read starts counting from zero again.
    died = run_target(store_config, scenario("tap_died_at_60_percent.singer"), workdir=tmp_path)
    assert died.returncode == 0, died.stderr[-2000:]
    assert tagged(server) == members(0, 100)


# -- 5. two streams, one tag --------------------------------------------------------


def test_mirror_acts_per_tag_over_every_stream_that_writes_it(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    store_config.update(sync_mode="mirror", mirror_confirm_runs=1, segment_tag="segment:vip")
    data = scenario("two_streams_one_tag.singer")
    for _ in range(2):
        run = run_target(store_config, data, workdir=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert tagged(server) == members(0, 20)
    assert summary(store_config)["mirror"][TAG] == {
        "removed": 0,
        "tagged": 20,
        "staged": 0,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }


# -- 6. two pipelines, one store ----------------------------------------------------


def test_two_pipelines_with_different_mappings_share_a_store_without_wiping_it(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    other = {**store_config, "custom_properties": {"tier": "loyalty_tier"}}
    data = scenario("full_read_100.singer")
    for config in (store_config, other):
        assert run_target(config, data, workdir=tmp_path).returncode == 0
    assert contacts_written(server) == 200
    for config in (store_config, other):
        run = run_target(config, data, workdir=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "received=100 delivered=0 rejected=0 unchanged=100" in run.stderr
    assert contacts_written(server) == 200


# -- 7. rejected members keep the tag -----------------------------------------------


def test_members_whose_record_was_rejected_keep_the_tag(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    store_config.update(sync_mode="mirror", mirror_confirm_runs=1)
    assert (
        run_target(store_config, scenario("full_read_20.singer"), workdir=tmp_path).returncode == 0
    )
    run = run_target(store_config, scenario("three_members_fail_schema.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    rejected = read_jsonl(Path(store_config["rejected_records_path"]))
    assert [r["code"] for r in rejected] == ["schema_invalid"] * 3
    assert tagged(server) == members(0, 20)
    assert summary(store_config)["mirror"][TAG] == {
        "removed": 0,
        "tagged": 20,
        "staged": 0,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }


# -- 8. latest version wins ----------------------------------------------------------


def test_the_newest_record_of_a_contact_is_what_omnisend_ends_with(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    store_config["custom_properties"] = {"tier": "loyalty_tier"}
    args = {"workdir": tmp_path}
    assert run_target(store_config, scenario("stale_version_run1.singer"), **args).returncode == 0
    # platinum, then gold again (equal to what the store remembers), one record a drain
    config = {**store_config, "batch_size_rows": 1}
    run = run_target(config, scenario("stale_version_run2.singer"), **args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert server.contact("member0@example.com")["customProperties"]["tier"] == "gold"


# -- 9. two runs opening a new store at once ----------------------------------------


def _open_new_store(path: Path, stream: str, start: threading.Barrier, errors: list) -> None:
    from target_omnisend.store import FingerprintStore

    start.wait()
    try:
        store = FingerprintStore(path, "scope", "hash")
        store.part(stream, ("segment:x",))
        store.close()
    except Exception as exc:
        errors.append(exc)


def test_two_runs_opening_a_new_store_at_the_same_moment_both_succeed(tmp_path: Path) -> None:
    for trial in range(20):
        path = tmp_path / f"trial{trial}" / "fingerprints.sqlite"
        start = threading.Barrier(2)
        errors: list[Exception] = []
        threads = [
            threading.Thread(target=_open_new_store, args=(path, s, start, errors))
            for s in ("a", "b")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


# -- mutants the suite must kill --------------------------------------------------------


def test_a_known_member_whose_data_changed_keeps_the_tags_other_tools_set(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path
) -> None:
    assert (
        run_target(store_config, scenario("stale_version_run1.singer"), workdir=tmp_path).returncode
        == 0
    )
    # Another tool tags our member; then the member's data changes in the warehouse.
    create_contact(
        server.url,
        API_KEY,
        "member0@example.com",
        "nonSubscribed",
        "2000-01-01T00:00:00Z",
        tags=["crm:vip", TAG],
    )
    run = run_target(store_config, scenario("member_changed.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    contact = server.contact("member0@example.com")
    assert contact["customProperties"]["loyalty_tier"] == "platinum"
    assert sorted(contact["tags"]) == ["crm:vip", TAG]
    assert contacts_written(server) == 2


def test_store_digest_is_stable_across_a_dry_run(
    store_config: dict[str, Any], tmp_path: Path
) -> None:
    """Byte-level: a dry run does not even touch the store file (no WAL checkpoint)."""
    path = Path(store_config["fingerprint_store_path"])
    assert (
        run_target(store_config, scenario("full_read_20.singer"), workdir=tmp_path).returncode == 0
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    mtime = os.stat(path).st_mtime_ns
    dry = {**store_config, "dry_run": True, "dry_run_path": str(tmp_path / "dry.jsonl")}
    assert run_target(dry, scenario("full_read_20.singer"), workdir=tmp_path).returncode == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert os.stat(path).st_mtime_ns == mtime


@pytest.mark.parametrize(("ratio", "removed"), [(0.2, 0), (0.25, 5)])
def test_the_configured_removal_ratio_is_applied(
    server: OmnisendServer, store_config: dict[str, Any], tmp_path: Path, ratio: float, removed: int
) -> None:
    store_config.update(sync_mode="mirror", mirror_confirm_runs=1)
    assert (
        run_target(store_config, scenario("full_read_20.singer"), workdir=tmp_path).returncode == 0
    )
    store_config["mirror_max_removal_ratio"] = ratio  # 5 of 20 absent = 25 %
    run = run_target(store_config, scenario("full_read_15_of_20.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(tagged(server)) == 20 - removed
    assert summary(store_config)["mirror"][TAG]["removed"] == removed
