"""Where a run's requests go: the `Writer` protocol and the writer that sends them.

The run pipeline talks to exactly one writer. `OmnisendWriter` delivers through the
delivery engine; `dryrun.DryRunWriter` is its substitute for a dry run and writes the
same requests to a file. Everything that differs between a real run and a dry run is
behind this interface, so no other module asks which kind of run it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from target_omnisend.api import SavedSegment
from target_omnisend.client import OmnisendClient
from target_omnisend.delivery import DeliveryEngine, Item
from target_omnisend.mapping import email_of
from target_omnisend.tagging import tag_calls


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
    for contact in client.list_contacts(tag=tag):
        email = email_of(contact)
        if email is not None:
            yield email


class OmnisendWriter:
    """The real thing: contact batches through the delivery engine, tag removals and
    reads through the client."""

    sends = True

    def __init__(self, engine: DeliveryEngine, client: OmnisendClient) -> None:
        self.engine = engine
        self.client = client

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

    def create_segment(self, body: dict[str, Any]) -> SavedSegment | None:
        return self.client.create_segment(body)

    def replace_segment(self, segment_id: str, body: dict[str, Any]) -> SavedSegment | None:
        return self.client.replace_segment(segment_id, body)

    def cancel(self) -> None:
        self.engine.cancel()

    def close(self) -> None:
        self.engine.close()
        self.client.close()

    def closing_line(self) -> str | None:
        return None
