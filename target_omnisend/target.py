"""TargetOmnisend: name, configuration schema, sink class, and the hand-over to the run
pipeline (which owns delivery, checkpoints, cancel and the end of the run)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from types import FrameType
from typing import Any

from singer_sdk import typing as th
from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.exceptions import ConfigValidationError, FatalSyncError
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.target_base import Target

from target_omnisend.api import DEFAULT_API_URL, GENERATIONS, LATEST_VERSION
from target_omnisend.mapping import EMAIL_STATUSES
from target_omnisend.pipeline import RunPipeline
from target_omnisend.privacy import redact
from target_omnisend.reader import SingerInput
from target_omnisend.settings import (
    DEFAULT_SEGMENT_TAG,
    DEFAULT_STORE,
    MAX_BATCH_SIZE,
    load_settings,
)
from target_omnisend.sinks import ContactsSink

_ATTRIBUTE_DOCS = {
    "first_name": "First name",
    "last_name": "Last name",
    "address": "Street address",
    "city": "City",
    "state": "State / region",
    "postal_code": "Postal code",
    "country": "Country name",
    "country_code": "ISO 3166-1 alpha-2 country code (sent only when valid)",
    "phone": "Phone in international E.164 form (added as a phone identifier)",
    "birthdate": "Birth date (sent as YYYY-MM-DD)",
    "gender": "Gender (m/f; male/female accepted)",
}

CONFIG_SCHEMA = th.PropertiesList(
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
                th.Property(name, th.StringType, description=f"Source field for: {doc}")
                for name, doc in _ATTRIBUTE_DOCS.items()
            ),
        ),
        title="Field mapping",
        description="Omnisend attribute → source field (dotted paths allowed). An attribute "
        "not named here is read from the source field of the same name, if present.",
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
        "of a contact that already exists in Omnisend.",
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
        "send_welcome_message",
        th.BooleanType,
        default=False,
        title="Send welcome message",
        description="Ask Omnisend to send its welcome message to new subscribers.",
    ),
    th.Property(
        "batch_size",
        th.IntegerType,
        default=MAX_BATCH_SIZE,
        title="Batch size",
        description=f"Contacts per Omnisend batch request (1 to {MAX_BATCH_SIZE}).",
    ),
    th.Property(
        "max_concurrency",
        th.IntegerType,
        default=4,
        title="Max concurrency",
        description="Batch requests in flight at once (1 to 32).",
    ),
    th.Property(
        "max_pending_batches",
        th.IntegerType,
        default=64,
        title="Max pending batches",
        description="Sent-but-unconfirmed batches allowed before reading pauses; bounds memory.",
    ),
    th.Property(
        "requests_per_minute",
        th.NumberType,
        default=400,
        title="Requests per minute",
        description="Budget for Omnisend's backend API (its limit is 400/min per account); "
        "lowered automatically if Omnisend's rate-limit headers say less.",
    ),
    th.Property(
        "tags_requests_per_minute",
        th.NumberType,
        default=60,
        title="Tag requests per minute",
        description="Budget for the tags endpoint (Omnisend: 60/min).",
    ),
    th.Property(
        "request_timeout",
        th.NumberType,
        default=10,
        title="Request timeout",
        description="Seconds to wait for one HTTP response.",
    ),
    th.Property(
        "max_retries",
        th.IntegerType,
        default=5,
        title="Max retries",
        description="Retries of a request after 5xx, timeouts or connection errors "
        "(jittered exponential backoff). 429s wait for the rate-limit window instead.",
    ),
    th.Property(
        "batch_poll_interval",
        th.NumberType,
        default=0.5,
        title="Batch poll interval",
        description="Minimum seconds between polls for batch results.",
    ),
    th.Property(
        "batch_timeout",
        th.NumberType,
        default=900,
        title="Batch timeout",
        description="Seconds a batch may stay unfinished before it is re-sent once; the run "
        "fails if the re-sent batch does not finish either.",
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
        description="Tags added to every contact, the same way as the segment tag "
        "(api_version 2026-03-15 only).",
    ),
    th.Property(
        "sync_mode",
        th.StringType,
        default="upsert",
        allowed_values=["upsert", "mirror"],
        title="Sync mode",
        description="upsert: add and update segment members. mirror: also remove the segment "
        "tag from contacts that carry it in Omnisend but were not in this run (never deletes "
        "contacts; guarded, see mirror_max_removal_ratio and mirror_trigger). mirror needs "
        "api_version 2026-03-15.",
    ),
    th.Property(
        "mirror_trigger",
        th.StringType,
        default="activate_version",
        allowed_values=["activate_version", "end_of_input"],
        title="Mirror trigger",
        description="When a stream counts as read completely: when the tap sent "
        "ACTIVATE_VERSION for it (full-table syncs), or at every end of input (use only if "
        "the tap always sends the whole segment).",
    ),
    th.Property(
        "mirror_max_removal_ratio",
        th.NumberType,
        default=0.5,
        title="Mirror max removal ratio",
        description="Mirror removes nothing when more than this share of the tagged contacts "
        "would lose the tag (protects against a broken or empty source).",
    ),
    th.Property(
        "mirror_confirm_runs",
        th.IntegerType,
        default=2,
        title="Mirror confirm runs",
        description="A member absent from a complete read loses the segment tag only when "
        "it is absent from this many complete runs in a row (1 = at once). The target "
        "cannot tell a tap that died after 60% of the segment from a complete read; this "
        "stages removals so such a run removes nothing by itself.",
    ),
    th.Property(
        "fingerprint_store_path",
        th.StringType,
        default=DEFAULT_STORE,
        title="Fingerprint store",
        description="SQLite file remembering what Omnisend confirmed, so re-runs send only "
        "what changed. Empty disables it (every run sends everything).",
    ),
    th.Property(
        "full_refresh",
        th.BooleanType,
        default=False,
        title="Full refresh",
        description="Ignore the fingerprint store for this run: send and tag every contact.",
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
    th.Property(
        "state_interval",
        th.NumberType,
        default=60,
        title="STATE interval",
        description="Seconds between checkpoints: all records received so far are confirmed "
        "and the latest STATE is emitted, so a failed run resumes from at most this far "
        "back (the SDK's own cadence is 5 minutes).",
    ),
    th.Property(
        "progress_interval",
        th.NumberType,
        default=30,
        title="Progress interval",
        description="Seconds between progress lines (received, delivered, unchanged, "
        "rejected, in flight, rates); 0 disables them.",
    ),
    th.Property(
        "summary_path",
        th.StringType,
        title="Summary file",
        description="Optional JSON file with the run's counters per stream, written at the end.",
    ),
).to_dict()


class TargetOmnisend(Target):
    """Singer target that upserts segment members as Omnisend contacts."""

    name = "target-omnisend"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = ContactsSink
    #: Input errors name the line number, never the line (it may hold a profile).
    message_reader_class = SingerInput

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = load_settings(self.config)
        if settings.segment_tag and not settings.generation.has_tags_endpoint:
            self.logger.warning(
                "segment_tag is not applied: Omnisend API %s has no tags endpoint, so contacts "
                "are delivered untagged. Use api_version %s for segment tags, or set "
                "segment_tag to an empty string to silence this warning.",
                settings.generation.name,
                LATEST_VERSION,
            )
        self.pipeline = RunPipeline.start(settings, self.logger)
        # The SDK drains (and so checkpoints) every _MAX_RECORD_AGE_IN_MINUTES.
        self._MAX_RECORD_AGE_IN_MINUTES = settings.state_interval / 60

    @classproperty
    def _env_var_config(cls) -> dict[str, Any]:
        """The SDK turns TARGET_OMNISEND_* strings into integers and booleans but leaves
        `number` settings as strings, which then fail validation: convert them too."""
        config_jsonschema = cls.config_jsonschema
        cls.append_builtin_config(config_jsonschema)
        config = parse_environment_config(config_jsonschema, cls._env_var_prefix)
        properties = cls.config_jsonschema.get("properties", {})
        for key, value in config.items():
            types = properties.get(key, {}).get("type")
            types = types if isinstance(types, list) else [types]
            if isinstance(value, str) and "number" in types:
                with contextlib.suppress(ValueError):  # else validation names the setting
                    config[key] = float(value)
        return config

    # -- the run pipeline decides; the SDK's hooks only hand over -----------------------

    def _write_state_message(self, state: dict) -> None:
        """STATE only once every record before it has a final outcome, and never in a dry
        run or after a cancel."""
        if self.pipeline.checkpoint():
            super()._write_state_message(state)

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """ACTIVATE_VERSION marks a full-table read (of every stream the tap's stream is
        mapped to): only such streams may be mirrored. Contacts have no table versions."""
        self._assert_line_requires(message_dict, requires={"stream"})
        for stream_map in self.mapper.stream_maps.get(message_dict["stream"], []):
            self.pipeline.read_in_full(stream_map.stream_alias)

    def process_endofpipe(self) -> None:
        super().process_endofpipe()
        self.pipeline.finish()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """Not the SDK's drain-and-STATE: a cancel must not checkpoint records in hand."""
        del frame
        pipeline: RunPipeline | None = getattr(self, "pipeline", None)
        if pipeline is None:  # still starting up: nothing was read, nothing to undo
            self._exit("Run cancelled before it started; nothing was sent", code=128 + signum)
        else:
            pipeline.cancel(signum)

    # -- one clear line instead of a traceback -----------------------------------------

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        try:
            super().invoke(*args, **kwargs)
        except ConfigValidationError as exc:
            errors = "; ".join(exc.errors or [str(exc)])
            cls._exit(f"Invalid configuration: {errors}", code=2)
        except FatalSyncError as exc:
            cls._exit(f"Run failed: {exc}. No STATE was emitted past the last delivered record.")
        except InvalidInputLine as exc:
            cls._exit(
                f"Input is not Singer: {exc}. No STATE was emitted past the last delivered record."
            )
        except json.JSONDecodeError as exc:
            cls._exit(f"Input is not Singer JSON (line {exc.lineno}): {exc.msg}")
        except Exception as exc:  # a bug or an unforeseen input: still one line, no STATE
            cls.logger.debug("Unexpected error", exc_info=True)
            cls._exit(
                f"Run failed: {type(exc).__name__}: {exc}. No STATE was emitted past the last "
                "delivered record (set log level DEBUG for the traceback)."
            )

    @classmethod
    def _exit(cls, message: str, code: int = 1) -> None:
        secrets = _secrets_from_env()
        cls.logger.error("%s", redact(message, *secrets))
        sys.exit(code)


def _secrets_from_env() -> list[str]:
    return [v for k, v in os.environ.items() if k.endswith("API_KEY") and v]


if __name__ == "__main__":
    TargetOmnisend.cli()
