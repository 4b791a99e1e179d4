"""The contract's own smoke suite (../shared/contract/smoke), run against the session's local stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.config import PROJECT_ROOT

SMOKE = PROJECT_ROOT.parent / "shared" / "contract" / "smoke"

pytestmark = pytest.mark.stack


@pytest.mark.skipif(not SMOKE.is_dir(), reason=f"the contract folder is not beside the repo ({SMOKE})")
def test_contract_smoke_suite_passes_against_the_stack(stack: Any) -> None:
    env = dict(os.environ)
    env.update(
        {
            "SYNC_BASE_URL": stack.host_url,
            "SYNC_FUNCTION_KEY": stack.function_key,
            "BC_SIM_URL": stack.url("bc_sim"),
            "DV_SIM_URL": stack.url("dv_sim"),
            "AUTHORITY_URL": stack.url("authority"),
            "AUTHORITY_CA": str(Path(stack.ca_file)),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SMOKE)],
        cwd=SMOKE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 11, tail
    assert "skipped" not in proc.stdout.splitlines()[-1], tail
    assert "UNAUTHENTICATED FALLBACK" not in proc.stdout, tail
