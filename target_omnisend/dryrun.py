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
from target_omnisend.delivery import TAG_CHUNK, Item


class DryRunWriter:
    def __init__(self, path: str, generation: ApiGeneration) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.generation = generation
        self._file = self.path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self.contacts = 0
        self.requests = 0
        self._tag_buffers: dict[tuple[str, ...], list[str]] = {}

    def _write(self, method: str, path: str, body: dict[str, Any]) -> None:
        line = json.dumps(
            {"method": method, "path": self.generation.prefix + path, "body": body},
            ensure_ascii=False,
            default=str,
        )
        with self._lock:
            self._file.write(line + "\n")
            self.requests += 1

    def batch(self, stream: str, items: list[Item]) -> None:
        del stream  # one file for all streams; the bodies say who they are
        body = {
            "method": "POST",
            "endpoint": "contacts",
            "items": [self.generation.contact_body(item.body) for item in items],
        }
        self._write("POST", "/batches", body)
        self.contacts += len(items)
        for item in items:
            if item.tags:
                buffer = self._tag_buffers.setdefault(item.tags, [])
                buffer.append(item.email)
                if len(buffer) >= TAG_CHUNK:
                    self._write(
                        "POST", "/contacts/tags", {"tags": list(item.tags), "emails": buffer}
                    )
                    self._tag_buffers[item.tags] = []

    def remove_tags(self, tags: list[str], emails: list[str]) -> None:
        self._write("DELETE", "/contacts/tags", {"tags": tags, "emails": emails})

    def close(self) -> None:
        for tags, emails in self._tag_buffers.items():
            if emails:
                self._write("POST", "/contacts/tags", {"tags": list(tags), "emails": emails})
        self._tag_buffers.clear()
        with self._lock:
            self._file.close()
