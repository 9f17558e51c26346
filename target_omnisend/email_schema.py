"""Is the email field there at all? Asked once per stream, of its SCHEMA message.

A stream whose schema has no field of that name (the tap calls it `email_address`, or
`email_field` has a typo) would otherwise reject every record as `missing_email`, one by
one, write each profile to the rejected file and still end with exit 0. The schema says
so before the first record: the run stops there, naming the field looked for and the
schema's fields that look like emails (names only, never values).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

#: A field name that suggests an email address.
_EMAIL_LIKE = re.compile(r"e[-_.]?mail", re.I)
#: At most this many candidates are named.
MAX_CANDIDATES = 8
#: A named field is cut to this many characters.
MAX_NAME = 64


def _properties(schema: Any) -> Mapping[str, Any] | None:
    """The schema's declared properties, or None when it leaves them open (no
    `properties`, or `additionalProperties` allowed): then a field cannot be missing."""
    if not isinstance(schema, Mapping):
        return None
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return None
    if schema.get("additionalProperties", False) not in (False, None):
        return None
    return properties


def missing_email_field(schema: Any, email_field: str) -> bool:
    """Whether the schema rules out a value at `email_field` (a dotted path)."""
    node: Any = schema
    for part in email_field.split("."):
        properties = _properties(node)
        if properties is None:
            return False
        if part not in properties:
            return True
        node = properties[part]
    return False


def email_like_fields(names: Iterable[str]) -> list[str]:
    """The names that look like they hold an email, at most `MAX_CANDIDATES`, each cut
    to `MAX_NAME` characters (a name is the source's, of any length)."""
    found = [name for name in names if isinstance(name, str) and _EMAIL_LIKE.search(name)]
    return [_short(name) for name in found[:MAX_CANDIDATES]]


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def schema_field_names(schema: Any, prefix: str = "", depth: int = 3) -> Iterator[str]:
    """Every field of the schema as a dotted path (nested objects, a few levels deep)."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping) or depth == 0:
        return
    for name, sub in properties.items():
        path = f"{prefix}{name}"
        yield path
        yield from schema_field_names(sub, f"{path}.", depth - 1)


def candidates_text(names: list[str]) -> str:
    """How a message names the candidates (or says there are none)."""
    if not names:
        return "the schema has no field whose name looks like an email"
    return "fields that look like emails: " + ", ".join(names)


def missing_field_message(stream: str, schema: Any, email_field: str) -> str:
    names = email_like_fields(schema_field_names(schema))
    return (
        f"stream '{_short(stream)}' has no field '{email_field}' (email_field) in its schema; "
        f"{candidates_text(names)}. Set email_field to the field that holds the email. "
        "Nothing was sent for this stream"
    )
