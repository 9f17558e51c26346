"""Attacks on membership (issues 19 and 23), each one a break that was found: a data
engineer's nightly run against the local Omnisend-compatible server, through the real
CLI, asserting on what Omnisend ends with."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import API_KEY
from tests.harness import TARGET_BIN, read_jsonl, run_target, stored_email
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_membership_property import (
    FULL_20,
    PROPERTY,
    lines,
    run_ok,
    segment_members,
    summary,
)
from tests.test_omnisend_server import Api, eventually

DATA = Path(__file__).parent / "data_files"


def test_drift_repair_on_the_property_route_gives_back_the_exports_own_properties(
    mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    """Another tool writes its own custom property to a member; under Omnisend's
    undocumented *replace* semantics that wipes both our membership property and our
    `loyalty_tier`. Mirror's repair puts the property back; the member's other exported
    fields must come back too (by the next run at the latest), not stay lost behind an
    'unchanged' fingerprint."""
    prop_config |= {"sync_mode": "mirror", "mirror_confirm_runs": 2}
    run_ok(prop_config, FULL_20, tmp_path)
    [segment] = mode_server.segments()
    touched = "member3@example.com"
    tier = mode_server.contact(touched)["customProperties"]["loyalty_tier"]
    other_tool = Api(mode_server.url, key=API_KEY).post(
        "/contacts",
        json={
            "identifiers": [{"type": "email", "id": touched}],
            "customProperties": {"crm_score": 7, PROPERTY: False},
        },
    )
    assert other_tool.status_code in (200, 201), other_tool.text
    assert touched not in segment_members(mode_server, segment["segmentID"])

    run_ok(prop_config, FULL_20, tmp_path)  # the repair run
    assert summary(prop_config)["mirror"][f"custom:{PROPERTY}"]["retagged"] == 1
    run_ok(prop_config, FULL_20, tmp_path)  # and the night after

    props = mode_server.contact(touched)["customProperties"]
    assert props[PROPERTY] is True
    assert props["loyalty_tier"] == tier
    assert touched in segment_members(mode_server, segment["segmentID"])


def test_a_dry_run_after_a_real_run_with_drift_and_leavers_changes_no_byte_of_the_store(
    mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    """Held: the dry run lists the segment, plans the repair and the removals, writes
    nothing to Omnisend and leaves the store file byte for byte as it was."""
    prop_config |= {"sync_mode": "mirror", "mirror_confirm_runs": 1}
    run_ok(prop_config, FULL_20, tmp_path)
    unmark = Api(mode_server.url, key=API_KEY).post(
        "/contacts",
        json={
            "identifiers": [{"type": "email", "id": "member3@example.com"}],
            "customProperties": {PROPERTY: False},
        },
    )
    assert unmark.status_code in (200, 201), unmark.text
    store = Path(prop_config["fingerprint_store_path"])
    before = store.read_bytes()
    requests_before = len(mode_server.request_log())
    dry = tmp_path / "dry.jsonl"
    log = run_ok(
        prop_config | {"dry_run": True, "dry_run_path": str(dry)},
        DATA / "pipeline" / "full_read_15_of_20.singer",
        tmp_path,
    )
    assert store.read_bytes() == before
    assert all(e.method == "GET" for e in mode_server.request_log()[requests_before:])
    items = [
        item
        for line in read_jsonl(dry)
        if line["path"] == "/api/batches"
        for item in line["body"]["items"]
    ]
    planned = {(i["identifiers"][0]["id"], i["customProperties"][PROPERTY]) for i in items}
    assert ("member3@example.com", True) in planned  # the repair
    assert {e for e, v in planned if v is False} == {
        f"member{i}@example.com" for i in range(15, 20)
    }
    assert "would get it back" in log and "would lose it" in log


def test_two_pipelines_whose_streams_share_a_name_keep_each_others_members_once_aliased(
    server: OmnisendServer, tmp_path: Path
) -> None:
    """Attack: two shops' taps both send a stream named `customers` into one tag and one
    store (two Meltano jobs). Mirror tells pipelines apart by stream name, so without
    an alias each job untags the other's members every night (found: 9 and 10 of 20
    removed, run after run). The README's documented way, a stream map alias per job,
    keeps both: no member of either shop ever loses the tag."""
    base = {
        "api_key": API_KEY,
        "api_url": server.url,
        "batch_poll_interval": 0.05,
        "fingerprint_store_path": str(tmp_path / "store.sqlite"),
        "summary_path": str(tmp_path / "summary.json"),
        "custom_properties": {"tier": "loyalty_tier"},
        "segment_tag": "segment:vip",
        "segment_name": "",
        "sync_mode": "mirror",
        "mirror_confirm_runs": 1,
    }
    shop_a = base | {"stream_maps": {"customers": {"__alias__": "customers_a"}}}
    shop_b = base | {
        "stream_maps": {"customers": {"__alias__": "customers_b"}},
        "field_mapping": {"first_name": "first_name"},
    }
    a = DATA / "membership" / "same_stream_shop_a.singer"
    b = DATA / "membership" / "same_stream_shop_b.singer"
    everyone = {f"member{i}@example.com" for i in range(20)}
    for config, singer in ((shop_a, a), (shop_b, b), (shop_a, a), (shop_b, b)):
        run_ok(config, singer, tmp_path)
        assert summary(config)["mirror"]["segment:vip"]["removed"] == 0
    tagged = {stored_email(c) for c in server.contacts() if "segment:vip" in c["tags"]}
    assert tagged == everyone


def test_a_member_present_in_a_run_whose_mirror_listing_fails_loses_its_stage(
    server: OmnisendServer, tmp_path: Path
) -> None:
    """Attack: members 15-19 are absent from one complete read (staged). The next night
    they are back, but Omnisend's listing fails at mirror time (503 beyond retries: the
    run fails, exit 1). Their return must still void the stage: after one more absence
    they are only staged again, not removed (found: removed, after a single absence
    since they came back)."""
    config = {
        "api_key": API_KEY,
        "api_url": server.url,
        "batch_poll_interval": 0.05,
        "max_retries": 1,
        "fingerprint_store_path": str(tmp_path / "store.sqlite"),
        "summary_path": str(tmp_path / "summary.json"),
        "segment_tag": "segment:vip",
        "segment_name": "",
        "sync_mode": "mirror",
        "mirror_confirm_runs": 2,
    }
    full, fifteen = FULL_20, DATA / "pipeline" / "full_read_15_of_20.singer"
    run_ok(config, full, tmp_path)
    run_ok(config, fifteen, tmp_path)
    assert summary(config)["mirror"]["segment:vip"]["staged"] == 5

    # The first GET /contacts (the start-up check) passes; mirror's listing fails.
    server.add_fault(FaultRule(method="GET", path="/contacts", status=503, after=1))
    failed = run_target(config, lines(full), workdir=tmp_path)
    assert failed.returncode == 1 and "GET /contacts" in failed.stderr
    server.clear_faults()

    log = run_ok(config, fifteen, tmp_path)
    assert summary(config)["mirror"]["segment:vip"]["removed"] == 0
    assert summary(config)["mirror"]["segment:vip"]["staged"] == 5
    assert "0 of 20 member(s) lost it; 5 more absent" in log
    tagged = {stored_email(c) for c in server.contacts() if "segment:vip" in c["tags"]}
    assert tagged == {f"member{i}@example.com" for i in range(20)}


def test_a_batch_manifest_naming_a_relative_path_ends_the_run_in_one_clear_line(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """Attack: a hand-written tap lists `batch_members_4_7.jsonl` rather than a file://
    URL. Found: "Run failed: ValueError: relative path can't be expressed as a file
    URI". Now the line says what the manifest needs; no STATE covers the batch."""
    run = run_target(
        config, lines(DATA / "membership" / "batch_relative_path.singer"), workdir=tmp_path
    )
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in run.stderr
    assert "line 5 (BATCH)" in errors[0] and "not named by a URL" in errors[0]
    assert "file:///absolute/path" in errors[0] and "ValueError" not in errors[0]
    assert all(state["bookmarks"]["vip"]["replication_key_value"] != 7 for state in run.states)


