"""One sink per stream: a stream is one segment.

Records are validated and mapped as they arrive (so rejections are immediate and
cheap) and handed to the run pipeline, which keeps them in input order across streams
until the SDK drains a sink. Sinks keep no run state of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.helpers._typing import get_datelike_property_type
from singer_sdk.helpers.conform import DatetimeErrorTreatmentEnum
from singer_sdk.sinks import BatchSink

from target_omnisend.dates import parse_dates
from target_omnisend.delivery import Item
from target_omnisend.email_schema import missing_email_field, missing_field_message
from target_omnisend.errors import EmailFieldMissing
from target_omnisend.mapping import Rejection, to_contact
from target_omnisend.validation import CapturingValidator

if TYPE_CHECKING:
    from target_omnisend.pipeline import RunPipeline
    from target_omnisend.target import TargetOmnisend


class ContactsSink(BatchSink):
    """Maps a segment's records to Omnisend contacts and hands them to delivery."""

    #: Records per SDK drain; each drain becomes ceil(n / batch_size) Omnisend batches.
    #: (`MAX_SIZE_DEFAULT`, not `max_size`, so the user's `batch_size_rows` still wins.)
    MAX_SIZE_DEFAULT = 1000

    def __init__(self, target: TargetOmnisend, *args: Any, **kwargs: Any) -> None:
        self.pipeline: RunPipeline = target.pipeline
        self.mapping = target.pipeline.settings.mapping
        self._date_plan: tuple[dict, dict[str, str], frozenset[str]] | None = None
        super().__init__(target, *args, **kwargs)
        self._check_email_field()
        # A membership property this stream's name makes unusable stops the run now, at
        # its SCHEMA, before any of its records is read.
        self.pipeline.settings.membership_for(self.stream_name)

    def _check_email_field(self) -> None:
        """Stop at the SCHEMA when it has no field at `email_field`: every record would
        be rejected one by one, the segment left empty, and the exit still 0."""
        if missing_email_field(self.schema, self.mapping.email_field):
            raise EmailFieldMissing(
                missing_field_message(self.stream_name, self.schema, self.mapping.email_field)
            )

    @property
    def datetime_error_treatment(self) -> DatetimeErrorTreatmentEnum:
        """A malformed date in one profile must not stop a segment export: it becomes
        null and the attribute is omitted."""
        return DatetimeErrorTreatmentEnum.NULL

    def _parse_timestamps_in_record(
        self, record: dict, schema: dict, treatment: DatetimeErrorTreatmentEnum
    ) -> None:
        """The schema's date fields are found once per schema (the SDK asks for every
        field of every record, ~4 µs a profile) and parsed by `dates.parse_dates`: an
        unreadable or non-string value is dropped with a counted warning naming the
        field, where the SDK would log the value itself, or crash on a number. Fields the
        schema lacks still go to the SDK, which warns about each once."""
        if self._date_plan is None or self._date_plan[0] is not schema:
            properties = schema["properties"]
            dates = {
                key: kind
                for key, value in properties.items()
                if (kind := get_datelike_property_type(value))
            }
            self._date_plan = (schema, dates, frozenset(properties))
        _, dates, known = self._date_plan
        if dates:
            for warning in parse_dates(record, dates):
                self.pipeline.warned(self.stream_name, warning)
        unknown = {key: record[key] for key in record.keys() - known}
        if unknown:
            super()._parse_timestamps_in_record(unknown, schema, treatment)

    def _singer_validate_message(self, record: dict) -> None:
        """The SDK stops the whole run when a record lacks a key property. A tap keyed by
        the email (`key_properties: [email]`) would then lose the segment to one profile
        without an email: that record is rejected (`missing_email`) like any other. A
        missing key of another kind is still the SDK's input error."""
        email_key = self.mapping.email_field.split(".", 1)[0]
        if any(key not in record for key in self._key_properties if key != email_key):
            super()._singer_validate_message(record)

    def get_validator(self) -> CapturingValidator | None:
        return CapturingValidator(self.schema) if self.validate_schema else None

    def process_record(self, record: dict, context: dict) -> None:
        pipeline = self.pipeline
        pipeline.received(self.stream_name)
        error = (
            self._validator.take_error()
            if isinstance(self._validator, CapturingValidator)
            else None
        )
        if error:
            pipeline.reject(self.stream_name, record, "schema_invalid", error)
            return
        result = to_contact(record, self.mapping)
        if isinstance(result, Rejection):
            pipeline.reject(self.stream_name, record, result.code, result.reason)
            return
        for warning in result.warnings:
            pipeline.warned(self.stream_name, warning)
        # Kept by the pipeline, in input order across streams; a later record of the same
        # contact replaces the earlier one there (counted as merged).
        pipeline.pend(Item(self.stream_name, result.email, result.body, record))

    def _after_process_record(self, context: dict) -> None:
        """The SDK logs the whole pending context here at DEBUG — every profile of the
        batch, again for each record (quadratic, and personal data in the log)."""

    def process_batch(self, context: dict) -> None:
        """A drain: the run pipeline diffs, batches and delivers what is pending (of every
        stream, in input order); the target checkpoints through it before every STATE.
        Records of BATCH messages never arrive here as `context["records"]` (the SDK's
        route): the target reads them as RECORDs (`batchfiles.py`). Should any caller
        still pass raw records, the run stops rather than drop them."""
        if context.get("records"):
            raise RuntimeError("raw batch records reached the sink unmapped; none were sent")
        self.pipeline.hand_over_pending()
