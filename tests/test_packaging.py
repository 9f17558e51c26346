"""The package as PyPI would get it: `python -m build` makes an sdist and a wheel without
deprecation warnings, `twine check` accepts both, and the wheel installed alone into a
fresh venv (no checkout on the path) gives a working `target-omnisend --about`."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.e2e


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The built sdist and wheel, and what the build printed."""
    out = tmp_path_factory.mktemp("dist")
    proc = run(sys.executable, "-m", "build", "--outdir", out, REPO, cwd=out)
    return out, proc.stdout + proc.stderr


def test_build_makes_an_sdist_and_a_wheel_without_deprecation_warnings(
    dist: tuple[Path, str],
) -> None:
    out, log = dist
    assert sorted(p.suffix for p in out.iterdir()) == [".gz", ".whl"]
    assert "Deprecat" not in log, [line for line in log.splitlines() if "Deprecat" in line]


def test_twine_accepts_both(dist: tuple[Path, str]) -> None:
    out, _ = dist
    files = sorted(out.iterdir())
    log = run(sys.executable, "-m", "twine", "check", "--strict", *files, cwd=out).stdout
    assert log.count("PASSED") == 2, log


def test_wheel_metadata_license_urls_and_typing_marker(dist: tuple[Path, str]) -> None:
    out, _ = dist
    [wheel] = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(metadata_name).decode())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert not [c for c in metadata.get_all("Classifier") if c.startswith("License ::")]
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert {u.split(",")[0] for u in metadata.get_all("Project-URL")} >= {"Homepage", "Issues"}
    assert "target_omnisend/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith("tests/")], "the test server is not shipped"


def test_the_wheel_alone_installs_and_answers_about(dist: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = dist
    [wheel] = out.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    run(env_dir / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    about = json.loads(
        run(env_dir / "bin" / "target-omnisend", "--about", "--format=json", cwd=tmp_path).stdout
    )
    assert about["name"] == "target-omnisend"
    assert "api_key" in about["settings"]["required"]
