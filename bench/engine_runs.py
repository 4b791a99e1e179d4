"""Driving the real engine (``JobService``) through the phases of a scenario, with every channel counted."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench.env import BenchEnv
from shared.domain.model import WriteOp
from shared.services.jobs import JobService

MAPPING = "CUSTOMER"
BC_ENTITY = "customers"
DV_ENTITY = "accounts"
BC_PREFIX = "Bc"
DV_PREFIX = "Dv"
WORKER_CONCURRENCY = 8  # host.json extensions.serviceBus.maxConcurrentCalls


@dataclass
class Phase:
    name: str
    records: int  # records the phase moved or examined (the per-record denominator)
    seconds: float
    counts: dict[str, Any]
    job: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def per_record(self, key: str) -> float:
        return self.counts[key] / self.records if self.records else 0.0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "cpuSeconds": round(self.cpu_seconds, 3),
            "recordsPerSecond": round(self.records / self.seconds, 1) if self.seconds else None,
            "job": self.job,
            **self.counts,
        }
        if self.records:
            for key in ("bcRequests", "dvRequests", "bcClientCalls", "dvClientCalls", "tableOps", "sbMessages",
                        "entitiesRead"):  # fmt: skip
                out[f"{key}PerRecord"] = round(self.counts[key] / self.records, 5)
            out["cpuMsPerRecord"] = round(self.cpu_seconds * 1000 / self.records, 4)
        return out


async def seed(env: BenchEnv, n_bc: int, n_dv: int) -> None:
    """``n_bc`` BC customers and ``n_dv`` Dataverse accounts, none coupled (in-process seeding, not counted)."""
    if n_bc:
        await env.bc_sim.seed(BC_ENTITY, n_bc, BC_PREFIX)
    if n_dv:
        await env.dv_sim.seed(DV_ENTITY, n_dv, DV_PREFIX)


async def engine_sync(env: BenchEnv, name: str, *, full: bool, records: int) -> Phase:
    """One mapping-wide job the way the service runs it: the job is created and its work message sent over
    Service Bus, then a worker handles that message (inline here)."""
    jobs = JobService(env.engine)
    before = await env.snapshot()
    cpu0, t0 = time.process_time(), time.perf_counter()
    job = await jobs.start(MAPPING, "full" if full else "incremental", "bidirectional", full=full)
    await drain(env, jobs)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    after = await env.snapshot()
    done = await env.engine.jobs.get(job.job_id)
    assert done is not None
    if done.status not in ("succeeded", "partial"):
        raise RuntimeError(f"{name}: job {done.status}: {done.detail}")
    counts = {k: v for k, v in done.counts.items() if v}
    return Phase(name, records, seconds, after.minus(before), counts, cpu)


async def drain(env: BenchEnv, jobs: JobService, concurrency: int = WORKER_CONCURRENCY) -> int:
    """Plays the Service Bus worker: handles every published message (and the ones they publish) with
    host.json's ``maxConcurrentCalls`` at a time. Returns the number of messages handled."""
    handled = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(msg: dict[str, Any]) -> None:
        async with sem:
            await jobs.handle(msg)

    while batch := env.publisher.take():
        await asyncio.gather(*(one(m) for m in batch))
        handled += len(batch)
    return handled


async def update_share(env: BenchEnv, share: float, marker: str) -> tuple[dict[str, str], dict[str, str]]:
    """Changes the phone number of ``share`` of the records that originated on each side (disjoint sets, so
    no conflicts); returns {bc id: phone} and {dv id: phone} to verify afterwards. Not counted: the phase
    that follows is measured from its own snapshot."""
    bc, dv = env.runtime.bc, env.runtime.dv
    bc_ids: list[str] = []
    async for page in bc.list_records(BC_ENTITY, select=["id"], filter=f"startswith(displayName,'{BC_PREFIX}')"):
        bc_ids += [r.id for r in page]
    dv_ids: list[str] = []
    async for page in dv.list_records(DV_ENTITY, select=["accountid"], filter=f"startswith(name,'{DV_PREFIX}')"):
        dv_ids += [r.id for r in page]
    bc_pick = bc_ids[: max(1, int(len(bc_ids) * share))]
    dv_pick = dv_ids[: max(1, int(len(dv_ids) * share))]
    bc_new = {i: f"+1 {marker} {n:06d}" for n, i in enumerate(bc_pick)}
    dv_new = {i: f"+2 {marker} {n:06d}" for n, i in enumerate(dv_pick)}
    await bc.write_many(
        BC_ENTITY, [WriteOp("update", ref=i, id=i, fields={"phoneNumber": p}) for i, p in bc_new.items()]
    )
    await dv.write_many(
        DV_ENTITY, [WriteOp("update", ref=i, id=i, fields={"telephone1": p}) for i, p in dv_new.items()]
    )
    return bc_new, dv_new


