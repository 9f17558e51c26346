"""TargetOmnisend: configuration, wiring, and the promises around STATE and exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

from singer_sdk import typing as th
from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.exceptions import ConfigValidationError, FatalSyncError
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.target_base import Target

from target_omnisend.api import DEFAULT_API_URL, GENERATIONS, LATEST_VERSION
from target_omnisend.client import OmnisendClient
from target_omnisend.delivery import DeliveryEngine, Item
from target_omnisend.dryrun import DryRunWriter
from target_omnisend.mapping import EMAIL_STATUSES
from target_omnisend.mirror import mirror_stream
from target_omnisend.outcomes import Outcomes
from target_omnisend.privacy import one_line_error, secrets_in_use
from target_omnisend.progress import ProgressReporter
from target_omnisend.ratelimit import RateLimits
from target_omnisend.reader import SingerInput, encode_state
from target_omnisend.settings import (
    DEFAULT_SEGMENT_TAG,
    DEFAULT_STORE,
    MAX_BATCH_SIZE,
    load_settings,
)
from target_omnisend.sinks import ContactsSink
from target_omnisend.store import FingerprintStore, account_scope

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
        #: Every sink ever created, including those retired by a schema change: each
        #: may still carry contacts that must go out before STATE.
        self.all_sinks: list[ContactsSink] = []
        super().__init__(*args, **kwargs)
        self.started_at = time.monotonic()
        self.settings = load_settings(self.config)
        if self.settings.segment_tag and not self.settings.generation.has_tags_endpoint:
            self.logger.warning(
                "segment_tag is not applied: Omnisend API %s has no tags endpoint, so contacts "
                "are delivered untagged. Use api_version %s for segment tags, or set "
                "segment_tag to an empty string to silence this warning.",
                self.settings.generation.name,
                LATEST_VERSION,
            )
        self.outcomes = Outcomes(self.settings.rejected_records_path, self.logger)
        self.client = OmnisendClient(
            base_url=self.settings.api_url,
            api_key=self.settings.api_key,
            generation=self.settings.generation,
            limits=RateLimits(
                self.settings.requests_per_minute, self.settings.tags_requests_per_minute
            ),
            timeout=self.settings.request_timeout,
            max_retries=self.settings.max_retries,
            pool_size=self.settings.max_concurrency + 2,
            logger=self.logger,
        )
        self.client.check_connection()
        self.store = (
            FingerprintStore(
                self.settings.fingerprint_store_path,
                account_scope(self.settings.api_url, self.settings.api_key),
                self.settings.mapping_hash(),
            )
            if self.settings.fingerprint_store_path
            else None
        )
        if self.store is not None and self.store.invalidated:
            self.logger.info("Mapping configuration changed: every contact is sent again")
        self.dry_run = (
            DryRunWriter(self.settings.dry_run_path, self.settings.generation)
            if self.settings.dry_run
            else None
        )
        self.complete_streams: set[str] = set()
        self.engine = DeliveryEngine(
            self.client,
            self,
            max_concurrency=self.settings.max_concurrency,
            max_pending_batches=self.settings.max_pending_batches,
            poll_interval=self.settings.batch_poll_interval,
            batch_timeout=self.settings.batch_timeout,
            logger=self.logger,
        )
        # The SDK drains (and so checkpoints) every _MAX_RECORD_AGE_IN_MINUTES.
        self._MAX_RECORD_AGE_IN_MINUTES = self.settings.state_interval / 60
        self.progress = ProgressReporter(
            self.outcomes, self.logger, self.settings.progress_interval
        )

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

    # -- outcomes reported by the delivery engine --------------------------------------

    def delivered_items(self, items: list[Item]) -> None:
        by_stream: dict[str, list[Item]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item)
        for stream, delivered in by_stream.items():
            self.outcomes.delivered(stream, len(delivered))
            if self.store is not None:
                self.store.confirm(
                    stream,
                    [(i.email, i.fingerprint) for i in delivered if i.fingerprint is not None],
                    self.outcomes.run_id,
                )

    def rejected_item(self, item: Item, code: str, reason: str) -> None:
        self.outcomes.rejected(item.stream, item.record, code, reason, email=item.email)

    # -- STATE only after delivery ----------------------------------------------------

    def _barrier(self) -> None:
        """Every record handed to a sink so far has a final, durable outcome."""
        for sink in self.all_sinks:
            sink.flush()
        self.engine.wait_idle()
        self.outcomes.sync()
        if self.store is not None and self.dry_run is None:
            self.store.commit()

    def _write_state_message(self, state: dict) -> None:
        """The SDK writes STATE after handing every sink's records to process_batch();
        delivery is asynchronous, so first wait until each of them is confirmed."""
        self._barrier()
        sys.stdout.write(encode_state(state) + "\n")  # exact Decimal bookmarks (issue 11)
        sys.stdout.flush()

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """ACTIVATE_VERSION marks a full-table read: the stream may be mirrored. Contacts
        have no table versions to switch, so that is all it means here."""
        self._assert_line_requires(message_dict, requires={"stream"})
        self.complete_streams.add(message_dict["stream"])

    def process_endofpipe(self) -> None:
        super().process_endofpipe()
        self._barrier()
        if self.settings.sync_mode == "mirror":
            for stream in list(self.outcomes.streams):
                mirror_stream(self, stream)
        self.engine.close()
        self.client.close()
        self.outcomes.close()
        if self.store is not None:
            self.store.close()
        if self.dry_run is not None:
            self.dry_run.close()
            self.logger.info(
                "Dry run: %d contact(s) in %d request(s) written to %s; nothing was sent",
                self.dry_run.contacts,
                self.dry_run.requests,
                self.dry_run.path,
            )
        self._log_summary()

    def _log_summary(self) -> None:
        self.progress.stop()
        elapsed = time.monotonic() - self.started_at
        for stream, counts in self.outcomes.totals().items():
            self.logger.info(
                "Summary for stream '%s': received=%d delivered=%d rejected=%d unchanged=%d "
                "merged_duplicates=%d rejected_by_reason=%s warnings=%s",
                stream,
                counts["received"],
                counts["delivered"],
                counts["rejected"],
                counts["unchanged"],
                counts["merged_duplicates"],
                json.dumps(counts["rejected_by_reason"]),
                json.dumps(counts["warnings"]),
            )
        if self.settings.summary_path:
            summary = {
                "run_id": self.outcomes.run_id,
                "dry_run": self.settings.dry_run,
                "seconds": round(elapsed, 3),
                "streams": self.outcomes.totals(),
                "requests": self.client.stats.requests,
                "retries": self.client.stats.retries,
                "rate_limited": self.client.stats.rate_limited,
                "batches": self.engine.stats.batches_sent,
                "tag_calls": self.engine.stats.tag_calls,
                "mirror": self.outcomes.mirror,
            }
            with open(self.settings.summary_path, "w", encoding="utf-8") as fh:
                json.dump(summary, fh, indent=2)
        stats = self.client.stats
        self.logger.info(
            "Run finished in %.1fs: %d requests (%d retries, %d rate-limited), %d batches, "
            "%d polls",
            elapsed,
            stats.requests,
            stats.retries,
            stats.rate_limited,
            self.engine.stats.batches_sent,
            self.engine.stats.polls,
        )

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
        cls.logger.error("%s", one_line_error(message, secrets_in_use(sys.argv, os.environ)))
        sys.exit(code)


if __name__ == "__main__":
    TargetOmnisend.cli()
