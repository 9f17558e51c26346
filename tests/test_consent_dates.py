"""The default status must only ever land on contacts the export creates: it is dated
in the past (2000-01-01 by default, older for every later run), whatever else the record
says, so Omnisend keeps any newer status."""

from __future__ import annotations

import datetime as dt
import json

from target_omnisend.mapping import MappingConfig, default_status_date, to_contact
from target_omnisend.store import fingerprint

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


def test_the_default_status_date_is_older_for_every_later_run() -> None:
    """Issue 19: a later run's default status never wins over one an earlier run wrote,
    even when Omnisend lets the later write win a tie; to the millisecond, since runs
    can start under a second apart; never before 1970."""
    utc = dt.timezone.utc
    first = dt.datetime(2026, 12, 6, 3, 0, 0, 123_000, tzinfo=utc)
    dates = [default_status_date(first + dt.timedelta(milliseconds=ms)) for ms in (0, 1, 900)]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == 3
    assert dates[0] == "1999-01-26T20:59:59.877Z"
    assert default_status_date(dt.datetime(2026, 1, 1, tzinfo=utc)) == "2000-01-01T00:00:00.000Z"
    assert default_status_date(dt.datetime(2100, 1, 1, tzinfo=utc)) == "1970-01-01T00:00:00.000Z"


def test_the_default_status_date_never_makes_a_contact_look_changed() -> None:
    """The fingerprint reads any run's default date as the fixed one earlier releases
    sent, so a re-run (or an upgrade) finds unchanged contacts unchanged."""
    utc = dt.timezone.utc
    bodies = []
    for day in (1, 2):
        started = dt.datetime(2026, 12, day, tzinfo=utc)
        mapping = MappingConfig(
            run_started_at=RUN_START, default_status_date=default_status_date(started)
        )
        contact = to_contact({"email": "a@example.com"}, mapping)
        bodies.append(json.dumps(contact.body))  # type: ignore[union-attr]
        assert mapping.default_status_date in bodies[-1]
        mapping_dates = (RUN_START, mapping.default_status_date)
        bodies[-1] = fingerprint(bodies[-1], *mapping_dates)  # type: ignore[assignment]
    legacy = json.dumps(to_contact({"email": "a@example.com"}, MappingConfig()).body)  # type: ignore[union-attr]
    assert bodies[0] == bodies[1] == fingerprint(legacy, RUN_START)
