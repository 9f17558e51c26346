"""Record -> Omnisend contact body, as pure functions.

Nothing here does I/O or keeps state, so every rule (email normalisation, omitted
empties, country codes, dates, consent) is testable with a dict in and a dict out.
The body is built in the 2026-03-15 shape; `api.py` adapts it to older generations.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import idna

from target_omnisend.countries import ISO_ALPHA2


@dataclass(frozen=True, slots=True)
class Attribute:
    """A standard Omnisend contact attribute: the name users write in `field_mapping`, the
    contact-body field it fills, and the line the settings reference shows for it."""

    name: str
    body_field: str
    doc: str


#: The one table of standard attributes. Mapping, the config schema (`field_mapping`
#: and its docs) and the Meltano plugin definition are all generated from it.
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("first_name", "firstName", "First name"),
    Attribute("last_name", "lastName", "Last name"),
    Attribute("address", "address", "Street address"),
    Attribute("city", "city", "City"),
    Attribute("state", "state", "State / region"),
    Attribute("postal_code", "postalCode", "Postal code"),
    Attribute("country", "country", "Country name"),
    Attribute(
        "country_code", "countryCode", "ISO 3166-1 alpha-2 country code (sent only when valid)"
    ),
    Attribute("phone", "phone", "Phone in international E.164 form (added as a phone identifier)"),
    Attribute("birthdate", "birthdate", "Birth date (sent as YYYY-MM-DD)"),
    Attribute("gender", "gender", "Gender (m/f; male/female accepted)"),
)
#: Omnisend attribute (config name) -> contact body field.
STANDARD_ATTRIBUTES: dict[str, str] = {a.name: a.body_field for a in ATTRIBUTES}
EMAIL_STATUSES: tuple[str, ...] = ("subscribed", "unsubscribed", "nonSubscribed")

#: Omnisend documents no length limits for contact attributes. Free-text attributes
#: longer than this are cut (with a counted warning) rather than risk a refusal or an
#: oversized batch: 255 characters is the common column size for names and addresses.
MAX_TEXT_LENGTH = 255
FREE_TEXT_ATTRIBUTES = frozenset(
    ("first_name", "last_name", "address", "city", "state", "postal_code", "country")
)
#: With `clear_missing_values`, these are sent as `""` when the record carries them as
#: null or empty: any string is a valid value for them, so clearing can never get the
#: contact refused. Not cleared: `country_code`, `birthdate` and `gender` (Omnisend
#: checks their format, and `""` would get the whole contact refused) and `phone` (an
#: identifier: a contact write can add one, never remove one).
CLEARABLE_ATTRIBUTES = FREE_TEXT_ATTRIBUTES
#: A status dated later than the run's start plus this is not believed: a date in the
#: future would make that status win over every real change until then.
STATUS_DATE_SLACK = dt.timedelta(days=1)

#: Omnisend keeps the email status with the latest `statusChangedAt`. The default
#: status for new contacts is sent with an old date so that it lands on contacts the
#: export creates but never overrides the status an existing contact already has. This
#: is the date releases before issue 19 used for every run, and the one a run starting
#: at `_DEFAULT_DATE_PIVOT` uses (see `default_status_date`).
NEW_CONTACT_STATUS_DATE = "2000-01-01T00:00:00Z"
_DEFAULT_DATE_PIVOT = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_TLD_TEXT = r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59}(?<!-))"
# \Z, not $: `$` also matches before a final newline, which let "a\n@x.com" through.
_EMAIL_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_DOMAIN_LABEL = re.compile(rf"{_LABEL}\Z")
_TLD = re.compile(rf"{_TLD_TEXT}\Z")
#: The common case in one match: a plain ASCII address that passes every rule of
#: `_email_problem`. Anything else takes the slow path, which also says what is wrong.
_PLAIN_EMAIL = re.compile(rf"(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_TLD_TEXT}")
#: Control and separator characters no name or address contains (a NUL, a line break,
#: an escape sequence): they are replaced by one space, with a warning.
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_PHONE_JUNK = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_GENDERS = {"m": "m", "male": "m", "man": "m", "f": "f", "female": "f", "woman": "f"}
_STATUS_ALIASES = {s.lower(): s for s in EMAIL_STATUSES} | {
    "non_subscribed": "nonSubscribed",
    "nonsubscribed": "nonSubscribed",
    "not_subscribed": "nonSubscribed",
}


@dataclass(frozen=True, slots=True)
class Contact:
    """A record that maps to a valid Omnisend contact."""

    email: str
    body: dict[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot become a contact; `reason` never quotes the email itself."""

    code: str
    reason: str


