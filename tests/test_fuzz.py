"""Issue 11, fuzzing: generated records, configs, input bytes and server answers.

Whatever is generated, the mapping returns a contact or a rejection with a known code,
the reader returns a message or one `InvalidInputLine` that quotes nothing, a config is
either settings or one `ConfigError`, and the client ends every call within its budget
with a known error and without the key in any text. The CI profile (the default) keeps
this file under a minute; `make fuzz` runs the long profile (FUZZ_PROFILE=long) and
prints how many inputs each property was tried with.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import logging
import os
import re
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.sinks.core import JSONSchemaValidator

from target_omnisend.api import GENERATIONS
from target_omnisend.client import OmnisendClient, RequestRefused
from target_omnisend.errors import ConfigError, FatalAPIError
from target_omnisend.mapping import (
    EMAIL_STATUSES,
    MAX_TEXT_LENGTH,
    NEW_CONTACT_STATUS_DATE,
    STANDARD_ATTRIBUTES,
    Contact,
    MappingConfig,
    Rejection,
    _email_problem,
    to_contact,
)
from target_omnisend.privacy import one_line_error, redact
from target_omnisend.ratelimit import RateLimits
from target_omnisend.reader import SingerInput, encode_state
from target_omnisend.settings import Settings, load_settings
from target_omnisend.target import TargetOmnisend
from tests.harness import run_target
from tests.omnisend_server import FaultRule, OmnisendServer

PROFILE = os.environ.get("FUZZ_PROFILE", "ci")
#: How many times more examples the long profile (`make fuzz`) tries than CI.
SCALE = {"ci": 1, "long": 20}[PROFILE]


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        database=None,
        derandomize=PROFILE == "ci",  # CI runs the same inputs every time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- generated values --------------------------------------------------------------------

FIELDS = [
    "email", "Email", "contact.email", "first_name", "last_name", "address", "city", "state",
    "postal_code", "country", "country_code", "phone", "birthdate", "gender", "consent",
    "consent_at", "tier", "points", "seen", "a.b", "a",
]  # fmt: skip
LONE_SURROGATES = st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), min_size=1)
ODD_TEXT = st.sampled_from(
    [
        "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "05/01/2024 10:00",
        "2024-02-30", "NaN", "\x00", "\r\n", " ", "ß", "ς", "İ", "\u212a", "\u200c",
        "\u2028", "x" * 300, "+44 20 7946 0958", "0044 20", "subscribed", "UNSUBSCRIBED",
        "non_subscribed", "m", "Female", "us", "ZZ",
    ]
)  # fmt: skip
DOMAINS = st.sampled_from(
    ["example.com", "Example.COM", "straße.de", "ςa.gr", "bücher.example", "☃.com",
     "xn--zz.com", "xn--bcher-kva.example", "a..b", "-x.com", "localhost", "例え.テスト"]
)  # fmt: skip
EMAILS = st.one_of(
    st.emails(),
    st.builds(lambda local, domain: f"{local}@{domain}", st.text(max_size=12), DOMAINS),
    st.builds(lambda e: e.upper(), st.emails()),
    st.text(max_size=30),
)
TIMEZONES = st.one_of(
    st.none(),
    st.builds(
        lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)),
        st.integers(-23 * 60 - 59, 23 * 60 + 59),
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**1200),
    st.floats(),
    st.decimals(),
    st.text(),
    LONE_SURROGATES,
    ODD_TEXT,
    EMAILS,
    st.datetimes(timezones=TIMEZONES),
    st.dates(),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
RECORDS = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), JSON_VALUES, max_size=12
).map(lambda r: {**r, "contact": {"email": r["email"]}} if "email" in r and r.get("a") else r)
CONFIGS = st.builds(
    MappingConfig,
    email_field=st.sampled_from(["email", "Email", "contact.email", "a.b"]),
    field_mapping=st.dictionaries(
        st.sampled_from(list(STANDARD_ATTRIBUTES)), st.sampled_from(FIELDS)
    ),
    custom_properties=st.dictionaries(st.text(min_size=1, max_size=8), st.sampled_from(FIELDS)),
    email_status=st.sampled_from(EMAIL_STATUSES),
    status_field=st.one_of(st.none(), st.sampled_from(FIELDS)),
    status_timestamp_field=st.one_of(st.none(), st.sampled_from(FIELDS)),
    send_welcome_message=st.booleans(),
    run_started_at=st.datetimes(
        min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1)
    ).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    lowercase_emails=st.booleans(),
    clear_missing_values=st.booleans(),
)
REJECTION_CODES = {"missing_email", "invalid_email", "invalid_encoding"}
STATUS_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


# -- the mapping -------------------------------------------------------------------------


@fuzz(400)
@given(RECORDS, CONFIGS)
def test_every_record_becomes_a_sendable_contact_or_a_coded_rejection(
    record: dict[str, Any], config: MappingConfig
) -> None:
    result = to_contact(record, config)
    if isinstance(result, Rejection):
        assert result.code in REJECTION_CODES and result.reason
        return
    assert isinstance(result, Contact)
    # What the client sends: strict JSON, UTF-8, no NaN.
    wire = json.dumps(result.body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert len(wire) < 64_000
    assert result.email.isascii() and _email_problem(result.email.lower()) is None
    if config.lowercase_emails:
        assert result.email == result.email.lower()
    assert "tags" not in result.body
    channel = result.body["identifiers"][0]["channels"]["email"]
    assert channel["status"] in EMAIL_STATUSES
    assert STATUS_DATE.fullmatch(channel["statusChangedAt"])
    # A status date is the fixed default one or no later than a day after the run started.
    changed = channel["statusChangedAt"]
    assert changed == NEW_CONTACT_STATUS_DATE or changed[:4] <= str(
        int(config.run_started_at[:4]) + 1
    )
    for attribute, body_field in STANDARD_ATTRIBUTES.items():
        value = result.body.get(body_field)
        if isinstance(value, str):
            assert len(value) <= MAX_TEXT_LENGTH and value == value.strip(), attribute
            assert not re.search(r"[\x00-\x1f\x7f]", value), attribute


# -- the reader --------------------------------------------------------------------------

MARKER = "leak.marker@example.com"
LINES = st.one_of(
    st.text(max_size=80),
    st.builds(lambda v: json.dumps(v, default=str), JSON_VALUES),
    st.builds(
        lambda kind, v, cut: json.dumps(
            {"type": kind, "stream": "s", "record": {"e": MARKER, "v": v}}, default=str
        )[:cut],
        st.one_of(st.sampled_from(["RECORD", "STATE", "SCHEMA", "X"]), JSON_VALUES),
        JSON_VALUES,
        st.integers(0, 400),
    ),
    st.builds(lambda n: '{"type":"RECORD","v":' + "[" * n + "]" * n + "}", st.integers(0, 3000)),
    st.builds(lambda n: '{"type":"RECORD","v":1' + "0" * n + "}", st.integers(0, 6000)),
)


@fuzz(400)
@given(LINES)
def test_every_line_is_a_message_or_one_line_that_quotes_nothing(line: str) -> None:
    reader = SingerInput()
    reader.line_number = 12
    try:
        message = reader.deserialize_json(line)
    except InvalidInputLine as exc:
        text = str(exc)
        assert text.startswith("line 12 ") and "\n" not in text and MARKER not in text
        return
    assert isinstance(message, dict) and isinstance(message.get("type", ""), str)
    if isinstance(message.get("value"), dict):
        assert json.loads(encode_state(message["value"])) is not None  # STATE can be written


@fuzz(200)
@given(st.lists(st.binary(max_size=60) | LINES.map(str.encode), max_size=6))
def test_any_bytes_on_stdin_are_messages_or_one_named_line(chunks: list[bytes]) -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"\n".join(chunks)), "utf-8", errors="surrogateescape")
    seen: list[dict] = []
    callbacks = {kind: seen.append for kind in ("RECORD", "SCHEMA", "STATE", "ACTIVATE_VERSION")}
    reader = SingerInput()
    reader._process_unknown_message = seen.append  # type: ignore[method-assign]
    try:
        reader.process_lines(stream, callbacks)
    except InvalidInputLine as exc:
        assert "\n" not in str(exc) and MARKER not in str(exc)
    assert all(isinstance(message["type"], str) for message in seen)


# -- config loading -----------------------------------------------------------------------

SCHEMA = TargetOmnisend.config_jsonschema
CONFIG_VALIDATOR = JSONSchemaValidator(SCHEMA)
SETTING_NAMES = sorted(SCHEMA["properties"])
SETTING_TEXT = st.one_of(
    st.sampled_from(
        ["2026-03-15", "v5", "upsert", "mirror", "end_of_input", "subscribed", "", " ",
         "{stream_name}", "{x}", "{0}", "{", "{stream_name.x}", "{stream_name:>9999999999}",
         "a.b", "http://10.0.0.1", "https://x", "ftp://x", "http://[::1", "http://[::1]:8/"]
    ),
    st.text(max_size=12),
)  # fmt: skip
BY_TYPE = {
    "string": SETTING_TEXT,
    "boolean": st.booleans(),
    "integer": st.integers(-(10**6), 10**6) | st.integers(),
    "number": st.floats() | st.integers(-(10**9), 10**9),
    "array": st.lists(SETTING_TEXT, max_size=120),
    "object": st.dictionaries(
        st.sampled_from([*STANDARD_ATTRIBUTES, "x"]) | SETTING_TEXT, SETTING_TEXT
    ),
    "null": st.none(),
}


def setting_values(name: str) -> st.SearchStrategy[Any]:
    """Mostly values of the setting's schema type (so `load_settings` is reached), some of
    any JSON type (the schema's own refusals)."""
    types = SCHEMA["properties"][name].get("type") or ["string"]
    typed = st.one_of(*(BY_TYPE[t] for t in (types if isinstance(types, list) else [types])))
    return st.one_of(typed, typed, typed, JSON_VALUES)


KEY = "fuzz-key-3f9a1c77b2"
CONFIG_DICTS = (
    st.lists(st.sampled_from(SETTING_NAMES), max_size=8, unique=True)
    .flatmap(lambda names: st.fixed_dictionaries({name: setting_values(name) for name in names}))
    .map(lambda c: {"api_key": KEY, "api_url": "http://127.0.0.1:9", **c})
)


@fuzz(1000)
@given(CONFIG_DICTS)
def test_any_config_is_settings_or_one_configuration_error(config: dict[str, Any]) -> None:
    """What the CLI does: the SDK checks the schema, then `load_settings` cross-checks."""
    config = json.loads(json.dumps(config, default=str), parse_float=decimal.Decimal)
    if list(CONFIG_VALIDATOR.validator.iter_errors(config)):
        event("refused by the config schema")
        return  # the SDK's ConfigValidationError: exit 2, tested through the CLI below
    event("checked by load_settings")
    try:
        assert isinstance(load_settings(config), Settings)
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text and KEY not in redact(text, KEY)


@pytest.mark.e2e
@fuzz(4)
@given(
    CONFIG_DICTS,
    st.sampled_from([KEY, f"{KEY}\r\n", f"fuzz\r\n{KEY}", f" {KEY}\x00", 12345678901, [KEY]]),
)
def test_the_cli_turns_any_config_into_a_run_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, config: dict[str, Any], key: Any
) -> None:
    workdir = tmp_path_factory.mktemp("cli")
    config = {**json.loads(json.dumps(config, default=str)), "api_key": key}
    config["api_url"] = "http://127.0.0.1:9"  # loopback, nothing listens: never the internet
    result = run_target(config, b"", workdir=workdir, timeout=60)
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 1, 2)
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) <= 1 if result.returncode == 2 else True
    for piece in {KEY, str(key), "12345678901"}:
        assert piece not in result.output


