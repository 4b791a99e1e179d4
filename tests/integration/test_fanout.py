"""A 5,000-record change set is fanned out through Service Bus to the worker in batches; the job ends
`succeeded` with exact counts, and nothing is duplicated."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _run_incremental(api: Any, mapping: str = "CUSTOMER") -> dict[str, Any]:
    resp = api.post(f"/api/mappings/{mapping}/jobs", json={"kind": "incremental"})
    assert resp.status_code == 202, resp.text
    return api.wait_for_job(resp.json()["jobId"], timeout=240)


async def _timer_started_job(stack: Any) -> str:
    """Runs the timer's logic (as the scheduled function would, with scheduled syncs on) against the stack."""
    from datetime import timedelta

    from shared.bootstrap import build_runtime
    from shared.config import settings_from_env
    from shared.services.engine import utcnow
    from shared.services.schedule import start_due_syncs

    runtime = build_runtime(settings_from_env({**stack.child_env(), "SYNC_SCHEDULED_SYNC": "true"}))
    try:
        started = await start_due_syncs(runtime.engine, now=utcnow() + timedelta(minutes=10))
    finally:
        await runtime.aclose()
    assert "CUSTOMER" in started, started
    return started["CUSTOMER"]


async def test_five_thousand_changes_fan_out_and_count_exactly(stack: Any, api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    for _ in range(5):  # drain whatever earlier tests left, so the timer's job sees only our seed
        if _run_incremental(api)["counts"]["inserted"] == 0:
            break
    else:
        raise AssertionError("earlier tests keep producing uncoupled records")
    prefix = f"Fan{uuid.uuid4().hex[:6]}"
    sims.seed("bc", stack.url("bc_sim"), "customers", 5000, prefix)

    job = api.wait_for_job(await _timer_started_job(stack), timeout=240)
    errors = api.get("/api/errors", params={"mapping": "CUSTOMER"}).json() if job["status"] != "succeeded" else None
    assert job["status"] == "succeeded" and job["kind"] == "incremental", (job, errors)
    assert job["counts"]["inserted"] == 5000 and job["counts"]["coupled"] == 5000, job
    assert job["counts"]["failed"] == 0, job
    assert job["batches"]["expected"] >= 4 and job["batches"]["completed"] == job["batches"]["expected"], job
    assert sims.dv_count("accounts", f"startswith(name,'{prefix}')") == 5000  # one row each, no duplicate

    again = _run_incremental(api)  # the service's own writes come back as changes but change nothing
    assert again["counts"]["inserted"] == 0 and again["counts"]["modified"] == 0 and again["counts"]["failed"] == 0
    print(
        f"\n[fanout] 5000 records: {job['batches']['expected']} messages "
        f"({job['batches']['expected'] / 5000:.4f} per record)"
    )


def test_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(
    stack: Any, api: Any, world: dict[str, Any]
) -> None:
    import time

    sims = world["sims"]
    _run_incremental(api)
    prefix = f"Kill{uuid.uuid4().hex[:6]}"
    sims.seed("bc", stack.url("bc_sim"), "customers", 6000, prefix)
    resp = api.post("/api/mappings/CUSTOMER/jobs", json={"kind": "incremental"})
    job_id = resp.json()["jobId"]
    deadline = time.monotonic() + 120
    while api.get(f"/api/jobs/{job_id}").json()["batches"]["completed"] < 2:  # fanned out, some batches done
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stack.restart("host")  # SIGKILL: the in-flight batch's lock expires and Service Bus redelivers it
    job = api.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", job
    counts = job["counts"]
    # A batch interrupted after some creates is redone: its records then count as unchanged, never twice.
    assert counts["inserted"] + counts["unchanged"] >= 6000 and counts["failed"] == 0, job
    assert sims.dv_count("accounts", f"startswith(name,'{prefix}')") == 6000  # nothing lost, nothing duplicated
    couplings = api.all_pages("/api/mappings/CUSTOMER/couplings")
    mine = [c for c in couplings if c["dataverseId"]]
    assert len({c["bcId"] for c in mine}) == len(mine) and len({c["dataverseId"] for c in mine}) == len(mine)
