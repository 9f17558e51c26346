"""Config -> typed settings: type conversion and the cross-checks the JSON schema cannot
express.

Defaults, ranges and choices are declared once, in `config_schema`, and read from there
(the SDK already enforces them on the CLI; they are checked again here for callers that
build a config by hand). Each problem becomes one line that says what to fix; they are
raised before any input is read, so a bad config never half-delivers a segment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from string import Formatter
from typing import Any
from urllib.parse import urlsplit

from target_omnisend.api import GENERATIONS, LATEST_VERSION, ApiGeneration
from target_omnisend.config_schema import (
    DEFAULT_SEGMENT_TAG,
    DEFAULT_STORE,
    MAX_BATCH_SIZE,
    MAX_TAGS,
    MIRROR_TRIGGERS,
    SYNC_MODES,
    plain_number,
    setting,
)
from target_omnisend.errors import ConfigError
from target_omnisend.mapping import STANDARD_ATTRIBUTES, MappingConfig, default_status_date
from target_omnisend.membership import Membership, membership_for, property_name_problem

__all__ = [
    "DEFAULT_SEGMENT_TAG",
    "DEFAULT_STORE",
    "MAX_BATCH_SIZE",
    "MAX_TAGS",
    "MIRROR_TRIGGERS",
    "SYNC_MODES",
    "Settings",
    "load_settings",
]

#: The saved segment's name when `segment_name` is not set (2026-03-15 only): the
#: stream's name, as the user sees it after stream maps.
DEFAULT_SEGMENT_NAME = "{stream_name}"


@dataclass(frozen=True)
class Settings:
    api_key: str
    api_url: str
    generation: ApiGeneration
    mapping: MappingConfig
    batch_size: int
    max_concurrency: int
    max_pending_batches: int
    requests_per_minute: float
    tags_requests_per_minute: float
    request_timeout: float
    max_retries: int
    batch_poll_interval: float
    batch_timeout: float
    max_wait: float
    rejected_records_path: str | None
    segment_tag: str
    tags: tuple[str, ...]
    fingerprint_store_path: str | None
    full_refresh: bool
    dry_run: bool
    dry_run_path: str
    sync_mode: str
    mirror_max_removal_ratio: float
    mirror_trigger: str
    mirror_confirm_runs: int
    summary_path: str | None
    progress_interval: float
    state_interval: float
    #: Template of the Omnisend saved segment's name per stream; "" = no segments.
    segment_name: str = ""
    #: Per-stream names (stream name after stream maps -> name template; "" = none).
    segment_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    segment_overwrite: bool = False
    #: The PostgreSQL store's schema and password (unused by an SQLite file).
    fingerprint_store_schema: str = "target_omnisend"
    fingerprint_store_password: str | None = None
    #: Seconds a run waits for another run of the same pipeline to release the store.
    fingerprint_store_lock_timeout: float = 60.0
    #: Template of the custom property that marks members ("" = membership is the tag).
    membership_property: str = ""

    def membership_for(self, stream: str) -> Membership | None:
        """How this stream's membership is written (None: not at all). A property name
        Omnisend might refuse stops the run here, when the stream's first message names
        it, before anything of the stream is sent."""
        if not self.membership_property:
            tag = self.segment_tag.format(stream_name=stream) if self.segment_tag else None
            return membership_for(tag if self.generation.has_tags_endpoint else None, None)
        name = self.membership_property.format(stream_name=stream)
        problem = property_name_problem(name)
        if problem:
            raise ConfigError(
                f"membership_property {name!r} (stream {stream!r}) {problem}; choose another "
                "template, or rename the stream with a stream map"
            )
        if name in self.mapping.custom_properties:
            raise ConfigError(
                f"membership_property {name!r} (stream {stream!r}) is also a key of "
                "custom_properties; one of them must be renamed"
            )
        return membership_for(None, name)

    def segment_name_for(self, stream: str) -> str:
        """The saved segment's name for a stream ("" = none)."""
        template = self.segment_names.get(stream, self.segment_name)
        return template.format(stream_name=stream).strip() if template else ""

    def tags_for(self, stream: str) -> tuple[str, ...]:
        """The segment tag of a stream plus the static tags, in a stable order (none on a
        generation without a tags endpoint: the target warns about that once)."""
        if not self.generation.has_tags_endpoint:
            return ()
        tags = [self.segment_tag.format(stream_name=stream)] if self.segment_tag else []
        tags += [t for t in self.tags if t not in tags]
        return tuple(tags)

    def mapping_hash(self) -> str:
        """What decides the contact body and tags; a change forgets all fingerprints."""
        decisive: dict[str, Any] = {
            "mapping": dataclasses.asdict(self.mapping)
            | {"run_started_at": None, "default_status_date": None},
            "segment_tag": self.segment_tag,
            "tags": self.tags,
            "api_version": self.generation.name,
        }
        if self.membership_property:  # only when set: upgrading costs no full send
            decisive["membership_property"] = self.membership_property
        material = json.dumps(decisive, sort_keys=True)
        return hashlib.blake2b(material.encode(), digest_size=12).hexdigest()


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str) -> str:
    """Profiles and the key travel in these requests: plain http only to this machine."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        hostname = None
    if hostname is None or parts.scheme not in {"https", "http"}:
        raise ConfigError(f"api_url must be an https:// URL (got {url!r})")
    if parts.scheme == "http" and not is_loopback(hostname):
        raise ConfigError(
            "api_url uses plain http:// to a non-loopback host; use https:// "
            "(http is accepted only for 127.0.0.1/localhost test servers)"
        )
    root = url.rstrip("/")
    for generation in GENERATIONS.values():
        if root.endswith(generation.prefix):
            root = root[: -len(generation.prefix)]
    return root


def _default(config: Mapping[str, Any], key: str) -> Any:
    """The configured value, or the schema's default when it is unset or empty."""
    value = config.get(key)
    return setting(key).get("default") if value is None or value == "" else value


