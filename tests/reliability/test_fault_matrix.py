"""Fault matrix on the local stack: each case seeds new and changed records on both sides, injects a
fault through the simulators' `/_sim/faults`, runs a job through Service Bus, and ends with a
consistency check of both simulators and the coupling table (0 lost, 0 duplicated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability.harness import TALLY, World, consistency, count_5xx, tag

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@dataclass
class Seeded:
    names: list[str]  # records created on one side only: must exist once on each side, coupled
    expect_dv_phone: dict[str, str]  # dataverseId -> telephone1 after the sync (a BC change)
    expect_bc_phone: dict[str, str]  # bcId -> phoneNumber after the sync (a Dataverse change)


def couple_new(world: World, name: str) -> tuple[str, str]:
    b = world.sims.bc_create("customers", displayName=name)
    resp = count_5xx(world.api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "createNew": True}))
    assert resp.status_code == 201, resp.text
    return b, resp.json()["dataverseId"]


def seed(world: World, *, bc_new: int = 2, dv_new: int = 2) -> Seeded:
    s = Seeded([], {}, {})
    for _ in range(bc_new):
        s.names.append(n := f"F {tag()}")
        world.sims.bc_create("customers", displayName=n)
    for _ in range(dv_new):
        s.names.append(n := f"F {tag()}")
        world.sims.dv_create("accounts", name=n)
    b1, d1 = couple_new(world, f"F {tag()}")
    b2, d2 = couple_new(world, f"F {tag()}")
    s.expect_dv_phone[d1] = phone = f"+1 {tag()[:8]}"
    world.sims.bc_patch("customers", b1, phoneNumber=phone)
    s.expect_bc_phone[b2] = phone = f"+2 {tag()[:8]}"
    world.sims.dv_patch("accounts", d2, telephone1=phone)
    return s


def run_job(world: World, kind: str = "incremental", timeout: float = 90) -> dict[str, Any]:
    resp = count_5xx(world.api.post("/api/mappings/CUSTOMER/jobs", json={"kind": kind}))
    assert resp.status_code == 202, resp.text
    job = world.api.wait_for_job(resp.json()["jobId"], timeout=timeout)
    TALLY.jobs += 1
    return job


def settle(world: World, job: dict[str, Any]) -> dict[str, Any]:
    """A job that did not finish cleanly must have recorded retryable errors; retrying them settles it."""
    if job["status"] == "succeeded":
        return job
    assert job["status"] == "partial", job
    errors = [e for e in world.api.all_pages("/api/errors", mapping="CUSTOMER") if e.get("jobId") == job["jobId"]]
    assert errors, f"job {job['status']} without a recorded sync error: {job}"
    assert all(e["transient"] for e in errors), errors
    resp = count_5xx(world.api.post("/api/errors/retry", json={"mapping": "CUSTOMER", "all": True}))
    assert resp.status_code == 202, resp.text
    retried = world.api.wait_for_job(resp.json()["jobId"])
    assert retried["status"] == "succeeded", retried
    TALLY.notes.append(f"  job {job['jobId'][:8]} partial ({len(errors)} retryable errors) -> retry succeeded")
    return retried


def check(world: World, s: Seeded) -> None:
    consistency(world, names=s.names)
    lost = 0
    for d, phone in s.expect_dv_phone.items():
        lost += (world.sims.dv_get("accounts", d) or {}).get("telephone1") != phone
    for b, phone in s.expect_bc_phone.items():
        lost += (world.sims.bc_get("customers", b) or {}).get("phoneNumber") != phone
    TALLY.lost += lost
    assert lost == 0, "an update did not arrive on the other side"


# (side, body): statuses that mean "not processed" (429/503) must never show up as failed.
CLEAN = [
    ("bc_sim", {"status": 429, "count": 4, "retryAfter": 1}),
    ("dv_sim", {"status": 429, "count": 4, "retryAfter": 1}),
    ("bc_sim", {"status": 503, "count": 3}),
    ("dv_sim", {"status": 503, "count": 3}),
    ("dv_sim", {"status": 429, "count": 3, "retryAfter": 1, "route": "accounts"}),
]
# 500 is ambiguous for a create: the job may end partial, but only with retryable, recorded errors.
AMBIGUOUS = [
    ("bc_sim", {"status": 500, "count": 3}),
    ("dv_sim", {"status": 500, "count": 3}),
]


@pytest.mark.parametrize(
    ("sim", "fault"), CLEAN + AMBIGUOUS, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values()))
)
def test_job_survives_fault(world: World, sim: str, fault: dict[str, Any]) -> None:
    s = seed(world)
    before = world.ctl.injected()
    world.ctl.fault(sim, **fault)
    job = run_job(world)
    injected = world.ctl.injected() - before
    world.ctl.clear()
    TALLY.cases += 1
    TALLY.faults_injected += injected
    assert injected == fault["count"], f"the job did not meet the faults ({injected} of {fault['count']})"
    if (sim, fault) in CLEAN:
        assert job["status"] == "succeeded", job
        c = job["counts"]
        assert (c["inserted"], c["coupled"], c["failed"]) == (4, 4, 0), job
        assert c["modified"] >= 2, job
    else:
        settle(world, job)
    check(world, s)


def test_429_storm_on_both_sides_at_once(world: World) -> None:
    s = seed(world, bc_new=3, dv_new=3)
    before = world.ctl.injected()
    world.ctl.fault("bc_sim", status=429, count=3, retryAfter=1)
    world.ctl.fault("dv_sim", status=429, count=3, retryAfter=1)
    job = run_job(world, "full")
    TALLY.cases += 1
    TALLY.faults_injected += world.ctl.injected() - before
    assert job["status"] == "succeeded", job
    assert (job["counts"]["inserted"], job["counts"]["coupled"], job["counts"]["failed"]) == (6, 6, 0), job
    check(world, s)
