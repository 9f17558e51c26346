"""The default status must only ever land on contacts the export creates: it is dated
2000-01-01, whatever else the record says, so Omnisend keeps any newer status."""

from __future__ import annotations

from target_omnisend.mapping import MappingConfig, to_contact

RUN_START = "2026-11-30T01:00:00Z"


def channel(record: dict, **config: str) -> dict:
    mapping = MappingConfig(run_started_at=RUN_START, **config)  # type: ignore[arg-type]
    contact = to_contact(record, mapping)
    return contact.body["identifiers"][0]["channels"]["email"]  # type: ignore[union-attr]


def test_an_empty_status_field_keeps_the_default_status_dated_in_the_past() -> None:
    for empty in ("", None, "   "):
        got = channel({"email": "a@example.com", "consent": empty}, status_field="consent")
        assert got == {"status": "nonSubscribed", "statusChangedAt": "2000-01-01T00:00:00Z"}


def test_an_explicit_status_without_a_date_is_dated_at_the_run_start() -> None:
    got = channel({"email": "a@example.com", "consent": "unsubscribed"}, status_field="consent")
    assert got == {"status": "unsubscribed", "statusChangedAt": RUN_START}
