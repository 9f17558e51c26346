"""The schema's date fields, parsed without the SDK's per-value log lines.

The SDK parses every `date`/`date-time`/`time` field and logs each value it cannot read,
verbatim and over two lines ("Could not parse value '10/07/1985' …"): profile data in the
log, once per record. And a number, bool, list or object in such a field (valid JSON
Schema: `format` constrains strings only) reaches `fromisoformat` and ends the run with a
TypeError. Here an unreadable or non-string value is dropped (the attribute is omitted,
as the SDK's NULL treatment does) and the caller counts one warning that names the field,
never the value.
"""

from __future__ import annotations

import datetime as dt
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from singer_sdk.helpers._compat import (
    date_fromisoformat,
    datetime_fromisoformat,
    time_fromisoformat,
)

_PARSERS: dict[str, Callable[[str], Any]] = {
    "date": date_fromisoformat,
    "time": time_fromisoformat,
    "date-time": datetime_fromisoformat,
}


def dropped_warning(field: str, kind: str, value: Any) -> str:
    """The counted warning for a dropped date value: the field and what was wrong with
    its value (unreadable text, or which JSON type it was), never the value itself."""
    what = "unreadable text" if isinstance(value, str) else _json_type(value)
    return f"{field} is not a {kind} ({what}): value dropped"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Number):  # Decimal too: JSON numbers are read exactly
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def parse_dates(record: dict[str, Any], fields: Mapping[str, str]) -> list[str]:
    """Replace each date field's text (`fields`: name → SDK datelike type) by the parsed
    value, in place; a value that cannot be parsed becomes None. Returns the warnings."""
    warnings: list[str] = []
    for name, kind in fields.items():
        value = record.get(name)
        if value is None or isinstance(value, (dt.date, dt.time)):
            continue
        parser = _PARSERS.get(kind, datetime_fromisoformat)
        try:
            if not isinstance(value, str):
                raise TypeError(name)
            record[name] = parser(value)
        except (ValueError, TypeError, OverflowError):
            record[name] = None
            warnings.append(dropped_warning(name, kind, value))
    return warnings
