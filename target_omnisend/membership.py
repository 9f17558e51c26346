"""How segment membership is written in Omnisend: one interface, two substitutes.

A stream's members are marked either with the **segment tag** (`segment_tag`, through the
tags endpoint: 250 emails a call, 60 calls a minute) or with a **custom property**
(`membership_property`, `true` inside the contact's own batch item: no extra request).
Everything that depends on the choice is here: what a member's body carries, which tags
a newcomer still needs, the saved segment's rule, how Omnisend lists the members and how
a leaver is taken out. The pipeline, mirror and the segment keeper ask the route; none
of them checks which one it is.

A route's `key` is the identity mirror, the fingerprint store and saved segments keep
it under: the tag itself, or `custom:<property name>` (`route_for_key` turns a key
remembered by an earlier run back into its route, so a segment made for a tag can be
recognised after a switch to a property, and the other way round).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from target_omnisend.api import (
    is_property_rule,
    is_tag_rule,
    property_segment_body,
    tag_segment_body,
)

PROPERTY_KEY_PREFIX = "custom:"

#: Omnisend documents no limit on custom property names (checked: API reference, help
#: center; the only figure is 200 columns per CSV import). Conservative, so that a name
#: works in the API, in segment rules and in personalisation tags: a letter first, then
#: letters, digits, `_` or `-`, at most 64 characters, and not a standard contact field.
PROPERTY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
STANDARD_FIELDS = frozenset(
    name.lower()
    for name in (
        "id",
        "contactID",
        "email",
        "phone",
        "identifiers",
        "firstName",
        "lastName",
        "address",
        "city",
        "state",
        "postalCode",
        "country",
        "countryCode",
        "birthdate",
        "gender",
        "tags",
        "customProperties",
        "createdAt",
        "updatedAt",
        "status",
    )
)


def property_name_problem(name: str) -> str | None:
    """Why Omnisend might refuse `name` as a custom property name, if it might."""
    if not PROPERTY_NAME.fullmatch(name):
        return (
            "must start with a letter and hold only letters, digits, '_' or '-', at most 64 "
            "characters (Omnisend documents no rule; this is the conservative one)"
        )
    if name.lower() in STANDARD_FIELDS:
        return "is the name of a standard Omnisend contact field"
    return None


class Writes(Protocol):
    """What a route needs from the run's writer (real or dry run)."""

    def tagged_members(self, tag: str) -> Iterator[str]: ...

    def segment_members(self, segment_id: str) -> Iterator[str]: ...

    def remove_tags(self, tag: str, emails: list[str]) -> None: ...

    def add_tags(self, tag: str, emails: list[str]) -> None: ...

    def set_property(self, name: str, emails: list[str], value: bool) -> int: ...


class Membership(Protocol):
    #: Identity in mirror, the fingerprint store and saved segments.
    key: str
    #: For people: "tag 'segment:vip'" or "property 'in_vip'".
    label: str

    def mark(self, body: dict[str, Any]) -> None:
        """Write membership into a member's contact body (in place, before encoding)."""

    def segment_body(self, name: str) -> dict[str, Any]:
        """The saved segment's POST/PUT body: a rule that selects the members."""

    def followed_by(self, condition_groups: Any) -> bool:
        """Does a segment rule select exactly the members?"""

    def members(self, writer: Writes, segment_id: Callable[[], str | None]) -> Iterator[str] | None:
        """Emails Omnisend holds as members (a read: dry runs too); None when Omnisend
        cannot list them yet (no saved segment follows the property)."""

    def remove(self, writer: Writes, emails: list[str]) -> int:
        """Take these members out; returns how many Omnisend confirmed."""

    def restore(self, writer: Writes, emails: list[str]) -> None:
        """Give these members their membership back (mirror's repair of drift)."""

    @property
    def in_body(self) -> bool:
        """Does every delivered member's batch item carry its membership? (If not, only
        its tag call does.)"""


@dataclass(frozen=True)
class TagMembership:
    """Membership is the segment tag, added through the tags endpoint."""

    tag: str

    @property
    def key(self) -> str:
        return self.tag

    @property
    def label(self) -> str:
        return f"tag '{self.tag}'"

    def mark(self, body: dict[str, Any]) -> None:
        del body  # the tag never goes in the body: it would replace the contact's tags

    def segment_body(self, name: str) -> dict[str, Any]:
        return tag_segment_body(name, self.tag)

    def followed_by(self, condition_groups: Any) -> bool:
        return is_tag_rule(condition_groups, self.tag)

    def members(self, writer: Writes, segment_id: Callable[[], str | None]) -> Iterator[str]:
        del segment_id  # Omnisend lists a tag's contacts directly
        return writer.tagged_members(self.tag)

    def remove(self, writer: Writes, emails: list[str]) -> int:
        writer.remove_tags(self.tag, emails)
        return len(emails)

    def restore(self, writer: Writes, emails: list[str]) -> None:
        writer.add_tags(self.tag, emails)

    @property
    def in_body(self) -> bool:
        return False


@dataclass(frozen=True)
class PropertyMembership:
    """Membership is `customProperties[name] = true` inside the member's batch item: no
    tag call at all. Leavers get `false`, through batches too (100 a request at the
    contacts' 400/min rather than 250 a call at the tags' 60/min)."""

    name: str

    @property
    def key(self) -> str:
        return PROPERTY_KEY_PREFIX + self.name

    @property
    def label(self) -> str:
        return f"property '{self.name}'"

    def mark(self, body: dict[str, Any]) -> None:
        props = body.get("customProperties")
        body["customProperties"] = {**props, self.name: True} if props else {self.name: True}

    def segment_body(self, name: str) -> dict[str, Any]:
        return property_segment_body(name, self.name)

    def followed_by(self, condition_groups: Any) -> bool:
        return is_property_rule(condition_groups, self.name)

    def members(self, writer: Writes, segment_id: Callable[[], str | None]) -> Iterator[str] | None:
        # Omnisend cannot filter contacts by a custom property; its saved segment can.
        found = segment_id()
        return writer.segment_members(found) if found else None

    def remove(self, writer: Writes, emails: list[str]) -> int:
        return writer.set_property(self.name, emails, False)

    def restore(self, writer: Writes, emails: list[str]) -> None:
        writer.set_property(self.name, emails, True)

    @property
    def in_body(self) -> bool:
        return True


def route_for_key(key: str) -> Membership:
    """The route a key stands for (a key remembered by an earlier run included)."""
    if key.startswith(PROPERTY_KEY_PREFIX):
        return PropertyMembership(key[len(PROPERTY_KEY_PREFIX) :])
    return TagMembership(key)


def membership_for(segment_tag: str | None, membership_property: str | None) -> Membership | None:
    """A stream's route from its filled-in settings (None: no membership is written)."""
    if membership_property:
        return PropertyMembership(membership_property)
    return TagMembership(segment_tag) if segment_tag else None
