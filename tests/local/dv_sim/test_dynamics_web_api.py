"""The Dataverse simulator judged by an independent client: dynamics-web-api (npm) drives CRUD with ETags,
paging, $batch change sets, Create/Update/UpsertMultiple, change tracking with deletes, errors and 429s.
The exchange log is kept in test-artifacts/dynamics-web-api.json."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.local.dv_sim.conftest import MakeClient

SUITE = Path(__file__).parent / "conformance" / "dynamics_web_api_suite.cjs"
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is installed by make setup")
async def test_dynamics_web_api_conformance(make_dv: MakeClient) -> None:
    assert (ROOT / "node_modules" / "dynamics-web-api").is_dir(), "run make setup (npm ci) first"
    dv = await make_dv()
    server_url = str(dv.make_url("")).rstrip("/")
    ARTIFACTS.mkdir(exist_ok=True)
    log_file = ARTIFACTS / "dynamics-web-api.json"
    proc = await asyncio.create_subprocess_exec(
        "node", str(SUITE), server_url, str(log_file),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, (out + err).decode()
    report = json.loads(log_file.read_text())
    assert report["failures"] == [] and len(report["exchanges"]) >= 25
