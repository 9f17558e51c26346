"""The target's settings, declared once: name, type, default, range, choices and the text
users read.

Everything else is derived from this schema: `--about`, config validation by the SDK,
the defaults and ranges `settings.load_settings` applies, and the Meltano plugin
definition (`plugin/target-omnisend.yml`, `meltano.yml`). A new setting is added here
and nowhere else (then `make plugin-definition` regenerates the plugin files).
"""

from __future__ import annotations

from typing import Any

from singer_sdk import typing as th

from target_omnisend.api import DEFAULT_API_URL, GENERATIONS, LATEST_VERSION
from target_omnisend.mapping import ATTRIBUTES, EMAIL_STATUSES

MAX_BATCH_SIZE = 100
MAX_TAGS = 100
DEFAULT_SEGMENT_TAG = "segment:{stream_name}"
DEFAULT_STORE = ".target-omnisend/fingerprints.sqlite"
SYNC_MODES = ("upsert", "mirror")
MIRROR_TRIGGERS = ("activate_version", "end_of_input")


def plain_number(number: float) -> str:
    """10000000 -> "10,000,000" and 0.01 -> "0.01": how a person writes a bound."""
    return f"{number:,}" if float(number).is_integer() else f"{number:g}"


def _bounded(
    name: str,
    kind: type[th.IntegerType] | type[th.NumberType],
    default: float,
    bounds: tuple[float, float],
    *,
    title: str,
    description: str,
) -> th.Property:
    """A numeric setting whose range is declared in the schema (so the SDK enforces it
    and `load_settings` reads it) and shown in its description, stated once."""
    low, high = bounds
    return th.Property(
        name,
        kind(minimum=low, maximum=high),  # type: ignore[arg-type]
        default=default,
        title=title,
        description=f"{description} ({plain_number(low)} to {plain_number(high)}).",
    )


