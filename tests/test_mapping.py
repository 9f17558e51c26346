"""Mapping rules: a record in, the Omnisend contact body (or the reason it is refused) out."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from target_omnisend.mapping import (
    _PLAIN_EMAIL,
    NEW_CONTACT_STATUS_DATE,
    Contact,
    MappingConfig,
    Rejection,
    _email_problem,
    normalize_birthdate,
    normalize_email,
    normalize_phone,
    to_contact,
)
from target_omnisend.privacy import mask_email

CFG = MappingConfig(run_started_at="2026-11-29T00:00:00Z")


def contact(record: dict, cfg: MappingConfig = CFG) -> Contact:
    result = to_contact(record, cfg)
    assert isinstance(result, Contact), result
    return result


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("  padded@example.com\t", "padded@example.com"),
        ("o'brien+vip@mail.example.org", "o'brien+vip@mail.example.org"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
    ],
)
def test_emails_are_trimmed_lowercased_and_ascii(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "missing_email"),
        ("", "missing_email"),
        ("   ", "missing_email"),
        (42, "invalid_email"),
        ("jane at example.com", "invalid_email"),
        ("jane@@example.com", "invalid_email"),
        ("jane..doe@example.com", "invalid_email"),
        ("jane@localhost", "invalid_email"),
        ("jane@example.c", "invalid_email"),
        ("jane@-example.com", "invalid_email"),
        ("a" * 65 + "@example.com", "invalid_email"),
        ("jane\n@example.com", "invalid_email"),
        ("jane@example.com\n.org", "invalid_email"),
        ("jane@xn--p1a-.example", "invalid_email"),
        ("x@" + ("a" * 63 + ".") * 4 + "com", "invalid_email"),  # 262 characters
    ],
)
def test_unusable_emails_are_rejected_with_a_reason(raw: object, code: str) -> None:
    result = to_contact({"email": raw}, CFG)
    assert isinstance(result, Rejection)
    assert result.code == code
    assert result.reason
    if isinstance(raw, str) and raw.strip():
        assert raw.strip() not in result.reason  # the reason never quotes the email


def test_the_one_regex_fast_path_never_accepts_what_the_full_rules_refuse() -> None:
    """Plain addresses take a single-regex shortcut; no random near-miss it lets
    through may be one the rule-by-rule check (which explains refusals) refuses."""
    rng = random.Random(4)
    alphabet = "ab9.-_+@\n xé"
    tails = ["", "@ab.cd", ".com", "@x-n.io", "@xn--ab-.com", "@a.b", "@" + "a" * 64 + ".io"]
    accepted = 0
    for _ in range(20_000):
        email = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        email = (email + rng.choice(tails)).strip().lower()
        fast = len(email) <= 254 and bool(_PLAIN_EMAIL.fullmatch(email))
        if fast:
            accepted += 1
            assert email.isascii() and _email_problem(email) is None, email
    assert accepted > 100  # the check above did run on accepted addresses


def test_full_profile_maps_every_attribute() -> None:
    record = {
        "email": "Anna@Example.com",
        "first_name": " Anna ",
        "last_name": "Müller",
        "address": "1 Main St",
        "city": "Berlin",
        "state": "BE",
        "postal_code": 10115,
        "country": "Germany",
        "country_code": "de",
        "phone": "+49 (30) 123-4567",
        "birthdate": "1990-02-03",
        "gender": "Female",
    }
    body = contact(record).body
    assert body == {
        "identifiers": [
            {
                "type": "email",
                "id": "anna@example.com",
                "channels": {
                    "email": {
                        "status": "nonSubscribed",
                        "statusChangedAt": NEW_CONTACT_STATUS_DATE,
                    }
                },
                "sendWelcomeMessage": False,
            },
            {
                "type": "phone",
                "id": "+49301234567",
                "channels": {
                    "sms": {"status": "nonSubscribed", "statusChangedAt": NEW_CONTACT_STATUS_DATE}
                },
                "sendWelcomeMessage": False,
            },
        ],
        "firstName": "Anna",
        "lastName": "Müller",
        "address": "1 Main St",
        "city": "Berlin",
        "state": "BE",
        "postalCode": "10115",
        "country": "Germany",
        "countryCode": "DE",
        "birthdate": "1990-02-03",
        "gender": "f",
    }


def test_empty_and_null_values_are_omitted_never_sent_as_empty_strings() -> None:
    body = contact(
        {"email": "a@example.com", "first_name": "", "last_name": None, "city": "  "}
    ).body
    assert set(body) == {"identifiers"}


def test_contact_body_never_carries_tags() -> None:
    body = contact({"email": "a@example.com", "tags": ["vip"]}).body
    assert "tags" not in body


def test_invalid_country_code_is_dropped_with_a_warning() -> None:
    result = contact({"email": "a@example.com", "country_code": "XX", "country": "Nowhere"})
    assert "countryCode" not in result.body
    assert result.body["country"] == "Nowhere"
    assert any("country_code" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1990-02-03", "1990-02-03"),
        ("1990/02/03", "1990-02-03"),
        ("1990-02-03T00:00:00Z", "1990-02-03"),
        (dt.datetime(1990, 2, 3, 12, tzinfo=dt.timezone.utc), "1990-02-03"),
        (dt.date(1990, 2, 3), "1990-02-03"),
        ("31/12/1990", None),
        ("1990-02-30", None),
        ("soon", None),
    ],
)
def test_birthdate_normalised_or_dropped(raw: object, expected: str | None) -> None:
    assert normalize_birthdate(raw) == expected


def test_unusable_birthdate_is_dropped_with_a_warning() -> None:
    result = contact({"email": "a@example.com", "birthdate": "31/12/1990"})
    assert "birthdate" not in result.body
    assert result.warnings == ("birthdate has an unusable value: dropped",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (555) 010-0199", "+15550100199"),
        ("0044 20 7946 0958", "+442079460958"),
        ("555-0100", None),
        ("+0123", None),
    ],
)
def test_phone_is_e164_or_dropped(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


def test_nested_email_and_field_paths() -> None:
    cfg = MappingConfig(
        email_field="contact.email",
        field_mapping={"first_name": "contact.name.given", "city": "addr.city"},
    )
    result = contact(
        {"contact": {"email": "N@Example.com", "name": {"given": "Nia"}}, "addr": {}}, cfg
    )
    assert result.email == "n@example.com"
    assert result.body["firstName"] == "Nia"
    assert "city" not in result.body


def test_missing_nested_email_path_is_rejected() -> None:
    cfg = MappingConfig(email_field="contact.email")
    result = to_contact({"contact": None}, cfg)
    assert isinstance(result, Rejection)
    assert result.code == "missing_email"


def test_custom_properties_keep_json_types() -> None:
    cfg = MappingConfig(
        custom_properties={"ltv": "lifetime_value", "tier": "tier", "vip": "vip", "seen": "seen"}
    )
    body = contact(
        {
            "email": "a@example.com",
            "lifetime_value": 12.5,
            "tier": "gold",
            "vip": True,
            "seen": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        },
        cfg,
    ).body
    assert body["customProperties"] == {
        "ltv": 12.5,
        "tier": "gold",
        "vip": True,
        "seen": "2026-01-02T03:04:05Z",
    }


def test_default_status_only_applies_to_new_contacts() -> None:
    """Dated in the past, the default never wins over a status a contact already has."""
    channel = contact({"email": "a@example.com"}).body["identifiers"][0]["channels"]["email"]
    assert channel == {"status": "nonSubscribed", "statusChangedAt": NEW_CONTACT_STATUS_DATE}


def test_explicit_per_record_status_carries_its_own_date() -> None:
    cfg = MappingConfig(
        status_field="consent",
        status_timestamp_field="consent_at",
        run_started_at="2026-11-29T00:00:00Z",
    )
    dated = contact(
        {
            "email": "a@example.com",
            "consent": "unsubscribed",
            "consent_at": "2026-05-01T08:00:00+02:00",
        },
        cfg,
    )
    assert dated.body["identifiers"][0]["channels"]["email"] == {
        "status": "unsubscribed",
        "statusChangedAt": "2026-05-01T06:00:00Z",
    }
    undated = contact(
        {"email": "a@example.com", "consent": "SUBSCRIBED"},
        MappingConfig(status_field="consent", run_started_at="2026-11-29T00:00:00Z"),
    )
    assert undated.body["identifiers"][0]["channels"]["email"]["statusChangedAt"] == (
        "2026-11-29T00:00:00Z"
    )


def test_mask_email_keeps_domain_only() -> None:
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_email("nonsense") == "***"