def _choice(config: Mapping[str, Any], key: str) -> str:
    value = _default(config, key)
    choices = setting(key)["enum"]
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)} (got {value!r})")
    return value


def _number(config: Mapping[str, Any], key: str) -> float:
    """A numeric setting within the range its schema declares."""
    schema = setting(key)
    value = config.get(key)
    if value is None:
        return float(schema["default"])
    if isinstance(value, decimal.Decimal):
        value = float(value)  # the SDK parses JSON numbers as Decimal
    low, high = schema["minimum"], schema["maximum"]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(
            f"{key} must be a number from {plain_number(low)} to {plain_number(high)} "
            f"(got {value!r})"
        )
    return float(value)


def _path(config: Mapping[str, Any], key: str) -> str | None:
    """A file setting: unset means the default file, an empty string means none."""
    return config.get(key, setting(key).get("default")) or None


def _template(value: Any, key: str) -> str:
    """A name template: text with `{stream_name}` as its only placeholder."""
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be text (got {value!r})")
    if not _only_stream_name(value):
        raise ConfigError(f"{key} may only use {{stream_name}} as a placeholder (got {value!r})")
    return value


def segment_names(
    config: Mapping[str, Any], version: str, segment_tag: str, membership: str = ""
) -> tuple[str, dict[str, str]]:
    """`segment_name` and its per-stream overrides. Unset, the name defaults to the
    stream's name on 2026-03-15 (the segment is the point of a segment export) and to
    none on v5 (no segments resource) or without a segment tag (nothing to follow):
    only a user who asks for a segment that cannot exist is refused."""
    explicit = config.get("segment_name")
    overrides = config.get("segment_names") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError("segment_names must map stream names to segment names")
    names = {str(k): _template(v, f"segment_names.{k}") for k, v in overrides.items()}
    asked = (explicit is not None and explicit != "") or any(names.values())
    supported = version == LATEST_VERSION
    if asked and not supported:
        raise ConfigError(
            f"segment_name needs api_version {LATEST_VERSION}: Omnisend {version} has no "
            "segments resource (set segment_name to '' or remove it)"
        )
    if asked and not (segment_tag or membership):
        raise ConfigError(
            "segment_name needs a segment_tag or a membership_property: the segment's rule "
            "is 'tags any of the segment tag' or 'the property equals true'"
        )
    if explicit is None:
        explicit = DEFAULT_SEGMENT_NAME if supported and (segment_tag or membership) else ""
    return _template(explicit, "segment_name"), names


