"""The Segments resource (2026-03-15 only): saved segments and their statistics.

Faithful to /work/shared/omnisend-api.md "Segments": `segmentID` is 24 hex characters,
the list pages by cursors (`after`/`before`, `sort` createdAt|name, `direction`
desc|asc, `limit` 1 to 50, default 10) and has no name filter, PUT replaces the whole
segment, PUT/DELETE answer 409 while the segment is `building` (for `building_seconds`
after each write), names need not be unique, and statistics count the account's
contacts whose tags match the rule — as of `stats_lag_seconds` ago, since Omnisend's
count follows tag changes only after a while. Keys registered with scopes lacking
`segments.read`/`segments.write` get 403 problems.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from typing import Any

from .endpoints import NO_BODY, Call, Result
from .errors import ApiError, FieldError, validation_error
from .rules import SegmentWrite, matches, validate_segment
from .store import Account, Segment, Store
from .wire import int_param

SEGMENT_ID_RE = re.compile(r"[0-9a-f]{24}")
DEFAULT_SEGMENT_PAGE = 10
MAX_SEGMENT_PAGE = 50
SORTS = ("createdAt", "name")
DIRECTIONS = ("desc", "asc")
READ_SCOPE, WRITE_SCOPE = "segments.read", "segments.write"


def segment_status(segment: Segment, now: float | None = None) -> str:
    if segment.archived_at is not None:
        return "archived"
    now = time.monotonic() if now is None else now
    return "building" if now < segment.building_until else "ready"


def render_segment(segment: Segment) -> dict[str, Any]:
    return {
        "segmentID": segment.segment_id,
        "name": segment.name,
        "conditionGroups": json.loads(json.dumps(segment.condition_groups)),
        "status": segment_status(segment),
        "isStarred": segment.is_starred,
        "createdAt": segment.created_at,
        "updatedAt": segment.updated_at,
        "archivedAt": segment.archived_at,
    }


def tag_rule(tags: list[str]) -> list[dict[str, Any]]:
    """The documented rule for "contacts tagged any of `tags`"."""
    flt = {"operator": "anyOf", "property": "tags", "value": list(tags)}
    return [{"conditions": [{"entity": "contact", "junction": "and", "filters": [flt]}]}]


def _sort_key(segment: Segment, sort: str) -> tuple[str, int]:
    return (segment.name if sort == "name" else segment.created_at, segment.seq)


def _encode(key: tuple[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode(token: str, name: str) -> tuple[str, int]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        value, seq = raw
        if not isinstance(value, str) or not isinstance(seq, int):
            raise ValueError(raw)
        return value, seq
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise validation_error(
            [FieldError(name, "invalid_cursor", "Not a cursor returned by this API")],
            "Invalid paging cursor",
        ) from None


class SegmentService:
    """Handlers for /segments…; each takes a `Call` (see endpoints) and returns a Result."""

    def __init__(
        self,
        store: Store,
        building_seconds: float = 0.2,
        stats_lag_seconds: float = 0.0,
        scopes: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.store = store
        self.building_seconds = building_seconds
        self.stats_lag_seconds = stats_lag_seconds
        self.scopes = scopes or {}

    def _require(self, account: Account, scope: str) -> None:
        granted = self.scopes.get(account.key)
        if granted is not None and scope not in granted:
            raise ApiError(
                403,
                f"This API key lacks the '{scope}' scope; add it to the key in Omnisend",
                slug="forbidden",
            )

    def _segment(self, call: Call) -> Segment:
        segment_id = call.params["segment_id"]
        if not SEGMENT_ID_RE.fullmatch(segment_id):
            raise validation_error(
                [FieldError("segmentID", "invalid_format", "Must be 24 hexadecimal characters")]
            )
        segment = call.account.segments.get(segment_id)
        if segment is None:
            raise ApiError(404, f"Segment {segment_id} not found", slug="not-found")
        return segment

    def _writable(self, call: Call) -> Segment:
        segment = self._segment(call)
        if segment_status(segment) == "building":
            raise ApiError(
                409, "The segment is being built; try again in a moment", slug="conflict"
            )
        return segment

    # -- handlers ---------------------------------------------------------------------

    def list_segments(self, call: Call) -> Result:
        self._require(call.account, READ_SCOPE)
        q = call.query
        errors = []
        sort, direction = q.get("sort", "createdAt"), q.get("direction", "desc")
        if sort not in SORTS:
            errors.append(FieldError("sort", "invalid_value", f"One of {', '.join(SORTS)}"))
        if direction not in DIRECTIONS:
            errors.append(
                FieldError("direction", "invalid_value", f"One of {', '.join(DIRECTIONS)}")
            )
        if "after" in q and "before" in q:
            errors.append(FieldError("before", "conflict", "Give 'after' or 'before', not both"))
        if errors:
            raise validation_error(errors)
        limit = int_param(q, "limit", DEFAULT_SEGMENT_PAGE, 1, MAX_SEGMENT_PAGE)
        with self.store.lock:
            ordered = sorted(
                call.account.segments.values(),
                key=lambda s: _sort_key(s, sort),
                reverse=direction == "desc",
            )
            keys = [_sort_key(s, sort) for s in ordered]
            if "before" in q:
                mark = _decode(q["before"], "before")
                end = sum(1 for k in keys if (k > mark if direction == "desc" else k < mark))
                start = max(0, end - limit)
                more = start > 0
            else:
                start = 0
                if "after" in q:
                    mark = _decode(q["after"], "after")
                    start = sum(
                        1 for k in keys if (k >= mark if direction == "desc" else k <= mark)
                    )
                end = min(len(ordered), start + limit)
                more = end < len(ordered)
            page = ordered[start:end]
            paging = {
                "cursors": {
                    "after": _encode(keys[end - 1]) if page and end < len(ordered) else None,
                    "before": _encode(keys[start]) if page and start > 0 else None,
                },
                "hasMore": more,
                "limit": limit,
            }
            return 200, {"segments": [render_segment(s) for s in page], "paging": paging}

    def create_segment(self, call: Call) -> Result:
        self._require(call.account, WRITE_SCOPE)
        write: SegmentWrite = validate_segment(call.json())
        segment = self.store.add_segment(
            call.account,
            name=write.name,
            condition_groups=write.condition_groups,
            is_starred=bool(write.is_starred),
            building_seconds=self.building_seconds,
        )
        with self.store.lock:
            return 201, render_segment(segment)

    def get_segment(self, call: Call) -> Result:
        self._require(call.account, READ_SCOPE)
        with self.store.lock:
            return 200, render_segment(self._segment(call))

    def replace_segment(self, call: Call) -> Result:
        self._require(call.account, WRITE_SCOPE)
        write = validate_segment(call.json())
        with self.store.lock:
            segment = self.store.replace_segment(
                self._writable(call),
                name=write.name,
                condition_groups=write.condition_groups,
                is_starred=write.is_starred,
                building_seconds=self.building_seconds,
            )
            return 200, render_segment(segment)

    def delete_segment(self, call: Call) -> Result:
        self._require(call.account, WRITE_SCOPE)
        with self.store.lock:
            segment = self._writable(call)
            del call.account.segments[segment.segment_id]
        return 204, NO_BODY

    def statistics(self, call: Call) -> Result:
        self._require(call.account, READ_SCOPE)
        with self.store.lock:
            segment = self._segment(call)
            return 200, {"contactsCount": self.count_members(call.account, segment)}

    def count_members(self, account: Account, segment: Segment) -> int:
        """Members as Omnisend's statistics would show them now: `stats_lag_seconds` late."""
        at = time.monotonic() - self.stats_lag_seconds
        with self.store.lock:
            count = 0
            for contact_id in account.order:
                contact = account.contacts[contact_id]
                tags = self.store.tags_as_of(account, contact, at)
                props = contact.get("customProperties")  # as of now: no history kept
                if tags is not None and matches(segment.condition_groups, tags, props):
                    count += 1
            return count

    def routes(self) -> list[tuple[str, dict[str, Callable[[Call], Result]]]]:
        return [
            ("/segments", {"GET": self.list_segments, "POST": self.create_segment}),
            (
                "/segments/{segment_id}",
                {
                    "GET": self.get_segment,
                    "PUT": self.replace_segment,
                    "DELETE": self.delete_segment,
                },
            ),
            ("/segments/{segment_id}/statistics", {"GET": self.statistics}),
        ]
