"""A full synchronization over every default mapping (BC's "Run Full Synchronization" of the default set):
each BC table and the Dataverse users seeded with ``n`` records (the option sets with a few codes), then
one full job per mapping in dependency order, each measured on its own (calls per record per mapping)."""

from __future__ import annotations

from typing import Any

from bench.engine_runs import Phase, drain
from bench.env import BenchEnv
from shared.services.jobs import JobService

# Option sets grow by one InsertOptionValue per new code (as in BC): a handful of codes, not ``n``.
OPTION_CODES = 5


async def seed_default_set(env: BenchEnv, n: int) -> dict[str, int]:
    """BC records and Dataverse users of every default mapping (in-process seeding, not counted)."""
    await env.dv_sim.seed("systemusers", n, "User")
    await env.bc_sim.seed("currencies", n, "Cur")
    await env.bc_sim.seed("unitsOfMeasure", n, "Unit")
    await env.bc_sim.seed("paymentTerms", OPTION_CODES, "Terms")
    await env.bc_sim.seed("shipmentMethods", OPTION_CODES, "Ship")
    await env.bc_sim.seed("customers", n, "Cust")
    await env.bc_sim.seed("vendors", n, "Vend")
    await env.bc_sim.seed("contacts", n, "Pers", {"type": "Person"})
    await env.bc_sim.seed("items", n, "Item")
    await env.bc_sim.seed("opportunities", n, "Opp")
    units = 3  # every company has PCS, BOX and HOUR
    return {
        "SALESPEOPLE": n,
        "CURRENCY": n,
        "UNIT OF MEASURE": n + units,
        "PAYMENT TERMS": OPTION_CODES,
        "SHIPMENT METHOD": OPTION_CODES,
        "CUSTOMER": n,
        "VENDOR": n,
        "CONTACT": n,
        "ITEM-PRODUCT": n,
        "OPPORTUNITY": n,
    }


async def default_set_scenario(env: BenchEnv, n: int) -> dict[str, Any]:
    records = await seed_default_set(env, n)
    jobs = JobService(env.engine)
    phases: list[Phase] = []
    coupled: dict[str, int] = {}
    for mapping in await env.engine.registry.list():  # BC's prioritized order, parents first
        if mapping.name not in records:
            continue
        before = await env.snapshot()
        job = await jobs.start(mapping.name, "full", mapping.direction.value, full=True)
        await drain(env, jobs)
        after = await env.snapshot()
        done = await env.engine.jobs.get(job.job_id)
        assert done is not None
        counts = {k: v for k, v in done.counts.items() if v}
        phases.append(
            Phase(f"default set: full sync {mapping.name}", records[mapping.name], 0.0, after.minus(before), counts)
        )
        total = 0
        async for page in env.engine.couplings.iter_all(mapping.name):
            total += len(page)
        coupled[mapping.name] = total
    return {
        "n": n,
        "phases": [p.as_json() for p in phases],
        "coupled": coupled,
        "expected": records,
        "allCoupled": all(coupled.get(k, 0) >= v for k, v in records.items()),
    }
