"""Issue 21: clear for the person running it. A wrong email field caught at SCHEMA, a
quiet log without profile data, dates that are not dates, output paths checked at start,
an empty run that says so, a dry run that says "would deliver", `--help`, `.env`, the
sample config. Scenario files under `tests/data_files/clear/`, run through the real CLI
against the local Omnisend-compatible server."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import (
    REPO,
    TARGET_BIN,
    encode,
    read_jsonl,
    run_target,
    segment_messages,
    stored_email,
)
from tests.omnisend_server import OmnisendServer

pytestmark = pytest.mark.e2e

DATA = REPO / "tests" / "data_files" / "clear"


def scenario(name: str) -> bytes:
    return (DATA / name).read_bytes()


def log_lines(stderr: str, level: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"| {level}" in line]


def writes(server: OmnisendServer) -> int:
    """Requests that change something in Omnisend."""
    return sum(1 for e in server.request_log() if e.method in {"POST", "PUT", "PATCH", "DELETE"})


# -- the email field ---------------------------------------------------------------------


def test_a_schema_without_the_email_field_stops_the_run_at_schema_naming_the_candidates(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    run = run_target(config, scenario("email_column_named_otherwise.singer"), workdir=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    [error] = log_lines(run.stderr, "ERROR")
    assert "stream 'vip_buyers' has no field 'email' (email_field)" in error
    assert "fields that look like emails: email_address, billing.contact_e_mail" in error
    assert "Traceback" not in run.stderr
    # Nothing sent, no segment, nobody's profile in the rejected file or the log.
    assert writes(server) == 0
    assert server.contacts() == [] and server.segments() == []
    assert not (tmp_path / "rejected.jsonl").exists()
    assert "jane.roe" not in run.stderr
    assert run.states == []


def test_a_nested_email_field_missing_from_the_schema_is_caught_too(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config["email_field"] = "billing.email"
    run = run_target(config, scenario("email_column_named_otherwise.singer"), workdir=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "has no field 'billing.email' (email_field)" in run.stderr
    assert writes(server) == 0


def test_the_right_email_field_delivers_the_same_file(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config["email_field"] = "email_address"
    run = run_target(config, scenario("email_column_named_otherwise.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(server.contacts()) == 30


def test_records_that_all_lack_the_email_get_one_line_naming_email_field(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    run = run_target(config, scenario("email_field_always_empty.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    hints = [line for line in run.stderr.splitlines() if "(email_field)" in line]
    assert len(hints) == 1, hints
    assert "none of the first 20 records has a value in 'email'" in hints[0]
    assert "work_email" in hints[0]
    # 60 rejections: three logged, the rest counted.
    rejected_lines = [line for line in run.stderr.splitlines() if "Rejected a record" in line]
    assert len(rejected_lines) == 3
    assert "counted in the progress lines and the summary" in rejected_lines[-1]
    assert "rejected=60 unchanged=0" in run.stderr
    assert len(read_jsonl(tmp_path / "rejected.jsonl")) == 60
    assert server.contacts() == []


def test_a_record_missing_a_key_property_other_than_the_email_still_stops_the_run(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """The SDK's standard test for this uses a stream without an email field (stopped at
    its SCHEMA now): the same input with an email field still ends in the SDK's error."""
    messages = [
        {
            "type": "SCHEMA",
            "stream": "keyed",
            "schema": {"type": "object", "properties": {"id": {}, "email": {}}},
            "key_properties": ["id"],
        },
        {"type": "RECORD", "stream": "keyed", "record": {"email": "no.id@example.com"}},
    ]
    run = run_target(config, messages, workdir=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    [error] = log_lines(run.stderr, "ERROR")
    assert "Record is missing one or more key_properties" in error
    assert writes(server) == 0


# -- a quiet log ---------------------------------------------------------------------------


def test_per_record_warnings_are_capped_and_counted_in_progress_and_summary(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config["summary_path"] = str(tmp_path / "summary.json")
    config["progress_interval"] = 0.05
    config["batch_size"] = 1
    run = run_target(config, scenario("many_bad_emails.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    rejected_lines = [line for line in run.stderr.splitlines() if "Rejected a record" in line]
    assert len(rejected_lines) == 3  # one reason: the first three, then counted
    assert all("jane.roe" not in line for line in run.stderr.splitlines())
    progress = [line for line in run.stderr.splitlines() if "Progress:" in line]
    assert progress and all(re.search(r"rejected=\d+ warnings=\d+", p) for p in progress)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["streams"]["bulk"]["rejected_by_reason"] == {"invalid_email": 200}
    assert len(read_jsonl(tmp_path / "rejected.jsonl")) == 200
    assert len(server.contacts()) == 200
    per_record = [
        line
        for line in run.stderr.splitlines()
        if "Rejected a record" in line or "Progress:" in line
    ]
    assert len(run.stderr.splitlines()) - len(per_record) < 20


def test_dates_that_are_not_dates_are_dropped_with_a_counted_warning_naming_the_field(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config["custom_properties"] = {"signed_at": "signed_at"}
    config["summary_path"] = str(tmp_path / "summary.json")
    run = run_target(config, scenario("dates_that_are_not_dates.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    # Every record delivered (numbers, booleans, lists and objects never crash the run)…
    held = {stored_email(c): c for c in server.contacts()}
    assert len(held) == 8
    assert held["d7@example.com"]["birthdate"] == "1985-07-10"
    assert "birthdate" not in held["d2@example.com"]  # 19850710: not a date, dropped
    assert all(c["customProperties"] == {} for e, c in held.items() if e != "d7@example.com")
    # …no value is in the log, and the SDK's own per-value lines are gone…
    for value in ("10/07/1985", "Jane Roe", "19850710", "Could not parse"):
        assert value not in run.stderr
    assert all(" | " in line for line in run.stderr.splitlines() if line.strip())
    # …and the warnings name the field and what was wrong, counted in the summary.
    warnings = json.loads((tmp_path / "summary.json").read_text())["streams"]["dates"]["warnings"]
    assert warnings["signed_at is not a date-time (unreadable text): value dropped"] == 2
    assert warnings["signed_at is not a date-time (a number): value dropped"] == 2
    assert warnings["signed_at is not a date-time (a boolean): value dropped"] == 1
    assert warnings["signed_at is not a date-time (a list): value dropped"] == 1
    assert warnings["signed_at is not a date-time (an object): value dropped"] == 1
    assert warnings["birthdate is not a date (a number): value dropped"] == 1


# -- runs that bring nothing -------------------------------------------------------------


def test_a_run_without_any_record_warns_once_with_the_meltano_select_hint(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    run = run_target(config, scenario("schema_without_records.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    [warning] = [line for line in run.stderr.splitlines() if "No record was received" in line]
    assert "meltano select" in warning
    assert writes(server) == 0


def test_empty_input_warns_the_same_way(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    run = run_target(config, b"", workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("No record was received") == 1


# -- output paths --------------------------------------------------------------------------


def test_a_summary_path_in_a_missing_folder_is_created_at_start(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config["summary_path"] = str(tmp_path / "reports" / "nightly" / "summary.json")
    config["rejected_records_path"] = str(tmp_path / "rejects" / "rejected.jsonl")
    run = run_target(config, scenario("many_bad_emails.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(Path(config["summary_path"]).read_text())["streams"]["bulk"]
    assert len(read_jsonl(Path(config["rejected_records_path"]))) == 200


@pytest.mark.parametrize(
    ("setting", "where", "why"),
    [
        ("summary_path", "a_file/summary.json", "a part of its folder path is a file"),
        ("rejected_records_path", "a_file/rejected.jsonl", "a part of its folder path is a file"),
        ("rejected_records_path", "a_folder", "is a folder; give a file path"),
        ("dry_run_path", "a_file/deeper/dry.jsonl", "a part of its folder path is a file"),
        ("rejected_records_path", "/dev/stdout", "is the target's output, where STATE goes"),
        ("summary_path", "/proc/self/fd/1", "is the target's output, where STATE goes"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_refused_at_start_in_one_line(
    setting: str,
    where: str,
    why: str,
    server: OmnisendServer,
    config: dict[str, Any],
    tmp_path: Path,
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder").mkdir()
    config[setting] = str(tmp_path / where)
    config["dry_run"] = setting == "dry_run_path"
    run = run_target(config, scenario("many_bad_emails.singer"), workdir=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    [error] = log_lines(run.stderr, "ERROR")
    assert f"Invalid configuration: {setting} " in error and why in error
    assert "Traceback" not in run.stderr
    assert server.request_log() == []  # refused before connecting, nothing read


# -- small mismatches ----------------------------------------------------------------------


def test_a_dry_run_summary_says_would_deliver(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    config["dry_run"] = True
    config["dry_run_path"] = str(tmp_path / "dry.jsonl")
    run = run_target(config, scenario("many_bad_emails.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "would_deliver=200" in run.stderr
    assert " delivered=" not in run.stderr.split("Summary for stream")[1]


def test_help_describes_the_target_with_two_examples(tmp_path: Path) -> None:
    run = run_target(None, b"", workdir=tmp_path, args=["--help"])
    assert run.returncode == 0
    assert "Deliver contact segments from any Singer tap to Omnisend." in run.stdout
    examples = run.stdout.split("Examples:")[1]
    assert examples.count("| target-omnisend --config") == 2


def test_config_env_reads_a_dotenv_file_in_the_current_folder(
    server: OmnisendServer, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"TARGET_OMNISEND_API_KEY={API_KEY}\nTARGET_OMNISEND_API_URL={server.url}\n"
        "TARGET_OMNISEND_SEGMENT_TAG=from-dotenv\nTARGET_OMNISEND_SEGMENT_NAME=\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_OMNISEND_")}
    env["TARGET_OMNISEND_TAGS"] = '["from-environment"]'  # set variables count too
    records = [{"email": f"env{i}@example.com"} for i in range(3)]
    proc = subprocess.run(
        [str(TARGET_BIN), "--config", "ENV"],
        input=encode(segment_messages(records)),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    contacts = server.contacts()
    assert len(contacts) == 3
    assert {tag for c in contacts for tag in c["tags"]} == {"from-dotenv", "from-environment"}
    assert API_KEY not in proc.stderr.decode()


def test_a_set_variable_wins_over_the_dotenv_file(server: OmnisendServer, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"TARGET_OMNISEND_API_KEY=wrong-key-from-dotenv\nTARGET_OMNISEND_API_URL={server.url}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_OMNISEND_")}
    env["TARGET_OMNISEND_API_KEY"] = API_KEY
    proc = subprocess.run(
        [str(TARGET_BIN), "--config", "ENV"],
        input=encode(segment_messages([{"email": "env@example.com"}])),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert len(server.contacts()) == 1


def test_the_sample_config_file_is_a_valid_configuration(
    server: OmnisendServer, tmp_path: Path
) -> None:
    """`samples/config.sample.json`, with only the key and the URL replaced, runs."""
    sample = json.loads((REPO / "samples" / "config.sample.json").read_text())
    assert sample["api_key"] == "YOUR_OMNISEND_API_KEY"
    config = {**sample, "api_key": API_KEY, "api_url": server.url}
    records = [
        {"email": "sample@example.com", "first_name": "Sam", "loyalty_tier": "gold"},
    ]
    run = run_target(config, segment_messages(records), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Unknown setting" not in run.stderr
    [contact] = server.contacts()
    assert contact["customProperties"] == {"loyalty_tier": "gold"}


# -- attacks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "field", "missing"),
    [
        ({"type": "object", "properties": {"email": {}}}, "email", False),
        ({"type": "object", "properties": {"mail": {}}}, "email", True),
        # an open schema cannot rule a field out: the records decide
        ({"type": "object"}, "email", False),
        ({"type": "object", "properties": {}}, "email", False),
        ({"properties": {"x": {}}, "additionalProperties": True}, "email", False),
        ({"properties": {"contact": {"type": "object"}}}, "contact.email", False),
        ({"properties": {"contact": {"properties": {"mail": {}}}}}, "contact.email", True),
        ({"properties": {"contact": {"properties": {"email": {}}}}}, "contact.email", False),
    ],
)
def test_only_a_schema_that_rules_the_email_field_out_stops_the_run(
    schema: dict[str, Any], field: str, missing: bool
) -> None:
    from target_omnisend.email_schema import missing_email_field

    assert missing_email_field(schema, field) is missing


def test_hostile_field_names_make_one_bounded_line(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    long_name = "e_mail_" + "x" * 5000
    properties = {long_name: {}, "work\nemail\r\x00": {}, **{f"email{i}": {} for i in range(50)}}
    messages = [
        {
            "type": "SCHEMA",
            "stream": "s",
            "schema": {"properties": properties},
            "key_properties": [],
        },
        {"type": "RECORD", "stream": "s", "record": {"email0": "jane@example.com"}},
    ]
    run = run_target(config, messages, workdir=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    [error] = log_lines(run.stderr, "ERROR")
    assert len(error) < 1200
    assert "x" * 100 not in error
    # The field names break no line: besides start-up INFO lines (version, a new store),
    # the error is the only line.
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert [line for line in lines if "| INFO " not in line] == [error]
    assert len(lines) <= 4
    assert writes(server) == 0


def test_a_date_field_whose_name_breaks_lines_cannot_forge_log_lines(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    name = "signed\n2026-01-01 00:00:00,000 | ERROR    | forged"
    messages = [
        {
            "type": "SCHEMA",
            "stream": "s",
            "schema": {"properties": {"email": {}, name: {"type": "string", "format": "date"}}},
        },
        {"type": "RECORD", "stream": "s", "record": {"email": "a@example.com", name: "x"}},
    ]
    run = run_target(config, messages, workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not any(line.startswith("2026-01-01") for line in run.stderr.splitlines())
    assert all(" | " in line for line in run.stderr.splitlines() if line.strip())
    assert len(server.contacts()) == 1