@dataclass(frozen=True)
class MappingConfig:
    """The part of the target's settings that decides what a contact looks like."""

    email_field: str = "email"
    field_mapping: Mapping[str, str] = field(default_factory=dict)
    custom_properties: Mapping[str, str] = field(default_factory=dict)
    email_status: str = "nonSubscribed"
    status_field: str | None = None
    status_timestamp_field: str | None = None
    send_welcome_message: bool = False
    #: Used as `statusChangedAt` for an explicit per-record status without a date.
    run_started_at: str = NEW_CONTACT_STATUS_DATE
    #: `statusChangedAt` of the default status (`email_status`); see `default_status_date`.
    default_status_date: str = NEW_CONTACT_STATUS_DATE
    #: Omnisend compares emails case-sensitively: lower-casing makes `Jane@X.com` and
    #: `jane@x.com` one contact; off, the source's spelling is sent as it is.
    lowercase_emails: bool = True
    #: A field the record carries as null/empty clears the Omnisend value (see
    #: `CLEARABLE_ATTRIBUTES`) instead of being omitted.
    clear_missing_values: bool = False

    def source_field(self, attribute: str) -> str:
        """Each attribute defaults to the source field of the same name."""
        return self.field_mapping.get(attribute, attribute)


def has_path(record: Mapping[str, Any], path: str) -> bool:
    """Whether the record carries the field at all (a null counts, an absent key not):
    a tap that does not send a column must never clear it."""
    if path in record:
        return True
    head, _, last = path.rpartition(".")
    parent = get_path(record, head) if head else None
    return isinstance(parent, Mapping) and last in parent


def get_path(record: Mapping[str, Any], path: str) -> Any:
    """Read `a.b.c` from nested objects; a literal key containing dots wins."""
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def normalize_email(value: Any, lowercase: bool = True) -> str | Rejection:
    """Trim and (by default) lower-case: Omnisend treats emails as case-sensitive
    identifiers, so `Jane@X.com` and `jane@x.com` would otherwise become two contacts.
    An internationalised domain becomes its IDNA 2008 (UTS #46) A-label; what IDNA 2008
    refuses is refused, never folded into another domain (IDNA 2003 turned `straße.de`
    into `strasse.de`: someone else's mailbox)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return Rejection("missing_email", "email is missing or empty")
    if not isinstance(value, str):
        return Rejection("invalid_email", f"email is a {type(value).__name__}, not a string")
    email = value.strip()
    # Only ASCII is lower-cased here: str.lower() folds some non-ASCII letters into
    # ASCII ones (the Kelvin sign into `k`), which would turn an invalid address into
    # a valid, different one. Non-ASCII domains get UTS #46's own case mapping.
    folded = email.lower() if email.isascii() else email
    if len(folded) <= 254 and "xn--" not in folded and _PLAIN_EMAIL.fullmatch(folded):
        return folded if lowercase else email
    checked = _checked_email(email)
    if isinstance(checked, str):
        return Rejection("invalid_email", f"invalid email: {checked}")
    local, domain = checked
    ascii_email = f"{local}@{domain}"  # ASCII by now: lower() cannot fold anything odd
    return ascii_email.lower() if lowercase else ascii_email


def _checked_email(email: str) -> tuple[str, str] | str:
    """The rule-by-rule check behind the one-regex fast path: (local part, ASCII domain)
    or what is wrong, in words that never quote the address."""
    if len(email) > 254:
        return "longer than 254 characters"
    if email.count("@") != 1:
        return "must contain exactly one @"
    local, _, domain = email.partition("@")
    if not local or len(local) > 64 or not local.isascii() or not _EMAIL_LOCAL.match(local.lower()):
        return "the part before @ is not a valid mailbox name"
    if not domain.isascii() or "xn--" in domain.lower():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return "the domain is not a valid internationalised name (IDNA 2008)"
    if len(local) + 1 + len(domain) > 254:
        return "longer than 254 characters"
    labels = domain.lower().split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        return "the domain is not a valid host name"
    if not _TLD.match(labels[-1]):
        return "the domain has no valid top-level domain"
    return local, domain


def _email_problem(email: str) -> str | None:
    """What is wrong with an address, or None when it is valid."""
    checked = _checked_email(email)
    return checked if isinstance(checked, str) else None


def undecodable(value: Any) -> bool:
    """Input bytes that were not UTF-8 reach the sink as lone surrogates (the reader
    decodes with `surrogateescape`): such text can be neither sent nor stored as UTF-8."""
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, (list, tuple)):
        return any(undecodable(v) for v in value)
    if isinstance(value, Mapping):
        return any(undecodable(k) or undecodable(v) for k, v in value.items())
    return False


def _blank(value: Any) -> bool:
    """Null, whitespace or an empty list/object: the source holds no value."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, (list, tuple, dict)) and not value)


