"""Dry run: the exact requests a run would send, written to a file instead.

Everything up to the wire happens for real (mapping, validation, diffing against the
fingerprint store), so the file and the summary show what a real run would do;
nothing that writes is sent and the store is not changed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from target_omnisend.api import ApiGeneration
from target_omnisend.client import batch_body
from target_omnisend.delivery import Item, TagChunks


class DryRunWriter:
    def __init__(self, path: str, generation: ApiGeneration) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.generation = generation
        self._file = self.path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self.contacts = 0
        self.requests = 0
        self._tag_chunks: TagChunks[str] = TagChunks()

    def _write(self, method: str, path: str, body: dict[str, Any] | str) -> None:
        """One planned request; `body` is an object, or JSON text already encoded."""
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        line = (
            f'{{"method":{json.dumps(method)},"path":{json.dumps(self.generation.prefix + path)},'
            f'"body":{text}}}'
        )
        with self._lock:
            self._file.write(line + "\n")
            self.requests += 1

    def batch(self, stream: str, items: list[Item]) -> None:
        """The batch exactly as it would be sent: the contacts' encoded wire JSON."""
        del stream  # one file for all streams; the bodies say who they are
        self._write("POST", "/batches", batch_body([item.payload for item in items]))
        self.contacts += len(items)
        for item in items:
            if item.tags:
                chunk = self._tag_chunks.add(item.tags, item.email)
                if chunk is not None:
                    self._write(
                        "POST", "/contacts/tags", {"tags": list(item.tags), "emails": chunk}
                    )

    def remove_tags(self, tags: list[str], emails: list[str]) -> None:
        self._write("DELETE", "/contacts/tags", {"tags": tags, "emails": emails})

    def close(self) -> None:
        for tags, emails in self._tag_chunks.drain():
            self._write("POST", "/contacts/tags", {"tags": list(tags), "emails": emails})
        with self._lock:
            self._file.close()
