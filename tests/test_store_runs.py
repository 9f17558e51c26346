"""The fingerprint store as users meet it, through the real CLI and the local Omnisend:
an ephemeral runner (every run in a brand-new working directory) keeping its memory in
PostgreSQL, two runs of one pipeline started at once (both backends), and a store that
fails mid-run (a lost PostgreSQL connection, a corrupt SQLite page)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import IO, Any

import pytest

from tests.harness import REPO, TARGET_BIN, Run, run_target, stored_email
from tests.omnisend_server import OmnisendServer
from tests.store_backends import PASSWORD, Where, where_for
from tests.test_omnisend_server import eventually
from tests.test_postgres_e2e import cluster, free_port  # noqa: F401 (cluster: the fixture)

pytestmark = pytest.mark.e2e

DATA = REPO / "tests" / "data_files" / "pipeline"
TAG = "segment:vip"
STATE = b'{"type": "STATE", "value": {"bookmarks": {"vip": {"done": true}}}}\n'


def scenario(name: str) -> bytes:
    """A Singer file of `tests/data_files/pipeline`, ending with a STATE to pass on."""
    return (DATA / name).read_bytes() + STATE


def members(start: int, stop: int) -> set[str]:
    return {f"member{i}@example.com" for i in range(start, stop)}


def tagged(server: OmnisendServer) -> set[str]:
    return {stored_email(c) for c in server.contacts() if TAG in (c.get("tags") or [])}


def contacts_written(server: OmnisendServer) -> int:
    return sum(b["totalCount"] for b in server.batches())


def errors(run: Run) -> list[str]:
    return [line for line in run.stderr.splitlines() if "ERROR" in line]


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    return where_for(request.param, request, tmp_path)


def _fresh_runner(tmp_path: Path, n: int) -> Path:
    """A brand-new working directory, as a container or CI runner gets each run."""
    workdir = tmp_path / f"runner-{n}"
    workdir.mkdir()
    return workdir


def test_an_ephemeral_runner_keeps_its_memory_in_postgresql(
    server: OmnisendServer,
    config: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    where = where_for("postgres", request, tmp_path)
    config.update(
        where.settings(),
        sync_mode="mirror",
        mirror_confirm_runs=2,
        rejected_records_path="rejected.jsonl",  # relative: lost with the runner
        summary_path="summary.json",
    )
    runs = [
        ("full_read_20.singer", {"delivered": 20, "unchanged": 0}, None),
        ("full_read_20.singer", {"delivered": 0, "unchanged": 20}, None),
        ("full_read_15_of_20.singer", {"delivered": 0, "unchanged": 15}, {"staged": 5}),
        ("full_read_15_of_20.singer", {"delivered": 0, "unchanged": 15}, {"removed": 5}),
    ]
    for n, (name, counts, mirrored) in enumerate(runs):
        workdir = _fresh_runner(tmp_path, n)
        run = run_target(config, scenario(name), workdir=workdir)
        assert run.returncode == 0, run.stderr[-2000:]
        assert len(run.states) == 1
        assert ("is new: every contact is sent" in run.stderr) == (n == 0)
        summary = json.loads((workdir / "summary.json").read_text())
        vip = summary["streams"]["vip"]
        assert {key: vip[key] for key in counts} == counts, (n, vip)
        if mirrored:
            assert {k: summary["mirror"][TAG][k] for k in mirrored} == mirrored, (n, summary)
        assert not (workdir / ".target-omnisend").exists()  # nothing kept on the runner
        assert PASSWORD not in run.output
        if n == 1:
            assert contacts_written(server) == 20  # the re-run sent no batch
    assert tagged(server) == members(0, 15)
    assert len(server.segments()) == 1  # the saved segment is found again, not re-made
    assert server.count(method="POST", path_prefix="/segments") == 1


# -- two runs of one pipeline at once --------------------------------------------------------


class _Held:
    """A run that has taken its pipeline's lock and is still reading its input."""

    def __init__(self, config: dict[str, Any], workdir: Path, payload: bytes) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps({**config, "batch_size_rows": 1}))
        self.stderr_path = workdir / "stderr.log"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [str(TARGET_BIN), "--config", str(workdir / "config.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=workdir,
        )
        assert self.proc.stdin is not None
        lines = payload.splitlines(keepends=True)
        self._rest = b"".join(lines[3:])
        self.proc.stdin.write(b"".join(lines[:3]))  # SCHEMA, ACTIVATE_VERSION, one RECORD
        self.proc.stdin.flush()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def finish(self) -> Run:
        out, _ = self.proc.communicate(self._rest, timeout=120)
        self._stderr.close()
        return Run(self.proc.returncode, out.decode(), self.stderr())


def test_a_second_run_of_one_pipeline_stops_in_one_line_while_the_first_runs(
    server: OmnisendServer, config: dict[str, Any], where: Where, tmp_path: Path
) -> None:
    config.update(where.settings(), fingerprint_store_lock_timeout=0)
    first = _Held(config, tmp_path / "first", scenario("full_read_20.singer"))
    assert eventually(where.pipeline_locked, timeout=60), first.stderr()[-2000:]

    second = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert second.returncode == 1
    assert second.stdout == ""  # no STATE
    (line,) = errors(second)
    assert (
        "another run of this pipeline (stream 'vip') is still using the fingerprint store" in line
    )
    shown = where.path if where.kind == "sqlite" else where.path.replace(PASSWORD, "***")
    assert shown in line
    assert PASSWORD not in second.output and "Traceback" not in second.output

    done = first.finish()
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.states) == 1
    assert contacts_written(server) == 20  # the stopped run sent nothing
    again = run_target(
        {**config, "summary_path": str(tmp_path / "s.json")},
        scenario("full_read_20.singer"),
        workdir=tmp_path,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "s.json").read_text())["streams"]["vip"]["unchanged"] == 20


