"""In-memory accounts: contacts, batches and saved segments, with Omnisend's merge rules.

Pure data logic — no HTTP, no threads of its own, no fault injection. Contacts are kept
in the 2026-03-15 shape (`id`, `statusChangedAt`); the wire layer renames for v5.
Creation order is an append-only list, so a page cursor is just a position in it.
Batches are appended in creation order too; `iter_batches` lists them in the order the
server was told to use (Omnisend documents none). With `tag_history_seconds` > 0 each
contact's tag changes are remembered that long, so segment statistics can lag behind.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import ApiError, FieldError, validation_error
from .rules import matches
from .validation import CHANNEL_OF, ContactWrite, IdentifierWrite, format_timestamp, parse_timestamp

Contact = dict[str, Any]
BATCH_STATUSES = ("pending", "inProgress", "finished", "stopped")
BATCH_ORDERS = ("newest_first", "oldest_first", "unordered")


class IdFactory:
    """ObjectId-like 24-hex ids: seconds, 5 seeded random bytes, a counter (never repeats)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._counter = 0
        self._lock = threading.Lock()

    def __call__(self, at: float | None = None) -> str:
        """A new id; `at` (Unix seconds) back-dates it, as for a batch created earlier."""
        with self._lock:
            self._counter = (self._counter + 1) % 0x1000000
            stamp = int(time.time() if at is None else at) & 0xFFFFFFFF
            return f"{stamp:08x}{self._rng.getrandbits(40):010x}{self._counter:06x}"


_now_cache: tuple[int, str] = (-1, "")


def utc_at(millis: int) -> str:
    seconds, fraction = divmod(millis, 1000)
    moment = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=fraction * 1000)
    return format_timestamp(moment)


def utc_now() -> str:
    """Millisecond timestamps; a batch writes many contacts within one millisecond, so
    the text is formatted once per millisecond (a fifth of the server's CPU otherwise)."""
    global _now_cache
    millis = time.time_ns() // 1_000_000
    cached = _now_cache
    if cached[0] == millis:
        return cached[1]
    text = utc_at(millis)
    _now_cache = (millis, text)
    return text


@dataclass
class BatchItem:
    """One item of a batch; `error` or `contact_id` is set once processed."""

    item_id: str
    request: Any
    status: str = "pending"  # pending | finished | failed | stopped
    response_code: int | None = None
    contact_id: str | None = None
    error: ApiError | None = None


@dataclass
class Batch:
    batch_id: str
    seq: int
    method: str
    endpoint: str
    generation: str
    created_at: str
    items: list[BatchItem]
    status: str = "pending"
    started_at: str | None = None
    ended_at: str | None = None
    fault: str | None = None  # a BATCH_KINDS fault ("batch_stopped", …) that marked it
    errors: list[dict[str, Any]] = field(default_factory=list)
    order_key: str = ""  # position in the "unordered" listing: a seeded hash of the id
    foreign: bool = False  # created by another integration of the brand, not through HTTP

    @property
    def finished_count(self) -> int:
        return sum(1 for i in self.items if i.status in ("finished", "failed"))

    @property
    def errors_count(self) -> int:
        return sum(1 for i in self.items if i.status == "failed")

    @property
    def created_day(self) -> str:
        return self.created_at[:10]


@dataclass
class Segment:
    """A saved segment; `status` is computed by the caller from `building_until`."""

    segment_id: str
    seq: int
    name: str
    condition_groups: list[Any]
    created_at: str
    updated_at: str
    is_starred: bool = False
    archived_at: str | None = None
    building_until: float = 0.0  # time.monotonic() before which it is still "building"


@dataclass
class Account:
    """Everything one API key owns."""

    key: str
    contacts: dict[str, Contact] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    by_email: dict[str, str] = field(default_factory=dict)
    by_phone: dict[str, str] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)
    batch_by_id: dict[str, Batch] = field(default_factory=dict)
    batches_hashed: list[tuple[str, int]] = field(default_factory=list)  # (order_key, seq)
    welcomed: list[str] = field(default_factory=list)  # emails a welcome message went to
    segments: dict[str, Segment] = field(default_factory=dict)  # creation order
    segment_seq: int = 0
    # contact id -> [(time.monotonic(), tags)], oldest first; only with tag history on
    tag_history: dict[str, list[tuple[float, tuple[str, ...]]]] = field(default_factory=dict)


