"""`make audit`: pip-audit the project venv, failing only on real findings.

Run with the venv's Python. Installs pip-audit into the venv if needed, audits the
installed packages (not the editable project itself) against PyPI's vulnerability data,
and exits
  1 if any installed package has a known vulnerability (listed, with fixed versions),
  0 otherwise — including, with a clear "audit SKIPPED" line, when pip-audit cannot be
    installed or the vulnerability service cannot be reached or knows none of the
    installed versions (a private mirror, no network): an audit that checked nothing is
    reported as skipped, never as passed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TIMEOUT = 600


def skipped(why: str) -> int:
    print(f"audit SKIPPED (not passed): {why}", flush=True)
    return 0


def main() -> int:
    if importlib.util.find_spec("pip_audit") is None:
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "pip-audit"],
            capture_output=True,
            text=True,
            check=False,
            timeout=TIMEOUT,
        )
        if install.returncode != 0:
            last = (install.stderr.strip().splitlines() or ["no output"])[-1]
            return skipped(f"could not install pip-audit ({last})")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        try:
            run = subprocess.run(
                [
                    *(sys.executable, "-m", "pip_audit"),
                    *("--local", "--skip-editable", "--progress-spinner", "off"),
                    *("--format", "json", "--output", str(report)),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return skipped(f"pip-audit did not finish within {TIMEOUT}s")
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            lines = [line for line in run.stderr.splitlines() if line.strip()]
            return skipped(
                "the vulnerability service could not be reached "
                f"({lines[-1] if lines else f'pip-audit exit {run.returncode}'})"
            )
    dependencies = data.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})")
    if vulnerable:
        print(f"audit FAILED: {len(vulnerable)} vulnerable package(s)", flush=True)
        return 1
    if not audited:
        return skipped(
            f"the vulnerability service knows none of the {len(dependencies)} installed "
            "package versions (no PyPI access, or a private mirror): nothing was audited"
        )
    print(
        f"audit passed: {len(audited)} package(s) audited, no known vulnerabilities "
        f"({len(dependencies) - len(audited)} not auditable)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