def test_a_contact_in_two_property_segments_keeps_both_under_merge_only(
    mode: str, mode_server: OmnisendServer, prop_config: dict[str, Any], tmp_path: Path
) -> None:
    """Attack: member0 is in streams a and b, each with its own property
    (`in_{stream_name}`). Under merge it carries both; under replace, b's write wipes
    `in_a` and member0 drops out of segment a, which the README now says plainly."""
    singer = DATA / "membership" / "latest_run1.singer"
    for _ in range(2):
        run_ok(prop_config | {"custom_properties": {"tier": "loyalty_tier"}}, singer, tmp_path)
        props = mode_server.contact("member0@example.com")["customProperties"]
        assert props["in_b"] is True and props["tier"] == "gold"
        assert props.get("in_a") is (True if mode == "merge" else None)


def test_one_segment_name_for_two_properties_is_explained_in_the_words_of_the_settings(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """Attack: `membership_property: in_{stream_name}` with one fixed `segment_name`.
    Found: the warning spoke of "tag 'custom:in_a'", a tag nobody configured (the
    internal key). It now names the properties as the settings do."""
    config |= {"membership_property": "in_{stream_name}", "segment_name": "VIP"}
    log = run_ok(config, DATA / "membership" / "latest_run1.singer", tmp_path)
    [warning] = [line for line in log.splitlines() if "would follow both" in line]
    assert "property 'in_a' and property 'in_b'" in warning
    assert "custom:" not in warning and "tag" not in warning.split("|")[-1]
    [segment] = server.segments()
    assert segment["name"] == "VIP"


def test_a_run_that_started_first_but_writes_last_never_changes_the_status_of_a_contact(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """Attack: two pipelines at once. Job A (`email_status: subscribed`) starts, then
    job B (`nonSubscribed`) starts and creates member0; A reaches member0 only
    afterwards. Found: A's default status was dated by its earlier start, so newer
    than B's, and member0 became subscribed without consent. The default status is
    now dated when its batch goes out: member0 keeps B's status."""
    singer = lines(DATA / "membership" / "consent_concurrent.singer")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a = tmp_path / "a" / "config.json"
    config_a.write_text(json.dumps(config | {"email_status": "subscribed"}))
    job_a = subprocess.Popen(
        [str(TARGET_BIN), "--config", str(config_a)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path / "a",
    )
    assert job_a.stdin is not None
    job_a.stdin.write((singer[0] + "\n").encode())
    job_a.stdin.flush()
    # A has started (its settings, dates included, are fixed) once it checked the key.
    assert eventually(lambda: server.count("GET", "/contacts") >= 1, timeout=30)

    job_b = run_target(config | {"email_status": "nonSubscribed"}, singer, workdir=tmp_path / "b")
    assert job_b.returncode == 0, job_b.stderr[-2000:]
    assert status_of(server, "member0@example.com") == "nonSubscribed"

    job_a.stdin.write((singer[1] + "\n").encode())
    job_a.stdin.close()
    assert job_a.wait(timeout=120) == 0
    assert status_of(server, "member0@example.com") == "nonSubscribed"


def status_of(server: OmnisendServer, email: str) -> str:
    contact = server.contact(email)
    assert contact is not None
    return str(contact["identifiers"][0]["channels"]["email"]["status"])
