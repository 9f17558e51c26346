"""Where a run's requests go: the `Writer` protocol and the writer that sends them.

The run pipeline talks to exactly one writer. `OmnisendWriter` delivers through the
delivery engine; `dryrun.DryRunWriter` is its substitute for a dry run and writes the
same requests to a file. Everything that differs between a real run and a dry run is
behind this interface, so no other module asks which kind of run it is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from target_omnisend.api import SavedSegment, membership_property_body
from target_omnisend.client import OmnisendClient
from target_omnisend.delivery import DeliveryEngine, Item, OutcomeSink
from target_omnisend.mapping import email_of
from target_omnisend.tagging import tag_calls

#: Contacts per batch request (Omnisend's 2026-03-15 maximum).
BATCH_ITEMS = 100


class Writer(Protocol):
    #: Whether requests reach Omnisend. Only then may a checkpoint emit STATE (a STATE
    #: after a dry run would make the next real run skip records never sent).
    sends: bool

    def submit(self, items: list[Item]) -> None:
        """Hand over one batch of ≤ 100 contacts; may block for back-pressure."""

    def in_flight(self, email: str) -> bool:
        """An earlier version of this contact is handed over but not yet final."""

    def wait_idle(self) -> None:
        """Every item handed over has its final outcome."""

    def tagged_members(self, tag: str) -> Iterator[str]:
        """Emails of the contacts that carry `tag` in Omnisend (a read: dry runs too)."""

    def remove_tags(self, tag: str, emails: list[str]) -> None:
        """Take `tag` off these contacts (≤ 250)."""

    def add_tags(self, tag: str, emails: list[str]) -> None:
        """Put `tag` back on these contacts (mirror's repair of members missing it)."""

    def segment_members(self, segment_id: str) -> Iterator[str]:
        """Emails of a saved segment's members (`GET /contacts?segmentID=`; a read)."""

    def set_property(self, name: str, emails: list[str], value: bool) -> int:
        """Set custom property `name` to `value` on these contacts, through batches; how
        many Omnisend confirmed."""

    def create_segment(self, body: dict[str, Any]) -> SavedSegment | None:
        """POST /segments once (never repeated blindly); the segment, or None if nothing
        was sent. Raises `AmbiguousWrite` when Omnisend may or may not have created it."""

    def replace_segment(self, segment_id: str, body: dict[str, Any]) -> SavedSegment | None:
        """PUT /segments/{id} (a full replace); the segment, or None if nothing was sent."""

    def cancel(self) -> None:
        """Stop now: blocked calls raise `Cancelled`, nothing new goes out."""

    def close(self) -> None:
        """End of run: release threads and files."""

    def closing_line(self) -> str | None:
        """What the run's log should end with about this writer, if anything."""


def tagged_members(client: OmnisendClient, tag: str) -> Iterator[str]:
    return listed_emails(client, tag=tag)


def listed_emails(client: OmnisendClient, **filters: str) -> Iterator[str]:
    """Emails of the contacts `GET /contacts` lists for these filters."""
    for contact in client.list_contacts(**filters):
        email = email_of(contact)
        if email is not None:
            yield email


def property_items(
    name: str, emails: list[str], value: bool, encode: Callable[[dict[str, Any]], str]
) -> list[Item]:
    """Batch items that set only property `name` to `value` (mirror's property writes)."""
    items = []
    for email in emails:
        body = membership_property_body(email, name, value)
        items.append(Item(stream="", email=email, body=body, record=None, payload=encode(body)))
    return items


class _Confirmed:
    """Outcome sink of a removal run: counts what Omnisend confirmed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delivered = 0

    def delivered_items(self, items: list[Item]) -> None:
        with self._lock:
            self.delivered += len(items)

    def rejected_item(self, item: Item, code: str, reason: str) -> None:
        del item, code, reason  # counted by the difference; mirror warns about it


class OmnisendWriter:
    """The real thing: contact batches through the delivery engine, tag removals and
    reads through the client."""

    sends = True

    def __init__(
        self,
        engine: DeliveryEngine,
        client: OmnisendClient,
        new_engine: Callable[[OutcomeSink], DeliveryEngine] | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        #: Builds the engine of a removal run (its outcomes are not the run's records).
        self._new_engine = new_engine
        self._engines = [engine]

    def submit(self, items: list[Item]) -> None:
        self.engine.submit(items)

    def in_flight(self, email: str) -> bool:
        return self.engine.in_flight(email)

    def wait_idle(self) -> None:
        self.engine.wait_idle()

    def tagged_members(self, tag: str) -> Iterator[str]:
        return tagged_members(self.client, tag)

    def remove_tags(self, tag: str, emails: list[str]) -> None:
        for chunk in tag_calls(emails):
            self.client.remove_tags([tag], chunk)

    def add_tags(self, tag: str, emails: list[str]) -> None:
        for chunk in tag_calls(emails):
            self.client.add_tags([tag], chunk)

    def segment_members(self, segment_id: str) -> Iterator[str]:
        return listed_emails(self.client, segmentID=segment_id)

    def set_property(self, name: str, emails: list[str], value: bool) -> int:
        """Through an engine of its own (same pacing, confirmation and retries as the
        contacts), so mirror's writes are never counted as the run's delivered records."""
        if not emails:
            return 0
        assert self._new_engine is not None, "OmnisendWriter built without new_engine"
        confirmed = _Confirmed()
        engine = self._new_engine(confirmed)
        self._engines.append(engine)
        try:
            items = property_items(name, emails, value, self.client.encode_contact)
            for start in range(0, len(items), BATCH_ITEMS):
                engine.submit(items[start : start + BATCH_ITEMS])
            engine.wait_idle()
        finally:
            engine.close()
            self._engines.remove(engine)
        return confirmed.delivered

    def create_segment(self, body: dict[str, Any]) -> SavedSegment | None:
        return self.client.create_segment(body)

    def replace_segment(self, segment_id: str, body: dict[str, Any]) -> SavedSegment | None:
        return self.client.replace_segment(segment_id, body)

    def cancel(self) -> None:
        for engine in list(self._engines):
            engine.cancel()

    def close(self) -> None:
        self.engine.close()
        self.client.close()

    def closing_line(self) -> str | None:
        return None