def test_a_second_run_of_one_pipeline_waits_and_is_not_a_second_mirror_confirmation(
    server: OmnisendServer, config: dict[str, Any], where: Where, tmp_path: Path
) -> None:
    """Both runs read a source where 5 of 20 members left, at the same time: with
    mirror_confirm_runs 2 that is one confirmation, not two — nobody is removed yet."""
    config.update(where.settings(), sync_mode="mirror", mirror_confirm_runs=2)
    first_run = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert first_run.returncode == 0, first_run.stderr[-2000:]

    first = _Held(config, tmp_path / "first", scenario("full_read_15_of_20.singer"))
    assert eventually(where.pipeline_locked, timeout=60), first.stderr()[-2000:]
    second = _Held(
        {**config, "summary_path": str(tmp_path / "second.json")},
        tmp_path / "second",
        scenario("full_read_15_of_20.singer"),
    )
    assert eventually(lambda: "waiting up to 60 s" in second.stderr(), timeout=60)
    assert second.proc.poll() is None
    done = first.finish()
    assert done.returncode == 0, done.stderr[-2000:]
    waited = second.finish()
    assert waited.returncode == 0, waited.stderr[-2000:]
    assert len(waited.states) == 1
    summary = json.loads((tmp_path / "second.json").read_text())
    assert summary["streams"]["vip"]["unchanged"] == 15  # it read what the first wrote
    assert summary["mirror"][TAG] == {
        "removed": 0,
        "tagged": 20,
        "staged": 5,
        "retagged": 0,
        "held_by_other_pipelines": 0,
    }
    assert tagged(server) == members(0, 20)

    # The next night is the second confirmation.
    night = run_target(config, scenario("full_read_15_of_20.singer"), workdir=tmp_path)
    assert night.returncode == 0, night.stderr[-2000:]
    assert tagged(server) == members(0, 15)


def test_a_killed_run_leaves_no_lock_behind(
    server: OmnisendServer, config: dict[str, Any], where: Where, tmp_path: Path
) -> None:
    """kill -9 (an OOM kill, a node lost): the OS or the server drops its lock with it."""
    config.update(where.settings())
    killed = _Held(config, tmp_path / "killed", scenario("full_read_20.singer"))
    assert eventually(where.pipeline_locked, timeout=60), killed.stderr()[-2000:]
    killed.proc.kill()
    killed.finish()
    assert eventually(lambda: not where.pipeline_locked(), timeout=30)
    run = run_target(
        {**config, "fingerprint_store_lock_timeout": 0},
        scenario("full_read_20.singer"),
        workdir=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.states) == 1


# -- a store failing mid-run -------------------------------------------------------------------


