"""One sink per stream: a stream is one segment.

Records are validated and mapped as they arrive (so rejections are immediate and
cheap), buffered per email (a later duplicate replaces the earlier one), and handed to
the delivery engine in Omnisend-sized batches when the SDK drains the sink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.helpers._typing import get_datelike_property_type
from singer_sdk.helpers.conform import DatetimeErrorTreatmentEnum
from singer_sdk.sinks import BatchSink

from target_omnisend.delivery import Item
from target_omnisend.mapping import Rejection, merge_duplicate, to_contact
from target_omnisend.store import fingerprint
from target_omnisend.validation import CapturingValidator

if TYPE_CHECKING:
    from target_omnisend.target import TargetOmnisend


class ContactsSink(BatchSink):
    """Maps a segment's records to Omnisend contacts and hands them to delivery."""

    #: Records per SDK drain; each drain becomes ceil(n / batch_size) Omnisend batches.
    #: (`MAX_SIZE_DEFAULT`, not `max_size`, so the user's `batch_size_rows` still wins.)
    MAX_SIZE_DEFAULT = 1000

    def __init__(self, target: TargetOmnisend, *args: Any, **kwargs: Any) -> None:
        self._omnisend = target
        self._carry: dict[str, Item] = {}
        self._date_plan: tuple[dict, frozenset[str], frozenset[str]] | None = None
        super().__init__(target, *args, **kwargs)
        target.all_sinks.append(self)

    @property
    def datetime_error_treatment(self) -> DatetimeErrorTreatmentEnum:
        """A malformed date in one profile must not stop a segment export: it becomes
        null and the attribute is omitted."""
        return DatetimeErrorTreatmentEnum.NULL

    def _parse_timestamps_in_record(
        self, record: dict, schema: dict, treatment: DatetimeErrorTreatmentEnum
    ) -> None:
        """The SDK asks, for every field of every record, whether its schema is a date
        (~4 µs a profile, a fifth of the SDK's own cost per record). The schema does not
        change between records, so ask once per schema, then hand the SDK just the date
        fields (to parse and repair) and any fields the schema lacks (to warn about),
        with its own rules."""
        if self._date_plan is None or self._date_plan[0] is not schema:
            properties = schema["properties"]
            dates = frozenset(k for k, v in properties.items() if get_datelike_property_type(v))
            self._date_plan = (schema, dates, frozenset(properties))
        _, dates, known = self._date_plan
        fields = {key: record[key] for key in (dates & record.keys()) | (record.keys() - known)}
        if fields:
            super()._parse_timestamps_in_record(fields, schema, treatment)
            record.update(fields)

    def get_validator(self) -> CapturingValidator | None:
        return CapturingValidator(self.schema) if self.validate_schema else None

    def process_record(self, record: dict, context: dict) -> None:
        outcomes = self._omnisend.outcomes
        outcomes.received(self.stream_name)
        error = (
            self._validator.take_error()
            if isinstance(self._validator, CapturingValidator)
            else None
        )
        if error:
            outcomes.rejected(self.stream_name, record, "schema_invalid", error)
            return
        result = to_contact(record, self._omnisend.settings.mapping)
        if isinstance(result, Rejection):
            outcomes.rejected(self.stream_name, record, result.code, result.reason)
            return
        for warning in result.warnings:
            outcomes.warned(self.stream_name, warning)
        pending: dict[str, Item] = context.setdefault("items", {})
        body = result.body
        earlier = pending.pop(result.email, None)
        if earlier is not None:
            # Deterministic merge: the later record wins, but never with an older status.
            body = merge_duplicate(earlier.body, body)
            outcomes.merged(self.stream_name)
            self.tally_duplicate_merged()
        pending[result.email] = Item(self.stream_name, result.email, body, record)

    def _after_process_record(self, context: dict) -> None:
        """The SDK logs the whole pending context here at DEBUG — every profile of the
        batch, again for each record (quadratic, and personal data in the log)."""

    def process_batch(self, context: dict) -> None:
        """Skip what Omnisend already has, then hand the rest over in Omnisend-sized
        batches; confirmation happens in the background and the target waits for it
        before emitting STATE."""
        target = self._omnisend
        settings = target.settings
        items = list(context.get("items", {}).values())
        tags = settings.tags_for(self.stream_name)
        store = target.store
        known = (
            store.known(self.stream_name, [item.email for item in items])
            if store is not None and not settings.full_refresh
            else {}
        )
        changed: list[Item] = []
        unchanged: list[str] = []
        encode = target.client.encode_contact
        for item in items:
            item.payload = encode(item.body)
            if store is not None:
                item.fingerprint = fingerprint(item.payload, settings.mapping.run_started_at)
            previous = known.get(item.email)
            if previous is not None and previous == item.fingerprint:
                unchanged.append(item.email)
                continue
            # Only contacts new to the segment cost a (slow, 60/min) tag call.
            item.tags = tags if previous is None else ()
            changed.append(item)
        if unchanged:
            target.outcomes.unchanged(self.stream_name, len(unchanged))
            if store is not None and not settings.dry_run:
                store.mark_seen(self.stream_name, unchanged, target.outcomes.run_id)
        # Changed contacts are few on a re-run and spread over many drains: carry them
        # over until a batch is full, so 1% changed costs ~1% of the batches.
        for item in changed:
            if self._carry.pop(item.email, None) is not None:
                target.outcomes.merged(self.stream_name)
            self._carry[item.email] = item
        self._send_carry(full_only=True)

    def _send_carry(self, *, full_only: bool) -> None:
        settings = self._omnisend.settings
        size = settings.batch_size
        while len(self._carry) >= size or (self._carry and not full_only):
            batch = [self._carry.pop(email) for email in list(self._carry)[:size]]
            if settings.dry_run:
                self._omnisend.dry_run.batch(self.stream_name, batch)
            else:
                self._omnisend.engine.submit(batch)

    def flush(self) -> None:
        """Send a partly filled batch: called at every barrier, before STATE."""
        self._send_carry(full_only=False)
