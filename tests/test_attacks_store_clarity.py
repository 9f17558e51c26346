"""Attacks on the fingerprint store (issue 20) and on the clarity items (issue 21), as a
data engineer running the target nightly would make them: each one that broke something
is a test here, beside the fix in the module that owns the behaviour."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, run_target
from tests.omnisend_server import OmnisendServer
from tests.store_backends import PASSWORD, Where, where_for
from tests.test_omnisend_server import eventually
from tests.test_postgres_e2e import (
    Cluster,
    cluster,  # noqa: F401 (the fixture)
    free_port,
)
from tests.test_store_runs import _Held

pytestmark = pytest.mark.e2e

DATA = REPO / "tests" / "data_files" / "pipeline"
STATE = b'{"type": "STATE", "value": {"bookmarks": {"vip": {"done": true}}}}\n'


def scenario(name: str) -> bytes:
    return (DATA / name).read_bytes() + STATE


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line]


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    return where_for(request.param, request, tmp_path)


# -- passwords: libpq also takes one in the URL's query string ----------------------------


def test_a_password_in_the_store_urls_query_string_is_never_shown(
    server: OmnisendServer,
    config: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """`postgresql://user@host/db?password=…` is a libpq URL form users copy from their
    provider's dashboard: the password must stay out of every line, as in the userinfo."""
    pg: Cluster = request.getfixturevalue("cluster")
    url = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres?password={PASSWORD}"
    summary = tmp_path / "summary.json"
    config.update(
        fingerprint_store_path=url,
        fingerprint_store_schema="t_query_pw",
        summary_path=str(summary),
    )
    run = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    shown = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres?password=***"
    assert f"Fingerprint store {shown} (schema t_query_pw) is new" in run.stderr
    assert PASSWORD not in run.output + summary.read_text()

    port = free_port()  # nothing listens there: the error line too
    config["fingerprint_store_path"] = (
        f"postgresql://omnisend@127.0.0.1:{port}/x?password={PASSWORD}"
    )
    failed = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert failed.returncode == 1
    (line,) = errors(failed.stderr)
    assert f"127.0.0.1:{port}" in line
    assert PASSWORD not in failed.output and "Traceback" not in failed.output


def test_the_last_resort_redaction_knows_the_query_string_password_too() -> None:
    """An unexpected error's final line is redacted with every secret the process may
    hold (`privacy.secrets_in_use`): the `?password=` form, as written and decoded."""
    from target_omnisend.privacy import one_line_error, secrets_in_use

    url = "postgresql://omnisend@db.internal/segments?sslmode=require&password=p%40ss-w0rd!"
    found = secrets_in_use([], {"TARGET_OMNISEND_FINGERPRINT_STORE_PATH": url})
    line = one_line_error(f"could not reach {url} (p@ss-w0rd!)", found)
    assert "p%40ss-w0rd!" not in line and "p@ss-w0rd!" not in line


# -- output paths checked at start: two settings naming one file -----------------------------


