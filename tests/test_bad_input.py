"""Issue 7, bad-input matrix: whatever a tap sends, each input has one defined outcome —
delivered (normalised), rejected with a reason, or a one-line failure with no STATE —
and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DEFAULT_STATUS_DATE, Run, read_jsonl, run_target, stored_email
from tests.omnisend_server import OmnisendServer
from tests.test_faults import (
    SCHEMA,
    STREAM,
    assert_failed_cleanly,
    assert_states_cover_only_final_records,
    held_emails,
    make_records,
    pages,
    run_live,
)

pytestmark = pytest.mark.e2e


def schema(**properties: Any) -> dict[str, Any]:
    return {
        "type": "SCHEMA",
        "stream": STREAM,
        "schema": {"type": "object", "properties": properties},
        "key_properties": [],
    }


ANY = {}  # a property without a type accepts any JSON value
TEXT = {"type": ["string", "null"]}


def record(**fields: Any) -> dict[str, Any]:
    return {"type": "RECORD", "stream": STREAM, "record": fields}


def run(config: dict, messages: list[Any] | bytes, tmp_path: Path, **kwargs: Any) -> Run:
    config["summary_path"] = str(tmp_path / "summary.json")
    result = run_target(config, messages, workdir=tmp_path, **kwargs)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def counts(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "summary.json").read_text())["streams"][STREAM]


def rejected(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "rejected.jsonl")


def reconcile(tmp_path: Path, received: int) -> dict[str, Any]:
    c = counts(tmp_path)
    assert c["received"] == received
    assert c["delivered"] + c["rejected"] + c["merged_duplicates"] + c["unchanged"] == received
    assert c["rejected"] == len(rejected(tmp_path))
    return c


# -- input that is not Singer: one line naming the line number, nothing quoted -------------

BROKEN_LINES = {
    "not_json": '{"type": "RECORD", "stream": "s", "record": {"email": "leak@example.com"',
    "json_but_not_an_object": '["leak@example.com"]',
    "message_without_type": '{"email": "leak@example.com"}',
    "record_without_stream": '{"type": "RECORD", "record": {"email": "leak@example.com"}}',
    "unknown_message_type": '{"type": "PROFILE", "stream": "s", "email": "leak@example.com"}',
}


@pytest.mark.parametrize("kind", list(BROKEN_LINES))
def test_a_line_that_is_not_a_singer_message_stops_the_run_in_one_line(
    kind: str, server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    """Pages 1-3 are delivered and may be checkpointed; the broken line (in page 4)
    stops the run before anything after it could be covered by a STATE."""
    records = make_records(500)
    input_pages: list[list[Any]] = pages(records)  # type: ignore[assignment]
    input_pages[4].insert(50, BROKEN_LINES[kind])
    broken_line_number = 1 + 3 * 101 + 50 + 1

    live = run_live(server, config, input_pages, tmp_path, page_pause=0.3)

    assert_failed_cleanly(live, records)
    error = live.error_lines[0]
    if kind == "unknown_message_type":
        assert "Unknown message type 'PROFILE'" in error
    else:
        assert f"Input is not Singer: line {broken_line_number} " in error
    assert "leak@example.com" not in live.stderr
    assert live.checkpoints, "pages before the broken line are delivered and checkpointed"
    assert all(c.offset <= 300 for c in live.checkpoints)


def test_record_before_its_schema_stops_the_run_before_any_write(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    result = run(config, [record(email="early@example.com"), SCHEMA], tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "before a corresponding schema" in errors[0]
    assert result.states == []
    assert server.contacts() == []


def test_empty_input_is_a_successful_run_that_sends_nothing(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    result = run(config, b"", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""
    assert server.count(path_prefix="/batches") == 0 and server.contacts() == []
    assert rejected(tmp_path) == []


def test_a_stream_with_a_schema_and_no_records_passes_its_state_through(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    state = {"type": "STATE", "value": {"bookmarks": {STREAM: {"offset": 0}}}}
    result = run(config, [SCHEMA, state], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.states == [state["value"]]
    assert server.count(path_prefix="/batches") == 0 and server.contacts() == []


# -- records: delivered normalised, or rejected with a reason ------------------------------

EMAIL_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    # (case, record, stored email or rejection code)
    ("missing", {"first_name": "No Email"}, "missing_email"),
    ("null", {"email": None}, "missing_email"),
    ("empty", {"email": ""}, "missing_email"),
    ("whitespace_only", {"email": "  \t "}, "missing_email"),
    ("no_at", {"email": "jane.example.com"}, "invalid_email"),
    ("two_ats", {"email": "jane@@example.com"}, "invalid_email"),
    ("no_tld", {"email": "jane@example"}, "invalid_email"),
    ("space_inside", {"email": "jane doe@example.com"}, "invalid_email"),
    ("not_a_string", {"email": 12345}, "invalid_email"),
    ("a_list", {"email": ["jane@example.com"]}, "invalid_email"),
    (
        "longer_than_254",
        {"email": "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".com"},
        "invalid_email",
    ),
    ("mixed_case", {"email": "Mixed.Case@Example.COM"}, "mixed.case@example.com"),
    ("surrounding_whitespace", {"email": "  \tpadded@example.com \n"}, "padded@example.com"),
    ("idn_domain", {"email": "kunde@Bücher.de"}, "kunde@xn--bcher-kva.de"),
]


def test_every_email_shape_has_one_outcome(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    messages = [schema(i={"type": "integer"}, email=ANY, first_name=TEXT)]
    messages += [record(i=i, **fields) for i, (_, fields, _) in enumerate(EMAIL_CASES)]
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    held = held_emails(server)
    by_index = {r["record"]["i"]: r for r in rejected(tmp_path)}
    for i, (case, _, expected) in enumerate(EMAIL_CASES):
        if expected and "@" in expected:
            assert expected in held, case
            assert i not in by_index, case
        else:
            assert by_index[i]["code"] == expected, case
            assert by_index[i]["reason"], case
    deliverable = sum(1 for *_, e in EMAIL_CASES if e and "@" in e)
    assert len(held) == deliverable
    c = reconcile(tmp_path, len(EMAIL_CASES))
    assert c["delivered"] == deliverable
    assert server.contact("Mixed.Case@Example.COM") is None  # one contact, normalised


def test_duplicate_emails_in_a_batch_merge_and_the_last_record_wins(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    messages = [
        SCHEMA,
        record(i=0, email="dup@example.com", first_name="First"),
        record(i=1, email="other@example.com", first_name="Other"),
        record(i=2, email=" DUP@Example.com ", first_name="Second"),
        record(i=3, email="dup@example.com", first_name="Last"),
    ]
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    assert held_emails(server) == {"dup@example.com", "other@example.com"}
    assert server.contact("dup@example.com")["firstName"] == "Last"
    c = reconcile(tmp_path, 4)
    assert (c["delivered"], c["merged_duplicates"], c["rejected"]) == (2, 2, 0)


def test_record_that_fails_its_schema_is_rejected_and_the_rest_delivered(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    messages = [
        schema(i={"type": "integer"}, email={"type": "string"}, first_name=TEXT),
        record(i=0, email="fine@example.com", first_name="Fine"),
        record(i=1, email="typed@example.com", first_name=42),
        record(i="two", email="wrong-i@example.com"),
        record(i=3, email=None),
    ]
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert held_emails(server) == {"fine@example.com"}
    assert [r["code"] for r in rejected(tmp_path)] == ["schema_invalid"] * 3
    assert reconcile(tmp_path, 4)["delivered"] == 1


UNICODE_NAMES = [
    ("Zoë", "Müller-Lüdenscheidt"),
    ("יעל", "כהן"),  # Hebrew, right-to-left
    ("محمد", "العلي"),  # Arabic, right-to-left
    ("\u202eevil", "Name\u200f"),  # explicit RTL override / RTL mark
    ("李", "小龍"),
    ("Emoji 😀", "Family 👨‍👩‍👧"),
    ("José", "Ñúñez"),  # precomposed
    ("Jose\u0301", "N\u0303un\u0303ez"),  # combining accents: kept as sent, not normalised
]


def test_unicode_and_right_to_left_names_are_stored_exactly(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    messages = [schema(email=TEXT, first_name=TEXT, last_name=TEXT)]
    messages += [
        record(email=f"u{i}@example.com", first_name=f, last_name=la)
        for i, (f, la) in enumerate(UNICODE_NAMES)
    ]
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for i, (first, last) in enumerate(UNICODE_NAMES):
        contact = server.contact(f"u{i}@example.com")
        assert (contact["firstName"], contact["lastName"]) == (first, last)
    assert reconcile(tmp_path, len(UNICODE_NAMES))["delivered"] == len(UNICODE_NAMES)


def test_very_long_strings_are_truncated_or_refused_never_fatal(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    """Free-text attributes are cut to 255 characters (counted warning). A contact
    that is still over Omnisend's 1 MB request cap (a huge custom property) is refused
    alone; the other contacts of its batch are delivered."""
    long_name = "Ä" + "n" * 9_999
    messages = [
        schema(i={"type": "integer"}, email=TEXT, first_name=TEXT, city=TEXT, loyalty_tier=TEXT)
    ]
    messages.append(record(i=0, email="long@example.com", first_name=long_name, city="x" * 300))
    messages += [record(i=i, email=f"n{i}@example.com", first_name="N") for i in range(1, 5)]
    messages.append(record(i=5, email="huge@example.com", loyalty_tier="z" * 1_100_000))
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    contact = server.contact("long@example.com")
    assert contact["firstName"] == long_name[:255]
    assert contact["city"] == "x" * 255
    assert server.contact("huge@example.com") is None
    assert held_emails(server) == {"long@example.com"} | {f"n{i}@example.com" for i in range(1, 5)}
    (refused,) = rejected(tmp_path)
    assert refused["record"]["i"] == 5 and refused["code"] == "refused_by_omnisend"
    assert "1 MB" in refused["reason"]
    c = reconcile(tmp_path, 6)
    assert c["warnings"] == {
        "first_name longer than 255 characters: truncated": 1,
        "city longer than 255 characters: truncated": 1,
    }


def test_missing_nested_email_paths_are_rejected_as_missing(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    config["email_field"] = "contact.email"
    cases = [
        ({"contact": {"email": "nested@example.com"}}, "nested@example.com"),
        ({"contact.email": "literal@example.com"}, "literal@example.com"),  # literal key wins
        ({"contact": {}}, "missing_email"),
        ({"contact": None}, "missing_email"),
        ({"contact": "not-an-object"}, "missing_email"),
        ({"contact": {"mail": "typo@example.com"}}, "missing_email"),
        ({}, "missing_email"),
        ({"email": "top-level@example.com"}, "missing_email"),
    ]
    messages = [schema(i={"type": "integer"}, contact=ANY, email=TEXT, **{"contact.email": TEXT})]
    messages += [record(i=i, **fields) for i, (fields, _) in enumerate(cases)]
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    assert held_emails(server) == {"nested@example.com", "literal@example.com"}
    codes = {r["record"]["i"]: r["code"] for r in rejected(tmp_path)}
    assert codes == {i: e for i, (_, e) in enumerate(cases) if "@" not in e}
    reconcile(tmp_path, len(cases))


@pytest.mark.parametrize("io_encoding", ["", "utf-8:strict"], ids=["default_locale", "strict"])
def test_non_utf8_bytes_reject_only_the_records_that_use_them(
    server: OmnisendServer, config: dict, tmp_path: Path, io_encoding: str
) -> None:
    """Latin-1 bytes in a UTF-8 stream: the same outcome under every locale. A record
    whose email or mapped attribute holds them is rejected (the rejected file keeps the
    bytes as \\udcXX escapes); a bad byte in a field that is not sent does not matter."""
    head = json.dumps(schema(i={"type": "integer"}, email=TEXT, first_name=TEXT, note=TEXT))
    lines = [
        head.encode(),
        b'{"type":"RECORD","stream":"s","record":{"i":0,"email":"ok@example.com","first_name":"Jos\xc3\xa9"}}',
        b'{"type":"RECORD","stream":"s","record":{"i":1,"email":"latin1@example.com","first_name":"Jos\xe9"}}',
        b'{"type":"RECORD","stream":"s","record":{"i":2,"email":"bad\xff@example.com"}}',
        b'{"type":"RECORD","stream":"s","record":{"i":3,"email":"note@example.com","note":"\xfe\xff"}}',
        b'{"type":"STATE","value":{"bookmarks":{"s":{"offset":4}}}}',
    ]
    env = {"PYTHONIOENCODING": io_encoding} if io_encoding else {}
    result = run(config, b"\n".join(lines) + b"\n", tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]

    assert held_emails(server) == {"ok@example.com", "note@example.com"}
    assert server.contact("ok@example.com")["firstName"] == "José"
    codes = {r["record"]["i"]: r["code"] for r in rejected(tmp_path)}
    assert codes == {1: "invalid_encoding", 2: "invalid_email"}
    by_index = {r["record"]["i"]: r["record"] for r in rejected(tmp_path)}
    assert by_index[1]["first_name"] == "Jos\udce9"  # the original byte, recoverable
    assert result.states == [{"bookmarks": {"s": {"offset": 4}}}]
    reconcile(tmp_path, 4)


def test_paced_input_with_rejections_keeps_states_honest(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    """Rejected records count as final for STATE: a page of mostly bad records is
    checkpointed as soon as its good records are stored."""
    records = make_records(400)
    for r in records[::3]:
        r["email"] = "not-an-email"
    live = run_live(server, config, pages(records), tmp_path, page_pause=0.3)
    assert live.returncode == 0, live.stderr[-2000:]
    assert len(live.checkpoints) >= 2
    assert_states_cover_only_final_records(live, records)
    assert {r["record"]["i"] for r in rejected(tmp_path)} == {r["i"] for r in records[::3]}
    assert {stored_email(c) for c in server.contacts()} == {
        r["email"] for r in records if r["email"] != "not-an-email"
    }


def test_blank_lines_between_messages_are_skipped(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    body = [json.dumps(SCHEMA), "", json.dumps(record(i=0, email="a@example.com")), "   \t"]
    body += [json.dumps(record(i=1, email="b@example.com")), ""]
    result = run(config, ("\n".join(body) + "\n\n").encode(), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert held_emails(server) == {"a@example.com", "b@example.com"}
    assert reconcile(tmp_path, 2)["delivered"] == 2


def test_dates_are_parsed_bad_dates_dropped_and_unknown_fields_warned_once(
    server: OmnisendServer, config: dict, tmp_path: Path
) -> None:
    """The SDK's date rules, applied only to the schema's date fields: a good date is
    used, a malformed one becomes null (the record still goes out, without its status),
    and a field the schema lacks is named once in the log — never its value."""
    config["status_field"] = "status"
    config["status_timestamp_field"] = "consent_at"
    when = {"type": ["string", "null"], "format": "date-time"}
    messages = [
        schema(email=TEXT, status=TEXT, consent_at=when),
        record(email="dated@example.com", status="subscribed", consent_at="2026-05-01T10:00:00Z"),
        record(email="garbled@example.com", status="subscribed", consent_at="yesterday-ish"),
        record(email="extra1@example.com", nickname="Secret Nick"),
        record(email="extra2@example.com", nickname="Other Nick"),
    ]
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert held_emails(server) == {
        "dated@example.com",
        "garbled@example.com",
        "extra1@example.com",
        "extra2@example.com",
    }

    def email_channel(email: str) -> dict[str, Any]:
        contact = server.contact(email)
        assert contact is not None
        [ident] = [i for i in contact["identifiers"] if i["type"] == "email"]
        return ident["channels"]["email"]

    assert email_channel("dated@example.com")["statusChangedAt"].startswith("2026-05-01T10:00")
    # An unreadable date never makes a status win (issue 11): the no-status rule applies.
    garbled = email_channel("garbled@example.com")
    assert garbled == {"status": "nonSubscribed", "statusChangedAt": DEFAULT_STATUS_DATE}
    assert result.stderr.count("No schema for record field 'nickname'") == 1
    assert "Nick" not in result.stderr
