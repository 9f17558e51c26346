"""A minimal file "tap": JSONL profiles in, Singer messages out.

Lets the demo, the tests and a user without Meltano pipe a segment into the target:
    python samples/to_singer.py samples/vip_buyers.jsonl --stream vip_buyers \
        | target-omnisend --config config.json
The schema is inferred from the values (every field nullable), as tap-jsonl does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def infer_schema(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.items():
            types = properties.setdefault(key, {"null"})
            if isinstance(value, (dict, list)):
                types.add("object" if isinstance(value, dict) else "array")
            elif value is not None:
                types.add(_JSON_TYPES.get(type(value), "string"))
    for types in properties.values():
        if {"integer", "number"} <= types:
            types.discard("integer")
    return {
        "type": "object",
        "properties": {k: {"type": sorted(v)} for k, v in properties.items()},
    }


def singer_messages(
    records: list[dict[str, Any]], stream: str, key: str | None = None
) -> Iterator[dict[str, Any]]:
    yield {
        "type": "SCHEMA",
        "stream": stream,
        "schema": infer_schema(records),
        "key_properties": [key] if key else [],
    }
    for record in records:
        yield {"type": "RECORD", "stream": stream, "record": record}
    yield {"type": "STATE", "value": {"bookmarks": {stream: {"rows": len(records)}}}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--stream", default=None, help="stream (segment) name; default: file stem")
    parser.add_argument("--key", default=None, help="primary key field, if any")
    args = parser.parse_args(argv)
    path = Path(args.path)
    with path.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    out = sys.stdout
    for message in singer_messages(records, args.stream or path.stem, args.key):
        out.write(json.dumps(message, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
