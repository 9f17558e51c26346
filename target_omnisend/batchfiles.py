"""Records of Singer BATCH messages, read one at a time.

SDK taps with `batch_config` (MeltanoLabs tap-postgres among them) send a stream's
records as BATCH messages: a manifest of files, each holding raw records as JSON lines,
gzipped or not. The SDK's own `Sink.process_batch_files` hands a whole file to
`process_batch` without stream maps, validation or `process_record`; this target
instead reads each record here and hands it to the same path as a RECORD message, so a
batched record is validated, mapped, counted, covered by STATE and a mirror member
exactly like any other.

An encoding this target cannot read (parquet, another compression) or a file it cannot
open stops the run with one line before any STATE covers the batch: a record is never
dropped silently.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib
from collections.abc import Iterator
from typing import Any

from singer_sdk.helpers._batch import StorageTarget
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_omnisend.reader import decode_json

#: Compressions the files may use (the SDK writes `gzip`, or none).
_PLAIN = (None, "", "none")
_READABLE = "JSON lines (jsonl), gzip-compressed or not"


class UnreadableBatch(InvalidInputLine):
    """A BATCH message this target cannot read; the run stops without another STATE."""


def batch_records(message: dict[str, Any], where: str) -> Iterator[dict[str, Any]]:
    """Every record of a BATCH message, in manifest order. `where` names the message
    (its input line) in errors; no error quotes a record."""
    encoding = message.get("encoding")
    manifest = message.get("manifest")
    if not isinstance(encoding, dict) or not isinstance(manifest, list):
        raise UnreadableBatch(f"{where}: a BATCH message needs an encoding and a manifest")
    file_format = encoding.get("format")
    compression = encoding.get("compression")
    if file_format != "jsonl" or (compression not in _PLAIN and compression != "gzip"):
        raise UnreadableBatch(
            f"{where}: batch files encoded as format {file_format!r}, compression "
            f"{compression!r} cannot be read; this target reads {_READABLE} (set the tap's "
            "batch_config encoding to format jsonl)"
        )
    for url in manifest:
        if not isinstance(url, str):
            raise UnreadableBatch(f"{where}: the manifest lists a {type(url).__name__}, not a URL")
        yield from _file_records(url, gzipped=compression == "gzip", where=where)


def _file_records(url: str, *, gzipped: bool, where: str) -> Iterator[dict[str, Any]]:
    try:
        head, tail = StorageTarget.split_url(url)
    except ValueError as exc:  # e.g. a bare relative path: the SDK needs a URL
        raise UnreadableBatch(
            f"{where}: the manifest lists a file that is not named by a URL ({exc}); batch "
            "files are named by URLs such as file:///absolute/path/batch.jsonl.gz"
        ) from None
    try:
        with (
            StorageTarget.from_url(head).open(tail, mode="rb") as raw,
            gzip.GzipFile(fileobj=raw) if gzipped else contextlib.nullcontext(raw) as stream,
        ):
            # Bytes that are not UTF-8 become lone surrogates, as on standard input: the
            # mapping then rejects just the records that use them.
            text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape")
            for number, line in enumerate(text, 1):
                if not line.strip():
                    continue
                record = decode_json(line, f"{where}: line {number} of batch file {tail}")
                if not isinstance(record, dict):
                    raise UnreadableBatch(
                        f"{where}: line {number} of batch file {tail} is a JSON "
                        f"{type(record).__name__}, not a record"
                    )
                yield record
    except (OSError, EOFError, zlib.error) as exc:
        # Missing file, unreachable storage, corrupt or truncated gzip.
        raise UnreadableBatch(
            f"{where}: batch file {tail} cannot be read ({type(exc).__name__}: {exc})"
        ) from None
