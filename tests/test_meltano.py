"""`meltano run tap-jsonl target-omnisend` as a user runs it, against the local server.

Meltano lives in its own venv (its pins clash with ours); `make test` points
MELTANO_BIN at it. The plugins are custom definitions in meltano.yml, so this works
offline from Meltano Hub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.harness import REPO, read_jsonl, sample_records, stored_email
from tests.omnisend_server import OmnisendServer
from tests.test_cli import expected_emails

MELTANO = os.environ.get("MELTANO_BIN") or shutil.which("meltano")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not MELTANO, reason="meltano not installed (make test installs it)"),
]


def meltano(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(
        [str(MELTANO), *args],
        cwd=REPO,
        env={**os.environ, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def test_meltano_run_delivers_the_sample_segment(server: OmnisendServer, tmp_path: Path) -> None:
    meltano("install")
    rejected_path = tmp_path / "rejected.jsonl"
    output = meltano(
        "run",
        "--full-refresh",
        "tap-jsonl",
        "target-omnisend",
        env={
            "TARGET_OMNISEND_API_KEY": API_KEY,
            "TARGET_OMNISEND_API_URL": server.url,
            "TARGET_OMNISEND_REJECTED_RECORDS_PATH": str(rejected_path),
        },
    )
    records = sample_records()
    stored = {stored_email(c) for c in server.contacts()}
    assert stored == expected_emails(records)
    rejected = read_jsonl(rejected_path)
    assert len(records) == len(stored) + len(rejected) + 1  # one duplicate merged
    # No segment_name value in meltano.yml: the default applies, one saved segment.
    assert [s["name"] for s in server.segments()] == ["vip_buyers"]
    assert API_KEY not in output
