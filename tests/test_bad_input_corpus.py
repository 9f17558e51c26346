"""Issue 11, bad-input corpus: each file under tests/data_files/bad_input/ holds one
hostile shape of input (odd dates, huge numbers, NaN, deep nesting, control characters,
1 MB strings, bytes that are not UTF-8, mixed-case and IDN emails, conflicting
duplicates). Run end to end against the local server, each has exactly one outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DEFAULT_STATUS_DATE, REPO, run_target, stored_email
from tests.omnisend_server import OmnisendServer

pytestmark = pytest.mark.e2e

CORPUS = REPO / "tests" / "data_files" / "bad_input"
PROPERTIES = ("seen", "points", "ltv", "big", "profile", "note", "bio")
NO_STATUS = ("nonSubscribed", DEFAULT_STATUS_DATE)
STATUS_IGNORED = "status date is missing, unreadable or in the future: status ignored"


def dropped(name: str) -> str:
    return f"custom property {name} has an unusable value: dropped"


#: file -> exit code, summary counters, and what the server holds for some emails
#: (status and date of the email channel, then any contact fields).
EXPECTED: dict[str, dict[str, Any]] = {
    "odd_dates.singer": {
        "counts": {"received": 6, "delivered": 6, "rejected": 0},
        # The unreadable consent date is counted once by the sink (naming the field,
        # never the value), and again as a status ignored by the mapping.
        "warnings": {
            STATUS_IGNORED: 3,
            dropped("seen"): 2,
            "consent_at is not a date-time (unreadable text): value dropped": 1,
        },
        "state": '{"bookmarks":{"odd_dates":{"replication_key_value":97.5}}}',
        "held": {
            "year.one@example.com": (
                *NO_STATUS,
                {"customProperties": {"seen": "2024-01-01T00:00:00Z"}},
            ),
            "us.format@example.com": (*NO_STATUS, {}),
            "future@example.com": (*NO_STATUS, {}),
            "year.9999@example.com": (*NO_STATUS, {"customProperties": {}}),
            "good.date@example.com": ("unsubscribed", "2024-05-01T06:00:00Z", {}),
        },
    },
    "huge_numbers.singer": {
        "counts": {"received": 3, "delivered": 2, "rejected": 1},
        "rejected": {"schema_invalid": 1},
        "warnings": {dropped("big"): 1},
        "state": '{"bookmarks":{"huge_numbers":{"replication_key_value":1E+400,"f":97.5}}}',
        "held": {
            "exp@example.com": (
                *NO_STATUS,
                {"customProperties": {"points": "1E+400", "ltv": "0.10000000000000000000001"}},
            ),
            "long.int@example.com": (
                *NO_STATUS,
                {"customProperties": {"points": "12345678901234567890"}},
            ),
        },
    },
    "nan.singer": {
        "counts": {"received": 2, "delivered": 1, "rejected": 1},
        "rejected": {"schema_invalid": 1},
        "warnings": {dropped("points"): 1},
        "held": {"neg.inf@example.com": (*NO_STATUS, {"customProperties": {}})},
    },
    "deep_nesting.singer": {
        "counts": {"received": 2, "delivered": 2, "rejected": 0},
        "held": {
            "shallow@example.com": (*NO_STATUS, {"customProperties": {"profile": '{"x": 1}'}})
        },
    },
    "too_deep.singer": {
        "exit": 1,
        "error": "Input is not Singer: line 3 nests arrays/objects too deeply to be read.",
    },
    "control_chars.singer": {
        "counts": {"received": 4, "delivered": 2, "rejected": 2},
        "rejected": {"invalid_email": 2},
        "warnings": {
            "first_name had control characters: replaced by spaces": 2,
            "city had control characters: replaced by spaces": 1,
        },
        "held": {
            "nul@example.com": (*NO_STATUS, {"firstName": "Ja ne", "city": "Os lo"}),
            "esc@example.com": (*NO_STATUS, {"firstName": "[31mRed [0m"}),
        },
    },
    "long_strings.singer": {
        "counts": {"received": 4, "delivered": 3, "rejected": 1},
        "rejected": {"invalid_email": 1},
        "warnings": {"first_name longer than 255 characters: truncated": 1},
        "held": {
            "long.name@example.com": (*NO_STATUS, {"firstName": "x" * 255}),
            "long.property@example.com": (*NO_STATUS, {"customProperties": {"bio": "b" * 200_000}}),
            "short@example.com": (*NO_STATUS, {"firstName": "Short"}),
        },
    },
    "non_utf8.singer": {
        "counts": {"received": 3, "delivered": 1, "rejected": 2},
        "rejected": {"invalid_encoding": 1, "invalid_email": 1},
        "held": {"clean@example.com": (*NO_STATUS, {"firstName": "José"})},
    },
    "emails.singer": {
        "counts": {"received": 8, "delivered": 4, "rejected": 3, "merged_duplicates": 1},
        "rejected": {"invalid_email": 3},
        "held": {
            "jane.doe@example.com": (*NO_STATUS, {"firstName": "Lower"}),
            "jane@xn--strae-oqa.de": (*NO_STATUS, {}),
            "nikos@xn--a-xmb.gr": (*NO_STATUS, {}),
            "user@xn--bcher-kva.example": (*NO_STATUS, {}),
        },
    },
    "duplicates.singer": {
        "counts": {"received": 4, "delivered": 2, "rejected": 0, "merged_duplicates": 2},
        "held": {
            # The last record's name, the newest record's status.
            "dup@example.com": ("unsubscribed", "2024-06-01T00:00:00Z", {"firstName": "Third"}),
            "other@example.com": (*NO_STATUS, {"firstName": "Other"}),
        },
    },
}


def test_every_corpus_file_has_an_expected_outcome() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.singer")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_corpus_file(
    name: str, config: dict, server: OmnisendServer, tmp_path: Path
) -> None:
    expected = EXPECTED[name]
    config["status_field"] = "consent"
    config["status_timestamp_field"] = "consent_at"
    config["custom_properties"] = {p: p for p in PROPERTIES}
    config["summary_path"] = str(tmp_path / "summary.json")
    result = run_target(config, (CORPUS / name).read_bytes(), workdir=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == expected.get("exit", 0), result.stderr[-3000:]
    if "error" in expected:
        (line,) = [line for line in result.stderr.splitlines() if "| ERROR" in line]
        assert expected["error"] in line
        assert result.stdout == ""  # no STATE
        return
    stream = name.removesuffix(".singer")
    counts = json.loads((tmp_path / "summary.json").read_text())["streams"][stream]
    assert {k: counts[k] for k in expected["counts"]} == expected["counts"]
    assert counts["rejected_by_reason"] == expected.get("rejected", {})
    assert counts["warnings"] == expected.get("warnings", {})
    if "state" in expected:
        assert result.stdout.splitlines()[-1] == expected["state"]  # the exact digits
    held = {stored_email(c): c for c in server.contacts()}
    assert len(held) == counts["delivered"]
    for email, (status, changed, fields) in expected["held"].items():
        contact = held[email]
        channel = contact["identifiers"][0]["channels"]["email"]
        assert (channel["status"], channel["statusChangedAt"]) == (status, changed), email
        assert {k: contact.get(k) for k in fields} == fields, email
