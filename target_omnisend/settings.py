"""Cross-checks the JSON schema cannot express, turned into typed settings.

Each problem becomes one line that says what to fix; they are raised before any
input is read, so a bad config never half-delivers a segment.
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

from target_omnisend.api import DEFAULT_API_URL, GENERATIONS, ApiGeneration
from target_omnisend.errors import ConfigError
from target_omnisend.mapping import EMAIL_STATUSES, STANDARD_ATTRIBUTES, MappingConfig

MAX_BATCH_SIZE = 100
MAX_TAGS = 100
DEFAULT_SEGMENT_TAG = "segment:{stream_name}"
DEFAULT_STORE = ".target-omnisend/fingerprints.sqlite"
SYNC_MODES = ("upsert", "mirror")
MIRROR_TRIGGERS = ("activate_version", "end_of_input")


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
    summary_path: str | None
    progress_interval: float
    state_interval: float

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
        material = json.dumps(
            {
                "mapping": dataclasses.asdict(self.mapping) | {"run_started_at": None},
                "segment_tag": self.segment_tag,
                "tags": self.tags,
                "api_version": self.generation.name,
            },
            sort_keys=True,
        )
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


def _number(config: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, decimal.Decimal):
        value = float(value)  # the SDK parses JSON numbers as Decimal
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{key} must be a number from {low:g} to {high:g} (got {value!r})")
    return value


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


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
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
    version = config.get("api_version") or next(iter(GENERATIONS))
    if version not in GENERATIONS:
        raise ConfigError(f"api_version must be one of {', '.join(GENERATIONS)} (got {version!r})")

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
    email_status = config.get("email_status") or "nonSubscribed"
    if email_status not in EMAIL_STATUSES:
        raise ConfigError(
            f"email_status must be one of {', '.join(EMAIL_STATUSES)} (got {email_status!r})"
        )
    email_field = config.get("email_field") or "email"

    batch_size = int(_number(config, "batch_size", MAX_BATCH_SIZE, 1, MAX_BATCH_SIZE))
    started = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    mapping = MappingConfig(
        email_field=email_field,
        field_mapping=field_mapping,
        custom_properties=dict(config.get("custom_properties") or {}),
        email_status=email_status,
        status_field=config.get("status_field") or None,
        status_timestamp_field=config.get("status_timestamp_field") or None,
        send_welcome_message=bool(config.get("send_welcome_message", False)),
        run_started_at=started,
        lowercase_emails=_flag(config, "lowercase_emails", True),
        clear_missing_values=_flag(config, "clear_missing_values", False),
    )
    segment_tag = config.get("segment_tag", DEFAULT_SEGMENT_TAG) or ""
    if not _only_stream_name(segment_tag):
        raise ConfigError(
            f"segment_tag may only use {{stream_name}} as a placeholder (got {segment_tag!r})"
        )
    tags = tuple(dict.fromkeys(str(t).strip() for t in config.get("tags") or [] if str(t).strip()))
    if len(tags) + 1 > MAX_TAGS:
        raise ConfigError(f"tags can hold at most {MAX_TAGS - 1} tags (got {len(tags)})")
    sync_mode = config.get("sync_mode") or "upsert"
    if sync_mode not in SYNC_MODES:
        raise ConfigError(f"sync_mode must be one of {', '.join(SYNC_MODES)} (got {sync_mode!r})")
    if sync_mode == "mirror" and not segment_tag:
        raise ConfigError("sync_mode mirror needs a segment_tag: it is how leavers are found")
    mirror_trigger = config.get("mirror_trigger") or "activate_version"
    if mirror_trigger not in MIRROR_TRIGGERS:
        raise ConfigError(
            f"mirror_trigger must be one of {', '.join(MIRROR_TRIGGERS)} (got {mirror_trigger!r})"
        )
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
    max_concurrency = int(_number(config, "max_concurrency", 4, 1, 32))
    return Settings(
        api_key=api_key,
        api_url=check_api_url(config.get("api_url") or DEFAULT_API_URL),
        generation=GENERATIONS[version],
        mapping=mapping,
        batch_size=batch_size,
        max_concurrency=max_concurrency,
        max_pending_batches=int(_number(config, "max_pending_batches", 64, 1, 1000)),
        requests_per_minute=_number(config, "requests_per_minute", 400, 1, 10_000_000),
        tags_requests_per_minute=_number(config, "tags_requests_per_minute", 60, 1, 10_000_000),
        request_timeout=_number(config, "request_timeout", 10.0, 0.1, 600),
        max_retries=int(_number(config, "max_retries", 5, 0, 100)),
        batch_poll_interval=_number(config, "batch_poll_interval", 0.5, 0.01, 60),
        batch_timeout=_number(config, "batch_timeout", 900.0, 1, 86_400),
        rejected_records_path=config.get("rejected_records_path", "rejected_records.jsonl") or None,
        segment_tag=segment_tag,
        tags=tags,
        fingerprint_store_path=config.get("fingerprint_store_path", DEFAULT_STORE) or None,
        full_refresh=bool(config.get("full_refresh", False)),
        dry_run=bool(config.get("dry_run", False)),
        dry_run_path=config.get("dry_run_path") or "omnisend_dry_run.jsonl",
        sync_mode=sync_mode,
        mirror_max_removal_ratio=_number(config, "mirror_max_removal_ratio", 0.5, 0, 1),
        mirror_trigger=mirror_trigger,
        summary_path=config.get("summary_path") or None,
        progress_interval=_number(config, "progress_interval", 30.0, 0, 86_400),
        state_interval=_number(config, "state_interval", 60.0, 0.1, 86_400),
    )
