"""Issue 19: after every complete read the segment in Omnisend is exactly the source
segment, however the tap sends its records and whoever else touched the tag.

Each case is replayed from Singer files under `tests/data_files/membership/` through the
real CLI against the local Omnisend-compatible server; each failed on 677ed6e. The
README's "Sync modes, tags and re-runs" (mirror table) and "Consent and email status"
are the spec.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import API_KEY
from tests.harness import TARGET_BIN, read_jsonl, run_target, stored_email
from tests.omnisend_server import OmnisendServer
from tests.test_omnisend_server import eventually

DATA = Path(__file__).parent / "data_files" / "membership"
PIPELINE = Path(__file__).parent / "data_files" / "pipeline"
TAG = "segment:vip"


def scenario(name: str, folder: Path = DATA) -> bytes:
    """A Singer file; `{batch_dir}` in BATCH manifests is the folder's absolute path."""
    return (folder / name).read_text().replace("{batch_dir}", str(folder)).encode()


def tagged(server: OmnisendServer, tag: str = TAG) -> set[str]:
    return {stored_email(c) for c in server.contacts() if tag in (c.get("tags") or [])}


def members(*ranges: range) -> set[str]:
    return {f"member{i}@example.com" for r in ranges for i in r}


def summary(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(config["summary_path"]).read_text())


def ok(run: Any) -> Any:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run


