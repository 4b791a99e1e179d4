"""``python -m bench.profile_full [--n N] [--rounds R] [--existing M] [--top K] [--sort S] [--no-profile]``

Engine CPU of a FULL sync on the real clients (Azurite + simulators, the engine in this process), under
cProfile: seeds ``N`` BC customers and ``N`` Dataverse accounts (``bench.engine_runs.seed``), runs
"full sync, create + couple" then "full sync of existing couplings" (``engine_sync``, as ``make bench``)
and prints each phase's CPU ms/record and the top functions by own time.

``--rounds R``: R rounds, each seeding N more per side: its create phase couples 2 N records next to the
couplings of the rounds before, its existing phase re-reads every coupling so far (does the cost per record
stay flat as the mapping grows?). ``--existing M``: first create and couple ``M`` other records per side
(not measured), so that round 1 already runs against ``2 M`` couplings.
``--no-profile``: the CPU figures without the profiler's overhead. The profiler's clock is the wall
clock (low overhead; the event loop's ``select`` is waiting, not CPU), ``--cpu-timer`` for CPU time
(``time.process_time``, as the figure, but ~1 µs per call that inflates many-call functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import time
from typing import Any

from bench.engine_runs import BC_ENTITY, BC_PREFIX, DV_ENTITY, DV_PREFIX, engine_sync, seed
from bench.env import bench_env

PHASES = ("full sync, create + couple", "full sync of existing couplings")


async def run(
    n: int,
    existing: int,
    profile: bool,
    top: int,
    sort: str,
    dump: str | None = None,
    cpu_timer: bool = False,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with bench_env() as env:
        await env.reset_sims()
        if existing:
            await seed(env, existing, existing)
            await engine_sync(env, "pre-existing couplings", full=True, records=2 * existing)
        for r in range(rounds):
            # Each round N more per side: the create phase couples 2N, the existing phase re-reads all of them.
            await env.bc_sim.seed(BC_ENTITY, n, f"{BC_PREFIX}r{r}-")
            await env.dv_sim.seed(DV_ENTITY, n, f"{DV_PREFIX}r{r}-")
            coupled = 2 * (existing + n * (r + 1))
            for k, (name, records) in enumerate(zip(PHASES, (2 * n, coupled), strict=True)):
                prof = cProfile.Profile(time.process_time if cpu_timer else time.perf_counter) if profile else None
                if prof:
                    prof.enable()
                phase = await engine_sync(env, name, full=True, records=records)
                if prof:
                    prof.disable()
                row = phase.as_json() | {"round": r + 1, "couplingsBefore": coupled - (2 * n if k == 0 else 0)}
                out.append(row)
                print(f"\n== round {r + 1}, {name}: {row['records']} records ({row['couplingsBefore']} couplings"
                      f" before), {row['cpuMsPerRecord']} ms CPU/record ({'profiled' if prof else 'no profiler'}),"
                      f" {row['tableOps']} table ops, {row['entitiesRead']} entities read,"
                      f" {row['bcRequests']} BC / {row['dvRequests']} DV requests",
                      flush=True)  # fmt: skip
                if prof:
                    if dump:
                        prof.dump_stats(f"{dump}.{r}.{k}.prof")
                    s = io.StringIO()
                    pstats.Stats(prof, stream=s).sort_stats(sort).print_stats(top)
                    print(s.getvalue(), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_full", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000, help="records per side in the measured phases")
    parser.add_argument("--existing", type=int, default=0, help="couplings per side created before (not measured)")
    parser.add_argument("--rounds", type=int, default=1, help="N more records per side each round")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumtime"))
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--cpu-timer", action="store_true", help="time functions by CPU (slower, inflates calls)")
    parser.add_argument("--dump", help="also write each phase's stats to DUMP.<phase>.prof (pstats)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = asyncio.run(
        run(args.n, args.existing, not args.no_profile, args.top, args.sort, args.dump, args.cpu_timer, args.rounds)
    )
    print("\n".join(f"round {r['round']}: {r['name']}: {r['cpuMsPerRecord']} ms/record" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