@pytest.mark.parametrize(
    ("settings", "first", "second"),
    [
        # the summary, written last, replaced the three rejected records (exit 0)
        (
            {"summary_path": "out.json", "rejected_records_path": "out.json"},
            "rejected_records_path",
            "summary_path",
        ),
        # the summary replaced the SQLite store: every later run failed to open it
        (
            {"summary_path": "store.sqlite", "fingerprint_store_path": "store.sqlite"},
            "summary_path",
            "fingerprint_store_path",
        ),
        # a dry run's output over the store: the store must not change by one byte
        (
            {
                "dry_run": True,
                "dry_run_path": "store.sqlite",
                "fingerprint_store_path": "store.sqlite",
            },
            "dry_run_path",
            "fingerprint_store_path",
        ),
        # the rejected file appended to the store's write-ahead log
        (
            {
                "rejected_records_path": "./store.sqlite-wal",
                "fingerprint_store_path": "store.sqlite",
            },
            "rejected_records_path",
            "fingerprint_store_path",
        ),
    ],
)
def test_two_settings_naming_one_file_are_refused_at_start(
    server: OmnisendServer,
    config: dict[str, Any],
    tmp_path: Path,
    settings: dict[str, Any],
    first: str,
    second: str,
) -> None:
    store = tmp_path / "store.sqlite"
    config.update(fingerprint_store_path=str(store))
    night = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert night.returncode == 0, night.stderr[-2000:]
    before = store.read_bytes()
    posts = server.count(method="POST")

    config.update(settings)
    failing = (DATA / "three_members_fail_schema.singer").read_bytes() + STATE
    run = run_target(config, failing, workdir=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stdout == ""
    (line,) = errors(run.stderr)
    assert f"{first} and {second} name the same file" in line
    assert "Traceback" not in run.output
    assert server.count(method="POST") == posts  # nothing sent
    assert store.read_bytes() == before
    assert not (tmp_path / "out.json").exists()

    # Each its own file: the next run works, and the store still knows everyone.
    config[first] = "own.json"
    config.setdefault("summary_path", "summary.json")
    config.pop("dry_run", None)
    fixed = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    summary = json.loads((tmp_path / config["summary_path"]).read_text())
    assert summary["streams"]["vip"]["unchanged"] == 20


# -- one SQLite store reached through a symlink ----------------------------------------------


def test_two_runs_of_one_pipeline_reaching_one_store_by_two_paths_never_interleave(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """A store file shared through a symlink (a volume mounted elsewhere, a path set per
    host) is one store: the second run of the pipeline must see the first one's lock."""
    real = tmp_path / "volume" / "fingerprints.sqlite"
    link = tmp_path / "project" / ".target-omnisend" / "fingerprints.sqlite"
    real.parent.mkdir(parents=True)
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    config.update(fingerprint_store_lock_timeout=0)
    first = _Held(
        {**config, "fingerprint_store_path": str(real)},
        tmp_path / "first",
        scenario("full_read_20.singer"),
    )
    real_store = Where("sqlite", str(real))
    assert eventually(real_store.pipeline_locked, timeout=60), first.stderr()[-2000:]

    config["fingerprint_store_path"] = str(link)
    second = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path / "project")
    assert second.returncode == 1, second.stderr[-2000:]
    assert second.stdout == ""
    (line,) = errors(second.stderr)
    assert "another run of this pipeline (stream 'vip') is still using the fingerprint" in line
    done = first.finish()
    assert done.returncode == 0, done.stderr[-2000:]
    assert sum(b["totalCount"] for b in server.batches()) == 20  # the stopped run sent nothing


def test_an_unencoded_at_sign_in_the_store_password_is_refused_without_showing_it(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """`postgresql://omnisend:Hunter2@night@db:5432/segments`: a password with an '@'
    pasted as is. Read as host 'night@db', the store's name and the driver's "could not
    translate host name" showed the part of the password after the '@'."""
    port = free_port()
    config["fingerprint_store_path"] = (
        f"postgresql://omnisend:Hunter2@night-owl-do-not-log@127.0.0.1:{port}/segments"
    )
    run = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    (line,) = errors(run.stderr)
    assert "write an '@' in the user name or password as %40" in line
    assert "night-owl" not in run.output and "Hunter2" not in run.output
    assert "Traceback" not in run.output
    assert server.count(method="POST") == 0

    # Written as the line says, the same password works (the cluster trusts any).
    config["fingerprint_store_path"] = (
        f"postgresql://omnisend:Hunter2%40night-owl-do-not-log@127.0.0.1:{port}/segments"
    )
    encoded = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert encoded.returncode == 1  # nothing listens on that port: a connection error
    (line,) = errors(encoded.stderr)
    assert f"postgresql://omnisend:***@127.0.0.1:{port}/segments" in line
    assert "night-owl" not in encoded.output and "Hunter2" not in encoded.output


# -- a lock someone else holds on the store's tables -----------------------------------------


def test_a_table_lock_held_in_postgresql_stops_the_run_in_one_line_instead_of_hanging(
    server: OmnisendServer,
    config: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """An admin's session left open in psql (a VACUUM FULL, a `BEGIN; DELETE …` never
    committed) holds a lock on the store's tables. PostgreSQL waits for a lock forever by
    default: the nightly run hung without a line. SQLite waits a bounded time; so does
    PostgreSQL now (fingerprint_store_lock_timeout), then one line and exit 1."""
    where = where_for("postgres", request, tmp_path)
    assert where.cluster is not None
    config.update(where.settings(), fingerprint_store_lock_timeout=1)
    first = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]

    psql = [
        *where.cluster.as_user,
        str(where.cluster.bindir / "psql"),
        *("-X", "-q", "-t", "-A", "-h", str(where.cluster.root), "-p", str(where.cluster.port)),
        *("-U", "postgres", "-d", "postgres"),
    ]
    admin = subprocess.Popen(psql, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert admin.stdin is not None and admin.stdout is not None
    try:
        admin.stdin.write(
            f"BEGIN; LOCK TABLE {where.table('partitions')} IN ACCESS EXCLUSIVE MODE;\n"
            "SELECT 'locked';\n"
        )
        admin.stdin.flush()
        assert admin.stdout.readline().strip() == "locked"

        run = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path, timeout=60)
        assert run.returncode == 1, run.stderr[-2000:]
        assert run.stdout == ""
        (line,) = errors(run.stderr)
        assert "the fingerprint store postgresql://postgres:***@" in line
        assert "another session holds a lock on its tables longer than" in line
        assert PASSWORD not in run.output and "Traceback" not in run.output
    finally:
        admin.stdin.close()
        admin.wait(timeout=30)
    again = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