def _text(value: Any) -> str | None:
    """Scalars become trimmed strings; empties and containers become None (omitted)."""
    if type(value) is str:  # the common case, first (runs for every attribute of every record)
        return value.strip() or None
    if value is None or isinstance(value, (dict, list, tuple, set)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            value = int(value)
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        return None
    if isinstance(value, int) and value.bit_length() > 1000:
        return None  # hundreds of digits are no name or city (str() refuses past 4300)
    text = str(value).strip()
    return text or None


def clip_text(text: str, limit: int = MAX_TEXT_LENGTH) -> tuple[str, bool]:
    """Cut `text` to at most `limit` characters (code points, never half a surrogate
    pair: Python strings are code points); say whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit].rstrip(), True


def normalize_birthdate(value: Any) -> str | None:
    """Omnisend wants YYYY-MM-DD; the SDK may already have parsed it to a datetime."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = _text(value)
    if text is None:
        return None
    candidate = text[:10].replace("/", "-").replace(".", "-")
    try:
        parsed = dt.date.fromisoformat(candidate)
    except ValueError:
        return None
    if len(text) > 10 and text[10] not in "T ":
        return None
    return parsed.isoformat()


def normalize_phone(value: Any) -> str | None:
    """E.164 only: without a country prefix the number is ambiguous, so it is dropped."""
    text = _text(value)
    if text is None:
        return None
    text = _PHONE_JUNK.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    return text if _E164.match(text) else None


def normalize_status(value: Any) -> str | None:
    text = _text(value)
    return _STATUS_ALIASES.get(text.lower()) if text else None


def _timestamp(value: Any) -> str | None:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`, or None for anything that is no usable instant: not a
    date, or one that leaves the calendar once converted to UTC
    (`0001-01-01T00:00:00+05:00` is in year 0)."""
    if isinstance(value, dt.datetime):
        try:
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            value = value.astimezone(dt.timezone.utc)
        except (OverflowError, ValueError, TypeError):  # TypeError: a broken tzinfo
            return None
        # Not strftime: it does not zero-pad years before 1000 on every platform.
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
            f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"
        )
    text = _text(value)
    if not text:
        return None
    try:
        return _timestamp(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


@functools.lru_cache(maxsize=8)
def _latest_status_date(run_started_at: str) -> str:
    """The latest `statusChangedAt` believed for a run that started at `run_started_at`."""
    started = dt.datetime.fromisoformat(run_started_at.replace("Z", "+00:00"))
    return _timestamp(started + STATUS_DATE_SLACK) or run_started_at


def default_status_date(run_started_at: dt.datetime) -> str:
    """The date the default status is sent with: older for every later run.

    The target cannot know which contacts already exist, so every contact carries the
    default status; only its date keeps it off existing ones. A fixed old date is not
    enough for contacts this target created itself: they hold that very date, and
    Omnisend does not document which write wins a tie (the local server has a knob for
    both). So the date runs backwards from 2000-01-01 as the run's start moves forward
    from 2026-01-01, one millisecond per millisecond (runs can start less than a second
    apart): a later run's default status is always older than the one any earlier run
    wrote, and never replaces it — whatever `email_status` said then or says now. It
    stops at 1970-01-01 (reached in 2056, or by a clock set far ahead): an older date
    might be refused, which would cost every contact, a tie only the status."""
    pivot = dt.datetime.fromisoformat(NEW_CONTACT_STATUS_DATE.replace("Z", "+00:00"))
    moment = pivot - (run_started_at.astimezone(dt.timezone.utc) - _DEFAULT_DATE_PIVOT)
    moment = max(moment, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _custom_value(value: Any) -> Any:
    """Custom properties keep their JSON type; anything richer becomes a string. None
    means "nothing usable" (the property is left out)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return _int_value(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN/inf are not JSON
    if isinstance(value, decimal.Decimal):
        return _decimal_value(value)
    if isinstance(value, dt.datetime):
        return _timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        items = [_custom_value(v) for v in value]
        return [v for v in items if v is not None] or None
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except (ValueError, RecursionError, TypeError):  # too deep, or an integer too long
        return None


#: Integers beyond ±2**53 are sent as text: JSON parsers on the way (float64 ones in
#: particular, JavaScript's among them) would round them to another number.
MAX_EXACT_INTEGER = 2**53
#: A number written with more characters than this is no contact's data (a 5000-digit
#: integer, 1e400): dropped with a warning rather than sent as a wall of digits.
MAX_NUMBER_TEXT = 100


def _decimal_value(value: decimal.Decimal) -> int | float | str | None:
    """A JSON number as the reader decoded it (`Decimal`, exact). NaN and infinity are
    not JSON; a number that float64 cannot hold exactly is sent as its text rather than
    silently rounded (a 20-digit customer id must not lose its last digits); one longer
    than `MAX_NUMBER_TEXT` characters is no property value."""
    if not value.is_finite():
        return None
    if value == value.to_integral_value() and value.adjusted() < MAX_NUMBER_TEXT:
        return _int_value(int(value))
    text = str(value)
    if len(text) > MAX_NUMBER_TEXT:
        return None
    as_float = float(value)
    if not math.isfinite(as_float) or decimal.Decimal(repr(as_float)) != value:
        return text
    return as_float


def _int_value(value: int) -> int | str | None:
    """An integer float64 holds exactly stays a number; a longer one becomes its digits;
    one of more than `MAX_NUMBER_TEXT` digits is no property value."""
    if -MAX_EXACT_INTEGER <= value <= MAX_EXACT_INTEGER:
        return value
    if value.bit_length() > MAX_NUMBER_TEXT * 4:  # cheap bound first: str() is quadratic
        return None
    text = str(value)
    return text if len(text) <= MAX_NUMBER_TEXT else None


@dataclass(frozen=True, slots=True)
class _Step:
    """One standard attribute, resolved once per config instead of once per record."""

    attribute: str
    body_field: str
    source: str
    dotted: bool
    normalize: Callable[[Any], str | None]
    clip: bool


def _country_code(raw: Any) -> str | None:
    value = _text(raw)
    value = value.upper() if value else None
    return value if value in ISO_ALPHA2 else None


def _gender(raw: Any) -> str | None:
    return _GENDERS.get((_text(raw) or "").lower())


_NORMALIZERS: dict[str, Callable[[Any], str | None]] = {
    "birthdate": normalize_birthdate,
    "country_code": _country_code,
    "gender": _gender,
}


_PLANS: dict[int, tuple[MappingConfig, tuple[_Step, ...]]] = {}


def _plan(config: MappingConfig) -> tuple[_Step, ...]:
    """Cached per config object (configs hold dicts, so they are not hashable)."""
    cached = _PLANS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    plan = _build_plan(config)
    _PLANS[id(config)] = (config, plan)
    return plan


def _build_plan(config: MappingConfig) -> tuple[_Step, ...]:
    return tuple(
        _Step(
            attribute,
            body_field,
            config.source_field(attribute),
            "." in config.source_field(attribute),
            _NORMALIZERS.get(attribute, _text),
            attribute in FREE_TEXT_ATTRIBUTES,
        )
        for attribute, body_field in STANDARD_ATTRIBUTES.items()
        if attribute != "phone"
    )


def to_contact(record: Mapping[str, Any], config: MappingConfig) -> Contact | Rejection:
    """Map one source record to an Omnisend contact body, or say why it cannot be one.

    Empty strings and nulls are omitted rather than sent (Omnisend would store `""`
    over a good value). The body never has `tags`: on a contact write they replace
    every tag the contact has, including those set by other tools.
    """
    email = normalize_email(get_path(record, config.email_field), config.lowercase_emails)
    if isinstance(email, Rejection):
        return email
    warnings: list[str] = []
    body: dict[str, Any] = {}
    raws: list[tuple[str, Any]] = []
    clear = config.clear_missing_values

    for step in _plan(config):
        raw = get_path(record, step.source) if step.dotted else record.get(step.source)
        if raw is None or raw == "":
            if clear and step.attribute in CLEARABLE_ATTRIBUTES and has_path(record, step.source):
                body[step.body_field] = ""  # cleared at the source: cleared in Omnisend
            continue
        if type(raw) is not str or not raw.isascii():  # ASCII text is always UTF-8
            raws.append((step.source, raw))
        value = step.normalize(raw)
        if value is None:
            warnings.append(f"{step.attribute} has an unusable value: dropped")
            continue
        if step.clip and not value.isprintable():  # fast test; also true for e.g. NBSP
            cleaned = _CONTROL_RUN.sub(" ", value).strip()
            if cleaned != value:
                warnings.append(f"{step.attribute} had control characters: replaced by spaces")
                if not cleaned:
                    continue
                value = cleaned
        if step.clip and len(value) > MAX_TEXT_LENGTH:
            value, _ = clip_text(value)
            warnings.append(f"{step.attribute} longer than {MAX_TEXT_LENGTH} characters: truncated")
        body[step.body_field] = value

    identifier: dict[str, Any] = {
        "type": "email",
        "id": email,
        "channels": {"email": _email_channel(record, config, warnings)},
        "sendWelcomeMessage": config.send_welcome_message,
    }
    identifiers = [identifier]
    phone_source = config.source_field("phone")
    raw_phone = get_path(record, phone_source)
    if raw_phone not in (None, ""):
        raws.append((phone_source, raw_phone))
        phone = normalize_phone(raw_phone)
        if phone is None:
            warnings.append("phone is not an international (E.164) number: dropped")
        else:
            identifiers.append(
                {
                    "type": "phone",
                    "id": phone,
                    "channels": {
                        "sms": {
                            "status": "nonSubscribed",
                            "statusChangedAt": NEW_CONTACT_STATUS_DATE,
                        }
                    },
                    "sendWelcomeMessage": False,
                }
            )

    custom: dict[str, Any] = {}
    for name, source in config.custom_properties.items():
        raw = get_path(record, source)
        raws.append((source, raw))
        value = _custom_value(raw)
        if value is not None:
            custom[name] = value
        elif _blank(raw):
            if clear and has_path(record, source):
                custom[name] = None  # null: type-neutral, a typed property accepts it
        else:
            warnings.append(f"custom property {name} has an unusable value: dropped")
    if config.status_field:
        raws.append((config.status_field, get_path(record, config.status_field)))

    for source, raw in raws:
        if undecodable(raw):
            return Rejection(
                "invalid_encoding",
                f"field {source!r} holds bytes that are not UTF-8 (fix the source's encoding)",
            )

    contact: dict[str, Any] = {"identifiers": identifiers, **body}
    if custom:
        contact["customProperties"] = custom
    return Contact(email=email, body=contact, warnings=tuple(warnings))


def merge_duplicate(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """Two records of one contact in a run: the later record's body wins, except its email
    status when the earlier one carries a newer `statusChangedAt` (a later record with an
    older "subscribed" must not undo a newer "unsubscribed")."""
    merged = copy.deepcopy(dict(later))
    old = _channel(earlier)
    new = _channel(merged)
    if old is not None and new is not None and _status_date(old) > _status_date(new):
        new.clear()
        new.update(old)
    return merged


def _status_date(channel: Mapping[str, Any]) -> str:
    return str(channel.get("statusChangedAt", ""))


def _channel(body: Mapping[str, Any]) -> dict[str, Any] | None:
    for identifier in body.get("identifiers") or []:
        if identifier.get("type") == "email":
            return identifier.get("channels", {}).get("email")
    return None


def email_of(contact: Any) -> str | None:
    """The email of a contact body: one we sent (echoed in a batch item's `request`) or
    one Omnisend listed (some shapes carry a top-level `email`)."""
    if not isinstance(contact, Mapping):
        return None
    if isinstance(contact.get("email"), str):
        return contact["email"]
    for identifier in contact.get("identifiers") or []:
        if isinstance(identifier, Mapping) and identifier.get("type") == "email":
            return str(identifier.get("id"))
    return None


def _email_channel(
    record: Mapping[str, Any], config: MappingConfig, warnings: list[str]
) -> dict[str, str]:
    """An explicit per-record status is dated so it wins over older changes: by its own
    date when `status_timestamp_field` is set (a status without a usable date then falls
    back to the default rule), else by the run's start. The default status is dated far
    in the past, older at every run, so that it only ever applies to contacts this
    export creates (`default_status_date`)."""
    if config.status_field:
        raw = get_path(record, config.status_field)
        status = normalize_status(raw)
        if status:
            if not config.status_timestamp_field:
                return {"status": status, "statusChangedAt": config.run_started_at}
            changed = _timestamp(get_path(record, config.status_timestamp_field))
            if changed is not None and changed <= _latest_status_date(config.run_started_at):
                return {"status": status, "statusChangedAt": changed}
            # Undated, unreadable or in the future: it must not win over a newer change
            # in Omnisend (an old "subscribed" over a later "unsubscribed").
            warnings.append("status date is missing, unreadable or in the future: status ignored")
        elif raw not in (None, ""):
            warnings.append("status is not subscribed/unsubscribed/nonSubscribed: default used")
    return {"status": config.email_status, "statusChangedAt": config.default_status_date}
