"""The endpoints: contacts, tags and batches, for both generations (segments: segments.py).

Each handler takes a `Call` (who, which generation, what was sent) and returns a
`(status, payload)` pair or raises `ApiError`. Contact writes — direct or batch item —
all go through `write_contact`, so a batch item is validated, faulted and applied exactly
as POST /contacts would be.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec

from .errors import ApiError, FieldError, validation_error
from .faults import BATCH_KINDS, ITEM_KINDS, FaultBook
from .scheduler import Scheduler
from .store import (
    BATCH_ORDERS,
    BATCH_STATUSES,
    Account,
    Batch,
    BatchItem,
    Contact,
    Store,
    email_status,
    utc_now,
)
from .validation import STATUSES, is_email, validate_contact
from .wire import (
    DEFAULT_PAGE,
    MAX_PAGE,
    Generation,
    cursor_paging,
    decode_cursor,
    int_param,
    offset_paging,
    render_batch,
    render_contact,
    render_item,
)

ITEM_ORDERS = ("same", "reversed", "shuffled")
DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

MAX_BATCH_ITEMS = 100
MAX_TAG_TARGETS = 250
MAX_TAGS = 100
TAGS_FIELDS = frozenset(("tags", "emails", "contactIDs", "phones", "segmentID"))
BATCH_FIELDS = frozenset(("method", "endpoint", "items"))
NO_BODY = object()

Result = tuple[int, Any]


@dataclass
class Call:
    """One authenticated request, already split from its version root."""

    gen: Generation
    account: Account
    method: str
    path: str
    query: dict[str, str]
    raw_body: bytes
    base_url: str
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        if not self.raw_body.strip():
            raise validation_error([FieldError("", "required", "A JSON body is required")])
        try:
            return _DECODER.decode(self.raw_body)
        except msgspec.DecodeError:
            pass  # NaN and friends, or not JSON: the stock parser decides, as before
        try:
            return json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "The request body is not valid JSON", slug="invalid-json") from None


_DECODER = msgspec.json.Decoder()  # several times faster than json.loads on a batch


class Service:
    """Endpoint logic on top of the store; owns the asynchronous parts (batches, tags).

    `batch_list_order` is the order of GET /batches (store.BATCH_ORDERS), `items_order`
    that of /batches/{id}/items (ITEM_ORDERS), `batch_list_paging` whether GET /batches
    answers with its paging object, and `echo_item_request` whether an item
    carries the `request` it was made from (without it, only identity can match results).
    `inconsistent_batches` is the share of batches that get the `batch_short` fault,
    evenly spread (0.2: every 5th batch), so a short run meets them too.
    """

    def __init__(
        self,
        store: Store,
        faults: FaultBook,
        scheduler: Scheduler,
        batch_delay: float,
        batch_list_order: str = "newest_first",
        items_order: str = "same",
        echo_item_request: bool = True,
        inconsistent_batches: float = 0.0,
        batch_list_paging: bool = True,
    ) -> None:
        if batch_list_order not in BATCH_ORDERS:
            raise ValueError(f"batch_list_order must be one of {BATCH_ORDERS}")
        if items_order not in ITEM_ORDERS:
            raise ValueError(f"items_order must be one of {ITEM_ORDERS}")
        self.store = store
        self.faults = faults
        self.scheduler = scheduler
        self.batch_delay = batch_delay
        self.batch_list_order = batch_list_order
        self.items_order = items_order
        self.echo_item_request = echo_item_request
        self.batch_list_paging = batch_list_paging
        self.inconsistent_batches = inconsistent_batches
        self._batches_created = 0

    # -- contacts ---------------------------------------------------------------------

    def write_contact(
        self, account: Account, body: Any, gen: Generation, method: str, path: str
    ) -> tuple[int, Contact]:
        """Upsert one contact body: 201 when new, 200 when it updated an existing one."""
        write = validate_contact(body, stamp_key=gen.stamp_key, partial=False)
        email = write.email.id if write.email else None
        rule = self.faults.match(ITEM_KINDS, method, path, email)
        if rule is not None:
            raise ApiError(
                rule.effective_status,
                rule.body
                if isinstance(rule.body, str)
                else "Omnisend refused this contact (injected item_error)",
                slug="item-error",
            )
        with self.store.lock:
            before = self.store.by_email(account, email) if email else None
            was_subscribed = before is not None and email_status(before) == "subscribed"
            contact, created = self.store.upsert(account, write)
            welcome = write.email.send_welcome_message if write.email else None
            if welcome is None:
                welcome = not gen.is_v5  # the documented defaults differ by generation
            if welcome and not was_subscribed and email_status(contact) == "subscribed":
                account.welcomed.append(email or "")
        return (201 if created else 200), contact

    def post_contact(self, call: Call) -> Result:
        status, contact = self.write_contact(
            call.account, call.json(), call.gen, call.method, call.path
        )
        with self.store.lock:
            rendered = render_contact(contact, call.gen)
        return (200 if call.gen.is_v5 else status), rendered

    def _find(self, call: Call) -> Contact:
        if "id" in call.params:
            contact = self.store.get(call.account, call.params["id"])
        elif "email" in call.query:
            contact = self.store.by_email(call.account, call.query["email"])
        else:
            raise validation_error(
                [FieldError("email", "required", "Give ?email= or a contact id in the path")]
            )
        if contact is None:
            raise ApiError(404, "Contact not found", slug="contact-not-found")
        return contact

    def get_contact(self, call: Call) -> Result:
        with self.store.lock:
            return 200, render_contact(self._find(call), call.gen)

    def patch_contact(self, call: Call) -> Result:
        write = validate_contact(call.json(), stamp_key=call.gen.stamp_key, partial=True)
        with self.store.lock:
            contact = self.store.patch(call.account, self._find(call), write)
            return 200, render_contact(contact, call.gen)

    def list_contacts(self, call: Call) -> Result:
        q = call.query
        if "tag" in q and "status" in q:
            raise validation_error(
                [FieldError("tag", "conflict", "'tag' cannot be combined with 'status'")]
            )
        if "status" in q and q["status"] not in STATUSES:
            raise validation_error(
                [FieldError("status", "invalid_value", f"Must be one of {', '.join(STATUSES)}")]
            )
        limit = int_param(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        filters = {
            "email": q.get("email"),
            "tag": q.get("tag"),
            "status": q.get("status"),
            "segment_id": q.get("segmentID"),
        }
        with self.store.lock:
            if call.gen.is_v5:
                offset = int_param(q, "offset", 0, 0, 10**9)
                found = self.store.iter_contacts(call.account, **filters)
                page = _take(found, offset, limit + 1)
                contacts = [render_contact(c, call.gen) for _, c in page[:limit]]
                paging = offset_paging(
                    call.base_url, "/v5/contacts", _without(q), offset, limit, len(page) > limit
                )
                return 200, {"contacts": contacts, "paging": paging}
            start = decode_cursor(q["after"]) if "after" in q else 0
            page = _take(
                self.store.iter_contacts(call.account, start=start, **filters), 0, limit + 1
            )
            contacts = [render_contact(c, call.gen) for _, c in page[:limit]]
            following = page[limit][0] if len(page) > limit else None
            return 200, {"contacts": contacts, "paging": cursor_paging(following)}

    # -- tags (2026-03-15 only) ---------------------------------------------------------

    def change_tags(self, call: Call) -> Result:
        """202 Accepted; applied by the worker after `batch_delay`, like Omnisend's queue."""
        body = call.json()
        if not isinstance(body, dict):
            raise validation_error([FieldError("", "invalid_type", "Body must be a JSON object")])
        errors = [
            FieldError(k, "unknown_field", "Unknown field") for k in body if k not in TAGS_FIELDS
        ]
        tags = body.get("tags")
        if not isinstance(tags, list) or not 1 <= len(tags) <= MAX_TAGS:
            errors.append(FieldError("tags", "invalid_value", f"Give 1 to {MAX_TAGS} tags"))
            tags = []
        errors += [
            FieldError(f"tags[{i}]", "invalid_value", "Must be a non-empty string")
            for i, t in enumerate(tags)
            if not isinstance(t, str) or not t.strip()
        ]
        selectors = [k for k in ("emails", "contactIDs", "phones", "segmentID") if k in body]
        if len(selectors) != 1:
            errors.append(
                FieldError(
                    "emails",
                    "invalid_value",
                    "Give exactly one of emails, contactIDs, phones or segmentID",
                )
            )
        targets: dict[str, list[str]] = {"emails": [], "contactIDs": [], "phones": []}
        for key in selectors:
            value = body[key]
            if key == "segmentID":
                if not isinstance(value, str) or not value:
                    errors.append(FieldError(key, "invalid_type", "Must be a string"))
                continue  # resolved when applied: the segment's members at that moment
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_TAG_TARGETS:
                errors.append(
                    FieldError(key, "invalid_value", f"Give 1 to {MAX_TAG_TARGETS} values")
                )
                continue
            for i, item in enumerate(value):
                if not isinstance(item, str) or (key == "emails" and not is_email(item)):
                    errors.append(FieldError(f"{key}[{i}]", "invalid_value", "Invalid value"))
            targets[key] = [v for v in value if isinstance(v, str)]
        if errors:
            raise validation_error(errors)
        account, add = call.account, call.method == "POST"

        segment_id = body.get("segmentID") if isinstance(body.get("segmentID"), str) else None

        def apply() -> None:
            ids = self.store.resolve(
                account,
                emails=targets["emails"],
                contact_ids=targets["contactIDs"],
                phones=targets["phones"],
            )
            if segment_id is not None:
                with self.store.lock:
                    ids = [
                        c["id"] for _, c in self.store.iter_contacts(account, segment_id=segment_id)
                    ]
            self.store.change_tags(account, list(dict.fromkeys(tags)), ids, add=add)

        self.scheduler.call_later(self.batch_delay, apply)
        return 202, NO_BODY

    # -- batches ----------------------------------------------------------------------

    def create_batch(self, call: Call) -> Result:
        body = call.json()
        if not isinstance(body, dict):
            raise validation_error([FieldError("", "invalid_type", "Body must be a JSON object")])
        errors = [
            FieldError(k, "unknown_field", "Unknown field") for k in body if k not in BATCH_FIELDS
        ]
        if body.get("method") != "POST":
            errors.append(FieldError("method", "invalid_value", "Only 'POST' is supported"))
        if body.get("endpoint") != "contacts":
            errors.append(FieldError("endpoint", "invalid_value", "Only 'contacts' is supported"))
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
            errors.append(
                FieldError("items", "invalid_value", f"Give 1 to {MAX_BATCH_ITEMS} items")
            )
            items = []
        errors += [
            FieldError(f"items[{i}]", "invalid_type", "Each item must be a JSON object")
            for i, item in enumerate(items)
            if not isinstance(item, dict)
        ]
        if errors:
            raise validation_error(errors)
        rule = self.faults.match(BATCH_KINDS, call.method, call.path)
        batch = self.store.add_batch(
            call.account,
            method="POST",
            endpoint="contacts",
            generation=call.gen.name,
            items=items,
            fault=rule.kind if rule else self._inconsistent_fault(),
        )
        with self.store.lock:
            rendered = render_batch(batch)
        self.scheduler.call_later(self.batch_delay / 2, lambda: self._start(batch))
        account, gen = call.account, call.gen
        self.scheduler.call_later(self.batch_delay, lambda: self._process(account, gen, batch))
        return 200, rendered

    def _inconsistent_fault(self) -> str | None:
        with self.store.lock:
            self._batches_created += 1
            n, share = self._batches_created, self.inconsistent_batches
        return "batch_short" if int(n * share) > int((n - 1) * share) else None

    def _start(self, batch: Batch) -> None:
        with self.store.lock:
            if batch.status == "pending":
                batch.status = "inProgress"
                batch.started_at = utc_now()

    def _process(self, account: Account, gen: Generation, batch: Batch) -> None:
        """Apply the items in order. Faults: `batch_stopped` ends after half the items,
        `batch_stuck` never ends, `batch_short` silently skips the last item yet reports
        `finished` with no errors (so finishedCount < totalCount)."""
        self._start(batch)
        if batch.fault == "batch_stuck":
            return
        stop_at = len(batch.items)
        if batch.fault == "batch_stopped":
            stop_at = len(batch.items) // 2
        elif batch.fault == "batch_short":
            stop_at = len(batch.items) - 1
        for item in batch.items[:stop_at]:
            try:
                code, contact = self.write_contact(account, item.request, gen, "POST", "/batches")
            except ApiError as error:
                with self.store.lock:
                    item.status, item.response_code, item.error = "failed", error.status, error
            else:
                with self.store.lock:
                    item.status, item.response_code = "finished", code
                    item.contact_id = contact["id"]
        with self.store.lock:
            for item in batch.items[stop_at:]:
                item.status = "pending" if batch.fault == "batch_short" else "stopped"
            if batch.fault == "batch_stopped":
                batch.status = "stopped"
                batch.errors.append(
                    {"message": "Batch stopped: too many errors; remaining items not processed"}
                )
            else:
                batch.status = "finished"
            batch.ended_at = utc_now()

    def _batch(self, call: Call) -> Batch:
        batch = call.account.batch_by_id.get(call.params["batch_id"])
        if batch is None:
            raise ApiError(404, "Batch not found", slug="batch-not-found")
        return batch

    def get_batch(self, call: Call) -> Result:
        with self.store.lock:
            return 200, render_batch(self._batch(call))

    def _items_in_order(self, batch: Batch) -> list[BatchItem]:
        if self.items_order == "reversed":
            return batch.items[::-1]
        if self.items_order == "shuffled":  # stable per batch, so pages never overlap

            def key(item: BatchItem) -> bytes:
                text = f"{self.store.seed}:{item.item_id}".encode()
                return hashlib.blake2b(text, digest_size=8).digest()

            return sorted(batch.items, key=key)
        return batch.items

    def batch_items(self, call: Call) -> Result:
        q = call.query
        limit = int_param(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        with self.store.lock:
            batch = self._batch(call)
            items = self._items_in_order(batch)
            instance = f"{call.gen.root}/contacts"

            def render(item: BatchItem) -> Any:
                contact = call.account.contacts.get(item.contact_id or "")
                rendered = render_item(item, contact, call.gen, instance)
                if not self.echo_item_request:
                    del rendered["request"]
                return rendered

            if call.gen.is_v5:
                offset = int_param(q, "offset", 0, 0, 10**9)
                chunk = items[offset : offset + limit]
                more = offset + limit < len(items)
                path = f"/v5/batches/{batch.batch_id}/items"
                paging = offset_paging(call.base_url, path, _without(q), offset, limit, more)
                return 200, {"items": [render(i) for i in chunk], "paging": paging}
            start = decode_cursor(q["after"]) if "after" in q else 0
            chunk = items[start : start + limit]
            more = start + limit < len(items)
            paging = cursor_paging(start + limit if more else None)
            return 200, {"items": [render(i) for i in chunk], "paging": paging}

    def list_batches(self, call: Call) -> Result:
        """Documented filters, offset paging, and the order the server was told to use."""
        q = call.query
        errors = []
        if not q.get("endpoint"):
            errors.append(FieldError("endpoint", "required", "Give the endpoint, e.g. 'contacts'"))
        if "status" in q and q["status"] not in BATCH_STATUSES:
            errors.append(
                FieldError("status", "invalid_value", f"Must be one of {', '.join(BATCH_STATUSES)}")
            )
        days = {name: q.get(name) for name in ("dateFrom", "dateTo")}
        for name, value in days.items():
            if value is not None and not _is_day(value):
                errors.append(FieldError(name, "invalid_format", "Must be a date as yyyy-mm-dd"))
        if errors:
            raise validation_error(errors)
        if days["dateFrom"] and days["dateTo"] and days["dateFrom"] > days["dateTo"]:
            raise validation_error(
                [FieldError("dateTo", "invalid_value", "Must not be before dateFrom")]
            )
        limit = int_param(q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        offset = int_param(q, "offset", 0, 0, 10**9)
        with self.store.lock:
            found = self.store.iter_batches(
                call.account,
                order=self.batch_list_order,
                endpoint=q["endpoint"],
                status=q.get("status"),
                date_from=days["dateFrom"],
                date_to=days["dateTo"],
            )
            page = _take(found, offset, limit + 1)
            paging = offset_paging(
                call.base_url,
                f"{call.gen.root}/batches",
                _without(q),
                offset,
                limit,
                len(page) > limit,
            )
            body: dict[str, Any] = {"batches": [render_batch(b) for b in page[:limit]]}
            if self.batch_list_paging:
                body["paging"] = paging
            return 200, body

    def routes(self) -> list[tuple[str, dict[str, Callable[[Call], Result]]]]:
        """Path patterns (relative to the version root) and their methods."""
        return [
            (
                "/contacts",
                {"GET": self.list_contacts, "POST": self.post_contact, "PATCH": self.patch_contact},
            ),
            ("/contacts/tags", {"POST": self.change_tags, "DELETE": self.change_tags}),
            ("/contacts/{id}", {"GET": self.get_contact, "PATCH": self.patch_contact}),
            ("/batches", {"GET": self.list_batches, "POST": self.create_batch}),
            ("/batches/{batch_id}", {"GET": self.get_batch}),
            ("/batches/{batch_id}/items", {"GET": self.batch_items}),
        ]


def _is_day(text: str) -> bool:
    if not DAY_RE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _take(found: Any, skip: int, count: int) -> list[Any]:
    out: list[Any] = []
    for index, entry in enumerate(found):
        if index < skip:
            continue
        out.append(entry)
        if len(out) >= count:
            break
    return out


def _without(query: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if k not in ("limit", "offset")}
