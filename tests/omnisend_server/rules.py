"""Saved-segment bodies: validation and rule evaluation (pure functions).

A segment's `conditionGroups` are OR'd; the `conditions` of a group are AND'd; a
condition's `junction` ("and" | "or") joins its `filters`. The documented operators for
the list property `tags` are `anyOf` and `noneOf`; a custom property (`property:
"custom"`, with `name` and `valueType` text|number|bool|date, documented in the
2026-03-15 Segments API) is judged with `equals` / `notEquals` against the contact's
`customProperties` (a contact without the property matches neither `equals` nor, for
safety, anything but `notEquals`). Those are what this server evaluates.
Anything else is refused with a 400 naming the field, rather than accepted and then
counted wrongly: a test must never pass on a rule the local server cannot judge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import FieldError, validation_error

MAX_NAME = 256
TAG_OPERATORS = ("anyOf", "noneOf")
CUSTOM_OPERATORS = ("equals", "notEquals")
VALUE_TYPES = {"text": (str,), "number": (int, float), "bool": (bool,), "date": (str,)}
JUNCTIONS = ("and", "or")
WRITABLE = frozenset(("name", "conditionGroups", "isStarred"))
READ_ONLY = frozenset(("segmentID", "status", "createdAt", "updatedAt", "archivedAt"))


@dataclass(frozen=True)
class SegmentWrite:
    name: str
    condition_groups: list[Any]
    is_starred: bool | None


def validate_segment(body: Any) -> SegmentWrite:
    """POST and PUT (full replace): `name` and `conditionGroups` are both required.

    Read-only fields a client copied from a GET are ignored; unknown ones are refused."""
    if not isinstance(body, dict):
        raise validation_error([FieldError("", "invalid_type", "Body must be a JSON object")])
    errors = [
        FieldError(k, "unknown_field", "Unknown field")
        for k in body
        if k not in WRITABLE and k not in READ_ONLY
    ]
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(FieldError("name", "required", "A non-empty name is required"))
    elif len(name) > MAX_NAME:
        errors.append(FieldError("name", "too_long", f"At most {MAX_NAME} characters"))
    starred = body.get("isStarred")
    if starred is not None and not isinstance(starred, bool):
        errors.append(FieldError("isStarred", "invalid_type", "Must be a boolean"))
    groups = body.get("conditionGroups")
    errors += _groups_errors(groups)
    if errors:
        raise validation_error(errors)
    return SegmentWrite(str(name), list(groups or []), starred)


def _groups_errors(groups: Any) -> list[FieldError]:
    if not isinstance(groups, list) or not groups:
        return [FieldError("conditionGroups", "required", "Give at least one condition group")]
    errors: list[FieldError] = []
    for g, group in enumerate(groups):
        where = f"conditionGroups[{g}]"
        conditions = group.get("conditions") if isinstance(group, dict) else None
        if not isinstance(conditions, list) or not conditions:
            errors.append(
                FieldError(f"{where}.conditions", "required", "Give at least one condition")
            )
            continue
        for c, condition in enumerate(conditions):
            errors += _condition_errors(condition, f"{where}.conditions[{c}]")
    return errors


def _condition_errors(condition: Any, where: str) -> list[FieldError]:
    if not isinstance(condition, dict):
        return [FieldError(where, "invalid_type", "Must be an object")]
    errors: list[FieldError] = []
    if condition.get("entity") != "contact":
        errors.append(FieldError(f"{where}.entity", "invalid_value", "Only 'contact' is supported"))
    if condition.get("junction", "and") not in JUNCTIONS:
        errors.append(FieldError(f"{where}.junction", "invalid_value", "Must be 'and' or 'or'"))
    filters = condition.get("filters")
    if not isinstance(filters, list) or not filters:
        return [*errors, FieldError(f"{where}.filters", "required", "Give at least one filter")]
    for f, flt in enumerate(filters):
        errors += _filter_errors(flt, f"{where}.filters[{f}]")
    return errors


def _filter_errors(flt: Any, where: str) -> list[FieldError]:
    if not isinstance(flt, dict):
        return [FieldError(where, "invalid_type", "Must be an object")]
    if flt.get("property") == "custom":
        return _custom_filter_errors(flt, where)
    if flt.get("property") != "tags":
        return [
            FieldError(
                f"{where}.property",
                "unsupported",
                "This local server evaluates only the 'tags' and 'custom' properties",
            )
        ]
    errors = []
    if flt.get("operator") not in TAG_OPERATORS:
        errors.append(
            FieldError(f"{where}.operator", "invalid_value", "For 'tags': 'anyOf' or 'noneOf'")
        )
    value = flt.get("value")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        errors.append(
            FieldError(f"{where}.value", "invalid_value", "A non-empty list of tag names")
        )
    return errors


def _custom_filter_errors(flt: dict[str, Any], where: str) -> list[FieldError]:
    errors = []
    name = flt.get("name")
    if not isinstance(name, str) or not name:
        errors.append(FieldError(f"{where}.name", "required", "A custom property name"))
    value_type = flt.get("valueType")
    if value_type not in VALUE_TYPES:
        errors.append(
            FieldError(f"{where}.valueType", "invalid_value", "text, number, bool or date")
        )
    if flt.get("operator") not in CUSTOM_OPERATORS:
        errors.append(
            FieldError(
                f"{where}.operator", "invalid_value", "For 'custom': 'equals' or 'notEquals'"
            )
        )
    value = flt.get("value")
    kinds = VALUE_TYPES.get(value_type, ())
    bad = not isinstance(value, kinds) or (value_type == "number" and isinstance(value, bool))
    if value_type in VALUE_TYPES and bad:
        errors.append(FieldError(f"{where}.value", "invalid_value", f"A {value_type} value"))
    return errors


def matches(
    condition_groups: list[Any],
    tags: Iterable[str],
    properties: dict[str, Any] | None = None,
) -> bool:
    """Does a contact with these tags and custom properties belong to the segment?
    (Rules already validated.)"""
    have = (set(tags), properties or {})
    return any(
        all(_condition(condition, have) for condition in group["conditions"])
        for group in condition_groups
    )


def _condition(condition: dict[str, Any], have: tuple[set[str], dict[str, Any]]) -> bool:
    results = (_filter(flt, have) for flt in condition["filters"])
    return any(results) if condition.get("junction", "and") == "or" else all(results)


def _filter(flt: dict[str, Any], have: tuple[set[str], dict[str, Any]]) -> bool:
    tags, properties = have
    if flt["property"] == "custom":
        value = properties.get(flt["name"], _MISSING)
        # `True == 1` in Python: a bool rule must not match the number 1, nor the other way
        same = value == flt["value"] and isinstance(value, bool) == isinstance(flt["value"], bool)
        return same if flt["operator"] == "equals" else not same
    hit = not tags.isdisjoint(flt["value"])
    return hit if flt["operator"] == "anyOf" else not hit


_MISSING = object()
