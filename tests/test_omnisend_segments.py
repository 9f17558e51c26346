"""Issue 12: every exported stream ends as an Omnisend saved segment that follows its tag.

Each test runs the real CLI against the local Omnisend-compatible server and checks what
a marketer would see under Audience → Segments: the segment's name, its rule, its
statistics (read over HTTP as Omnisend reports them), and what the run said about it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.api import SavedSegment, is_tag_rule
from target_omnisend.segments import decide, pick
from tests.conftest import API_KEY
from tests.harness import read_jsonl, run_target, segment_messages, stored_email
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_omnisend_server import Api, eventually

DATA = Path(__file__).parent / "data_files"
TAG = "segment:vip_buyers"
SEGMENT_WRITES = ("POST", "PUT", "DELETE")


def rule(tag: str) -> list[dict[str, Any]]:
    """The documented rule "tags any of [tag]", as /work/shared/omnisend-api.md gives it."""
    flt = {"operator": "anyOf", "property": "tags", "value": [tag]}
    return [{"conditions": [{"entity": "contact", "junction": "and", "filters": [flt]}]}]


def members(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"email": f"member{i}@example.com", "first_name": f"M{i}"} for i in range(start, stop)]


def full_read(records: list[dict[str, Any]], stream: str = "vip_buyers") -> list[dict[str, Any]]:
    """A full-table read: ACTIVATE_VERSION marks it complete (mirror may act)."""
    messages = segment_messages(records, stream=stream)
    activate = {"type": "ACTIVATE_VERSION", "stream": stream, "version": 1}
    return [messages[0], activate, *messages[1:]]


def summary(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(config["summary_path"]).read_text())


def statistics(server: OmnisendServer, segment_id: str, key: str = API_KEY) -> int:
    """The segment's contactsCount, read over HTTP as a user of Omnisend's API would."""
    reply = Api(server.url, key=key).get(f"/segments/{segment_id}/statistics")
    assert reply.status_code == 200, reply.text
    return int(reply.json()["contactsCount"])


def tagged(server: OmnisendServer, tag: str = TAG) -> int:
    return sum(1 for c in server.contacts() if tag in (c.get("tags") or []))


class SegmentCalls:
    """The /segments requests the server logged since the last `take()`."""

    def __init__(self, server: OmnisendServer) -> None:
        self.server = server
        self.seen = 0

    def take(self) -> list[tuple[str, str, int]]:
        log = self.server.request_log()
        new, self.seen = log[self.seen :], len(log)
        return [(e.method, e.path, e.status) for e in new if e.path.startswith("/segments")]


def writes(calls: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [c for c in calls if c[0] in SEGMENT_WRITES]


@pytest.fixture
def seg_config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    config["fingerprint_store_path"] = str(tmp_path / "store" / "fingerprints.sqlite")
    config["summary_path"] = str(tmp_path / "summary.json")
    return config


def run_ok(config: dict[str, Any], messages: Any, tmp_path: Path) -> str:
    run = run_target(config, messages, workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stderr


def test_first_run_creates_the_segment_and_a_rerun_writes_nothing(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    calls = SegmentCalls(server)
    log = run_ok(seg_config, segment_messages(members(0, 30)), tmp_path)
    first = calls.take()

    [segment] = server.segments()
    assert segment["name"] == "vip_buyers"  # the default: the stream's name
    assert segment["conditionGroups"] == rule(TAG)
    assert eventually(lambda: statistics(server, segment["segmentID"]) == 30, timeout=5)
    assert writes(first) == [("POST", "/segments", 201)]
    [reported] = summary(seg_config)["segments"]
    assert reported["name"] == "vip_buyers" and reported["action"] == "created"
    assert reported["segment_id"] == segment["segmentID"]
    assert reported["streams"] == ["vip_buyers"] and reported["tag"] == TAG
    assert reported["contacts_count"] in range(31)  # Omnisend's count may lag the tags
    assert "minute" in reported["contacts_count_note"]
    assert summary(seg_config)["segment_requests"] == len(first)
    assert f"Omnisend segment 'vip_buyers' (tag '{TAG}') created, id {segment['segmentID']}" in log

    calls.take()  # this test's own statistics reads
    log = run_ok(seg_config, segment_messages(members(0, 35)), tmp_path)
    second = calls.take()
    assert writes(second) == []
    # The remembered ID is read directly: no paging through the list.
    assert ("GET", "/segments", 200) not in second
    assert [s["segmentID"] for s in server.segments()] == [segment["segmentID"]]
    [reported] = summary(seg_config)["segments"]
    assert reported["action"] == "unchanged" and reported["segment_id"] == segment["segmentID"]
    assert summary(seg_config)["segment_requests"] == len(second)
    assert eventually(lambda: statistics(server, segment["segmentID"]) == 35, timeout=5)


def test_a_renamed_template_creates_a_new_segment_and_leaves_the_old_alone(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config["segment_name"] = "VIP {stream_name}"
    run_ok(seg_config, segment_messages(members(0, 5)), tmp_path)
    [old] = server.segments()
    seg_config["segment_name"] = "Top buyers ({stream_name})"
    run_ok(seg_config, segment_messages(members(0, 5)), tmp_path)

    by_name = {s["name"]: s for s in server.segments()}
    assert sorted(by_name) == ["Top buyers (vip_buyers)", "VIP vip_buyers"]
    assert by_name["VIP vip_buyers"] == {**old, "status": "ready"}  # not touched
    assert by_name["Top buyers (vip_buyers)"]["conditionGroups"] == rule(TAG)


def test_per_stream_names_win_over_the_template(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config["segment_names"] = {"gold_tier": "Gold customers", "bronze_tier": ""}
    run_ok(seg_config, (DATA / "segments" / "three_tiers.singer").read_bytes(), tmp_path)
    segments = {s["name"]: s["conditionGroups"] for s in server.segments()}
    assert segments == {
        "Gold customers": rule("segment:gold_tier"),
        "silver_tier": rule("segment:silver_tier"),
    }
    assert tagged(server, "segment:bronze_tier") == 4  # no segment, still tagged


def test_a_stream_renamed_by_a_stream_map_names_its_segment(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config["stream_maps"] = {"public-vip_buyers": {"__alias__": "vip_eu"}}
    run_ok(seg_config, segment_messages(members(0, 3), stream="public-vip_buyers"), tmp_path)
    [segment] = server.segments()
    assert segment["name"] == "vip_eu"
    assert segment["conditionGroups"] == rule("segment:vip_eu")


def test_a_foreign_segment_with_the_same_name_and_another_rule_is_not_touched(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    hand_made = server.add_segment("vip_buyers", ["newsletter"])
    calls = SegmentCalls(server)
    log = run_ok(seg_config, segment_messages(members(0, 10)), tmp_path)

    assert server.segments() == [hand_made]
    assert writes(calls.take()) == []
    assert tagged(server) == 10
    warnings = [line for line in log.splitlines() if "another rule" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]
    assert hand_made["segmentID"] in warnings[0] and "segment_overwrite" in warnings[0]
    [reported] = summary(seg_config)["segments"]
    assert reported["action"] == "skipped" and reported["segment_id"] is None

    # A second run does not adopt it either.
    run_ok(seg_config, segment_messages(members(0, 10)), tmp_path)
    assert server.segments() == [hand_made] and writes(calls.take()) == []


def test_segment_overwrite_makes_a_same_named_segment_follow_the_tag(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    hand_made = server.add_segment("vip_buyers", ["newsletter"])
    seg_config["segment_overwrite"] = True
    calls = SegmentCalls(server)
    run_ok(seg_config, segment_messages(members(0, 10)), tmp_path)

    [segment] = server.segments()
    assert segment["segmentID"] == hand_made["segmentID"]
    assert segment["conditionGroups"] == rule(TAG)
    assert writes(calls.take()) == [("PUT", f"/segments/{hand_made['segmentID']}", 200)]
    assert summary(seg_config)["segments"][0]["action"] == "updated"
    assert eventually(lambda: statistics(server, segment["segmentID"]) == 10, timeout=5)


def test_a_hand_made_segment_with_our_rule_is_adopted_without_a_write(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    hand_made = server.add_segment("vip_buyers", [TAG])
    calls = SegmentCalls(server)
    run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    assert server.segments() == [hand_made] and writes(calls.take()) == []
    assert summary(seg_config)["segments"][0]["segment_id"] == hand_made["segmentID"]
    # Adopted, not made: a changed segment_tag does not rewrite it.
    seg_config["segment_tag"] = "vip:{stream_name}"
    run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    assert server.segments() == [hand_made] and writes(calls.take()) == []
    assert summary(seg_config)["segments"][0]["action"] == "skipped"


def test_a_segment_the_target_made_follows_a_changed_segment_tag(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    [made] = server.segments()
    eventually(lambda: server.segments()[0]["status"] == "ready")
    seg_config["segment_tag"] = "vip:{stream_name}"
    run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    [segment] = server.segments()
    assert segment["segmentID"] == made["segmentID"]
    assert segment["conditionGroups"] == rule("vip:vip_buyers")
    assert summary(seg_config)["segments"][0]["action"] == "updated"


def test_another_pipeline_sharing_the_store_and_the_name_does_not_take_it_over(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config["segment_name"] = "VIP"
    calls = SegmentCalls(server)
    run_ok(seg_config, segment_messages(members(0, 3), stream="vip_eu"), tmp_path)
    [made] = server.segments()
    eventually(lambda: server.segments()[0]["status"] == "ready")
    log = run_ok(seg_config, segment_messages(members(3, 6), stream="vip_us"), tmp_path)
    assert "has another rule and is left alone" in log
    run_ok(seg_config, segment_messages(members(0, 3), stream="vip_eu"), tmp_path)
    assert [c[0] for c in writes(calls.take())] == ["POST"]  # never a PUT back and forth
    assert server.segments()[0]["conditionGroups"] == rule("segment:vip_eu")
    assert server.segments()[0]["segmentID"] == made["segmentID"]


def test_a_segment_deleted_in_omnisend_is_made_again(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    [made] = server.segments()
    api = Api(server.url, key=API_KEY)
    assert eventually(
        lambda: api.delete(f"/segments/{made['segmentID']}").status_code == 204, timeout=5
    )
    run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    [again] = server.segments()
    assert again["segmentID"] != made["segmentID"] and again["conditionGroups"] == rule(TAG)
    assert summary(seg_config)["segments"][0]["action"] == "created"


def test_duplicates_by_name_pick_the_oldest_that_follows_the_tag_and_warn(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    server.add_segment("vip_buyers", ["other"])
    time.sleep(0.01)  # createdAt has millisecond precision
    oldest_ours = server.add_segment("vip_buyers", [TAG])
    time.sleep(0.01)
    server.add_segment("vip_buyers", [TAG])
    before = server.segments()
    calls = SegmentCalls(server)
    log = run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    assert server.segments() == before and writes(calls.take()) == []
    assert summary(seg_config)["segments"][0]["segment_id"] == oldest_ours["segmentID"]
    duplicates = [line for line in log.splitlines() if "segments are named 'vip_buyers'" in line]
    assert len(duplicates) == 1 and oldest_ours["segmentID"] in duplicates[0]


def test_streams_sharing_a_tag_share_one_segment(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config["segment_tag"] = "segment:vip"
    data = (DATA / "pipeline" / "two_streams_one_tag.singer").read_bytes()
    log = run_ok(seg_config, data, tmp_path)
    [segment] = server.segments()
    assert segment["name"] == "vip_eu" and segment["conditionGroups"] == rule("segment:vip")
    assert "share one Omnisend segment, named 'vip_eu' (not 'vip_us')" in log
    assert summary(seg_config)["segments"][0]["streams"] == ["vip_eu", "vip_us"]
    assert eventually(lambda: statistics(server, segment["segmentID"]) == 20, timeout=5)

    seg_config["segment_names"] = {"vip_eu": "VIP", "vip_us": "VIP"}
    log = run_ok(seg_config, data, tmp_path)
    assert sorted(s["name"] for s in server.segments()) == ["VIP", "vip_eu"]
    assert "share one Omnisend segment" not in log


def test_one_name_for_several_tags_goes_to_the_first_tag_only(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config["segment_name"] = "Tiers"
    data = (DATA / "segments" / "three_tiers.singer").read_bytes()
    calls = SegmentCalls(server)
    log = run_ok(seg_config, data, tmp_path)
    [segment] = server.segments()
    assert segment["name"] == "Tiers"
    assert segment["conditionGroups"] == rule("segment:bronze_tier")  # streams by name
    warnings = [line for line in log.splitlines() if "would follow both" in line]
    assert len(warnings) == 2 and all("WARNING" in line for line in warnings)
    assert [c[0] for c in writes(calls.take())] == ["POST"]
    run_ok(seg_config, data, tmp_path)  # and it does not flip between the tags
    assert writes(calls.take()) == [] and server.segments()[0]["conditionGroups"] == rule(
        "segment:bronze_tier"
    )


def test_mirror_run_statistics_count_the_members_after_removals(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config.update(sync_mode="mirror", mirror_confirm_runs=1)
    run_ok(seg_config, full_read(members(0, 20)), tmp_path)
    [segment] = server.segments()
    assert eventually(lambda: statistics(server, segment["segmentID"]) == 20, timeout=5)
    run_ok(seg_config, full_read(members(0, 14)), tmp_path)
    assert summary(seg_config)["mirror"][TAG]["removed"] == 6
    assert eventually(lambda: statistics(server, segment["segmentID"]) == 14, timeout=5)
    assert len(server.segments()) == 1


def test_dry_run_writes_the_segment_requests_to_the_file_and_nothing_to_omnisend(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config.update(dry_run=True, dry_run_path=str(tmp_path / "dry.jsonl"))
    log = run_ok(seg_config, segment_messages(members(0, 5)), tmp_path)
    assert server.segments() == [] and server.contacts() == []
    planned = [r for r in read_jsonl(tmp_path / "dry.jsonl") if r["path"] == "/api/segments"]
    assert planned == [
        {
            "method": "POST",
            "path": "/api/segments",
            "body": {"name": "vip_buyers", "conditionGroups": rule(TAG)},
        }
    ]
    assert ("GET", "/segments", 200) in SegmentCalls(server).take()  # reads are allowed
    assert summary(seg_config)["segments"][0]["action"] == "would_create"
    assert "would create" in log

    # After a real run the segment exists: a dry run with another segment_tag plans a PUT.
    seg_config["dry_run"] = False
    run_ok(seg_config, segment_messages(members(0, 5)), tmp_path)
    [made] = server.segments()
    eventually(lambda: server.segments()[0]["status"] == "ready")
    seg_config.update(dry_run=True, segment_tag="vip:{stream_name}")
    run_ok(seg_config, segment_messages(members(0, 5)), tmp_path)
    planned = [r for r in read_jsonl(tmp_path / "dry.jsonl") if "/segments" in r["path"]]
    assert planned == [
        {
            "method": "PUT",
            "path": f"/api/segments/{made['segmentID']}",
            "body": {"name": "vip_buyers", "conditionGroups": rule("vip:vip_buyers")},
        }
    ]
    assert server.segments() == [made | {"status": "ready"}]


@pytest.fixture
def scoped_server() -> Iterator[OmnisendServer]:
    scopes = {"no-segment-writes": ["segments.read"], "no-segments": []}
    with OmnisendServer(api_keys=(API_KEY,), api_key_scopes=scopes) as srv:
        yield srv


@pytest.mark.parametrize(
    ("key", "scope"), [("no-segment-writes", "segments.write"), ("no-segments", "segments.read")]
)
def test_a_key_without_the_segment_scope_warns_once_and_still_delivers(
    scoped_server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path, key: str, scope: str
) -> None:
    seg_config.update(api_key=key, api_url=scoped_server.url)
    log = run_ok(seg_config, segment_messages(members(0, 8)), tmp_path)
    assert scoped_server.segments() == []
    assert eventually(lambda: tagged(scoped_server) == 8)
    warnings = [line for line in log.splitlines() if "WARNING" in line and "scope" in line]
    assert len(warnings) == 1 and f"'{scope}'" in warnings[0]
    assert summary(seg_config)["segments"][0]["action"] == "skipped"
    assert key not in log


def test_a_409_while_building_is_retried_by_the_client_then_the_rule_is_replaced(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    hand_made = server.add_segment("vip_buyers", ["newsletter"])
    # Omnisend answers PUT with 409 while a segment builds; here for the next two PUTs.
    server.add_fault(FaultRule(method="PUT", path="/segments", status=409, times=2))
    seg_config["segment_overwrite"] = True
    calls = SegmentCalls(server)
    run_ok(seg_config, segment_messages(members(0, 4)), tmp_path)
    puts = [c for c in calls.take() if c[0] == "PUT"]
    [segment] = server.segments()
    assert segment["segmentID"] == hand_made["segmentID"]
    assert segment["conditionGroups"] == rule(TAG)
    assert [p[2] for p in puts] == [409, 409, 200]
    assert summary(seg_config)["segments"][0]["action"] == "updated"


def test_a_409_beyond_max_retries_ends_in_a_warning_and_exit_0(
    seg_config: dict[str, Any], tmp_path: Path
) -> None:
    """The segment builds for two minutes: the PUT is tried 1 + max_retries times, no
    more, and the run warns and goes on."""
    with OmnisendServer(api_keys=(API_KEY,), segment_build_seconds=120) as srv:
        busy = srv.add_segment("vip_buyers", ["newsletter"], building=True)
        seg_config.update(api_url=srv.url, segment_overwrite=True, max_retries=1)
        calls = SegmentCalls(srv)
        log = run_ok(seg_config, segment_messages(members(0, 4)), tmp_path)
        assert srv.segments() == [busy]
        assert eventually(lambda: tagged(srv) == 4)
        puts = [c for c in calls.take() if c[0] == "PUT"]
    assert [p[2] for p in puts] == [409, 409]
    warnings = [line for line in log.splitlines() if "next run tries again" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "409" in warnings[0]
    assert summary(seg_config)["segments"][0]["action"] == "failed"


def test_a_timed_out_post_is_looked_up_not_repeated(
    seg_config: dict[str, Any], tmp_path: Path
) -> None:
    with OmnisendServer(
        api_keys=(API_KEY,), slow_segment_posts=1, slow_segment_post_seconds=1.5
    ) as srv:
        seg_config.update(api_url=srv.url, request_timeout=0.5)
        calls = SegmentCalls(srv)
        log = run_ok(seg_config, segment_messages(members(0, 4)), tmp_path)
        segments = srv.segments()
        # The slow POST is logged once answered, after the target gave up waiting: once
        # the server has answered every request, the log holds all the target sent.
        assert srv.settle(timeout=10)
        posts = [c for c in calls.take() if c[0] == "POST"]
    assert [s["name"] for s in segments] == ["vip_buyers"]  # one, not a duplicate
    assert len(posts) == 1
    assert "looking it up before trying again" in log
    [reported] = summary(seg_config)["segments"]
    assert reported["action"] == "created" and reported["segment_id"] == segments[0]["segmentID"]


def test_segment_writes_wait_for_their_own_small_budget(
    seg_config: dict[str, Any], tmp_path: Path
) -> None:
    with OmnisendServer(
        api_keys=(API_KEY,),
        segment_writes_per_minute=1,
        window_seconds=1.0,
        rate_limit_headers=False,  # so the client learns the budget from 429s
    ) as srv:
        seg_config["api_url"] = srv.url
        run_ok(seg_config, (DATA / "segments" / "three_tiers.singer").read_bytes(), tmp_path)
        names = sorted(s["name"] for s in srv.segments())
        refused = srv.count(method="POST", path_prefix="/segments", status=429)
    assert names == ["bronze_tier", "gold_tier", "silver_tier"]
    assert refused >= 1  # the server's 1-per-second budget was hit and waited out
    assert [r["action"] for r in summary(seg_config)["segments"]] == ["created"] * 3


def test_v5_refuses_an_explicit_segment_name_and_is_quiet_without_one(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config.update(api_version="v5", segment_tag="", segment_name="VIP")
    run = run_target(seg_config, segment_messages(members(0, 3)), workdir=tmp_path)
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "segment_name needs api_version 2026-03-15" in errors[0]
    assert server.request_log() == []

    del seg_config["segment_name"]
    log = run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    assert len(server.contacts()) == 3
    assert SegmentCalls(server).take() == [] and "Omnisend segment" not in log


def test_an_empty_segment_name_turns_segments_off(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config["segment_name"] = ""
    run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    assert SegmentCalls(server).take() == [] and summary(seg_config)["segments"] == []
    assert {stored_email(c) for c in server.contacts()} == {m["email"] for m in members(0, 3)}


def test_segment_name_without_a_segment_tag_is_refused(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    seg_config.update(segment_tag="", segment_name="VIP")
    run = run_target(seg_config, segment_messages(members(0, 3)), workdir=tmp_path)
    assert run.returncode == 2 and "segment_name needs a segment_tag" in run.stderr
    assert server.request_log() == []


def test_the_key_never_reaches_the_segment_logs(
    server: OmnisendServer, seg_config: dict[str, Any], tmp_path: Path
) -> None:
    log = run_ok(seg_config, segment_messages(members(0, 3)), tmp_path)
    assert API_KEY not in log and "member0@example.com" not in log
    assert API_KEY not in Path(seg_config["summary_path"]).read_text()


# -- the pure decisions, for shapes the local server does not produce -----------------


def _flt(**overrides: Any) -> dict[str, Any]:
    return {"operator": "anyOf", "property": "tags", "value": [TAG], **overrides}


@pytest.mark.parametrize(
    ("groups", "follows"),
    [
        (rule(TAG), True),
        # Plausible echoes Omnisend does not document: junction dropped, ids and defaults
        # added, the entity left implicit.
        ([{"conditions": [{"entity": "contact", "filters": [_flt()]}]}], True),
        ([{"id": "g1", "conditions": [{"junction": "or", "filters": [_flt(id="f1")]}]}], True),
        ([{"conditions": [{"entity": "contact", "filters": [_flt(value=[TAG, TAG])]}]}], True),
        # Another rule: never taken for ours.
        (rule("segment:other"), False),
        ([{"conditions": [{"entity": "contact", "filters": [_flt(operator="noneOf")]}]}], False),
        ([{"conditions": [{"entity": "contact", "filters": [_flt(value=[TAG, "x"])]}]}], False),
        ([{"conditions": [{"entity": "contact", "filters": [_flt(property="tag")]}]}], False),
        ([{"conditions": [{"entity": "event", "filters": [_flt()]}]}], False),
        (rule(TAG) + rule("segment:other"), False),
        ([{"conditions": [{"filters": [_flt(), _flt(value=["x"])]}]}], False),
        ([], False),
        (None, False),
        ([{"conditions": ["not an object"]}], False),
    ],
)
def test_a_rule_follows_the_tag_by_meaning_not_by_text(groups: Any, follows: bool) -> None:
    assert is_tag_rule(groups, TAG) is follows


def _segment(segment_id: str, created_at: str, tag: str) -> SavedSegment:
    return SavedSegment(segment_id, "VIP", rule(tag), "ready", created_at)


def test_pick_prefers_the_tag_then_the_oldest_then_the_smallest_id() -> None:
    foreign = _segment("0" * 24, "2026-01-01T00:00:00.000Z", "other")
    old = _segment("b" * 24, "2026-02-01T00:00:00.000Z", TAG)
    same_time = _segment("a" * 24, "2026-02-01T00:00:00.000Z", TAG)
    newer = _segment("1" * 24, "2026-03-01T00:00:00.000Z", TAG)
    for order in ([foreign, old, same_time, newer], [newer, same_time, old, foreign]):
        assert pick(order, TAG) == same_time
    assert pick([foreign], TAG) == foreign and pick([], TAG) is None


def test_decide_never_takes_over_a_segment_it_did_not_make() -> None:
    ours = _segment("a" * 24, "2026-02-01T00:00:00.000Z", "old-tag")
    assert decide(None, TAG, None, overwrite=False) == "create"
    assert decide(ours, "old-tag", None, overwrite=False) == "keep"
    assert decide(ours, TAG, "old-tag", overwrite=False) == "replace"  # made it, untouched
    assert decide(ours, TAG, None, overwrite=False) == "foreign"
    assert decide(ours, TAG, "", overwrite=False) == "foreign"  # adopted, not made
    assert decide(ours, TAG, "third-tag", overwrite=False) == "foreign"  # edited since
    assert decide(ours, TAG, None, overwrite=True) == "replace"
