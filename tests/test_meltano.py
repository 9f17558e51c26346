"""Meltano as users run it, against the local server: this repository's meltano.yml, and a
newcomer's fresh project built with the README's Meltano commands, run exactly as
written.

Meltano lives in its own venv (its pins clash with ours); `make test` points
MELTANO_BIN at it. Every plugin comes from a definition file, so this works offline
from Meltano Hub (PyPI is reachable).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from target_omnisend.plugin_definition import full_schema
from tests.conftest import API_KEY
from tests.harness import REPO, read_jsonl, sample_records, stored_email
from tests.omnisend_server import OmnisendServer
from tests.readme import MARKER, readme_code_blocks, readme_meltano_blocks
from tests.test_cli import expected_emails
from tests.test_postgres_e2e import Cluster, cluster  # noqa: F401 (cluster: the fixture)

#: Trust authentication accepts any password: this one must stay in .env and out of logs.
STORE_PASSWORD = "newcomer-Store-pw-4f9e2"

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


#: Meltano commands run elsewhere: the Postgres example needs a PostgreSQL server.
OTHER_RUNNERS = ("<!-- postgres-example:",)


def test_every_readme_code_block_with_a_meltano_command_is_run_by_the_newcomer_test() -> None:
    unmarked = [
        body
        for before, body in readme_code_blocks()
        if re.search(r"^meltano ", body, re.M) and not before.startswith((MARKER, *OTHER_RUNNERS))
    ]
    assert unmarked == [], (
        f"README code blocks with meltano commands but no {MARKER} … --> line before them, "
        "so no test runs them"
    )
    assert len(readme_meltano_blocks()) >= 2


def test_newcomer_path_from_the_readme_delivers_the_sample_segment(
    server: OmnisendServer,
    cluster: Cluster,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """A fresh `meltano init` project, the loader added with one command from the plugin
    definition in the checkout, configured and run: the README's commands, as written
    (the last of them move the fingerprint store to the suite's own PostgreSQL)."""
    script = "set -euo pipefail -v\n" + "\n".join(readme_meltano_blocks())
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{Path(str(MELTANO)).parent}{os.pathsep}{os.environ['PATH']}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "CHECKOUT": str(REPO),
            "OMNISEND_API_KEY": API_KEY,
            # the one thing a real user does not set: the local server instead of Omnisend
            "TARGET_OMNISEND_API_URL": server.url,
            "STORE_URL": f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres",
            "STORE_PASSWORD": STORE_PASSWORD,
            # uv caches a build of a local checkout by its pyproject.toml alone: without
            # this, a test run after a code change would install the code of an older run
            "UV_NO_CACHE": "1",
        },
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    records = sample_records()
    assert {stored_email(c) for c in server.contacts()} == expected_emails(records)
    assert API_KEY not in proc.stdout + proc.stderr
    project = tmp_path / "my-segments"
    assert API_KEY not in (project / "meltano.yml").read_text()
    assert API_KEY in (project / ".env").read_text()
    # `meltano invoke target-omnisend --about --format=markdown` lists every setting
    for name in full_schema()["properties"]:
        assert f"| {name} |" in proc.stdout, f"{name} missing from meltano invoke --about"
    # the nightly schedule is there, and its job ran: the second run found nothing new
    meltano_yml = yaml.safe_load((project / "meltano.yml").read_text())
    [loader] = meltano_yml["plugins"]["loaders"]
    assert loader["pip_url"] == f"{REPO}[postgres]"  # a fresh shell installs it, no exports
    [schedule] = meltano_yml["schedules"]
    assert (schedule["job"], schedule["interval"]) == ("omnisend-segments", "@daily")
    unchanged = re.findall(r"Summary for stream 'vip_buyers'.*?unchanged=(\d+)", proc.stderr)
    assert len(unchanged) == 3 and int(unchanged[0]) == 0
    assert int(unchanged[1]) == len(expected_emails(records)), unchanged
    # the store moved to PostgreSQL: said out loud, one full send, the password in .env only
    assert int(unchanged[2]) == 0
    assert proc.stderr.count("is new: every contact is sent") == 2  # SQLite, then PostgreSQL
    assert "postgresql://postgres:***@127.0.0.1" in proc.stderr
    assert STORE_PASSWORD not in proc.stdout + proc.stderr
    assert STORE_PASSWORD not in (project / "meltano.yml").read_text()
    assert STORE_PASSWORD in (project / ".env").read_text()
    found = cluster.rows(
        "postgres", "SELECT count(*) AS n FROM target_omnisend.contact_fingerprints"
    )
    assert found == [{"n": str(len(expected_emails(records)))}]
    # Log lines of the README's `meltano run`: none per record. The sample's 39 rejected
    # records have two reasons (missing, invalid email): three lines each, the rest counted.
    first_run = proc.stderr.split("meltano run tap-jsonl target-omnisend\n", 1)[1]
    first_run = first_run.split("meltano job add", 1)[0]
    assert first_run.count("Rejected a record") == 6, first_run[-3000:]
    assert first_run.count("not logged") == 5  # 2 rejection reasons, 3 warning kinds

    # README troubleshooting: a start-up failure under Meltano (here a wrong key) ends in
    # the tap's BrokenPipeError; the cause is the target's one line above it.
    wrong_key = subprocess.run(
        [str(MELTANO), "run", "--full-refresh", "tap-jsonl", "target-omnisend"],
        cwd=project,
        env={
            **os.environ,
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "TARGET_OMNISEND_API_URL": server.url,
            "TARGET_OMNISEND_API_KEY": "wrong-key-0000",
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = wrong_key.stdout + wrong_key.stderr
    assert wrong_key.returncode != 0
    cause = log.index("Omnisend refused the API key")
    if "BrokenPipeError" in log:
        assert cause < log.index("BrokenPipeError"), log[-4000:]

    # The project reinstalls from a fresh shell: no constraint files, no exports.
    fresh = {k: v for k, v in os.environ.items() if not k.endswith("_CONSTRAINT")}
    reinstall = subprocess.run(
        [str(MELTANO), "install", "--clean", "--plugin-type", "loader", "target-omnisend"],
        cwd=project,
        env={**fresh, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", "UV_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert reinstall.returncode == 0, (reinstall.stdout + reinstall.stderr)[-4000:]
    about = subprocess.run(
        [str(MELTANO), "invoke", "target-omnisend", "--version"],
        cwd=project,
        env={**fresh, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert about.returncode == 0 and "target-omnisend" in about.stdout + about.stderr
