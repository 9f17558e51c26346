"""Issue 11, mapping side: odd dates, unusable status dates, IDNA 2008, clearing values
and email case. A record in, a contact body (or a rejection with a code) out."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from target_omnisend.mapping import (
    NEW_CONTACT_STATUS_DATE,
    Contact,
    MappingConfig,
    Rejection,
    normalize_email,
    to_contact,
)

STARTED = "2026-11-29T00:00:00Z"
CONSENT = MappingConfig(
    status_field="consent", status_timestamp_field="consent_at", run_started_at=STARTED
)
DEFAULT_CHANNEL = {"status": "nonSubscribed", "statusChangedAt": NEW_CONTACT_STATUS_DATE}


def contact(record: dict, cfg: MappingConfig) -> Contact:
    result = to_contact(record, cfg)
    assert isinstance(result, Contact), result
    return result


def channel(result: Contact) -> dict:
    return result.body["identifiers"][0]["channels"]["email"]


# -- case 1: a date that leaves the calendar in UTC -------------------------------------

YEAR_ONE = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))


@pytest.mark.parametrize("when", [YEAR_ONE, "0001-01-01T00:00:00+05:00"])
def test_a_status_date_before_year_one_in_utc_does_not_fail_the_record(when: object) -> None:
    result = contact(
        {"email": "a@example.com", "consent": "subscribed", "consent_at": when}, CONSENT
    )
    assert channel(result) == DEFAULT_CHANNEL
    assert "status date is missing, unreadable or in the future: status ignored" in (
        result.warnings
    )


def test_a_custom_date_before_year_one_in_utc_is_dropped_with_a_warning() -> None:
    cfg = MappingConfig(custom_properties={"seen": "seen", "since": "since"})
    result = contact(
        {"email": "a@example.com", "seen": YEAR_ONE, "since": dt.datetime(5, 1, 2)}, cfg
    )
    assert result.body["customProperties"] == {"since": "0005-01-02T00:00:00Z"}
    assert result.warnings == ("custom property seen has an unusable value: dropped",)


# -- case 5: an unusable status date never makes a status win -----------------------------


@pytest.mark.parametrize(
    "when", ["05/01/2024 10:00", "yesterday", None, "", "2999-01-01T00:00:00Z", 12345]
)
def test_a_status_without_a_usable_date_falls_back_to_the_default_rule(when: object) -> None:
    record = {"email": "a@example.com", "consent": "subscribed", "consent_at": when}
    result = contact(record, CONSENT)
    assert channel(result) == DEFAULT_CHANNEL
    assert result.warnings == (
        "status date is missing, unreadable or in the future: status ignored",
    )


def test_a_status_dated_up_to_a_day_after_the_run_started_still_counts() -> None:
    """Clocks differ between the source and this machine; a day of slack."""
    record = {
        "email": "a@example.com",
        "consent": "unsubscribed",
        "consent_at": "2026-11-29T20:00Z",
    }
    assert channel(contact(record, CONSENT)) == {
        "status": "unsubscribed",
        "statusChangedAt": "2026-11-29T20:00:00Z",
    }


# -- case 4: IDNA 2008, never another domain -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane@straße.de", "jane@xn--strae-oqa.de"),  # IDNA 2003: jane@strasse.de
        ("nikos@ςa.gr", "nikos@xn--a-xmb.gr"),  # IDNA 2003: final sigma folded to U+03C3
        ("user@BÜCHER.example", "user@xn--bcher-kva.example"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
    ],
)
def test_internationalised_domains_follow_idna_2008(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "a@☃.com",  # a symbol: allowed by IDNA 2003, not by IDNA 2008
        "a@xn--zz.com",  # not a valid A-label
        "a@a\u200cb.com",  # a joiner out of context
        "\u212aate@example.com",  # Kelvin sign: lower() would make it "kate"
    ],
)
def test_what_idna_2008_refuses_is_refused(raw: str) -> None:
    result = normalize_email(raw)
    assert isinstance(result, Rejection)
    assert result.code == "invalid_email"


# -- case 8: email case is a setting ---------------------------------------------------


def test_emails_keep_their_case_when_lowercasing_is_off() -> None:
    keep = MappingConfig(lowercase_emails=False)
    assert contact({"email": " Jane@Example.com "}, keep).email == "Jane@Example.com"
    assert contact({"email": "Jane@Example.com"}, MappingConfig()).email == "jane@example.com"
    assert contact({"email": "Jane@Bücher.example"}, keep).email == "Jane@xn--bcher-kva.example"


# -- case 7: clearing values the source cleared -----------------------------------------

CLEARING = MappingConfig(
    clear_missing_values=True,
    field_mapping={"city": "address.city"},
    custom_properties={"tier": "tier", "points": "points"},
)


def test_values_cleared_at_the_source_are_cleared_when_asked() -> None:
    record = {
        "email": "a@example.com",
        "first_name": "",
        "last_name": None,
        "address": {"city": None},
        "phone": None,
        "country_code": None,
        "birthdate": "",
        "tier": None,
        "points": "",
    }
    body = contact(record, CLEARING).body
    assert body["firstName"] == body["lastName"] == body["city"] == ""
    assert body["customProperties"] == {"tier": None, "points": None}
    for field in ("countryCode", "birthdate", "postalCode", "gender"):
        assert field not in body  # format-checked or absent from the record: left alone
    assert [i["type"] for i in body["identifiers"]] == ["email"]


def test_a_field_the_record_does_not_carry_is_never_cleared() -> None:
    body = contact({"email": "a@example.com", "address": {}}, CLEARING).body
    assert set(body) == {"identifiers"}


def test_without_the_setting_empty_values_are_omitted() -> None:
    cfg = MappingConfig(custom_properties={"tier": "tier"})
    body = contact({"email": "a@example.com", "first_name": "", "tier": None}, cfg).body
    assert set(body) == {"identifiers"}


# -- numbers that JSON consumers would round ------------------------------------------


def test_numbers_keep_their_exact_value_in_custom_properties() -> None:
    cfg = MappingConfig(custom_properties={k: k for k in ("a", "b", "c", "d", "e", "f")})
    record = {
        "email": "a@example.com",
        "a": decimal.Decimal("97.5"),
        "b": decimal.Decimal("12345678901234567890"),
        "c": decimal.Decimal("NaN"),
        "d": decimal.Decimal("1E+400"),
        "e": 2**64,
        "f": decimal.Decimal("0.10000000000000000000001"),
    }
    result = contact(record, cfg)
    assert result.body["customProperties"] == {
        "a": 97.5,
        "b": "12345678901234567890",
        "d": "1E+400",
        "e": str(2**64),
        "f": "0.10000000000000000000001",
    }
    assert result.warnings == ("custom property c has an unusable value: dropped",)


def test_control_characters_in_names_and_addresses_become_spaces() -> None:
    record = {"email": "a@example.com", "first_name": "Jane\x00\nDoe", "city": "a\u00a0b"}
    result = contact(record, MappingConfig())
    assert (result.body["firstName"], result.body["city"]) == ("Jane Doe", "a\u00a0b")
    assert result.warnings == ("first_name had control characters: replaced by spaces",)
