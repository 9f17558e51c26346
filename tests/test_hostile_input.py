"""Issue 11, end to end: a hostile config, STATE or server text never crashes the run,
never changes who gets what, and never puts a secret or a whole email in the output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY
from tests.harness import Run, read_jsonl, run_target, stored_email
from tests.omnisend_server import FaultRule, OmnisendServer

pytestmark = pytest.mark.e2e

STREAM = "people"


def schema(**extra: Any) -> dict[str, Any]:
    properties = {"email": {"type": ["string", "null"]}, "first_name": {"type": ["string", "null"]}}
    return {
        "type": "SCHEMA",
        "stream": STREAM,
        "schema": {"type": "object", "properties": {**properties, **extra}},
        "key_properties": [],
    }


def record(**fields: Any) -> dict[str, Any]:
    return {"type": "RECORD", "stream": STREAM, "record": fields}


def run(config: dict, messages: list[Any] | bytes, tmp_path: Path) -> Run:
    result = run_target(config, messages, workdir=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def error_lines(result: Run) -> list[str]:
    return [line for line in result.stderr.splitlines() if "ERROR" in line or "error" in line]


def contacts_by_email(server: OmnisendServer) -> dict[str, dict[str, Any]]:
    return {stored_email(c): c for c in server.contacts()}


# -- case 2: a bookmark with a fraction --------------------------------------------------


def test_a_float_bookmark_is_checkpointed_with_its_exact_digits(
    config: dict, server: OmnisendServer, tmp_path: Path
) -> None:
    raw = (
        json.dumps(schema())
        + "\n"
        + json.dumps(record(email="a@example.com"))
        + "\n"
        + '{"type": "STATE", "value": {"bookmarks": {"people": '
        '{"replication_key_value": 97.5, "exact": 0.10000000000000000000001}}}}\n'
    ).encode()
    result = run(config, raw, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == (
        '{"bookmarks":{"people":{"replication_key_value":97.5,"exact":0.10000000000000000000001}}}'
    )
    assert result.states[-1]["bookmarks"][STREAM]["replication_key_value"] == 97.5
    assert "a@example.com" in contacts_by_email(server)


# -- case 3: a key pasted with a line break ----------------------------------------------


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (API_KEY + "\r\n", 0),  # outer whitespace is trimmed: the key works
        ("\t " + API_KEY + " \n", 0),
        (API_KEY[:8] + "\r\n" + API_KEY[8:], 2),  # inside: refused, never sent
        (API_KEY[:8] + " " + API_KEY[8:], 2),
        (API_KEY + "\x00", 2),
    ],
)
def test_a_key_with_whitespace_or_control_characters_never_reaches_the_output(
    config: dict, server: OmnisendServer, tmp_path: Path, key: str, code: int
) -> None:
    config["api_key"] = key
    result = run(config, [schema(), record(email="a@example.com")], tmp_path)
    assert result.returncode == code, result.stderr[-3000:]
    for piece in (API_KEY, API_KEY[:8], API_KEY[8:], key.strip()):
        assert piece not in result.output
    if code == 2:
        (line,) = error_lines(result)
        assert "api_key" in line and "one line" in line
        assert server.contacts() == []
    else:
        assert "a@example.com" in contacts_by_email(server)


def test_a_key_quoted_by_any_exception_is_redacted_from_the_final_line(
    config: dict, server: OmnisendServer, tmp_path: Path
) -> None:
    """The server echoes the key (and a header-like spelling of it) in a 500 body until
    the retries run out: the run fails in one line, without the key in any spelling."""
    server.add_fault(
        FaultRule(
            path="/batches",
            method="POST",
            status=500,
            body={"detail": f"bad header b'Omnisend-API-Key {API_KEY}\\r\\n' for {API_KEY}"},
        )
    )
    config["max_retries"] = 1
    result = run(config, [schema(), record(email="a@example.com")], tmp_path)
    assert result.returncode == 1
    assert API_KEY not in result.output
    assert "Omnisend did not accept POST /batches" in result.stderr


# -- case 6: server text that echoes personal data ---------------------------------------


def test_server_reasons_and_error_bodies_are_masked_in_logs_and_the_rejected_file(
    config: dict, server: OmnisendServer, tmp_path: Path
) -> None:
    server.add_fault(
        FaultRule(
            kind="item_error",
            email_pattern="^refused",
            body="contact 'Jane Refused' <refused.person@example.com> is blocked",
        )
    )
    server.add_fault(
        FaultRule(
            path="/batches",
            method="POST",
            status=503,
            times=1,
            body={"detail": 'cannot store "Ann Other" ann.other@example.com right now'},
        )
    )
    messages = [
        schema(),
        record(email="refused.person@example.com", first_name="Jane"),
        record(email="ann.other@example.com", first_name="Ann"),
    ]
    result = run(config, messages, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for secret in ("refused.person@", "ann.other@", "Jane Refused", "Ann Other"):
        assert secret not in result.output
    assert "r***@example.com" in result.stderr and "a***@example.com" in result.stderr
    (rejected,) = read_jsonl(tmp_path / "rejected.jsonl")
    assert rejected["code"] == "refused_by_omnisend"
    assert rejected["reason"] == "contact '***' <r***@example.com> is blocked"
    assert set(contacts_by_email(server)) == {"ann.other@example.com"}


# -- cases 7 and 8: settings, end to end ---------------------------------------------------


def test_clear_missing_values_clears_what_the_source_cleared(
    config: dict, server: OmnisendServer, tmp_path: Path
) -> None:
    config["custom_properties"] = {"tier": "tier"}
    schema_msg = schema(city={"type": ["string", "null"]}, tier={"type": ["string", "null"]})
    first = [schema_msg, record(email="a@example.com", first_name="Ann", city="Oslo", tier="gold")]
    assert run(config, first, tmp_path).returncode == 0
    cleared = [schema_msg, record(email="a@example.com", first_name="Ann", city=None, tier="")]
    assert run(config, cleared, tmp_path).returncode == 0  # default: omitted, kept
    kept = contacts_by_email(server)["a@example.com"]
    assert (kept["city"], kept["customProperties"]) == ("Oslo", {"tier": "gold"})
    config["clear_missing_values"] = True
    assert run(config, cleared, tmp_path).returncode == 0
    now = contacts_by_email(server)["a@example.com"]
    assert now["city"] == "" and now["customProperties"] == {}
    assert now["firstName"] == "Ann"


def test_email_case_is_kept_when_lowercasing_is_off(
    config: dict, server: OmnisendServer, tmp_path: Path
) -> None:
    messages = [schema(), record(email="Jane@Example.com")]
    assert run(config, messages, tmp_path).returncode == 0
    assert set(contacts_by_email(server)) == {"jane@example.com"}
    config["lowercase_emails"] = False
    config["fingerprint_store_path"] = str(tmp_path / "other.sqlite")
    assert run(config, messages, tmp_path).returncode == 0
    assert set(contacts_by_email(server)) == {"jane@example.com", "Jane@Example.com"}
