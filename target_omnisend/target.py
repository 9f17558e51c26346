"""TargetOmnisend: configuration, wiring, and the promises around STATE and exit codes."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalSyncError
from singer_sdk.target_base import Target

from target_omnisend.api import DEFAULT_API_URL, GENERATIONS, LATEST_VERSION
from target_omnisend.client import OmnisendClient
from target_omnisend.delivery import DeliveryEngine, Item
from target_omnisend.mapping import EMAIL_STATUSES
from target_omnisend.outcomes import Outcomes
from target_omnisend.privacy import redact
from target_omnisend.ratelimit import RateLimits
from target_omnisend.settings import MAX_BATCH_SIZE, load_settings
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
).to_dict()


class TargetOmnisend(Target):
    """Singer target that upserts segment members as Omnisend contacts."""

    name = "target-omnisend"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = ContactsSink

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started_at = time.monotonic()
        self.settings = load_settings(self.config)
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
        self.engine = DeliveryEngine(
            self.client,
            self,
            max_concurrency=self.settings.max_concurrency,
            max_pending_batches=self.settings.max_pending_batches,
            poll_interval=self.settings.batch_poll_interval,
            batch_timeout=self.settings.batch_timeout,
            logger=self.logger,
        )

    # -- outcomes reported by the delivery engine --------------------------------------

    def delivered_items(self, items: list[Item]) -> None:
        by_stream: dict[str, int] = {}
        for item in items:
            by_stream[item.stream] = by_stream.get(item.stream, 0) + 1
        for stream, count in by_stream.items():
            self.outcomes.delivered(stream, count)

    def rejected_item(self, item: Item, code: str, reason: str) -> None:
        self.outcomes.rejected(item.stream, item.record, code, reason, email=item.email)

    # -- STATE only after delivery ----------------------------------------------------

    def _write_state_message(self, state: dict) -> None:
        """The SDK writes STATE after handing every sink's records to process_batch();
        delivery is asynchronous, so first wait until each of them is confirmed."""
        self.engine.wait_idle()
        self.outcomes.sync()
        super()._write_state_message(state)

    def process_endofpipe(self) -> None:
        super().process_endofpipe()
        self.engine.wait_idle()
        self.outcomes.sync()
        self.engine.close()
        self.client.close()
        self.outcomes.close()
        self._log_summary()

    def _log_summary(self) -> None:
        elapsed = time.monotonic() - self.started_at
        for stream, counts in self.outcomes.totals().items():
            self.logger.info(
                "Summary for stream '%s': received=%d delivered=%d rejected=%d "
                "merged_duplicates=%d rejected_by_reason=%s warnings=%s",
                stream,
                counts["received"],
                counts["delivered"],
                counts["rejected"],
                counts["merged_duplicates"],
                json.dumps(counts["rejected_by_reason"]),
                json.dumps(counts["warnings"]),
            )
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
        except json.JSONDecodeError as exc:
            cls._exit(f"Input is not Singer JSON (line {exc.lineno}): {exc.msg}")

    @classmethod
    def _exit(cls, message: str, code: int = 1) -> None:
        secrets = _secrets_from_env()
        cls.logger.error("%s", redact(message, *secrets))
        sys.exit(code)


def _secrets_from_env() -> list[str]:
    return [v for k, v in os.environ.items() if k.endswith("API_KEY") and v]


if __name__ == "__main__":
    TargetOmnisend.cli()
