"""What differs between Omnisend API generations, and the wire shapes we read, in one place.

The rest of the target speaks the 2026-03-15 dialect; an `ApiGeneration` turns that into
the wire format of the configured generation and turns its errors back into one line.
Batch statuses, per-item results and pages are parsed here into small typed values, so
the delivery engine never reads raw keys (and a shape Omnisend changes is fixed here).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from target_omnisend.mapping import email_of
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
        """Query parameters (a cursor) or a full URL (`paging.next`, used by v5 and by
        the offset-paged batch list) for the next page; None on the last page or on
        anything that is not a usable paging object."""
        paging = payload.get("paging")
        if not isinstance(paging, dict):
            return None
        cursors = paging.get("cursors")
        after = cursors.get("after") if isinstance(cursors, dict) else None
        usable = isinstance(after, str | int) and not isinstance(after, bool) and after
        if self.name != "v5" and paging.get("hasMore") is True and usable:
            return {"after": str(after)}
        following = paging.get("next")
        return following if isinstance(following, str) and following else None


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


# -- saved segments (2026-03-15 only; v5 has no segments resource) ---------------------

#: Omnisend's limit on a segment's name.
MAX_SEGMENT_NAME = 256


def tag_segment_body(name: str, tag: str) -> dict[str, Any]:
    """POST/PUT body of the documented rule "contacts whose tags are any of [tag]": the
    segment follows the tag the target already maintains, mirror removals included."""
    flt = {"operator": "anyOf", "property": "tags", "value": [tag]}
    conditions = [{"entity": "contact", "junction": "and", "filters": [flt]}]
    return {"name": name, "conditionGroups": [{"conditions": conditions}]}


def is_tag_rule(condition_groups: Any, tag: str) -> bool:
    """Does a segment's rule select exactly the contacts tagged `tag`? Compared by meaning,
    not by text: Omnisend may echo a rule with fields added (ids, defaults) or omitted
    (`junction` of a single filter), which is not documented either way."""
    flt = _single_filter(condition_groups)
    if flt is None:
        return False
    value = flt.get("value")
    return (
        flt.get("operator") == "anyOf"
        and flt.get("property") == "tags"
        and isinstance(value, list)
        and set(value) == {tag}
    )


def property_segment_body(name: str, prop: str) -> dict[str, Any]:
    """POST/PUT body of the documented rule "custom property `prop` equals true" (2026-03-15
    Segments API: `property: "custom"` needs `name` and `valueType`)."""
    flt = {"operator": "equals", "property": "custom", "name": prop, "valueType": "bool"}
    conditions = [{"entity": "contact", "junction": "and", "filters": [{**flt, "value": True}]}]
    return {"name": name, "conditionGroups": [{"conditions": conditions}]}


def _single_filter(condition_groups: Any) -> dict[str, Any] | None:
    """The one filter of a rule made of one group, one condition, one filter, else None."""
    if not isinstance(condition_groups, list) or len(condition_groups) != 1:
        return None
    group = condition_groups[0]
    conditions = group.get("conditions") if isinstance(group, dict) else None
    if not isinstance(conditions, list) or len(conditions) != 1:
        return None
    condition = conditions[0]
    if not isinstance(condition, dict) or condition.get("entity", "contact") != "contact":
        return None
    filters = condition.get("filters")
    if not isinstance(filters, list) or len(filters) != 1 or not isinstance(filters[0], dict):
        return None
    return filters[0]


def is_property_rule(condition_groups: Any, prop: str) -> bool:
    """Does a segment's rule select exactly the contacts whose custom property `prop` is
    true? Compared by meaning, like `is_tag_rule`."""
    flt = _single_filter(condition_groups)
    return (
        flt is not None
        and flt.get("property") == "custom"
        and flt.get("name") == prop
        and flt.get("operator") == "equals"
        and flt.get("valueType", "bool") == "bool"
        and flt.get("value") is True
    )


def membership_property_body(email: str, prop: str, value: bool) -> dict[str, Any]:
    """A batch item that sets only a contact's membership property: false takes it out of
    the property segment (mirror's removal), true puts it back (mirror's repair). Nothing
    else (no `channels`, so the contact's subscription status is not touched), and never
    a welcome message (2026-03-15 sends one by default, were the contact new)."""
    identifier = {"type": "email", "id": email, "sendWelcomeMessage": False}
    return {"identifiers": [identifier], "customProperties": {prop: value}}


@dataclass(frozen=True)
class SavedSegment:
    """The fields of an Omnisend segment object the target decides on."""

    segment_id: str
    name: str
    condition_groups: Any
    status: str
    created_at: str

    @classmethod
    def from_wire(cls, payload: Any) -> SavedSegment | None:
        """None for anything without a `segmentID` (the id field is not `id`)."""
        if not isinstance(payload, dict) or not payload.get("segmentID"):
            return None
        return cls(
            segment_id=str(payload["segmentID"]),
            name=str(payload.get("name") or ""),
            condition_groups=payload.get("conditionGroups"),
            status=str(payload.get("status") or ""),
            created_at=str(payload.get("createdAt") or ""),
        )

    def follows(self, tag: str) -> bool:
        return is_tag_rule(self.condition_groups, tag)


FINAL_BATCH_STATES = frozenset({"finished", "stopped"})


def _count(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """What Omnisend says about one batch (`GET /batches/{id}` or an entry of the list)."""

    batch_id: str
    status: str
    total: int | None = None
    finished: int | None = None
    errors: int | None = None
    created_at: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_BATCH_STATES

    def all_written(self, size: int) -> bool:
        """Finished without errors *and* the counts add up for our `size` items: only
        then is every item known to be written without looking at items one by one."""
        return (
            self.status == "finished"
            and self.errors == 0
            and self.total == size
            and self.finished == size
        )


def parse_batch(raw: Any) -> BatchStatus | None:
    """A batch status, or None for an entry without a batch id."""
    if not isinstance(raw, dict) or not raw.get("batchID"):
        return None
    created = raw.get("createdAt")
    return BatchStatus(
        batch_id=str(raw["batchID"]),
        status=str(raw.get("status") or ""),
        total=_count(raw.get("totalCount")),
        finished=_count(raw.get("finishedCount")),
        errors=_count(raw.get("errorsCount")),
        created_at=str(created) if created else None,
    )


@dataclass(frozen=True, slots=True)
class BatchPage:
    """One page of `GET /batches`, and how to ask for the next one."""

    batches: list[BatchStatus]
    following: dict[str, str] | str | None
    #: Position of the first entry when the server pages by offset (documented), else None.
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of `GET /batches/{id}/items`, keyed by identity (never by position:
    the order of that list is not documented)."""

    email: str | None
    code: int | None
    response: Any


def parse_item(raw: Any) -> ItemResult:
    """The email comes from the echoed request or, when Omnisend does not echo it, from
    the contact in the response; without either, the item cannot be matched."""
    if not isinstance(raw, dict):
        return ItemResult(None, None, None)
    response = raw.get("response")
    email = email_of(raw.get("request")) or email_of(response)
    return ItemResult(
        email=email.strip().lower() if email else None,
        code=_count(raw.get("responseCode")) or None,
        response=response,
    )