async def verify(
    env: BenchEnv, expected_pairs: int, bc_updates: dict[str, str], dv_updates: dict[str, str]
) -> dict[str, Any]:
    """Reads both simulators and the coupling table: every record coupled exactly once, both sides equal in
    number, no duplicates, and every update present on the other side."""
    bc, dv = env.runtime.bc, env.runtime.dv
    bc_rows: dict[str, dict[str, Any]] = {}
    async for page in bc.list_records(BC_ENTITY, select=["id", "displayName", "phoneNumber"]):
        bc_rows.update({r.id: r.fields for r in page})
    dv_rows: dict[str, dict[str, Any]] = {}
    async for page in dv.list_records(DV_ENTITY, select=["accountid", "name", "telephone1"]):
        dv_rows.update({r.id: r.fields for r in page})
    couplings = []
    async for page in env.engine.couplings.iter_all(MAPPING):
        couplings += page
    by_bc = {c.bc_id: c for c in couplings}
    by_dv = {c.dataverse_id: c for c in couplings}
    names_bc = [f.get("displayName") for f in bc_rows.values()]
    names_dv = [f.get("name") for f in dv_rows.values()]
    lost_bc_to_dv = sum(
        1
        for i, p in bc_updates.items()
        if i not in by_bc or dv_rows.get(by_bc[i].dataverse_id, {}).get("telephone1") != p
    )
    lost_dv_to_bc = sum(
        1 for i, p in dv_updates.items() if i not in by_dv or bc_rows.get(by_dv[i].bc_id, {}).get("phoneNumber") != p
    )
    result = {
        "expectedPairs": expected_pairs,
        "bcRecords": len(bc_rows),
        "dvRecords": len(dv_rows),
        "couplings": len(couplings),
        "duplicateCouplings": (len(couplings) - len(by_bc)) + (len(couplings) - len(by_dv)),
        "duplicateRecords": (len(names_bc) - len(set(names_bc))) + (len(names_dv) - len(set(names_dv))),
        "danglingCouplings": sum(1 for c in couplings if c.bc_id not in bc_rows or c.dataverse_id not in dv_rows),
        "uncoupledRecords": sum(1 for i in bc_rows if i not in by_bc) + sum(1 for i in dv_rows if i not in by_dv),
        "lostUpdates": lost_bc_to_dv + lost_dv_to_bc,
        "updatesChecked": len(bc_updates) + len(dv_updates),
    }
    result["ok"] = (
        result["bcRecords"] == result["dvRecords"] == result["couplings"] == expected_pairs
        and result["duplicateCouplings"] == 0
        and result["duplicateRecords"] == 0
        and result["danglingCouplings"] == 0
        and result["uncoupledRecords"] == 0
        and result["lostUpdates"] == 0
    )
    return result


async def engine_scenario(env: BenchEnv, n: int, *, label: str, share: float = 0.1) -> dict[str, Any]:
    """Full sync (create + couple) of ``n`` records each way, 10% updates each side + incremental tick(s),
    a no-change tick, then a full sync of the existing couplings; verified at the end."""
    await seed(env, n, n)
    phases = [await engine_sync(env, f"{label}: full sync, create + couple", full=True, records=2 * n)]
    # The first tick after it reads the full sync's own 2n creates back and drops them (a one-off, reported per
    # echoed record); the 10% updates then measure a steady-state incremental, as the timer runs it.
    phases.append(await engine_sync(env, f"{label}: first tick after the full sync (its creates come back)",
                                    full=False, records=2 * n))  # fmt: skip
    bc_new, dv_new = await update_share(env, share, "u1")
    changed = len(bc_new) + len(dv_new)
    phases.append(await engine_sync(env, f"{label}: incremental after 10% updates", full=False, records=changed))
    # Our own writes of the tick above come back in the other side's change feed once (then settle).
    settle = await engine_sync(env, f"{label}: incremental (echoes of own writes)", full=False, records=changed)
    phases.append(settle)
    phases.append(await engine_sync(env, f"{label}: no-change incremental tick", full=False, records=0))
    phases.append(await engine_sync(env, f"{label}: full sync of existing couplings", full=True, records=2 * n))
    verdict = await verify(env, 2 * n, bc_new, dv_new)
    return {"n": n, "phases": [p.as_json() for p in phases], "verify": verdict, "_phases": phases}


async def sample_progress(env: BenchEnv, samples: list[dict[str, float]], label: str, stop: asyncio.Event) -> None:
    """Records written so far by the engine's clients, twice a second (the throughput-over-time chart)."""
    t0 = time.perf_counter()
    bc, dv = env.runtime.bc.calls, env.runtime.dv.calls
    base = bc.records_written + dv.records_written
    while not stop.is_set():
        samples.append({"t": time.perf_counter() - t0, "written": bc.records_written + dv.records_written - base})
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    samples.append({"t": time.perf_counter() - t0, "written": bc.records_written + dv.records_written - base})