def identifier(contact: Contact, kind: str) -> dict[str, Any] | None:
    return next((i for i in contact["identifiers"] if i["type"] == kind), None)


def email_status(contact: Contact) -> str | None:
    ident = identifier(contact, "email")
    return ident["channels"]["email"]["status"] if ident else None


#: Who wins when a status write carries the same `statusChangedAt` as the held status
#: (Omnisend documents only that an older timestamp leaves the status alone).
STATUS_TIES = ("later_wins", "held_wins")
#: Whether `customProperties` in an update merges with the contact's others or replaces them.
CUSTOM_PROPERTIES_UPDATES = ("merge", "replace")


class Store:
    """Accounts keyed by API key. Callers hold `lock` around anything that must be atomic."""

    def __init__(
        self,
        api_keys: tuple[str, ...],
        seed: int = 0,
        tag_history_seconds: float = 0.0,
        status_ties: str = "later_wins",
        custom_properties_update: str = "merge",
    ) -> None:
        if status_ties not in STATUS_TIES:
            raise ValueError(f"status_ties must be one of {STATUS_TIES}")
        if custom_properties_update not in CUSTOM_PROPERTIES_UPDATES:
            raise ValueError(f"custom_properties_update must be one of {CUSTOM_PROPERTIES_UPDATES}")
        #: Omnisend does not document whether `customProperties` in an update merges
        #: with the contact's other properties or replaces them all: both, by knob.
        self.custom_properties_update = custom_properties_update
        self.lock = threading.RLock()
        self.status_ties = status_ties
        self.new_id: Callable[..., str] = IdFactory(seed)
        self.accounts = {key: Account(key) for key in api_keys}
        self.seed = seed
        self.tag_history_seconds = tag_history_seconds

    def reset(self) -> None:
        with self.lock:
            self.accounts = {key: Account(key) for key in self.accounts}

    # -- contacts -------------------------------------------------------------------

    def upsert(self, account: Account, write: ContactWrite) -> tuple[Contact, bool]:
        """POST /contacts: find by exact email (else phone), create if absent."""
        with self.lock:
            key = write.email or write.phone
            assert key is not None  # validation requires one
            index = account.by_email if key.type == "email" else account.by_phone
            contact_id = index.get(key.id)
            created = contact_id is None
            now = utc_now()
            if created:
                contact_id = self.new_id()
                contact = {"id": contact_id, "identifiers": [], "createdAt": now}
                account.contacts[contact_id] = contact
                account.position[contact_id] = len(account.order)
                account.order.append(contact_id)
            contact = account.contacts[contact_id]
            self._apply(account, contact, write, now)
            return contact, created

    def patch(self, account: Account, contact: Contact, write: ContactWrite) -> Contact:
        """PATCH: only sent fields change; the email identifier cannot change."""
        with self.lock:
            if write.email is not None:
                current = identifier(contact, "email")
                if current is None or current["id"] != write.email.id:
                    raise validation_error(
                        [
                            FieldError(
                                f"identifiers[{write.email.index}].id",
                                "immutable",
                                "The email of an existing contact cannot be changed",
                            )
                        ]
                    )
            self._apply(account, contact, write, utc_now())
            return contact

    def _apply(self, account: Account, contact: Contact, write: ContactWrite, now: str) -> None:
        if write.email is not None:
            self._set_identifier(account, contact, write.email, now)
        if write.phone is not None:
            owner = account.by_phone.get(write.phone.id)
            if owner is None or owner == contact["id"]:  # someone else's phone is ignored
                self._set_identifier(account, contact, write.phone, now)
        for name, value in write.fields.items():
            if value is None:
                contact.pop(name, None)
            else:
                contact[name] = value
        if self.custom_properties_update == "replace" and write.custom_properties is not None:
            contact["customProperties"] = {}  # the undocumented other reading: replace all
        props = contact.setdefault("customProperties", {})
        for name, value in (write.custom_properties or {}).items():
            if value is None:
                props.pop(name, None)
            else:
                props[name] = value
        before = contact.get("tags")
        if write.tags is not None:
            contact["tags"] = list(write.tags)  # a body `tags` replaces
        contact.setdefault("tags", [])
        contact["updatedAt"] = now
        if before != contact["tags"]:
            self._remember_tags(account, contact)

    def _remember_tags(self, account: Account, contact: Contact) -> None:
        """Keep what a lagging statistics read needs: the entries of the last
        `tag_history_seconds` and the one in force just before them."""
        if self.tag_history_seconds <= 0:
            return
        now = time.monotonic()
        history = account.tag_history.setdefault(contact["id"], [])
        history.append((now, tuple(contact["tags"])))
        horizon = now - self.tag_history_seconds
        while len(history) > 1 and history[1][0] <= horizon:
            history.pop(0)

    def tags_as_of(self, account: Account, contact: Contact, at: float) -> tuple[str, ...] | None:
        """The contact's tags at monotonic time `at`; None if it did not exist yet."""
        history = account.tag_history.get(contact["id"])
        if self.tag_history_seconds <= 0 or not history:
            return tuple(contact["tags"])
        found: tuple[str, ...] | None = None
        for moment, tags in history:
            if moment > at:
                break
            found = tags
        return found

    def _set_identifier(
        self, account: Account, contact: Contact, write: IdentifierWrite, now: str
    ) -> None:
        channel_name = CHANNEL_OF[write.type]
        index = account.by_email if write.type == "email" else account.by_phone
        entry = identifier(contact, write.type)
        if entry is not None and entry["id"] != write.id:  # a new phone replaces the old one
            contact["identifiers"].remove(entry)
            index.pop(entry["id"], None)
            entry = None
        if entry is None:
            entry = {
                "type": write.type,
                "id": write.id,
                "channels": {
                    channel_name: {
                        "status": write.status or "nonSubscribed",
                        "statusChangedAt": write.changed_at or now,
                    }
                },
            }
            contact["identifiers"].append(entry)
            contact["identifiers"].sort(key=lambda i: i["type"] != "email")
            index[write.id] = contact["id"]
        elif write.status is not None:
            channel = entry["channels"][channel_name]
            stamp = write.changed_at or now
            new, held = parse_timestamp(stamp), parse_timestamp(channel["statusChangedAt"])
            # Documented: the latest timestamp wins. Not documented: a tie (the knob).
            if new > held or (new == held and self.status_ties == "later_wins"):
                channel["status"] = write.status
                channel["statusChangedAt"] = stamp
        if write.consent is not None:
            entry["consent"] = write.consent

    def get(self, account: Account, contact_id: str) -> Contact | None:
        return account.contacts.get(contact_id)

    def by_email(self, account: Account, email: str) -> Contact | None:
        contact_id = account.by_email.get(email)
        return account.contacts[contact_id] if contact_id else None

    def iter_contacts(
        self,
        account: Account,
        *,
        email: str | None = None,
        tag: str | None = None,
        status: str | None = None,
        segment_id: str | None = None,
        start: int = 0,
    ) -> Iterator[tuple[int, Contact]]:
        """Matching contacts in creation order from position `start`, with positions.

        `segment_id` selects the members of a saved segment by their current tags (an
        unknown segment matches nothing). Hold `lock` while consuming it.
        """
        segment = account.segments.get(segment_id) if segment_id is not None else None
        if segment_id is not None and segment is None:
            return
        if email is not None:
            contact = self.by_email(account, email)
            if contact is not None:
                seq = account.position[contact["id"]]
                wanted = (
                    (tag is None or tag in contact["tags"])
                    and (status is None or email_status(contact) == status)
                    and (segment is None or self._member(segment, contact))
                )
                if seq >= start and wanted:
                    yield seq, contact
            return
        for seq in range(start, len(account.order)):
            contact = account.contacts[account.order[seq]]
            if tag is not None and tag not in contact["tags"]:
                continue
            if segment is not None and not self._member(segment, contact):
                continue
            if status is not None and email_status(contact) != status:
                continue
            yield seq, contact

    @staticmethod
    def _member(segment: Any, contact: Contact) -> bool:
        return matches(segment.condition_groups, contact["tags"], contact.get("customProperties"))

    def change_tags(
        self, account: Account, tags: list[str], contact_ids: list[str], *, add: bool
    ) -> int:
        """Add (no duplicates) or remove tags; returns how many contacts changed."""
        changed = 0
        with self.lock:
            now = utc_now()
            for contact_id in contact_ids:
                contact = account.contacts.get(contact_id)
                if contact is None:
                    continue
                before = list(contact["tags"])
                if add:
                    contact["tags"] += [t for t in tags if t not in contact["tags"]]
                else:
                    contact["tags"] = [t for t in contact["tags"] if t not in tags]
                if contact["tags"] != before:
                    contact["updatedAt"] = now
                    changed += 1
                    self._remember_tags(account, contact)
        return changed

    def resolve(
        self, account: Account, *, emails: list[str], contact_ids: list[str], phones: list[str]
    ) -> list[str]:
        """Contact ids for a tags request; unknown emails/ids/phones are silently skipped."""
        with self.lock:
            found = [account.by_email.get(e) for e in emails]
            found += [c if c in account.contacts else None for c in contact_ids]
            found += [account.by_phone.get(p) for p in phones]
            return list(dict.fromkeys(c for c in found if c))

    # -- batches --------------------------------------------------------------------

    def add_batch(
        self,
        account: Account,
        *,
        method: str,
        endpoint: str,
        generation: str,
        items: list[Any],
        fault: str | None,
        created: float | None = None,
        foreign: bool = False,
    ) -> Batch:
        """Append a batch; `created` (Unix seconds) back-dates it (foreign batches made
        earlier today). Callers add batches in creation order."""
        with self.lock:
            batch_id = self.new_id(created)
            digest = hashlib.blake2b(f"{self.seed}:{batch_id}".encode(), digest_size=8)
            batch = Batch(
                batch_id=batch_id,
                seq=len(account.batches),
                method=method,
                endpoint=endpoint,
                generation=generation,
                created_at=utc_now() if created is None else utc_at(int(created * 1000)),
                # Items are a freshly parsed request body that nothing else holds: no copy.
                items=[BatchItem(self.new_id(created), item) for item in items],
                fault=fault,
                order_key=digest.hexdigest(),
                foreign=foreign,
            )
            account.batches.append(batch)
            account.batch_by_id[batch.batch_id] = batch
            bisect.insort(account.batches_hashed, (batch.order_key, batch.seq))
            return batch

    def iter_batches(
        self,
        account: Account,
        *,
        order: str = "newest_first",
        endpoint: str | None = None,
        status: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
    ) -> Iterator[Batch]:
        """Matching batches in `order` (see BATCH_ORDERS); dates are yyyy-mm-dd, inclusive,
        compared with the UTC day of `createdAt`. Hold `lock` while consuming it."""
        if order == "oldest_first":
            seqs: Any = range(len(account.batches))
        elif order == "unordered":
            seqs = (seq for _, seq in account.batches_hashed)
        else:
            seqs = range(len(account.batches) - 1, -1, -1)
        for seq in seqs:
            batch = account.batches[seq]
            if endpoint is not None and batch.endpoint != endpoint:
                continue
            if status is not None and batch.status != status:
                continue
            if date_from is not None and batch.created_day < date_from:
                continue
            if date_to is not None and batch.created_day > date_to:
                continue
            yield batch

    # -- segments -------------------------------------------------------------------

    def add_segment(
        self,
        account: Account,
        *,
        name: str,
        condition_groups: list[Any],
        is_starred: bool,
        building_seconds: float,
    ) -> Segment:
        with self.lock:
            now = utc_now()
            segment = Segment(
                segment_id=self.new_id(),
                seq=account.segment_seq,
                name=name,
                condition_groups=condition_groups,
                created_at=now,
                updated_at=now,
                is_starred=is_starred,
                building_until=time.monotonic() + building_seconds,
            )
            account.segment_seq += 1
            account.segments[segment.segment_id] = segment
            return segment

    def replace_segment(
        self,
        segment: Segment,
        *,
        name: str,
        condition_groups: list[Any],
        is_starred: bool | None,
        building_seconds: float,
    ) -> Segment:
        with self.lock:
            segment.name = name
            segment.condition_groups = condition_groups
            if is_starred is not None:
                segment.is_starred = is_starred
            segment.updated_at = utc_now()
            segment.building_until = time.monotonic() + building_seconds
            return segment

    def all_contacts(self) -> list[Contact]:
        with self.lock:
            return [acc.contacts[cid] for acc in self.accounts.values() for cid in acc.order]
