"""The run's output files, made ready before anything is read or sent.

A `summary_path` in a folder that does not exist used to fail a fully delivered run at
its very end (exit 1, after STATE was emitted), and a `rejected_records_path` that
cannot be created failed only at the first rejection. Each output path is checked at
start instead: its folder is created, and a path that can never be written is refused
in one line naming the setting (exit 2), before any input is read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from target_omnisend.errors import ConfigError
from target_omnisend.settings import Settings
from target_omnisend.store_backends import is_postgres


def output_paths(settings: Settings) -> dict[str, str]:
    """Setting name → path of every file this run may write (the store has its own
    checks: it is opened at start anyway)."""
    paths = {
        "rejected_records_path": settings.rejected_records_path,
        "summary_path": settings.summary_path,
        "dry_run_path": settings.dry_run_path if settings.dry_run else None,
    }
    return {name: path for name, path in paths.items() if path}


def prepare_output_path(name: str, path: str) -> None:
    """Create the folder of `path`, or raise `ConfigError` saying why it cannot be
    written. The file itself is not created: an unused rejected file stays absent."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{name} {path!r}: a part of its folder path is a file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"{name} {path!r}: cannot create its folder ({why})") from None
    if target.is_dir():
        raise ConfigError(f"{name} {path!r} is a folder; give a file path")
    if _is_stdout(target):
        raise ConfigError(f"{name} {path!r} is the target's output, where STATE goes")
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{name} {path!r}: the file is not writable")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} {path!r}: its folder is not writable")


def _is_stdout(target: Path) -> bool:
    """`/dev/stdout` and the like: lines written there would be read as Singer STATE."""
    try:
        here, out = target.stat(), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return (here.st_dev, here.st_ino) == (out.st_dev, out.st_ino)


def prepare_output_paths(settings: Settings) -> None:
    paths = output_paths(settings)
    _refuse_shared_files(paths, settings.fingerprint_store_path)
    for name, path in paths.items():
        prepare_output_path(name, path)


def _refuse_shared_files(paths: dict[str, str], store: str | None) -> None:
    """Two settings naming one file: the summary, written last, would replace the
    rejected records (lost), and an output over the SQLite store (or its journal)
    destroys it, so every later run fails. Refused before anything is read."""
    named = list(paths.items())
    if store and not is_postgres(store) and "://" not in store:
        named += [
            ("fingerprint_store_path", store + suffix)
            for suffix in ("", "-wal", "-shm", "-journal")
        ]
    seen: dict[str, str] = {}
    for name, path in named:
        try:
            key = os.path.realpath(path)
        except (OSError, ValueError):  # a NUL in the path: prepare_output_path says so
            continue
        if key in seen and seen[key] != name:
            raise ConfigError(
                f"{seen[key]} and {name} name the same file ({path!r}): give each its own"
            )
        seen.setdefault(key, name)