CONFIG_SCHEMA: dict[str, Any] = th.PropertiesList(
    th.Property(
        "api_key",
        th.StringType,
        required=True,
        secret=True,
        title="API key",
        description="Omnisend API key (Store settings → API keys). Never logged.",
    ),
    th.Property(
        "api_url",
        th.StringType,
        default=DEFAULT_API_URL,
        title="API URL",
        description="Omnisend API root. https:// only; plain http:// is accepted for "
        "loopback test servers (127.0.0.1, localhost).",
    ),
    th.Property(
        "api_version",
        th.StringType,
        default=LATEST_VERSION,
        allowed_values=list(GENERATIONS),
        title="API version",
        description="Omnisend API generation: 2026-03-15 (date-versioned, default) or v5.",
    ),
    th.Property(
        "email_field",
        th.StringType,
        default="email",
        title="Email field",
        description="Source field that holds the email (required in every record); "
        "a dotted path such as `contact.email` reads nested objects.",
    ),
    th.Property(
        "field_mapping",
        th.ObjectType(
            *(
                th.Property(a.name, th.StringType, description=f"Source field for: {a.doc}")
                for a in ATTRIBUTES
            ),
        ),
        title="Field mapping",
        description="Omnisend attribute → source field (dotted paths allowed), for "
        f"{', '.join(a.name for a in ATTRIBUTES)}. An attribute not named here is read from "
        "the source field of the same name, if present.",
    ),
    th.Property(
        "custom_properties",
        th.ObjectType(additional_properties=th.StringType),
        title="Custom properties",
        description="Omnisend custom property name → source field.",
    ),
    th.Property(
        "email_status",
        th.StringType,
        default="nonSubscribed",
        allowed_values=list(EMAIL_STATUSES),
        title="Email status for new contacts",
        description="Status given to contacts the export creates. Never changes the status "
        "of a contact that already exists in Omnisend, including contacts this target created "
        "in earlier runs (changing this setting later applies to newcomers only).",
    ),
    th.Property(
        "status_field",
        th.StringType,
        title="Status field",
        description="Optional source field with a per-record email status (subscribed, "
        "unsubscribed, nonSubscribed). An explicit status is applied to existing contacts "
        "too, dated by status_timestamp_field (or the run's start).",
    ),
    th.Property(
        "status_timestamp_field",
        th.StringType,
        title="Status timestamp field",
        description="Optional source field with the date the per-record status changed; "
        "Omnisend keeps the status with the latest date.",
    ),
    th.Property(
        "lowercase_emails",
        th.BooleanType,
        default=True,
        title="Lower-case emails",
        description="Lower-case every email before sending. Omnisend compares emails "
        "case-sensitively, so without it `Jane@X.com` and `jane@x.com` become two contacts. "
        "Turn it off only if Omnisend already holds mixed-case emails spelled exactly as the "
        "source spells them (see README).",
    ),
    th.Property(
        "clear_missing_values",
        th.BooleanType,
        default=False,
        title="Clear missing values",
        description="When a record carries a field as null or empty, clear it in Omnisend "
        "(names, address, city, state, postal code and country are sent as empty text, "
        "custom properties as null) instead of leaving the old value. Fields a record does "
        "not carry at all are never touched; country code, birthdate, gender and phone are "
        "never cleared.",
    ),
    th.Property(
        "send_welcome_message",
        th.BooleanType,
        default=False,
        title="Send welcome message",
        description="Ask Omnisend to send its welcome message to new subscribers.",
    ),
    _bounded(
        "batch_size",
        th.IntegerType,
        MAX_BATCH_SIZE,
        (1, MAX_BATCH_SIZE),
        title="Batch size",
        description="Contacts per Omnisend batch request",
    ),
    _bounded(
        "max_concurrency",
        th.IntegerType,
        4,
        (1, 32),
        title="Max concurrency",
        description="Batch requests in flight at once",
    ),
    _bounded(
        "max_pending_batches",
        th.IntegerType,
        96,
        (1, 1000),
        title="Max pending batches",
        description="Sent-but-unconfirmed batches allowed before reading pauses; bounds memory",
    ),
    _bounded(
        "requests_per_minute",
        th.NumberType,
        400,
        (1, 10_000_000),
        title="Requests per minute",
        description="Budget for Omnisend's backend API (its limit is 400/min per account); "
        "lowered automatically if Omnisend's rate-limit headers say less",
    ),
    _bounded(
        "tags_requests_per_minute",
        th.NumberType,
        60,
        (1, 10_000_000),
        title="Tag requests per minute",
        description="Budget for the tags endpoint (Omnisend: 60/min)",
    ),
    _bounded(
        "request_timeout",
        th.NumberType,
        10,
        (0.1, 600),
        title="Request timeout",
        description="Seconds to wait for one HTTP response",
    ),
    _bounded(
        "max_retries",
        th.IntegerType,
        5,
        (0, 100),
        title="Max retries",
        description="Retries of a request after 5xx, timeouts or connection errors (jittered "
        "exponential backoff); 429s wait for the rate-limit window instead",
    ),
    _bounded(
        "batch_poll_interval",
        th.NumberType,
        0.5,
        (0.01, 60),
        title="Batch poll interval",
        description="Minimum seconds between polls for batch results",
    ),
    _bounded(
        "batch_timeout",
        th.NumberType,
        900,
        (1, 86_400),
        title="Batch timeout",
        description="Seconds a batch may stay unfinished before it is re-sent once; the run "
        "fails if the re-sent batch does not finish either",
    ),
    _bounded(
        "max_wait",
        th.NumberType,
        300,
        (1, 86_400),
        title="Max rate-limit wait",
        description="Longest single pause, in seconds, the target accepts when Omnisend's "
        "rate limit asks it to wait (429 retryAfter, Retry-After or the rate-limit reset). "
        "A longer pause ends the run with a message naming this setting instead of a "
        "silent stall; waits over a few seconds are logged",
    ),
    th.Property(
        "rejected_records_path",
        th.StringType,
        default="rejected_records.jsonl",
        title="Rejected records file",
        description="JSONL file (appended) for records that could not be delivered: the "
        "record, its stream, a reason code and the reason. Contains personal data.",
    ),
    th.Property(
        "segment_tag",
        th.StringType,
        default=DEFAULT_SEGMENT_TAG,
        title="Segment tag",
        description="Tag added to every contact of a stream, through Omnisend's tags endpoint "
        "(never the contact body, which would replace the contact's tags); `{stream_name}` "
        "is replaced by the stream name. Empty disables tagging. API v5 has no tags "
        "endpoint: there the segment tag is skipped with a warning.",
    ),
    th.Property(
        "membership_property",
        th.StringType,
        title="Membership custom property",
        description="Write segment membership as this custom property set to true, inside "
        "each member's own batch item (e.g. `in_{stream_name}`; `{stream_name}` is replaced "
        "by the stream name) instead of the segment tag: no tag calls, so a first export of "
        "new members runs at the contacts' 400 requests/min instead of the tags' 60/min. "
        "The saved segment's rule becomes 'property equals true'; mirror sets it to false "
        "on leavers. The segment tag is then not written (setting both is refused). Not "
        "set: membership is the segment tag. A letter first, then letters, digits, _ or -, "
        "at most 64 characters.",
    ),
    th.Property(
        "segment_name",
        th.StringType,
        title="Omnisend segment name",
        description="Name of the Omnisend saved segment kept for each stream (Audience → "
        "Segments), whose rule is 'tags any of [the segment tag]', so it follows the tag "
        "(mirror removals included); `{stream_name}` is replaced by the stream name (after "
        "stream maps). Not set: `{stream_name}` on api_version 2026-03-15 with a segment_tag, "
        "none otherwise. Empty: no segments. Found by the ID the fingerprint store remembers, "
        "else by name; created if missing; a same-named segment with another rule is left "
        "alone (see segment_overwrite). Needs the key scopes segments.read and "
        "segments.write (without them: one warning, contacts still delivered). Refused on v5.",
    ),
    th.Property(
        "segment_names",
        th.ObjectType(additional_properties=th.StringType),
        title="Omnisend segment names per stream",
        description="Stream name (after stream maps) → segment name for that stream, "
        "overriding segment_name (`{stream_name}` allowed; empty: no segment for it).",
    ),
    th.Property(
        "segment_overwrite",
        th.BooleanType,
        default=False,
        title="Overwrite same-named segments",
        description="Replace the rule of an Omnisend segment that has the configured name but "
        "another rule (a hand-made one too) so that it follows the segment tag. Off: such a "
        "segment is left alone with one warning.",
    ),
    th.Property(
        "tags",
        th.ArrayType(th.StringType),
        title="Static tags",
        description=f"Tags added to every contact, the same way as the segment tag (at most "
        f"{MAX_TAGS - 1}; api_version 2026-03-15 only).",
    ),
    th.Property(
        "sync_mode",
        th.StringType,
        default=SYNC_MODES[0],
        allowed_values=list(SYNC_MODES),
        title="Sync mode",
        description="upsert: add and update segment members (a member untagged in Omnisend by "
        "someone else stays untagged; one run with full_refresh repairs that). mirror: after a "
        "complete read, make the tag equal the segment: members missing the tag get it back, "
        "contacts that carry it but were not in this run lose it (staged; never deletes "
        "contacts; a member another pipeline sharing the store still has is left alone; "
        "guarded, see mirror_max_removal_ratio and mirror_trigger). mirror needs api_version "
        "2026-03-15.",
    ),
    th.Property(
        "mirror_trigger",
        th.StringType,
        default=MIRROR_TRIGGERS[0],
        allowed_values=list(MIRROR_TRIGGERS),
        title="Mirror trigger",
        description="When a stream counts as read completely: when the tap sent "
        "ACTIVATE_VERSION for it (full-table syncs), or at every end of input (use only if "
        "the tap always sends the whole segment).",
    ),
    _bounded(
        "mirror_max_removal_ratio",
        th.NumberType,
        0.5,
        (0, 1),
        title="Mirror max removal ratio",
        description="Mirror removes nothing when more than this share of the tagged contacts "
        "would lose the tag (protects against a broken or empty source)",
    ),
    _bounded(
        "mirror_confirm_runs",
        th.IntegerType,
        2,
        (1, 100),
        title="Mirror confirm runs",
        description="A member absent from a complete read loses the segment tag only when it is "
        "absent from this many complete runs in a row (1 = at once). The target cannot tell a "
        "tap that died after 60% of the segment from a complete read; staging removals means "
        "such a run removes nothing by itself",
    ),
    th.Property(
        "fingerprint_store_path",
        th.StringType,
        default=DEFAULT_STORE,
        title="Fingerprint store",
        description="Where the target remembers what Omnisend confirmed, so re-runs send only "
        "what changed (and mirror stages removals): an SQLite file, or a PostgreSQL URL "
        "postgresql://user@host:port/dbname for containers and ephemeral runners (needs pip "
        "install 'target-omnisend[postgres]'; put the password in fingerprint_store_password). "
        "Empty disables it (every run sends everything).",
    ),
    th.Property(
        "fingerprint_store_schema",
        th.StringType(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"),
        default="target_omnisend",
        title="Fingerprint store schema",
        description="PostgreSQL store only: the schema holding the store's tables (created on "
        "first use if the user may). Letters, digits and underscores.",
    ),
    th.Property(
        "fingerprint_store_password",
        th.StringType,
        secret=True,
        title="Fingerprint store password",
        description="PostgreSQL store only: the database password, when the URL in "
        "fingerprint_store_path has none. Never logged.",
    ),
    _bounded(
        "fingerprint_store_lock_timeout",
        th.NumberType,
        60,
        (0, 86_400),
        title="Fingerprint store lock timeout",
        description="Seconds a run waits while another run of the same pipeline (same "
        "account, stream and mapping) uses the store; then it stops in one line. 0 = stop at "
        "once. Runs of different pipelines never wait for each other. In PostgreSQL it also "
        "bounds the wait for a table lock another session holds (at least 1 s)",
    ),
    th.Property(
        "full_refresh",
        th.BooleanType,
        default=False,
        title="Full refresh",
        description="Ignore the fingerprint store for this run: send and tag every contact (the "
        "way to give the tag back to members untagged elsewhere without mirror's removals).",
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        title="Dry run",
        description="Map, validate and diff, write the requests that would be sent to "
        "dry_run_path, and send nothing (no writes, store unchanged).",
    ),
    th.Property(
        "dry_run_path",
        th.StringType,
        default="omnisend_dry_run.jsonl",
        title="Dry run file",
        description="Where a dry run writes its requests (JSONL, overwritten).",
    ),
    _bounded(
        "state_interval",
        th.NumberType,
        60,
        (0.1, 86_400),
        title="STATE interval",
        description="Seconds between checkpoints: all records received so far are confirmed "
        "and the latest STATE is emitted, so a failed run resumes from at most this far back (the "
        "SDK's own cadence is 5 minutes)",
    ),
    _bounded(
        "progress_interval",
        th.NumberType,
        30,
        (0, 86_400),
        title="Progress interval",
        description="Seconds between progress lines (received, delivered, unchanged, rejected, in "
        "flight, rates); 0 disables them",
    ),
    th.Property(
        "summary_path",
        th.StringType,
        title="Summary file",
        description="Optional JSON file with the run's counters per stream, written at the end.",
    ),
).to_dict()


#: The target's own settings. The SDK merges its built-in ones (stream maps, flattening,
#: batch_size_rows…) into CONFIG_SCHEMA itself when it validates a config.
OWN_SETTINGS: tuple[str, ...] = tuple(CONFIG_SCHEMA["properties"])


def setting(name: str) -> dict[str, Any]:
    """The schema of one of our settings (KeyError for a name the schema lacks: a typo in
    code must fail loudly, not fall back to nothing)."""
    return CONFIG_SCHEMA["properties"][name]
