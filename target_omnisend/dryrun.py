"""Dry run: the exact requests a run would send, written to a file instead.

`DryRunWriter` stands in for `OmnisendWriter`: everything up to the wire happens for
real (mapping, validation, diffing against the fingerprint store, reading who carries a
tag for the mirror preview, looking up saved segments), and every write — segment
creations and rule updates included — becomes a line in the file. It never
sends a write, and it says `sends = False`, so the pipeline emits no STATE.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from target_omnisend.api import SavedSegment
from target_omnisend.client import OmnisendClient, batch_body
from target_omnisend.delivery import Item, OutcomeSink
from target_omnisend.errors import Cancelled
from target_omnisend.tagging import TagChunks, tag_calls
from target_omnisend.writer import BATCH_ITEMS, listed_emails, property_items, tagged_members


class DryRunWriter:
    sends = False

    def __init__(self, path: str, client: OmnisendClient, sink: OutcomeSink) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.client = client
        self.sink = sink
        self._file = self.path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self._cancelled = False
        self.contacts = 0
        self.requests = 0
        self._tag_chunks: TagChunks[str] = TagChunks()

    def _write(self, method: str, path: str, body: dict[str, Any] | str) -> None:
        """One planned request; `body` is an object, or JSON text already encoded."""
        if self._cancelled:
            raise Cancelled("cancelled")
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        prefix = self.client.generation.prefix
        line = f'{{"method":{json.dumps(method)},"path":{json.dumps(prefix + path)},"body":{text}}}'
        with self._lock:
            self._file.write(line + "\n")
            self.requests += 1

    def submit(self, items: list[Item]) -> None:
        """The batch exactly as it would be sent: the contacts' encoded wire JSON. Its
        contacts count as delivered (the summary shows what a real run would do)."""
        self._write("POST", "/batches", batch_body([item.payload for item in items]))
        self.contacts += len(items)
        for item in items:
            if item.tags:
                chunk = self._tag_chunks.add(item.tags, item.email)
                if chunk is not None:
                    self._write(
                        "POST", "/contacts/tags", {"tags": list(item.tags), "emails": chunk}
                    )
        self.sink.delivered_items(items)

    def in_flight(self, email: str) -> bool:
        del email
        return False

    def wait_idle(self) -> None:
        for tags, emails in self._tag_chunks.drain():
            self._write("POST", "/contacts/tags", {"tags": list(tags), "emails": emails})
        with self._lock:
            self._file.flush()

    def tagged_members(self, tag: str) -> Iterator[str]:
        return tagged_members(self.client, tag)

    def remove_tags(self, tag: str, emails: list[str]) -> None:
        for chunk in tag_calls(emails):
            self._write("DELETE", "/contacts/tags", {"tags": [tag], "emails": chunk})

    def add_tags(self, tag: str, emails: list[str]) -> None:
        for chunk in tag_calls(emails):
            self._write("POST", "/contacts/tags", {"tags": [tag], "emails": chunk})

    def segment_members(self, segment_id: str) -> Iterator[str]:
        return listed_emails(self.client, segmentID=segment_id)

    def set_property(self, name: str, emails: list[str], value: bool) -> int:
        items = property_items(name, emails, value, self.client.encode_contact)
        for start in range(0, len(items), BATCH_ITEMS):
            chunk = items[start : start + BATCH_ITEMS]
            self._write("POST", "/batches", batch_body([item.payload for item in chunk]))
        return len(items)

    def create_segment(self, body: dict[str, Any]) -> SavedSegment | None:
        self._write("POST", "/segments", body)
        return None

    def replace_segment(self, segment_id: str, body: dict[str, Any]) -> SavedSegment | None:
        self._write("PUT", f"/segments/{segment_id}", body)
        return None

    def cancel(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        self.wait_idle()
        with self._lock:
            self._file.close()
        self.client.close()

    def closing_line(self) -> str | None:
        return (
            f"Dry run: {self.contacts} contact(s) in {self.requests} request(s) written to "
            f"{self.path}; nothing was sent, no STATE was emitted and the fingerprint store "
            "is unchanged"
        )
