"""The user's command — `tap | target-omnisend --config config.json` — against a real
local Omnisend-compatible server: what lands there, what is rejected, exit codes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import (
    create_contact,
    read_jsonl,
    run_target,
    sample_records,
    segment_messages,
    stored_email,
)
from tests.omnisend_server import FaultRule, OmnisendServer

SIMPLE_EMAIL = re.compile(r"[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}")


def expected_emails(records: list[dict[str, Any]]) -> set[str]:
    """An independent, simpler reading of which sample profiles are deliverable."""
    emails = set()
    for record in records:
        raw = record.get("email")
        if isinstance(raw, str):
            email = raw.strip().lower()
            if SIMPLE_EMAIL.fullmatch(email) and ".." not in email:
                emails.add(email)
    return emails


def test_sample_segment_is_delivered_and_every_record_accounted_for(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    records = sample_records()
    run = run_target(config, segment_messages(records, key="customer_id"), workdir=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    stored = {stored_email(c) for c in server.contacts()}
    assert stored == expected_emails(records)
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    merged = len(records) - len(stored) - len(rejected)
    assert merged == 1  # the sample has one duplicate that differs only by case
    assert {r["code"] for r in rejected} == {"missing_email", "invalid_email"}
    assert all(r["stream"] == "vip_buyers" and r["reason"] and "record" in r for r in rejected)
    assert run.states == [{"bookmarks": {"vip_buyers": {"rows": len(records)}}}]
    assert f"received={len(records)} delivered={len(stored)} rejected={len(rejected)}" in run.stderr
    assert server.count(method="POST", path_prefix="/batches") == -(-len(stored) // 100)


def test_contact_fields_are_mapped_normalised_and_tag_free(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    record = {
        "email": "  Zoe.Muller@Example.COM ",
        "first_name": "Zoë",
        "last_name": "כהן",
        "city": "Tel Aviv",
        "postal_code": 6100000,
        "country": "Israel",
        "country_code": "il",
        "birthdate": "1988-04-09",
        "gender": "female",
        "state": "",
        "loyalty_tier": "gold",
        "lifetime_value": 1234.5,
        "tags": ["should-not-be-sent"],
    }
    run = run_target(config, segment_messages([record], key=None), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]

    contact = server.contact("zoe.muller@example.com")
    assert contact is not None
    assert contact["firstName"] == "Zoë"
    assert contact["lastName"] == "כהן"
    assert contact["postalCode"] == "6100000"
    assert contact["countryCode"] == "IL"
    assert contact["birthdate"] == "1988-04-09"
    assert contact["gender"] == "f"
    assert "state" not in contact or contact["state"] in (None, "")
    assert contact["customProperties"] == {"loyalty_tier": "gold", "lifetime_value": 1234.5}
    assert contact["tags"] == ["segment:vip_buyers"]  # the segment tag, not the record's
    assert server.contact("Zoe.Muller@Example.COM") is None


def test_existing_subscriber_keeps_their_status(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    create_contact(
        server.url,
        API_KEY,
        "fan@example.com",
        "subscribed",
        "2025-06-01T00:00:00Z",
        tags=["bought-in-store"],
    )
    run = run_target(
        config,
        segment_messages([{"email": "fan@example.com", "first_name": "Fan"}]),
        workdir=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    contact = server.contact("fan@example.com")
    assert contact["firstName"] == "Fan"
    assert contact["identifiers"][0]["channels"]["email"]["status"] == "subscribed"
    # Tags set by other tools survive: ours are added, never written over theirs.
    assert sorted(contact["tags"]) == ["bought-in-store", "segment:vip_buyers"]


def test_records_omnisend_refuses_go_to_the_rejected_file_with_its_reason(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    server.add_fault(FaultRule(kind="item_error", email_pattern=r"^refuse", status=400))
    records = [{"email": f"user{i}@example.com"} for i in range(5)] + [
        {"email": "refuse.me@example.com"}
    ]
    run = run_target(config, segment_messages(records, key=None), workdir=tmp_path)

    assert run.returncode == 0, run.stderr[-2000:]
    assert len(server.contacts()) == 5
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert [r["record"]["email"] for r in rejected] == ["refuse.me@example.com"]
    assert rejected[0]["code"] == "refused_by_omnisend"
    assert "refuse.me@example.com" not in run.stderr  # the log masks it
    assert "r***@example.com" in run.stderr


def test_record_that_fails_its_schema_is_rejected_not_fatal(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    messages = [
        {
            "type": "SCHEMA",
            "stream": "s",
            "schema": {
                "type": "object",
                "properties": {"email": {"type": "string"}, "n": {"type": "integer"}},
            },
            "key_properties": [],
        },
        {"type": "RECORD", "stream": "s", "record": {"email": "ok@example.com", "n": 1}},
        {"type": "RECORD", "stream": "s", "record": {"email": "bad@example.com", "n": "one"}},
    ]
    run = run_target(config, messages, workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [stored_email(c) for c in server.contacts()] == ["ok@example.com"]
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert [r["code"] for r in rejected] == ["schema_invalid"]
    assert "Traceback" not in run.stderr


def test_transient_server_errors_and_429s_are_retried(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    server.add_fault(FaultRule(method="POST", path="/batches", kind="status", status=503, times=2))
    # Retry-After (header, 2 s) wins over the body's retryAfter (the window reset, ~60 s).
    server.add_fault(
        FaultRule(
            method="POST", path="/batches", kind="rate_limit", times=1, headers={"Retry-After": "2"}
        )
    )
    records = [{"email": f"r{i}@example.com"} for i in range(250)]
    started = time.monotonic()
    run = run_target(config, segment_messages(records, key=None), workdir=tmp_path)
    took = time.monotonic() - started

    assert run.returncode == 0, run.stderr[-2000:]
    assert len(server.contacts()) == 250
    assert server.count(method="POST", path_prefix="/batches", status=503) == 2
    assert server.count(method="POST", path_prefix="/batches", status=429) == 1
    assert run.states
    # It waited what Retry-After said: not less, and not the window's ~60 s.
    assert 2 <= took < 20


def test_server_failing_beyond_retries_exits_non_zero_without_state(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    server.add_fault(FaultRule(method="POST", path="/batches", kind="status", status=500))
    config["max_retries"] = 1
    records = [{"email": f"r{i}@example.com"} for i in range(10)]
    run = run_target(config, segment_messages(records, key=None), workdir=tmp_path)

    assert run.returncode == 1
    assert run.states == []
    assert "Run failed" in run.stderr
    assert "Traceback" not in run.stderr


def test_wrong_api_key_fails_in_one_line_before_reading_input(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    config["api_key"] = "wrong-key-123"
    run = run_target(config, segment_messages(sample_records()), workdir=tmp_path)

    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "API key" in line]
    assert len(errors) == 1
    assert "wrong-key-123" not in run.output
    assert "Traceback" not in run.stderr
    assert server.count(path_prefix="/batches") == 0
    assert server.contacts() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 500}, "batch_size"),
        ({"api_url": "http://api.example.com"}, "http://"),
        ({"field_mapping": {"frist_name": "fname"}}, "frist_name"),
        ({"api_key": None}, "api_key"),
        ({"email_status": "maybe"}, "email_status"),
        ({"api_version": "v4"}, "api_version"),
    ],
)
def test_bad_config_exits_before_any_request(
    server: OmnisendServer, config: dict, tmp_path: Path, change: dict, message: str
) -> None:
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    run = run_target(config, segment_messages(sample_records()[:3]), workdir=tmp_path)

    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in run.stderr
    assert server.request_log() == []


def test_unreachable_server_fails_clearly(config: dict, tmp_path: Path) -> None:
    config["api_url"] = "http://127.0.0.1:9"  # discard port: nothing listens
    config["max_retries"] = 0
    run = run_target(config, segment_messages(sample_records()[:3]), workdir=tmp_path)
    assert run.returncode == 1
    assert "Run failed" in run.stderr and "Traceback" not in run.stderr


def test_config_from_environment_variables(server: OmnisendServer, tmp_path: Path) -> None:
    env = {
        "TARGET_OMNISEND_API_KEY": API_KEY,
        "TARGET_OMNISEND_API_URL": server.url,
        "TARGET_OMNISEND_REJECTED_RECORDS_PATH": str(tmp_path / "rej.jsonl"),
        # number, integer and boolean settings arrive as text too
        "TARGET_OMNISEND_BATCH_POLL_INTERVAL": "0.05",
        "TARGET_OMNISEND_REQUESTS_PER_MINUTE": "300",
        "TARGET_OMNISEND_BATCH_SIZE": "50",
        "TARGET_OMNISEND_SEND_WELCOME_MESSAGE": "false",
    }
    run = run_target(
        None,
        segment_messages([{"email": "env@example.com"}], key=None),
        workdir=tmp_path,
        args=["--config", "ENV"],
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert server.contact("env@example.com") is not None
    assert API_KEY not in run.output


def test_about_lists_every_setting_without_secrets() -> None:
    import subprocess

    from tests.harness import TARGET_BIN

    out = subprocess.run(
        [str(TARGET_BIN), "--about", "--format=json"], capture_output=True, check=True, text=True
    ).stdout
    about = json.loads(out)
    settings = about["settings"]["properties"]
    for name in (
        "api_key",
        "api_url",
        "api_version",
        "email_field",
        "field_mapping",
        "custom_properties",
        "email_status",
        "send_welcome_message",
        "batch_size",
        "rejected_records_path",
    ):
        assert settings[name].get("description"), name
    assert settings["api_key"].get("secret") is True
    assert "validate-records" in about["capabilities"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("{bad", "not JSON"), ('{"api_key": "k3y-in-a-broken', "line 1")],
)
def test_a_config_file_that_is_missing_or_not_json_is_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_text(content)
    run = run_target(
        None, segment_messages(sample_records()[:1]), workdir=tmp_path, args=["--config", str(path)]
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "k3y" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert len(lines) == 1 and message in lines[0] and str(path) in run.stderr


def test_a_setting_at_its_fractional_minimum_is_accepted(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    """A config file's 0.1 is read as the exact decimal 0.1, which the SDK used to find
    below the schema's float minimum 0.1."""
    config.update(state_interval=0.1, batch_poll_interval=0.01)
    run = run_target(config, segment_messages(sample_records()[:3]), workdir=tmp_path)
    assert "Invalid configuration" not in run.stderr, run.stderr[-2000:]
    assert run.returncode == 0, run.stderr[-2000:]
