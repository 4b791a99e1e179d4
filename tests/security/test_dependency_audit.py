"""Dependency audit (pip-audit over requirements.txt) through tests/security/run_pip_audit.sh.

Slow (a private venv and a dependency resolution, ~20-60 s) and needs a vulnerability service: without
one the script reports SKIPPED and this test is skipped with that message, never silently passed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shared.config import PROJECT_ROOT

SCRIPT = Path(PROJECT_ROOT) / "tests" / "security" / "run_pip_audit.sh"


@pytest.mark.slow
def test_pip_audit_finds_no_unknown_vulnerability() -> None:
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    out = proc.stdout + proc.stderr
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    if proc.returncode == 0 and skipped:
        pytest.skip(skipped[0])
    assert proc.returncode == 0, out[-3000:]
    assert "unknown vulnerabilities" in out, out[-3000:]


def test_known_findings_file_is_well_formed() -> None:
    for line in (SCRIPT.parent / "pip-audit-known.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            vid, _, reason = line.partition("#")
            assert vid.split() and reason.strip(), f"an accepted finding needs an id and a reason: {line!r}"
