"""Issue 21: every README block a user copies runs, exactly as written, in a test.

Each fenced block of the README carries a marker line before it naming the test that
runs it: `meltano-commands` (tests/test_meltano.py, a newcomer's fresh project),
`postgres-example` (tests/test_postgres_e2e.py, real PostgreSQL and tap-postgres under
Meltano), `plain-pipe` (here), or `dev-commands` (the make targets CI runs; they start
the suite, so the suite cannot run them). A block without a marker fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.harness import REPO, sample_records, stored_email
from tests.omnisend_server import OmnisendServer
from tests.readme import readme_code_blocks
from tests.test_cli import expected_emails

#: marker → the test file that runs the blocks it marks.
MARKERS = {
    "<!-- meltano-commands:": "tests/test_meltano.py",
    "<!-- postgres-example:": "tests/test_postgres_e2e.py",
    "<!-- plain-pipe:": "tests/test_readme_examples.py",
    "<!-- store-sql:": "tests/test_store.py",
    "<!-- dev-commands:": ".ci/run",
}


def marker_of(before: str) -> str | None:
    return next((marker for marker in MARKERS if before.startswith(marker)), None)


def test_every_readme_code_block_is_run_by_a_named_test() -> None:
    blocks = readme_code_blocks(with_language=True)
    unmarked = [body for before, _, body in blocks if marker_of(before) is None]
    assert unmarked == [], "README code blocks that no test runs (add a marker line before them)"
    for before, _, _ in blocks:
        runner = MARKERS[marker_of(before) or ""]
        assert runner in before, f"the marker line should name {runner}: {before}"
        assert (REPO / runner).exists()
    kinds = {marker_of(before) for before, _, _ in blocks}
    assert kinds == set(MARKERS), kinds


def plain_pipe_block() -> str:
    blocks = readme_code_blocks(with_language=True)
    [body] = [body for before, _, body in blocks if "plain-pipe" in before]
    return body


def _copy_of_the_clone(where: Path) -> Path:
    """The checkout's files (what `git clone` gives), without venvs or run artefacts."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", ".meltano", "*.egg-info", "__pycache__", ".target-omnisend", "build"
    )
    return Path(shutil.copytree(REPO, where, ignore=ignore, symlinks=True))


def _virtualenv(where: Path) -> Path:
    """A fresh virtualenv that sees this suite's installed dependencies (a .pth file), so
    `pip install -e .` resolves them without downloading; the target itself is built and
    installed from the copy of the clone, into this virtualenv."""
    venv.create(where, with_pip=True)
    [site] = list((where / "lib").glob("python3*/site-packages"))
    (site / "suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return where / "bin"


@pytest.mark.e2e
def test_the_plain_pipe_block_runs_as_written(server: OmnisendServer, tmp_path: Path) -> None:
    clone = _copy_of_the_clone(tmp_path / "target-omnisend")
    bindir = _virtualenv(tmp_path / "venv")
    proc = subprocess.run(
        ["bash", "-c", "set -euo pipefail -v\n" + plain_pipe_block()],
        cwd=clone,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TARGET_OMNISEND_")},
            "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
            "VIRTUAL_ENV": str(bindir.parent),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "OMNISEND_API_KEY": API_KEY,
            # the one thing a real user does not set: the local server instead of Omnisend
            "TARGET_OMNISEND_API_URL": server.url,
        },
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    # The target that ran is the one the block installed, from the clone's copy.
    installed = subprocess.run(
        [str(bindir / "python"), "-c", "import target_omnisend; print(target_omnisend.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert installed.stdout.startswith(str(clone)), installed.stdout
    assert {stored_email(c) for c in server.contacts()} == expected_emails(sample_records())
    assert API_KEY not in proc.stdout + proc.stderr
    assert (clone / "rejected_records.jsonl").exists()  # where the sample config puts it
    assert (clone / "reports" / "omnisend_summary.json").exists()
