"""Documents (#21): a full synchronization of SALESORDER-ORDER, ``n`` released BC orders with ``lines`` lines
each, after the parents (units, customers, items) were coupled. Reports the calls per document and per line
(the target: at most 0.05 calls per line) and checks every order arrived, coupled, with all its details.

Standalone: ``python -m bench.documents [N]`` (starts its own backing services, as ``make bench`` does)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.engine_runs import Phase, drain
from bench.env import BenchEnv, bench_env
from shared.services.jobs import JobService

CUSTOMERS = 50
ITEMS = 100


async def documents_scenario(env: BenchEnv, n: int, lines: int = 5) -> dict[str, Any]:
    await env.bc_sim.seed("customers", CUSTOMERS, "DocCust")
    await env.bc_sim.seed("items", ITEMS, "DocItem")
    await env.bc_sim.seed("salesOrders", n, "Ord", {"lines": lines})
    jobs = JobService(env.engine)
    for parent in ("UNIT OF MEASURE", "CURRENCY", "CUSTOMER", "ITEM-PRODUCT"):  # the parents: not measured
        await jobs.start(parent, "full", "toDataverse", full=True)
        await drain(env, jobs)
    before = await env.snapshot()
    t0 = time.perf_counter()
    job = await jobs.start("SALESORDER-ORDER", "full", "toDataverse", full=True)
    await drain(env, jobs)
    seconds = time.perf_counter() - t0
    after = await env.snapshot()
    done = await env.engine.jobs.get(job.job_id)
    assert done is not None
    counts = after.minus(before)
    phase = Phase(f"documents: full sync of {n} orders x {lines} lines", n, seconds, counts, dict(done.counts))
    coupled = 0
    async for page in env.engine.couplings.iter_all("SALESORDER-ORDER"):
        coupled += len(page)
    calls = counts["bcRequests"] + counts["dvRequests"]
    return {
        "n": n,
        "lines": lines,
        "phase": phase.as_json(),
        "calls": calls,
        "callsPerDocument": round(calls / n, 4) if n else None,
        "callsPerLine": round(calls / (n * lines), 5) if n and lines else None,
        "coupled": coupled,
        "allCreated": coupled == n and done.counts.get("inserted", 0) == n and not done.counts.get("failed", 0),
    }


async def _main(n: int) -> dict[str, Any]:
    async with bench_env() as env:
        await env.reset_sims()
        await env.fresh_tables()
        return await documents_scenario(env, n)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)), indent=2))
