"""Profile of the engine's incremental sync on the real clients (Azurite + simulators, engine in this process).

    python -m bench.profile_incremental [--n 2000] [--profile] [--top 40] [--ticks 1] [--callers REGEX]

Seeds ``n`` records per side, runs the main scenario's phases up to the incremental after 10 % updates (full
sync create + couple, 10 % changed on each side), then that incremental and the one for the echoes of its own
writes, each with process CPU, calls, table ops and entities read per changed record. ``--profile`` wraps
the two incrementals in cProfile and prints the top functions (cumulative, then own time). ``--ticks`` > 1
repeats "10 % updates + incremental + echoes" (steady state: the first tick still carries the full sync's
echoes). ``--callers REGEX`` (with ``--profile``) also prints who calls the functions matching it (e.g.
``json/__init__.py:.*loads``: where the JSON decoding comes from).
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

from bench.engine_runs import Phase, engine_sync, seed, update_share
from bench.env import bench_env


def _line(p: Phase, changed: int) -> str:
    c = p.counts
    per = max(changed, 1)
    return (
        f"{p.name}: cpu {p.cpu_seconds:.2f} s = {p.cpu_seconds * 1000 / per:.3f} ms/changed; "
        f"bc {c['bcRequests']} dv {c['dvRequests']} calls; tableOps {c['tableOps']} "
        f"({c['tableOps'] / per:.3f}/changed); entitiesRead {c['entitiesRead']} "
        f"({c['entitiesRead'] / per:.3f}/changed); job {p.job}; TLS handshakes so far {HANDSHAKES[0]}"
    )


PLANS: dict[str, list[int]] = {}
HANDSHAKES = [0]  # TLS handshakes completed by this process (new connections to Azurite, simulators, authority)


OPS: dict[str, int] = {}


def _count_ops() -> None:
    """Table requests per phase by kind (table, verb, point read / query / $batch)."""
    from shared.stores.tables import OpCounter

    inner = OpCounter.hook

    def counted(self: OpCounter, request: Any) -> None:
        r = request.http_request
        path = r.url.split("?")[0].rsplit("/", 1)[-1]
        kind = "$batch" if "$batch" in path else "point" if "PartitionKey=" in path else "query"
        table = path.split("(")[0][11:] or path  # drops the bench's table prefix
        key = f"{r.method} {table} {kind}"
        OPS[key] = OPS.get(key, 0) + 1
        inner(self, request)

    OpCounter.hook = counted  # type: ignore[method-assign]


def _count_handshakes() -> None:
    from asyncio import sslproto

    inner = sslproto.SSLProtocol._on_handshake_complete

    def counted(self: Any, exc: BaseException | None) -> None:
        HANDSHAKES[0] += 1
        inner(self, exc)

    sslproto.SSLProtocol._on_handshake_complete = counted  # type: ignore[method-assign]


def _count_plans() -> None:
    """Counts the coupling store's lookup plans (and their keys) per phase: which reads a lookup chose."""
    from shared.stores import coupling_store

    inner = getattr(coupling_store, "lookup_plan", None)
    if inner is None:  # a version of the store before the plans
        return

    def counted(keys: int, rows_in_range: float | None, *args: Any) -> str:
        plan = inner(keys, rows_in_range, *args)
        PLANS.setdefault(plan, [0, 0])
        PLANS[plan][0] += 1
        PLANS[plan][1] += keys
        return plan

    coupling_store.lookup_plan = counted  # type: ignore[assignment]


async def run(n: int, *, profile: bool, top: int, ticks: int, callers: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    _count_plans()
    _count_handshakes()
    _count_ops()  # before the runtime is built: its pipeline holds the counter's hook
    async with bench_env() as env:
        await seed(env, n, n)
        full = await engine_sync(env, "full sync, create + couple", full=True, records=2 * n)
        print(_line(full, 2 * n), flush=True)
        PLANS.clear()
        OPS.clear()
        prof = cProfile.Profile(time.process_time) if profile else None  # CPU, not wall time
        for tick in range(ticks):
            bc_new, dv_new = await update_share(env, 0.1, f"t{tick}")
            changed = len(bc_new) + len(dv_new)
            if prof and tick == ticks - 1:  # the last tick: steady state when ticks > 1
                prof.enable()
            inc = await engine_sync(env, f"tick {tick}: incremental after 10% updates", full=False, records=changed)
            echo = await engine_sync(env, f"tick {tick}: incremental (echoes)", full=False, records=changed)
            if prof:
                prof.disable()
            for p in (inc, echo):
                print(_line(p, changed), flush=True)
                out.append(p.as_json())
            print(f"  lookup plans of the two phases (partition lookups, keys): {PLANS}", flush=True)
            print(f"  table requests of the two phases: {dict(sorted(OPS.items()))}", flush=True)
            PLANS.clear()
            OPS.clear()
    if prof:
        print(_by_package(prof))
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(top)
            print(buf.getvalue())
        if callers:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_callers(callers)
            print(buf.getvalue())
    return out


def _by_package(prof: cProfile.Profile) -> str:
    """Own CPU time summed per package (azure.core, aiohttp, shared.stores, ...): where the time goes."""
    totals: dict[str, float] = {}
    for (path, _line_no, _name), row in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        parts = path.replace("\\", "/").split("/")
        if "site-packages" in parts:
            rest = parts[parts.index("site-packages") + 1 :]
            key = ".".join(rest[:2]) if rest and rest[0] == "azure" else rest[0]
        elif "shared" in parts:
            rest = parts[parts.index("shared") :]
            key = ".".join(rest[:2]).removesuffix(".py")
        elif "python3.11" in parts:
            rest = parts[parts.index("python3.11") + 1 :]
            key = "stdlib." + (rest[0].removesuffix(".py") if rest else "?")
        else:
            key = path if path.startswith("<") or path == "~" else parts[-1]
        totals[key] = totals.get(key, 0.0) + row[2]
    total = sum(totals.values()) or 1.0
    lines = [f"{v:7.3f} s {100 * v / total:5.1f} %  {k}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]
    return "own CPU by package:\n" + "\n".join(lines[:30])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--ticks", type=int, default=1)
    parser.add_argument("--callers", default="", help="with --profile: print the callers of these functions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args.n, profile=args.profile, top=args.top, ticks=args.ticks, callers=args.callers))


if __name__ == "__main__":
    main()