def test_a_lost_postgresql_connection_mid_run_stops_in_one_line_without_state(
    server: OmnisendServer,
    config: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    where = where_for("postgres", request, tmp_path)
    config.update(where.settings())
    running = _Held(config, tmp_path / "run", scenario("full_read_20.singer"))
    assert eventually(where.pipeline_locked, timeout=60), running.stderr()[-2000:]
    where.kill_connections()
    run = running.finish()
    assert run.returncode == 1, run.stderr
    assert run.stdout == ""
    (line,) = errors(run)
    assert where.path.replace(PASSWORD, "***") in line and "failed while" in line
    assert PASSWORD not in run.output and "Traceback" not in run.output


def test_a_corrupt_sqlite_page_stops_the_next_run_in_one_line_without_state(
    server: OmnisendServer,
    config: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    from tests.test_store import _corrupt_data_pages

    where = where_for("sqlite", request, tmp_path)
    config.update(where.settings())
    first = run_target(config, scenario("full_read_100.singer"), workdir=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    _corrupt_data_pages(Path(where.path))
    run = run_target(config, scenario("full_read_100.singer"), workdir=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    (line,) = errors(run)
    assert f"the fingerprint store {where.path} failed while" in line
    assert "Traceback" not in run.output


# -- hostile or mistaken store settings ------------------------------------------------------


@pytest.mark.parametrize("in_url", [True, False], ids=["password-in-url", "password-setting"])
def test_an_unreachable_postgresql_store_stops_in_one_line_without_its_password(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path, in_url: bool
) -> None:
    port = free_port()  # nothing listens there
    user = f"omnisend:{PASSWORD}" if in_url else "omnisend"
    config["fingerprint_store_path"] = f"postgresql://{user}@127.0.0.1:{port}/segments"
    if not in_url:
        config["fingerprint_store_password"] = PASSWORD
    run = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    (line,) = errors(run)
    shown = f"postgresql://omnisend:***@127.0.0.1:{port}/segments"  # either way: masked
    assert f"the fingerprint store {shown} (schema target_omnisend) failed while opening it" in line
    assert PASSWORD not in run.output and "Traceback" not in run.output
    assert server.count(method="POST") == 0


@pytest.mark.parametrize(
    ("settings", "code", "expected"),
    [
        (
            {"fingerprint_store_path": "postgresql://omnisend@[::1/segments"},
            1,
            "looks like a PostgreSQL URL but cannot be read",
        ),
        (
            {"fingerprint_store_schema": 'x"; DROP SCHEMA public CASCADE; --'},
            2,
            "fingerprint_store_schema",
        ),
        ({"fingerprint_store_lock_timeout": -1}, 2, "fingerprint_store_lock_timeout"),
        (
            {"fingerprint_store_path": "mysql://omnisend@127.0.0.1/segments"},
            1,
            "fingerprint_store_path is a mysql:// URL; it takes a file path (SQLite) or a "
            "postgresql://",
        ),
        ({"fingerprint_store_path": "."}, 1, "the fingerprint store . failed while opening it"),
    ],
    ids=["broken-url", "schema-injection", "negative-timeout", "another-database", "directory"],
)
def test_a_mistaken_store_setting_is_one_line_before_anything_is_sent(
    server: OmnisendServer,
    config: dict[str, Any],
    tmp_path: Path,
    settings: dict[str, Any],
    code: int,
    expected: str,
) -> None:
    config.update(settings)
    run = run_target(config, scenario("full_read_20.singer"), workdir=tmp_path)
    assert run.returncode == code, run.stderr[-2000:]
    assert run.stdout == ""
    (line,) = errors(run)
    assert expected in line
    assert "Traceback" not in run.output
    assert server.count(method="POST") == 0


def test_a_postgresql_store_without_its_driver_names_the_extra_to_install(
    server: OmnisendServer, config: dict[str, Any], tmp_path: Path
) -> None:
    """An install without the `[postgres]` extra: the drivers cannot be imported."""
    blocked = tmp_path / "no-drivers"
    for module in ("psycopg", "psycopg2"):
        (blocked / module).mkdir(parents=True)
        (blocked / module / "__init__.py").write_text("raise ImportError('not installed')\n")
    config["fingerprint_store_path"] = "postgresql://omnisend@127.0.0.1:5432/segments"
    run = run_target(
        config,
        scenario("full_read_20.singer"),
        workdir=tmp_path,
        env={"PYTHONPATH": str(blocked)},
    )
    assert run.returncode == 1
    assert run.stdout == ""
    (line,) = errors(run)
    assert "needs a PostgreSQL driver: pip install 'target-omnisend[postgres]'" in line
    assert server.count(method="POST") == 0