# -- the client against a server that answers anything -----------------------------------

HEADER_NAMES = st.sampled_from(["Location", "X-Echo", "Content-Type"])
HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.sampled_from(["0", "-1", "1e9", "0.001", KEY, "https://elsewhere.example/"]),
)
PLAIN_JSON = JSON_VALUES.map(lambda v: json.loads(json.dumps(v, default=str)))
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=40),
    PLAIN_JSON,
    st.just("[" * 5000 + "]" * 5000),
    # Shaped like what the client reads, with any value in each place.
    st.fixed_dictionaries(
        {},
        optional={
            key: PLAIN_JSON
            | st.just({"after": "same", "cursors": {"after": "same"}, "hasMore": True})
            for key in (
                "batchID",
                "items",
                "contacts",
                "batches",
                "paging",
                "status",
                "errorsCount",
            )
        },
    ),
    st.fixed_dictionaries(
        {
            "detail": st.sampled_from(
                [f"key {KEY} refused", f"b'Omnisend-API-Key {KEY}\\r\\n'", MARKER]
            )
        },
        optional={"errors": PLAIN_JSON, "fields": PLAIN_JSON, "title": PLAIN_JSON},
    ),
    st.just({"paging": {"hasMore": True, "cursors": {"after": "same"}}, "items": [{}]}),
    st.just({"paging": {"next": "https://elsewhere.example/steal"}}),
)
#: Every status but 429: its waits belong to the rate limiter (see the closing note).
STATUSES = st.one_of(st.integers(200, 204), st.integers(200, 599)).filter(lambda s: s != 429)
ANSWERS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["status", "status", "status", "malformed", "reset", "delay"]),
        "status": STATUSES,
        "body": BODIES,
        # Rate-limit hints are left out: the local server sends its own (a 60 s window),
        # so an injected "remaining: 1" rightly waits a minute. Hostile hints have their
        # own test below.
        "headers": st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3),
        "times": st.one_of(st.none(), st.integers(1, 3)),
    }
)
CALLS = st.sampled_from(["check", "batch", "get_batch", "items", "tags"])


