"""What differs between Omnisend API generations, in one place.

The rest of the target speaks the 2026-03-15 dialect; an `ApiGeneration` turns that into
the wire format of the configured generation and turns its errors back into one line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from target_omnisend.privacy import mask_server_text

DEFAULT_API_URL = "https://api.omnisend.com"
LATEST_VERSION = "2026-03-15"


@dataclass(frozen=True)
class ApiGeneration:
    """Auth, paths, ids, paging and error format of one API generation."""

    name: str
    prefix: str
    id_field: str
    status_date_field: str
    #: v5 has no tags endpoint, and tags in a contact body replace the contact's tags.
    has_tags_endpoint: bool = True

    def auth_headers(self, api_key: str) -> dict[str, str]:
        if self.name == "v5":
            return {"X-API-KEY": api_key}
        return {"Authorization": f"Omnisend-API-Key {api_key}", "Omnisend-Version": self.name}

    def contact_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """Bodies are built for 2026-03-15; v5 names the status timestamp `statusDate`."""
        if self.status_date_field == "statusChangedAt":
            return body
        adapted = copy.deepcopy(body)
        for identifier in adapted.get("identifiers", []):
            for channel in identifier.get("channels", {}).values():
                if "statusChangedAt" in channel:
                    channel[self.status_date_field] = channel.pop("statusChangedAt")
        return adapted

    def next_page(self, payload: dict[str, Any]) -> dict[str, str] | str | None:
        """Query parameters (2026-03-15 cursor) or a full URL (v5) for the next page."""
        paging = payload.get("paging")
        if not isinstance(paging, dict):
            return None
        if self.name == "v5":
            following = paging.get("next")
            return following if isinstance(following, str) and following else None
        cursors = paging.get("cursors")
        after = cursors.get("after") if isinstance(cursors, dict) else None
        if paging.get("hasMore") is True and isinstance(after, str | int) and after:
            return {"after": str(after)}
        return None


GENERATIONS: dict[str, ApiGeneration] = {
    LATEST_VERSION: ApiGeneration(LATEST_VERSION, "/api", "id", "statusChangedAt"),
    "v5": ApiGeneration("v5", "/v5", "contactID", "statusDate", has_tags_endpoint=False),
}


def problem_summary(payload: Any, status: int) -> str:
    """One line from an RFC 9457 problem or a v5 `{error, fields}` body. Field messages are
    kept (they say what to fix), but this text is the server's: it goes through
    `mask_server_text` (emails and quoted values masked, one bounded line) because it is
    logged and written to the rejected file, and a server may echo what it refused."""
    if not isinstance(payload, dict):
        return f"HTTP {status}"
    parts: list[str] = []
    head = payload.get("detail") or payload.get("title") or payload.get("error")
    if head:
        parts.append(str(head))
    errors = payload.get("errors")
    for error in errors if isinstance(errors, list) else ():
        if isinstance(error, dict):
            field = error.get("field")
            message = error.get("message") or error.get("code") or "invalid"
            parts.append(f"{field}: {message}" if field else str(message))
    fields = payload.get("fields")
    if isinstance(fields, dict):
        for field, messages in fields.items():
            text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            parts.append(f"{field}: {text}")
    return mask_server_text(" — ".join(parts)) if parts else f"HTTP {status}"
