"""Engine CPU per record with the network taken out: the real engine over the in-memory fakes of every port.

What is timed (``time.process_time``) is a full sync of existing couplings in both directions with 10% of the
records changed: change reading from the fakes, coupling lookups, codec (field extraction, payloads), the pure
planner, write-op building and the bookkeeping of every coupling. The fakes' own work (building records,
copying dicts) is included, so the figure is an upper bound of the engine's own cost.
"""

from __future__ import annotations

import time
from typing import Any

from shared.services.engine import Engine
from shared.services.jobs import JobService
from tests.fake_services import FakeRecordService


def fake_engine() -> Engine:
    from tests.fake_services import fake_engine as build

    return build()


async def engine_cpu(n: int = 5000) -> dict[str, Any]:
    e = fake_engine()
    bc = e.bc
    assert isinstance(bc, FakeRecordService)
    for i in range(n):
        bc.put("customers", {"displayName": f"Customer {i}", "number": f"C{i:06d}", "phoneNumber": f"+1 {i}",
                             "email": f"c{i}@example.com", "city": "Seattle", "country": "US"})  # fmt: skip
    mapping = await e.registry.get("CUSTOMER")
    jobs = JobService(e)
    t0 = time.process_time()
    await jobs.run_mapping_sync(mapping, full=True, job_id=None)  # create + couple n (no fan-out: job_id None)
    create_cpu = time.process_time() - t0
    for rid in list(bc.rows["customers"])[: n // 10]:
        bc.update("customers", rid, phoneNumber="+1 changed")
    t0 = time.process_time()
    outcome = await jobs.run_mapping_sync(mapping, full=True, job_id=None)
    sync_cpu = time.process_time() - t0
    visits = sum(outcome.counts.values()) - outcome.counts.get("coupled", 0)
    return {
        "records": n,
        "createCoupleCpuMsPerRecord": round(create_cpu * 1000 / n, 4),
        "fullSyncCpuMsPerRecord": round(sync_cpu * 1000 / n, 4),
        "fullSyncPairVisits": visits,
        "fullSyncCpuMsPerVisit": round(sync_cpu * 1000 / max(visits, 1), 4),
        "counts": {k: v for k, v in outcome.counts.items() if v},
    }
