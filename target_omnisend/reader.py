"""Reading Singer lines without echoing them: an input line may hold personal data.

The SDK's reader logs a traceback with the whole line when it is not JSON, and quotes
the whole message when a required key is missing; both put profiles in the logs. This
reader raises the SDK's own `InvalidInputLine` naming only the line number. It also
reads standard input the same way under every locale: bytes that are not UTF-8 become
lone surrogates (rather than stopping the run under a UTF-8 locale and not under C),
so the mapping rejects just the records that hold them.

Lines are decoded with msgspec (the decoder of the SDK's own `msgspec` extra), about
3x faster than `json.loads` on a profile line; anything it will not take (NaN, lone
surrogates, bad JSON) goes through the stock `json` path, so what is accepted, and how
numbers come out (`Decimal`), is exactly what the SDK's reader gives.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import IO, Any

import msgspec
from singer_sdk.io_base import SingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.singerlib.json import deserialize_json, serialize_json

_FAST = msgspec.json.Decoder(float_hook=Decimal)
#: Python refuses to turn longer digit strings into an `int` (a CPU-exhaustion guard);
#: such a number is kept exact as a `Decimal`, like a number with a fraction.
_MAX_INT_DIGITS = 4000


def _parse_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= _MAX_INT_DIGITS else Decimal(text)


def encode_state(state: Any) -> str:
    """A STATE value as one JSON line. The reader hands bookmarks over as `Decimal` (exact,
    like the SDK's reader), which `json.dumps` refuses: a tap with a float bookmark could
    never checkpoint. The SDK's own Singer encoder writes a `Decimal` with its exact
    digits (97.5 stays 97.5, never a string) and NaN/infinity as null."""
    return serialize_json(state)


def decode_json(line: str, where: str) -> Any:
    """One JSON line as the SDK's reader would give it (exact `Decimal` numbers), fast
    when msgspec takes it; an error names `where` (a line number), never the line."""
    try:
        return _FAST.decode(line)
    except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
        pass
    try:
        return deserialize_json(line, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InvalidInputLine(f"{where} is not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        # Hundreds of nested levels: no tap writes a profile like that, and no part
        # of the pipeline (validation, mapping, the rejected file) could handle it.
        raise InvalidInputLine(f"{where} nests arrays/objects too deeply to be read") from None


class SingerInput(SingerReader):
    """The SDK's reader, with errors that name a line number and never its content."""

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0

    def process_lines(
        self, file_input: IO[str] | None, callbacks: dict[str, Callable[[dict], None]]
    ) -> Any:
        source = file_input or self.default_input
        if source is sys.stdin and hasattr(source, "reconfigure"):
            source.reconfigure(errors="surrogateescape")
        return super().process_lines(self._numbered(source), callbacks)  # type: ignore[arg-type]

    def _numbered(self, lines: IO[str]) -> Iterator[str]:
        for self.line_number, line in enumerate(lines, 1):
            if line.strip():  # a blank line carries no message: skip it
                yield line

    def deserialize_json(self, line: str) -> dict:
        message = decode_json(line, f"line {self.line_number}")
        if not isinstance(message, dict):
            raise InvalidInputLine(
                f"line {self.line_number} is a JSON {type(message).__name__}, not a message"
            )
        kind = message.get("type", "")
        if type(kind) is not str:  # the SDK looks it up in a dict: a list would crash it
            raise InvalidInputLine(
                f"line {self.line_number} has a message type that is a JSON "
                f"{type(kind).__name__}, not a string"
            )
        return message

    def assert_line_requires(self, line_dict: dict, requires: set[str]) -> None:  # type: ignore[override]
        missing = sorted(requires - set(line_dict))
        if missing:
            raise InvalidInputLine(
                f"line {self.line_number} is missing required key(s) {', '.join(missing)}"
            )