def untag_elsewhere(server: OmnisendServer, emails: list[str], tag: str = TAG) -> None:
    """A person or another tool takes the tag off, through Omnisend's API."""
    reply = requests.delete(
        f"{server.url}/api/contacts/tags",
        headers={"Authorization": f"Omnisend-API-Key {API_KEY}", "Omnisend-Version": "2026-03-15"},
        json={"tags": [tag], "emails": emails},
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    # 202: Omnisend (and the local server) apply the untag asynchronously.
    assert eventually(lambda: not tagged(server, tag) & set(emails), timeout=10)


def tag_calls(server: OmnisendServer, method: str = "POST") -> int:
    return server.count(method, "/contacts/tags")


@pytest.fixture
def mirror_config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    config.update(
        fingerprint_store_path=str(tmp_path / "store" / "fingerprints.sqlite"),
        summary_path=str(tmp_path / "summary.json"),
        custom_properties={"tier": "loyalty_tier"},
        segment_tag=TAG,
        segment_name="",
        sync_mode="mirror",
        mirror_confirm_runs=1,
    )
    return config


# -- 1. records in BATCH messages -------------------------------------------------------


def test_batch_message_records_are_delivered_validated_counted_and_covered_by_state(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """One RECORD, three records in a gzipped batch file, four in a plain one (one fails
    its schema, one has no email): every one ends delivered or rejected, the STATE
    follows, and a re-run under mirror keeps every batched member tagged."""
    run = ok(run_target(mirror_config, scenario("batch_full_read.singer"), workdir=tmp_path))
    assert members(range(6)) == {stored_email(c) for c in server.contacts()}
    assert tagged(server) == members(range(6))
    assert run.states == [{"bookmarks": {"vip": {"replication_key_value": 7}}}]
    counts = summary(mirror_config)["streams"]["vip"]
    assert (counts["received"], counts["delivered"], counts["rejected"]) == (8, 6, 2)
    assert counts["rejected_by_reason"] == {"schema_invalid": 1, "missing_email": 1}
    reasons = {r["code"] for r in read_jsonl(Path(mirror_config["rejected_records_path"]))}
    assert reasons == {"schema_invalid", "missing_email"}

    again = ok(run_target(mirror_config, scenario("batch_full_read.singer"), workdir=tmp_path))
    assert tagged(server) == members(range(6)), "batched members were untagged as absent"
    assert summary(mirror_config)["mirror"][TAG]["removed"] == 0
    assert summary(mirror_config)["streams"]["vip"]["unchanged"] == 6
    assert again.states == run.states


def test_a_batch_encoding_the_target_cannot_read_ends_the_run_in_one_line_without_state(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    run = run_target(mirror_config, scenario("batch_parquet.singer"), workdir=tmp_path)
    assert run.returncode == 1
    assert run.states == []
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, run.stderr[-2000:]
    assert "parquet" in errors[0] and "jsonl" in errors[0] and "No STATE" in errors[0]
    assert "Traceback" not in run.stderr


def test_a_missing_batch_file_ends_the_run_in_one_line_without_state(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    text = scenario("batch_full_read.singer").decode().replace("1_3.jsonl.gz", "9_9.jsonl.gz")
    run = run_target(mirror_config, text.encode(), workdir=tmp_path)
    assert run.returncode == 1 and run.states == []
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "batch_members_9_9.jsonl.gz cannot be read" in errors[0]


# -- 2. mirror re-tags members missing the tag --------------------------------------------


def test_mirror_gives_the_tag_back_to_members_untagged_elsewhere(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    full = scenario("full_read_20.singer", PIPELINE)
    ok(run_target(mirror_config, full, workdir=tmp_path))
    untag_elsewhere(server, ["member3@example.com", "member7@example.com"])
    assert tagged(server) == members(range(20)) - members(range(3, 4), range(7, 8))

    ok(run_target(mirror_config, full, workdir=tmp_path))
    assert tagged(server) == members(range(20))
    result = summary(mirror_config)["mirror"][TAG]
    assert (result["retagged"], result["removed"]) == (2, 0)

    before = tag_calls(server)
    ok(run_target(mirror_config, full, workdir=tmp_path))
    assert summary(mirror_config)["mirror"][TAG]["retagged"] == 0
    assert tag_calls(server) == before, "an unchanged re-run made a tag call"


def test_upsert_leaves_drift_alone_and_full_refresh_repairs_it_without_removals(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """The README's repair for upsert mode: one run with full_refresh: true."""
    upsert = {**mirror_config, "sync_mode": "upsert"}
    ok(run_target(upsert, scenario("full_read_20.singer", PIPELINE), workdir=tmp_path))
    untag_elsewhere(server, ["member3@example.com"])
    fifteen = scenario("full_read_15_of_20.singer", PIPELINE)  # members 0-14
    ok(run_target(upsert, fifteen, workdir=tmp_path))
    assert "member3@example.com" not in tagged(server)  # documented: upsert never re-tags
    ok(run_target({**upsert, "full_refresh": True}, fifteen, workdir=tmp_path))
    assert tagged(server) == members(range(20)), "the repair removed or missed someone"


# -- 3. one identity whatever lowercase_emails ------------------------------------------------


def test_mixed_case_members_keep_the_tag_run_after_run_with_lowercase_emails_off(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    config = {**mirror_config, "lowercase_emails": False}
    read = scenario("mixed_case_full_read.singer")
    expected = {f"Member{i}@Example.com" for i in range(5)} | members(range(5, 10))
    for _ in range(3):
        ok(run_target(config, read, workdir=tmp_path))
        assert tagged(server) == expected
        result = summary(config)["mirror"][TAG]
        assert (result["removed"], result["staged"], result["retagged"]) == (0, 0, 0)
    assert {stored_email(c) for c in server.contacts()} == expected


# -- 4. present members clear their stage even when mirror is refused ------------------------


def test_a_member_present_in_a_refused_mirror_run_loses_its_stage(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """Members 15-19 are absent from one complete read (staged), present in an
    incremental read (mirror refused), then absent again after a tap dies: that is
    their first absence since, so nothing is removed."""
    config = {**mirror_config, "mirror_confirm_runs": 2}
    ok(run_target(config, scenario("full_read_20.singer", PIPELINE), workdir=tmp_path))
    fifteen = scenario("full_read_15_of_20.singer", PIPELINE)
    ok(run_target(config, fifteen, workdir=tmp_path))
    assert summary(config)["mirror"][TAG]["staged"] == 5
    incremental = ok(run_target(config, scenario("incremental_all_20.singer"), workdir=tmp_path))
    assert "not marked as a full read" in incremental.stderr
    refused = summary(config)["mirror"][TAG]
    ok(run_target(config, fifteen, workdir=tmp_path))
    assert tagged(server) == members(range(20)), "a stage survived the member's return"
    assert refused.get("stage_cleared") == 5
    assert summary(config)["mirror"][TAG] == {
        "removed": 0,
        "tagged": 20,
        "staged": 5,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }


def test_a_member_present_in_a_run_the_ratio_guard_refuses_loses_its_stage(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """The same under the ratio guard: a read of members 10-19 only (half absent, over
    the 30 % allowed) removes nothing, yet members 15-19 were present in it."""
    config = {**mirror_config, "mirror_confirm_runs": 2, "mirror_max_removal_ratio": 0.3}
    ok(run_target(config, scenario("full_read_20.singer", PIPELINE), workdir=tmp_path))
    fifteen = scenario("full_read_15_of_20.singer", PIPELINE)
    ok(run_target(config, fifteen, workdir=tmp_path))
    ok(run_target(config, scenario("full_read_10_to_19.singer"), workdir=tmp_path))
    refused = summary(config)["mirror"][TAG]
    assert "mirror_max_removal_ratio" in refused["skipped"]
    ok(run_target(config, fifteen, workdir=tmp_path))
    assert tagged(server) == members(range(20)), "a stage survived the member's return"
    assert refused.get("stage_cleared") == 5


# -- 5. two pipelines writing one tag -------------------------------------------------------


def test_two_pipelines_on_one_tag_never_untag_each_others_members(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """Two Meltano jobs (streams vip_eu: members 0-9, vip_us: 0 and 10-19) write one tag
    and share the store. A member leaves the tag only once it is absent from every
    pipeline's latest complete read."""
    run = lambda name: ok(run_target(mirror_config, scenario(name), workdir=tmp_path))  # noqa: E731
    run("pipeline_eu.singer")
    assert tagged(server) == members(range(10))
    for name in ("pipeline_us.singer", "pipeline_eu.singer"):
        run(name)
        assert tagged(server) == members(range(20)), f"{name} untagged the other's members"
    assert summary(mirror_config)["mirror"][TAG]["held_by_other_pipelines"] == 10
    run("pipeline_us.singer")
    assert tagged(server) == members(range(20))

    # member3 leaves EU (nobody else has it), member0 leaves EU but is still in US.
    run("pipeline_eu_without_0_and_3.singer")
    assert tagged(server) == members(range(20)) - members(range(3, 4))
    assert summary(mirror_config)["mirror"][TAG]["removed"] == 1
    run("pipeline_us.singer")
    assert "member0@example.com" in tagged(server)
    # member0 leaves US too: now absent from both latest complete reads.
    run("pipeline_us_without_0.singer")
    assert tagged(server) == members(range(1, 3), range(4, 20))


# -- 6. the newest record wins across streams and checkpoints ---------------------------------


def test_the_newest_record_wins_across_streams_when_a_checkpoint_falls_between(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """member0 is platinum in stream a and gold in b (newest) on the first night. On the
    second, a says silver, a checkpoint confirms it (its STATE is printed), then b says
    gold again — unchanged against b's own fingerprint, yet Omnisend holds silver."""
    config = {
        **mirror_config,
        "sync_mode": "upsert",
        "segment_tag": "segment:{stream_name}",
        "state_interval": 0.1,
    }
    ok(run_target(config, scenario("latest_run1.singer"), workdir=tmp_path))
    assert server.contact("member0@example.com")["customProperties"]["tier"] == "gold"

    (tmp_path / "config.json").write_text(json.dumps(config))
    log = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [str(TARGET_BIN), "--config", str(tmp_path / "config.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=tmp_path,
    )
    states: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [states.put(json.loads(line)) for line in proc.stdout or []], daemon=True
    )
    reader.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write(scenario("latest_run2_part1.singer"))
        # Filler records of stream a until the checkpoint after silver has printed its
        # STATE (state_interval 0.1 s): the event, not a sleep.
        checkpoint = None
        for line in scenario("latest_run2_filler.singer").splitlines(keepends=True):
            proc.stdin.write(line)
            proc.stdin.flush()
            try:
                checkpoint = states.get(timeout=0.02)
                break
            except queue.Empty:
                continue
        assert checkpoint == {"n": 2}, "no checkpoint fell between the two streams"
        proc.stdin.write(scenario("latest_run2_part2.singer"))
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0, (tmp_path / "stderr.log").read_text()[-2000:]
    finally:
        proc.kill()
        log.close()
    assert server.contact("member0@example.com")["customProperties"]["tier"] == "gold"


def test_the_newest_record_wins_while_the_older_version_is_in_flight(
    mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """One stream, one record a drain and a batch, a slow server: platinum is in flight
    when gold (equal to the stored fingerprint) arrives. Only the in-flight check makes
    gold go out after platinum; the versions never meet in the carry."""
    with OmnisendServer(api_keys=(API_KEY,), batch_delay=1.0) as slow:
        config = {
            **mirror_config,
            "api_url": slow.url,
            "sync_mode": "upsert",
            "batch_size_rows": 1,
            "batch_size": 1,
        }
        ok(run_target(config, scenario("stale_version_run1.singer", PIPELINE), workdir=tmp_path))
        ok(run_target(config, scenario("stale_version_run2.singer", PIPELINE), workdir=tmp_path))
        assert slow.contact("member0@example.com")["customProperties"]["tier"] == "gold"
        counts = summary(config)["streams"]["vip"]
        assert (counts["delivered"], counts["merged_duplicates"], counts["unchanged"]) == (2, 0, 0)


# -- 7. the default status never changes an existing contact --------------------------------


@pytest.mark.parametrize("ties", ["later_wins", "held_wins"])
def test_a_changed_email_status_applies_to_newcomers_only(tmp_path: Path, ties: str) -> None:
    """Run 1 creates members 0-2 nonSubscribed; run 2, with email_status subscribed,
    brings them again plus newcomer member3. Whoever Omnisend lets win a tie of dates,
    0-2 stay nonSubscribed and member3 is subscribed. The fingerprint store is off, so
    every contact is written again, and a deleted store changes nothing either."""
    with OmnisendServer(api_keys=(API_KEY,), status_ties=ties) as server:
        config = {
            "api_key": API_KEY,
            "api_url": server.url,
            "batch_poll_interval": 0.05,
            "rejected_records_path": str(tmp_path / "rejected.jsonl"),
            "fingerprint_store_path": "",
            "segment_name": "",
        }
        ok(run_target(config, scenario("consent_run1.singer"), workdir=tmp_path))
        subscribed = {**config, "email_status": "subscribed"}
        ok(run_target(subscribed, scenario("consent_run2.singer"), workdir=tmp_path))

        def status(i: int) -> str:
            contact = server.contact(f"member{i}@example.com")
            return contact["identifiers"][0]["channels"]["email"]["status"]

        assert [status(i) for i in range(4)] == ["nonSubscribed"] * 3 + ["subscribed"]
        # A third run with the first setting again: the newcomer keeps its status too.
        ok(run_target(config, scenario("consent_run2.singer"), workdir=tmp_path))
        assert [status(i) for i in range(4)] == ["nonSubscribed"] * 3 + ["subscribed"]
        # An explicit status with its date still applies.
        explicit = {**config, "status_field": "consent", "status_timestamp_field": "consent_at"}
        ok(run_target(explicit, scenario("consent_run3_explicit.singer"), workdir=tmp_path))
        assert [status(i) for i in range(4)] == [
            "unsubscribed",
            "nonSubscribed",
            "nonSubscribed",
            "subscribed",
        ]


# -- attacks that held ----------------------------------------------------------------------


def test_batch_records_follow_stream_maps_like_records(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    """The SDK's own BATCH route skips stream maps; here a renamed stream's batched
    records land under the alias, and a filtered-out field is gone from every record."""
    config = {
        **mirror_config,
        "segment_tag": "segment:{stream_name}",
        "stream_maps": {"vip": {"__alias__": "vip_renamed", "loyalty_tier": "__NULL__"}},
    }
    ok(run_target(config, scenario("batch_full_read.singer"), workdir=tmp_path))
    assert tagged(server, "segment:vip_renamed") == members(range(6))
    assert list(summary(config)["streams"]) == ["vip_renamed"]
    assert [c["customProperties"] for c in server.contacts()] == [{}] * 6  # no tier


def test_a_batch_line_that_is_no_record_ends_the_run_in_one_line_naming_the_file(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "odd.jsonl").write_text('{"email": "member1@example.com"}\n[1, 2]\n')
    batch = {
        "type": "BATCH",
        "stream": "vip",
        "encoding": {"format": "jsonl"},
        "manifest": [(tmp_path / "odd.jsonl").as_uri()],
    }
    messages = [
        *scenario("batch_full_read.singer").decode().splitlines()[:3],
        json.dumps(batch),
        '{"type": "STATE", "value": {"n": 1}}',
    ]
    run = run_target(mirror_config, "\n".join(messages).encode() + b"\n", workdir=tmp_path)
    assert run.returncode == 1 and run.states == []
    errors = [line for line in run.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "line 2 of batch file odd.jsonl is a JSON list" in errors[0]
    assert "[1, 2]" not in run.stderr


def test_a_dry_run_previews_the_re_tagging_and_changes_nothing(
    server: OmnisendServer, mirror_config: dict[str, Any], tmp_path: Path
) -> None:
    full = scenario("full_read_20.singer", PIPELINE)
    ok(run_target(mirror_config, full, workdir=tmp_path))
    untag_elsewhere(server, ["member3@example.com"])
    dry = {**mirror_config, "dry_run": True, "dry_run_path": str(tmp_path / "dry.jsonl")}
    run = ok(run_target(dry, full, workdir=tmp_path))
    assert run.states == []
    assert "member3@example.com" not in tagged(server)
    calls = [r for r in read_jsonl(tmp_path / "dry.jsonl") if r["path"].endswith("/contacts/tags")]
    assert [(c["method"], c["body"]) for c in calls] == [
        ("POST", {"tags": [TAG], "emails": ["member3@example.com"]})
    ]


def test_the_record_of_what_a_run_wrote_never_forgets_and_rarely_imagines() -> None:
    """`WrittenThisRun` (latest version wins across streams): no email it was given is
    ever missing (that would skip a newer version), few others look present."""
    from target_omnisend.seen import WrittenThisRun  # here: the file still imports on 677ed6e

    written = WrittenThisRun()
    emails = [f"member{i}@example.com" for i in range(300_000)]
    for email in emails:
        written.add(email)
    assert all(email in written for email in emails)
    others = sum(f"other{i}@example.com" in written for i in range(20_000))
    assert others < 20_000 * 0.05
    assert 1 not in written