def check_api_key(value: Any) -> str:
    """Whitespace around a pasted key is trimmed; anything else that is not a visible
    ASCII character (a line break inside, a tab, a non-ASCII letter) is refused here,
    in one line that never quotes the key: sent as a header it would otherwise fail
    deep in http.client with an error that quotes the whole header, key included."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("api_key is missing: set it in config or TARGET_OMNISEND_API_KEY")
    key = value.strip()
    if not all("!" <= char <= "~" for char in key):
        raise ConfigError(
            "api_key contains a space, line break or other character that cannot be part "
            "of an Omnisend API key: paste the key alone, on one line"
        )
    return key


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = _default(config, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false (got {value!r})")
    return value


def _only_stream_name(template: str) -> bool:
    """`{stream_name}` and literal text only: no other field, attribute, index, format
    spec (`{stream_name:>9999999999}` would build a 10 GB tag) or conversion."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(template)]
    except ValueError:
        return False
    return all(
        name in (None, "stream_name") and not spec and not conv for name, spec, conv in fields
    )


def load_settings(config: Mapping[str, Any], now: dt.datetime | None = None) -> Settings:
    api_key = check_api_key(config.get("api_key"))
    version = _choice(config, "api_version")

    field_mapping = dict(config.get("field_mapping") or {})
    unknown = sorted(set(field_mapping) - set(STANDARD_ATTRIBUTES))
    if unknown:
        raise ConfigError(
            f"field_mapping has unknown Omnisend attribute(s) {', '.join(map(repr, unknown))}; "
            f"use {', '.join(STANDARD_ATTRIBUTES)} (put other fields in custom_properties)"
        )
    for name, source in {**field_mapping, **dict(config.get("custom_properties") or {})}.items():
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"mapping for {name!r} must name a source field (got {source!r})")
    email_status = _choice(config, "email_status")
    email_field = _default(config, "email_field")

    batch_size = int(_number(config, "batch_size"))
    started_at = now or dt.datetime.now(dt.timezone.utc)
    started = started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    mapping = MappingConfig(
        email_field=email_field,
        field_mapping=field_mapping,
        custom_properties=dict(config.get("custom_properties") or {}),
        email_status=email_status,
        status_field=config.get("status_field") or None,
        status_timestamp_field=config.get("status_timestamp_field") or None,
        send_welcome_message=bool(_default(config, "send_welcome_message")),
        run_started_at=started,
        default_status_date=default_status_date(started_at),
        lowercase_emails=_flag(config, "lowercase_emails"),
        clear_missing_values=_flag(config, "clear_missing_values"),
    )
    segment_tag = _template(
        config.get("segment_tag", setting("segment_tag")["default"]) or "", "segment_tag"
    )
    membership = _membership_template(config, segment_tag)
    if membership:
        segment_tag = ""  # membership is the property; the default tag is not written
    tags = tuple(dict.fromkeys(str(t).strip() for t in config.get("tags") or [] if str(t).strip()))
    if len(tags) + 1 > MAX_TAGS:
        raise ConfigError(f"tags can hold at most {MAX_TAGS - 1} tags (got {len(tags)})")
    sync_mode = _choice(config, "sync_mode")
    if sync_mode == "mirror" and not (segment_tag or membership):
        raise ConfigError(
            "sync_mode mirror needs a segment_tag or a membership_property: it is how "
            "leavers are found"
        )
    mirror_trigger = _choice(config, "mirror_trigger")
    if not GENERATIONS[version].has_tags_endpoint:
        # The default segment tag is skipped with a warning; settings that exist only
        # for tagging cannot work at all, so they stop the run before it starts.
        if tags:
            raise ConfigError(
                f"tags need api_version {next(iter(GENERATIONS))}: Omnisend {version} has no "
                "tags endpoint (tags in a contact body would replace the contact's tags)"
            )
        if sync_mode == "mirror":
            raise ConfigError(
                f"sync_mode mirror needs api_version {next(iter(GENERATIONS))}: it removes the "
                f"segment tag, and Omnisend {version} has no tags endpoint"
            )
    max_concurrency = int(_number(config, "max_concurrency"))
    segment_name, per_stream_names = segment_names(config, version, segment_tag, membership)
    if membership and sync_mode == "mirror" and not segment_name:
        raise ConfigError(
            "sync_mode mirror with a membership_property needs a segment_name: Omnisend lists "
            "a property's members only through its saved segment"
        )
    return Settings(
        api_key=api_key,
        api_url=check_api_url(_default(config, "api_url")),
        generation=GENERATIONS[version],
        mapping=mapping,
        batch_size=batch_size,
        max_concurrency=max_concurrency,
        max_pending_batches=int(_number(config, "max_pending_batches")),
        requests_per_minute=_number(config, "requests_per_minute"),
        tags_requests_per_minute=_number(config, "tags_requests_per_minute"),
        request_timeout=_number(config, "request_timeout"),
        max_retries=int(_number(config, "max_retries")),
        batch_poll_interval=_number(config, "batch_poll_interval"),
        batch_timeout=_number(config, "batch_timeout"),
        max_wait=_number(config, "max_wait"),
        rejected_records_path=_path(config, "rejected_records_path"),
        segment_tag=segment_tag,
        tags=tags,
        fingerprint_store_path=_path(config, "fingerprint_store_path"),
        full_refresh=bool(_default(config, "full_refresh")),
        dry_run=bool(_default(config, "dry_run")),
        dry_run_path=_default(config, "dry_run_path"),
        sync_mode=sync_mode,
        mirror_max_removal_ratio=_number(config, "mirror_max_removal_ratio"),
        mirror_trigger=mirror_trigger,
        mirror_confirm_runs=int(_number(config, "mirror_confirm_runs")),
        summary_path=config.get("summary_path") or None,
        progress_interval=_number(config, "progress_interval"),
        state_interval=_number(config, "state_interval"),
        segment_name=segment_name,
        segment_names=per_stream_names,
        segment_overwrite=bool(config.get("segment_overwrite", False)),
        fingerprint_store_schema=_default(config, "fingerprint_store_schema"),
        fingerprint_store_password=config.get("fingerprint_store_password") or None,
        fingerprint_store_lock_timeout=_number(config, "fingerprint_store_lock_timeout"),
        membership_property=membership,
    )


def _membership_template(config: Mapping[str, Any], segment_tag: str) -> str:
    """The `membership_property` template ("" = unset). Checked now as far as it can be
    without a stream name: the text around `{stream_name}` must already be a name
    Omnisend would take. A `segment_tag` set explicitly beside it is refused: the tag
    would cost the very tag calls the property exists to avoid (see the README); the
    default one is simply not written."""
    raw = config.get("membership_property")
    if raw is None or raw == "":
        return ""
    template = _template(raw, "membership_property").strip()
    problem = property_name_problem(template.format(stream_name="s"))
    if problem:
        raise ConfigError(f"membership_property {template!r} {problem}")
    # The SDK fills in the default: only a tag other than the default counts as set.
    if segment_tag and segment_tag != setting("segment_tag")["default"]:
        raise ConfigError(
            "segment_tag and membership_property are both set: membership is written one "
            "way; remove segment_tag (or set it to '') to use the property, or remove "
            "membership_property to keep the tag"
        )
    return template