def small_client(server: OmnisendServer, logger: logging.Logger | None = None) -> OmnisendClient:
    """A client with a small budget: two retries, 0.2 s timeouts, backoff in ms."""
    return OmnisendClient(
        base_url=server.url,
        api_key=KEY,
        generation=GENERATIONS["2026-03-15"],
        limits=RateLimits(100_000, 100_000),
        timeout=0.2,
        max_retries=2,
        backoff_base=0.01,
        backoff_cap=0.05,
        logger=logger,
    )


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.e2e
def test_the_client_survives_any_answer_without_leaking_the_key_or_waiting_forever() -> None:
    with OmnisendServer(api_keys=(KEY,)) as server:

        @fuzz(60)
        @given(ANSWERS, CALLS)
        def check(answer: dict[str, Any], call: str) -> None:
            server.clear_faults()
            kind = answer["kind"]
            server.add_fault(
                FaultRule(
                    kind=kind,
                    status=answer["status"],
                    body=answer["body"]
                    if kind != "malformed" or answer["body"] is None
                    else b"<html>",
                    headers=answer["headers"],
                    times=answer["times"],
                    seconds=0.3 if kind == "delay" else 0.0,
                )
            )
            logger = logging.getLogger(f"fuzz.client.{id(answer)}")
            logger.propagate = False
            collect = _Collect()
            logger.addHandler(collect)
            client = small_client(server, logger)
            started = time.monotonic()
            text = ""
            try:
                if call == "check":
                    client.check_connection()
                elif call == "batch":
                    client.create_batch([client.encode_contact({"identifiers": []})])
                elif call == "get_batch":
                    client.get_batch("abc")
                elif call == "items":
                    list(client.batch_items("abc"))
                else:
                    client.add_tags(["t"], ["a@example.com"])
            except (RequestRefused, FatalAPIError) as exc:
                text = one_line_error(str(exc), [])
            finally:
                client.close()
            elapsed = time.monotonic() - started
            assert elapsed < 15, f"{call} took {elapsed:.1f}s"
            for line in [text, *collect.lines]:
                assert KEY not in line and MARKER not in line

        check()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (
            200,
            {"X-Rate-Limit-Limit": "0.5", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "1"},
        ),
        (200, {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "1e9"}),
        (200, {"X-Rate-Limit-Remaining": "nan", "X-Rate-Limit-Reset": "1"}),
        (429, {"Retry-After": "1e9"}),
    ],
)
def test_rate_limit_hints_never_stall_or_crash_the_client(
    status: int, headers: dict[str, str]
) -> None:
    """Every wait a server's hint implies is bounded: three calls within 3 seconds."""
    with OmnisendServer(api_keys=(KEY,)) as server:
        server.add_fault(FaultRule(status=status, body={}, headers=headers, times=3))
        client = small_client(server)
        outcome: list[Any] = []

        def calls() -> None:
            try:
                for _ in range(3):
                    client.get_batch("abc")
                outcome.append("done")
            except FatalAPIError as exc:
                outcome.append(exc)
            except Exception as exc:  # what must not happen: a crash
                outcome.append(repr(exc))

        worker = threading.Thread(target=calls, daemon=True)
        worker.start()
        worker.join(timeout=3)
        client.close()
        assert outcome == ["done"] or isinstance(outcome[0], FatalAPIError)
