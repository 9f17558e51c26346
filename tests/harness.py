"""Run the target the way users do — a real subprocess fed Singer lines — and read
what it printed. Shared by the tests and the demo; never imported by the target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_BIN = Path(sys.executable).with_name("target-omnisend")
SAMPLE = REPO / "samples" / "vip_buyers.jsonl"

sys.path.insert(0, str(REPO / "samples"))
from to_singer import singer_messages  # noqa: E402


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def states(self) -> list[dict[str, Any]]:
        """STATE messages the target emitted (its stdout is Singer STATE lines only)."""
        return [
            json.loads(line) for line in self.stdout.splitlines() if line.strip().startswith("{")
        ]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class DefaultStatusDate:
    """Equal to any date the default status (`email_status`) is sent with: the run's own
    (`mapping.default_status_date`), older for every later run, never after the fixed
    2000-01-01 of earlier releases."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and "1970-01-01" <= other <= "2000-01-01T00:00:00Z"

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<a default status date, 1970..2000-01-01>"


DEFAULT_STATUS_DATE = DefaultStatusDate()


def encode(messages: Iterable[dict[str, Any] | str]) -> bytes:
    lines = [m if isinstance(m, str) else json.dumps(m, ensure_ascii=False) for m in messages]
    return ("\n".join(lines) + ("\n" if lines else "")).encode()


def run_target(
    config: dict[str, Any] | None,
    messages: Iterable[dict[str, Any] | str] | bytes = (),
    *,
    workdir: Path,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> Run:
    """`target-omnisend --config config.json < messages`, in `workdir`."""
    command = [str(TARGET_BIN)]
    if config is not None:
        config_path = workdir / "config.json"
        config_path.write_text(json.dumps(config))
        command += ["--config", str(config_path)]
    command += args or []
    payload = messages if isinstance(messages, bytes) else encode(messages)
    proc = subprocess.run(
        command,
        input=payload,
        capture_output=True,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode("utf-8", "replace"))


def sample_records() -> list[dict[str, Any]]:
    with SAMPLE.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def segment_messages(
    records: list[dict[str, Any]], stream: str = "vip_buyers", key: str | None = None
) -> list[dict[str, Any]]:
    return list(singer_messages(records, stream, key))


def stored_email(contact: dict[str, Any]) -> str:
    """The email of a contact as the local server stores it (2026-03-15 shape)."""
    return next(i["id"] for i in contact["identifiers"] if i["type"] == "email")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def create_contact(
    server_url: str,
    api_key: str,
    email: str,
    status: str,
    changed_at: str,
    tags: list[str] | None = None,
) -> None:
    """Put a contact into the local Omnisend the way another tool would (its API)."""
    import requests

    body: dict[str, Any] = {
        "identifiers": [
            {
                "type": "email",
                "id": email,
                "channels": {"email": {"status": status, "statusChangedAt": changed_at}},
            }
        ]
    }
    if tags:
        body["tags"] = tags
    response = requests.post(
        f"{server_url}/api/contacts",
        headers={"Authorization": f"Omnisend-API-Key {api_key}", "Omnisend-Version": "2026-03-15"},
        json=body,
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
