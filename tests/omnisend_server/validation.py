"""Contact-body validation, shared by POST /contacts, PATCH and every batch item.

One function decides what a valid contact write is, so a batch item is refused for
exactly the reasons POST /contacts would refuse it. It returns a normalised
`ContactWrite` (generation-neutral) or raises a 400 listing every invalid field.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from .errors import FieldError, validation_error

STATUSES = ("subscribed", "unsubscribed", "nonSubscribed")
STRING_FIELDS = (
    "firstName",
    "lastName",
    "address",
    "city",
    "state",
    "postalCode",
    "country",
    "countryCode",
    "birthdate",
    "gender",
)
CONTACT_FIELDS = frozenset((*STRING_FIELDS, "identifiers", "customProperties", "tags"))
IDENTIFIER_FIELDS = frozenset(("type", "id", "channels", "sendWelcomeMessage", "consent"))
CONSENT_FIELDS = frozenset(("source", "createdAt", "ip", "userAgent"))
CHANNEL_OF = {"email": "email", "phone": "sms"}
MAX_TAGS = 100

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL_RE = re.compile(
    rf"{_ATOM}(?:\.{_ATOM})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}"
)
PHONE_RE = re.compile(r"\+[1-9][0-9]{6,14}")
COUNTRY_CODE_RE = re.compile(r"[A-Z]{2}")
BIRTHDATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
TIMESTAMP_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})"
)


@dataclass
class IdentifierWrite:
    """One identifier of a write; `status`/`changed_at` are None when no channel was sent."""

    type: str
    id: str
    index: int
    status: str | None = None
    changed_at: str | None = None
    consent: dict[str, Any] | None = None
    send_welcome_message: bool | None = None


@dataclass
class ContactWrite:
    """What a request asks to change; absent keys in `fields` mean "leave alone"."""

    email: IdentifierWrite | None = None
    phone: IdentifierWrite | None = None
    fields: dict[str, str | None] = field(default_factory=dict)
    custom_properties: dict[str, Any] | None = None
    tags: list[str] | None = None


def is_email(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 254 or not EMAIL_RE.fullmatch(value):
        return False
    return len(value.split("@", 1)[0]) <= 64


def parse_timestamp(value: str) -> datetime:
    """RFC 3339 timestamp (offset required) as an aware UTC datetime."""
    text = value.replace("Z", "+00:00")
    if "." in text:  # fromisoformat wants 3 or 6 fractional digits
        head, _, rest = text.partition(".")
        digits = re.match(r"\d+", rest)
        frac = digits.group(0) if digits else ""
        text = head + "." + (frac + "000000")[:6] + rest[len(frac) :]
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    # isoformat is several times faster than strftime (a benchmark formats millions)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    return moment.isoformat(timespec="seconds")[:-6] + "Z"


@functools.lru_cache(maxsize=65536)
def _normalized_timestamp(value: str) -> str | None:
    """Clients send the same few timestamps millions of times: parse each once."""
    try:
        return format_timestamp(parse_timestamp(value))
    except ValueError:
        return None


def _check_timestamp(value: Any, where: str, errors: list[FieldError]) -> str | None:
    if isinstance(value, str) and TIMESTAMP_RE.fullmatch(value):
        normalized = _normalized_timestamp(value)
        if normalized is not None:
            return normalized
    errors.append(
        FieldError(where, "invalid_format", "Must be an RFC 3339 date-time with a time zone")
    )
    return None


def _check_identifier(
    raw: Any, index: int, stamp_key: str, errors: list[FieldError]
) -> IdentifierWrite | None:
    where = f"identifiers[{index}]"
    if not isinstance(raw, dict):
        errors.append(FieldError(where, "invalid_type", "Must be an object"))
        return None
    for key in raw:
        if key not in IDENTIFIER_FIELDS:
            errors.append(FieldError(f"{where}.{key}", "unknown_field", "Unknown field"))
    kind = raw.get("type")
    if kind not in CHANNEL_OF:
        errors.append(FieldError(f"{where}.type", "invalid_value", "Must be 'email' or 'phone'"))
        return None
    ident = raw.get("id")
    if kind == "email" and not is_email(ident):
        errors.append(FieldError(f"{where}.id", "invalid_email", "Must be a valid email address"))
        return None
    if kind == "phone" and not (isinstance(ident, str) and PHONE_RE.fullmatch(ident)):
        errors.append(
            FieldError(f"{where}.id", "invalid_phone", "Must be a phone number in E.164 format")
        )
        return None
    out = IdentifierWrite(kind, ident, index)
    welcome = raw.get("sendWelcomeMessage")
    if welcome is not None and not isinstance(welcome, bool):
        errors.append(FieldError(f"{where}.sendWelcomeMessage", "invalid_type", "Must be boolean"))
    out.send_welcome_message = welcome
    _check_channels(raw.get("channels"), kind, where, stamp_key, out, errors)
    consent = raw.get("consent")
    if consent is not None:
        out.consent = _check_consent(consent, f"{where}.consent", errors)
    return out


def _check_channels(
    channels: Any,
    kind: str,
    where: str,
    stamp_key: str,
    out: IdentifierWrite,
    errors: list[FieldError],
) -> None:
    if channels is None:
        return
    if not isinstance(channels, dict):
        errors.append(FieldError(f"{where}.channels", "invalid_type", "Must be an object"))
        return
    channel_name = CHANNEL_OF[kind]
    for key in channels:
        if key != channel_name:
            errors.append(
                FieldError(
                    f"{where}.channels.{key}",
                    "unknown_field",
                    f"A {kind} identifier only has the '{channel_name}' channel",
                )
            )
    channel = channels.get(channel_name)
    if channel is None:
        return
    cwhere = f"{where}.channels.{channel_name}"
    if not isinstance(channel, dict):
        errors.append(FieldError(cwhere, "invalid_type", "Must be an object"))
        return
    for key in channel:
        if key not in ("status", stamp_key):
            errors.append(FieldError(f"{cwhere}.{key}", "unknown_field", "Unknown field"))
    status = channel.get("status")
    if status not in STATUSES:
        errors.append(
            FieldError(f"{cwhere}.status", "invalid_value", f"Must be one of {', '.join(STATUSES)}")
        )
    else:
        out.status = status
    if channel.get(stamp_key) is not None:
        out.changed_at = _check_timestamp(channel[stamp_key], f"{cwhere}.{stamp_key}", errors)


def _check_consent(consent: Any, where: str, errors: list[FieldError]) -> dict[str, Any] | None:
    if not isinstance(consent, dict):
        errors.append(FieldError(where, "invalid_type", "Must be an object"))
        return None
    for key, value in consent.items():
        if key not in CONSENT_FIELDS:
            errors.append(FieldError(f"{where}.{key}", "unknown_field", "Unknown field"))
        elif key == "createdAt":
            _check_timestamp(value, f"{where}.createdAt", errors)
        elif not isinstance(value, str):
            errors.append(FieldError(f"{where}.{key}", "invalid_type", "Must be a string"))
    return dict(consent)


def _check_string_field(name: str, value: Any, errors: list[FieldError]) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        errors.append(FieldError(name, "invalid_type", "Must be a string"))
    elif name == "countryCode" and not COUNTRY_CODE_RE.fullmatch(value):
        errors.append(
            FieldError(name, "invalid_format", "Must be an ISO 3166-1 alpha-2 code, e.g. 'US'")
        )
    elif name == "birthdate":
        try:
            if not BIRTHDATE_RE.fullmatch(value):
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            errors.append(FieldError(name, "invalid_format", "Must be a date as YYYY-MM-DD"))
    elif name == "gender" and value not in ("m", "f"):
        errors.append(FieldError(name, "invalid_value", "Must be 'm' or 'f'"))


def _check_custom_properties(value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        errors.append(FieldError("customProperties", "invalid_type", "Must be an object"))
        return None
    for key, item in value.items():
        scalar = item is None or isinstance(item, str | int | float | bool)
        listed = isinstance(item, list) and all(isinstance(x, str | int | float) for x in item)
        if not key.strip():
            errors.append(FieldError("customProperties", "invalid_value", "Empty property name"))
        elif not (scalar or listed):
            errors.append(
                FieldError(
                    f"customProperties.{key}",
                    "invalid_type",
                    "Must be a string, number, boolean, null or a list of them",
                )
            )
    return dict(value)


def _check_tags(value: Any, errors: list[FieldError]) -> list[str] | None:
    if not isinstance(value, list):
        errors.append(FieldError("tags", "invalid_type", "Must be an array of strings"))
        return None
    if len(value) > MAX_TAGS:
        errors.append(FieldError("tags", "too_many", f"At most {MAX_TAGS} tags"))
        return None
    tags: list[str] = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not tag.strip():
            errors.append(FieldError(f"tags[{i}]", "invalid_value", "Must be a non-empty string"))
        elif tag not in tags:
            tags.append(tag)
    return tags


def validate_contact(body: Any, *, stamp_key: str, partial: bool) -> ContactWrite:
    """Check a contact body; `partial` (PATCH) does not require an identifier.

    `stamp_key` is the generation's name for the status timestamp (`statusChangedAt` in
    2026-03-15, `statusDate` in v5); the other name is an unknown field.
    """
    if not isinstance(body, dict):
        raise validation_error(
            [FieldError("", "invalid_type", "Body must be a JSON object")], "Invalid body"
        )
    errors: list[FieldError] = []
    write = ContactWrite()
    for key in body:
        if key not in CONTACT_FIELDS:
            errors.append(FieldError(key, "unknown_field", "Unknown field"))
    identifiers = body.get("identifiers")
    if identifiers is not None and not isinstance(identifiers, list):
        errors.append(FieldError("identifiers", "invalid_type", "Must be an array"))
        identifiers = None
    for index, raw in enumerate(identifiers or []):
        ident = _check_identifier(raw, index, stamp_key, errors)
        if ident is None:
            continue
        if getattr(write, ident.type) is not None:
            errors.append(
                FieldError(
                    f"identifiers[{index}]", "duplicate", f"Only one {ident.type} identifier"
                )
            )
        setattr(write, ident.type, ident)
    if not partial and not identifiers:
        errors.append(
            FieldError("identifiers", "required", "At least one email or phone identifier")
        )
    for name in STRING_FIELDS:
        if name in body:
            _check_string_field(name, body[name], errors)
            write.fields[name] = body[name]
    if body.get("customProperties") is not None:
        write.custom_properties = _check_custom_properties(body["customProperties"], errors)
    if body.get("tags") is not None:
        write.tags = _check_tags(body["tags"], errors)
    if errors:
        raise validation_error(errors)
    return write
