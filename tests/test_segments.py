"""Segment semantics across nightly runs: tags, send-only-what-changed, mirror and its
guards, consent, dry run — each checked against what the local Omnisend holds."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import (
    create_contact,
    read_jsonl,
    run_target,
    segment_messages,
    stored_email,
)
from tests.omnisend_server import FaultRule, OmnisendServer

TAG = "segment:vip"
MAY = "2026-05-01T00:00:00Z"
WRITES = ("POST", "PATCH", "DELETE")


def profiles(n: int, start: int = 0, tier: str = "gold") -> list[dict[str, Any]]:
    return [
        {"email": f"member{i}@example.com", "first_name": f"M{i}", "loyalty_tier": tier}
        for i in range(start, start + n)
    ]


def full_read(records: list[dict[str, Any]], stream: str = "vip") -> list[dict[str, Any]]:
    """What a tap sends for a full-table read: ACTIVATE_VERSION marks it complete."""
    messages = segment_messages(records, stream=stream)
    return [
        *messages[:-1],
        {"type": "ACTIVATE_VERSION", "stream": stream, "version": 1},
        messages[-1],
    ]


def tagged(server: OmnisendServer, tag: str = TAG) -> set[str]:
    return {stored_email(c) for c in server.contacts() if tag in (c.get("tags") or [])}


def contacts_written(server: OmnisendServer) -> int:
    """Contacts carried by batch writes so far (the server keeps every batch)."""
    return sum(b["totalCount"] for b in server.batches())


def writes(server: OmnisendServer) -> int:
    return sum(1 for e in server.request_log() if e.method in WRITES)


@pytest.fixture
def seg_config(config: dict, tmp_path: Path) -> dict:
    config["fingerprint_store_path"] = str(tmp_path / "state" / "fingerprints.sqlite")
    config["summary_path"] = str(tmp_path / "summary.json")
    return config


def test_rerun_sends_only_changes_and_mirror_untags_exactly_the_leavers(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    seg_config["sync_mode"] = "mirror"
    first = profiles(300)
    run = run_target(seg_config, full_read(first), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert tagged(server) == {r["email"] for r in first}
    first_contacts = contacts_written(server)
    assert first_contacts == 300

    # Next night: 3 profiles changed (1%), 3 left (1%), 3 joined.
    second = [dict(r) for r in first[3:]]
    for record in second[:3]:
        record["loyalty_tier"] = "platinum"
    second += profiles(3, start=1000)
    run = run_target(seg_config, full_read(second), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]

    assert contacts_written(server) - first_contacts == 6  # 3 changed + 3 joined
    leavers = {r["email"] for r in first[:3]}
    # One complete-looking read is no proof (the tap may have died): removals are staged.
    assert tagged(server) == {r["email"] for r in second} | leavers
    summary = json.loads(Path(seg_config["summary_path"]).read_text())
    assert summary["mirror"][TAG] == {
        "removed": 0,
        "tagged": 303,
        "staged": 3,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }
    assert "received=300 delivered=6 rejected=0 unchanged=294" in run.stderr

    # The next night they are still absent: now they lose the tag.
    run = run_target(seg_config, full_read(second), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert tagged(server) == {r["email"] for r in second}
    for email in leavers:
        contact = server.contact(email)
        assert contact is not None, "mirror never deletes contacts"
        assert TAG not in contact["tags"]
    assert server.contact(second[0]["email"])["customProperties"]["loyalty_tier"] == "platinum"
    assert "received=300 delivered=0 rejected=0 unchanged=300" in run.stderr
    summary = json.loads(Path(seg_config["summary_path"]).read_text())
    assert summary["streams"]["vip"]["unchanged"] == 300
    assert summary["mirror"][TAG] == {
        "removed": 3,
        "tagged": 303,
        "staged": 0,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }


def test_mirror_refuses_when_the_read_was_incremental(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    seg_config["sync_mode"] = "mirror"
    assert run_target(seg_config, full_read(profiles(20)), workdir=tmp_path).returncode == 0
    # No ACTIVATE_VERSION: an incremental read says nothing about who left.
    run = run_target(seg_config, segment_messages(profiles(10), stream="vip"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(tagged(server)) == 20
    assert "removed nothing" in run.stderr and "ACTIVATE_VERSION" in run.stderr


def test_mirror_refuses_when_too_many_would_leave(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    seg_config["sync_mode"] = "mirror"
    assert run_target(seg_config, full_read(profiles(20)), workdir=tmp_path).returncode == 0
    run = run_target(seg_config, full_read(profiles(5)), workdir=tmp_path)  # 75% "left"
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(tagged(server)) == 20
    assert "mirror_max_removal_ratio" in run.stderr


def test_mirror_refuses_after_delivery_failures(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    seg_config["sync_mode"] = "mirror"
    assert run_target(seg_config, full_read(profiles(20)), workdir=tmp_path).returncode == 0
    # One new member cannot be delivered (5xx on every attempt) while 1 member left.
    server.add_fault(FaultRule(kind="item_error", email_pattern=r"^member500@", status=500))
    records = profiles(19) + profiles(1, start=500)
    seg_config["max_retries"] = 1
    run = run_target(seg_config, full_read(records), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(tagged(server)) == 20  # member19 kept the tag: nothing removed
    rejected = read_jsonl(Path(seg_config["rejected_records_path"]))
    assert [r["code"] for r in rejected] == ["delivery_failed"]
    assert "could not be delivered" in run.stderr


def test_changed_mapping_config_sends_everything_again(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    records = profiles(50)
    assert run_target(seg_config, full_read(records), workdir=tmp_path).returncode == 0
    assert run_target(seg_config, full_read(records), workdir=tmp_path).returncode == 0
    assert contacts_written(server) == 50  # second run: all unchanged
    seg_config["custom_properties"] = {"tier": "loyalty_tier"}
    assert run_target(seg_config, full_read(records), workdir=tmp_path).returncode == 0
    assert contacts_written(server) == 100
    assert server.contact("member0@example.com")["customProperties"]["tier"] == "gold"


def test_full_refresh_ignores_the_store_and_a_lost_store_costs_only_speed(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    records = profiles(40)
    assert run_target(seg_config, full_read(records), workdir=tmp_path).returncode == 0
    seg_config["full_refresh"] = True
    assert run_target(seg_config, full_read(records), workdir=tmp_path).returncode == 0
    assert contacts_written(server) == 80
    seg_config["full_refresh"] = False
    seg_config["fingerprint_store_path"] = str(tmp_path / "elsewhere" / "new.sqlite")
    assert run_target(seg_config, full_read(records), workdir=tmp_path).returncode == 0
    assert contacts_written(server) == 120
    assert len(server.contacts()) == 40 and tagged(server) == {r["email"] for r in records}


def test_dry_run_writes_the_requests_and_sends_nothing(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    seg_config["dry_run"] = True
    seg_config["dry_run_path"] = str(tmp_path / "dry.jsonl")
    run = run_target(seg_config, full_read(profiles(150)), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert writes(server) == 0 and server.contacts() == []
    planned = read_jsonl(tmp_path / "dry.jsonl")
    batches = [p for p in planned if p["path"] == "/api/batches"]
    assert [len(b["body"]["items"]) for b in batches] == [100, 50]
    tag_calls = [p for p in planned if p["path"] == "/api/contacts/tags"]
    assert sum(len(t["body"]["emails"]) for t in tag_calls) == 150
    assert all(t["body"]["tags"] == [TAG] for t in tag_calls)
    # The store is untouched: a real run afterwards sends everything.
    seg_config["dry_run"] = False
    assert run_target(seg_config, full_read(profiles(150)), workdir=tmp_path).returncode == 0
    assert len(server.contacts()) == 150


def _subscribe(server: OmnisendServer, email: str, status: str, when: str) -> None:
    create_contact(server.url, API_KEY, email, status, when)


def _status(server: OmnisendServer, email: str) -> str:
    return server.contact(email)["identifiers"][0]["channels"]["email"]["status"]


def test_consent_rules(server: OmnisendServer, seg_config: dict, tmp_path: Path) -> None:
    _subscribe(server, "old.unsub@example.com", "unsubscribed", "2024-01-01T00:00:00Z")
    _subscribe(server, "recent.unsub@example.com", "unsubscribed", "2026-10-01T00:00:00Z")
    _subscribe(server, "existing.sub@example.com", "subscribed", "2025-01-01T00:00:00Z")
    seg_config.update(
        email_status="subscribed",
        status_field="consent",
        status_timestamp_field="consent_at",
    )
    records = [
        {"email": "new.person@example.com"},  # created: gets email_status
        {"email": "existing.sub@example.com", "consent": ""},  # no explicit status: kept
        # explicit, newer than Omnisend's: applied
        {
            "email": "old.unsub@example.com",
            "consent": "subscribed",
            "consent_at": "2026-05-01T00:00:00Z",
        },
        # explicit but older than Omnisend's: Omnisend keeps its newer status
        {
            "email": "recent.unsub@example.com",
            "consent": "subscribed",
            "consent_at": "2026-05-01T00:00:00Z",
        },
    ]
    run = run_target(seg_config, segment_messages(records, stream="vip"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _status(server, "new.person@example.com") == "subscribed"
    assert _status(server, "existing.sub@example.com") == "subscribed"
    assert _status(server, "old.unsub@example.com") == "subscribed"
    assert _status(server, "recent.unsub@example.com") == "unsubscribed"


def test_default_status_never_downgrades_an_existing_contact(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    _subscribe(server, "fan@example.com", "subscribed", "2025-01-01T00:00:00Z")
    _subscribe(server, "gone@example.com", "unsubscribed", "2025-01-01T00:00:00Z")
    seg_config["email_status"] = "subscribed"
    records = [{"email": "fan@example.com"}, {"email": "gone@example.com"}]
    assert (
        run_target(seg_config, segment_messages(records, stream="vip"), workdir=tmp_path).returncode
        == 0
    )
    assert _status(server, "fan@example.com") == "subscribed"
    assert _status(server, "gone@example.com") == "unsubscribed"  # never re-subscribed


def test_static_tags_join_the_segment_tag_without_touching_other_tags(
    server: OmnisendServer, seg_config: dict, tmp_path: Path
) -> None:
    seg_config["tags"] = ["from-warehouse"]
    seg_config["segment_tag"] = "{stream_name}-2026"
    run = run_target(seg_config, segment_messages(profiles(3), stream="vip"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    for contact in server.contacts():
        assert sorted(contact["tags"]) == ["from-warehouse", "vip-2026"]
    # one tags call covers all three new members (≤ 250 emails a call)
    assert server.count(method="POST", path_prefix="/contacts/tags") == 1


def test_two_segments_running_at_once_share_one_fingerprint_store(
    seg_config: dict, tmp_path: Path
) -> None:
    """Two scheduled jobs of one project, overlapping: both finish, neither is refused
    the shared store, and each one's next run finds all its contacts unchanged."""
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=0.3) as slow:
        seg_config["api_url"] = slow.url
        jobs = {
            stream: (profiles(1500, start=offset), tmp_path / stream)
            for stream, offset in (("vip", 0), ("churn_risk", 5000))
        }
        for _, workdir in jobs.values():
            workdir.mkdir()

        def night() -> list:
            with ThreadPoolExecutor(2) as pool:
                runs = [
                    pool.submit(
                        run_target,
                        {**seg_config, "rejected_records_path": str(workdir / "rejected.jsonl")},
                        segment_messages(records, stream=stream),
                        workdir=workdir,
                    )
                    for stream, (records, workdir) in jobs.items()
                ]
                return [run.result() for run in runs]

        for run in night():
            assert run.returncode == 0, run.stderr[-2000:]
            assert "delivered=1500" in run.stderr
        assert len(slow.contacts()) == 3000
        for run in night():
            assert run.returncode == 0, run.stderr[-2000:]
            assert "delivered=0 rejected=0 unchanged=1500" in run.stderr
