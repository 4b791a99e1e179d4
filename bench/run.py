"""All scenarios of ``make bench``, each next to the naive baseline in the same run, and the figures vs targets."""

from __future__ import annotations

import asyncio
import os
import platform
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from bench import e2e, tables_cpu
from bench.baseline import NaiveSync, baseline_scenario
from bench.cpu import engine_cpu
from bench.default_set import default_set_scenario
from bench.documents import documents_scenario
from bench.engine_runs import engine_scenario, engine_sync, sample_progress, seed
from bench.env import BenchEnv, RecordingPublisher, bench_env
from bench.growth import growth_scenario
from bench.limits import binding, limit_bounds
from bench.scaleout import ScaleoutConfig, scaleout_scenario


@dataclass(frozen=True)
class Config:
    n: int = 10_000  # records per side in the main scenario
    baseline_n: int = 200  # the baseline's records per side (per-record figures extrapolate)
    latency_ms: float = 20
    latency_n: int = 2_000
    latency_baseline_n: int = 50
    throttle_n: int = 2_000
    throttle_baseline_n: int = 10
    # Scaled service protection (the real ones: 6,000 / 5 min). Scaled so that the engine's few calls
    # still span several windows: the bound is then set by the limits, not by the engine.
    throttle_requests: int = 10
    throttle_window_s: float = 5
    throttle_bc_concurrent: int = 100  # BC: 5 requests run at once per user (the simulator's --max-running), 95 queue
    # Dataverse's execution-time budget, scaled as the request count (1,200 s / 5 min -> 2 s / 5 s), with a server
    # cost per row written (the simulator writes a row in microseconds where Dataverse spends milliseconds).
    throttle_dv_execution_s: float = 2.0
    throttle_dv_row_cost_s: float = 0.0005  # a 1,000-row CreateMultiple: 0.5 s, a quarter of the budget
    memory_n: int = 100_000
    cpu_n: int = 5_000
    latency: bool = True
    throttle: bool = True
    memory: bool = True
    default_set_n: int = 2_000  # records per BC table in the full sync over every default mapping
    documents_n: int = 1_000  # released BC orders (5 lines each) in the documents' full sync (#21)
    lookup_couplings: int = 10_000  # #23: a measured partition of this many couplings ...
    lookup_ids: int = 500  # ... and a lookup of this many random BC ids in it (sparse: < 1 in 16 rows)
    scaleout: ScaleoutConfig | None = ScaleoutConfig()  # noqa: RUF009 (frozen) -- 1 then 2 function-host instances (bench/scaleout.py)
    e2e: bool = True  # bench/e2e.py: the real stack (host, Service Bus, simulators, Azurite), its own stack
    e2e_n: int = 10_000  # BC customers in its full job (Azurite slows down past ~10k: docs/benchmarks.md)
    e2e_edits: int = 50  # Dataverse webhook edits timed
    e2e_bc_edits: int = 10  # BC edits timed through BC's notifications
    growth: bool = True  # bench/growth.py: CPU per record at growth_small and growth_large records per side
    growth_small: int = 5_000  # 10,000 couplings ...
    growth_large: int = 50_000  # ... and 100,000
    only: str | None = None  # one scenario alone (``--only``): "throttled", "scaleout" or "memory"


DV_DOP_HINT = 4  # the Dataverse simulator's x-ms-dop-hint: the client runs at most this many requests at once

SMALL = Config(n=500, baseline_n=30, latency=False, throttle=False, memory=False, cpu_n=500, default_set_n=400,
               documents_n=100, lookup_couplings=2_000, lookup_ids=100, scaleout=None,
               e2e=False, growth_small=100, growth_large=600)  # fmt: skip
# (the CI-size scale-out runs in tests/bench/test_scaleout_small.py)


class PeakRss:
    """Peak RSS of this process (the engine's), sampled every 50 ms in a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.start = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


async def _fresh(env: BenchEnv) -> None:
    await env.reset_sims()
    await env.fresh_tables()


def _phase(result: dict[str, Any], word: str) -> dict[str, Any]:
    return next(p for p in result["phases"] if word in p["name"])


async def main_scenarios(env: BenchEnv, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _say(f"baseline: {cfg.baseline_n} records per side")
    await _fresh(env)
    out["baseline"] = _clean(await baseline_scenario(env, cfg.baseline_n, label="baseline"))
    _say(f"engine: {cfg.n} records per side")
    await _fresh(env)
    out["engine"] = _clean(await engine_scenario(env, cfg.n, label="engine"))
    _say(f"default mapping set: {cfg.default_set_n} records per table, full sync of every mapping")
    await _fresh(env)
    out["defaultSet"] = await default_set_scenario(env, cfg.default_set_n)
    _say(f"documents: {cfg.documents_n} released orders x 5 lines, full sync of SALESORDER-ORDER")
    await _fresh(env)
    out["documents"] = await documents_scenario(env, cfg.documents_n)
    if cfg.latency:
        _say(f"{cfg.latency_ms:g} ms latency: baseline {cfg.latency_baseline_n}, engine {cfg.latency_n} per side")
        await _fresh(env)
        await env.bc_sim.latency(cfg.latency_ms)
        await env.dv_sim.latency(cfg.latency_ms)
        out["latencyBaseline"] = _clean(await baseline_scenario(env, cfg.latency_baseline_n, label="baseline 20ms"))
        await _fresh(env)
        await env.bc_sim.latency(cfg.latency_ms)
        await env.dv_sim.latency(cfg.latency_ms)
        out["latencyEngine"] = _clean(await engine_scenario(env, cfg.latency_n, label="engine 20ms"))
    if cfg.throttle:
        out.update(await throttled(env, cfg))
    return out


def _clean(result: dict[str, Any]) -> dict[str, Any]:
    result.pop("_phases", None)
    return result


async def _limit(env: BenchEnv, cfg: Config) -> dict[str, Any]:
    common = {"requestsPerWindow": cfg.throttle_requests, "windowSeconds": cfg.throttle_window_s}
    bc = await env.bc_sim.limits(**common, maxConcurrent=cfg.throttle_bc_concurrent)
    dv = await env.dv_sim.limits(**common, maxConcurrent=52, executionSecondsPerWindow=cfg.throttle_dv_execution_s,
                                 executionSecondsPerRow=cfg.throttle_dv_row_cost_s)  # fmt: skip
    return {"bc": bc, "dv": dv, "dvDopHint": "x-ms-dop-hint 4 (simulator default), followed by the client"}


async def throttled(env: BenchEnv, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    series: dict[str, list[dict[str, float]]] = {}
    # The engine paces itself to the services' request windows (Settings.*_requests_per_window, in production
    # the documented 6,000 / 5 min): here to the scaled ones the simulators get.
    unscaled = {k: getattr(env.settings, k) for k in _paced(cfg)}
    for who, n in (("baseline", cfg.throttle_baseline_n), ("engine", cfg.throttle_n)):
        _say(f"throttled ({cfg.throttle_requests}/{cfg.throttle_window_s:g}s): {who} {n} per side")
        env.settings = env.settings.model_copy(update=_paced(cfg) if who == "engine" else unscaled)
        await _fresh(env)
        limits = await _limit(env, cfg)
        samples: list[dict[str, float]] = []
        stop = asyncio.Event()
        load_before = os.getloadavg()[0]  # wall time is the figure here: the box's other work stretches it
        if who == "engine":
            sampler = asyncio.create_task(sample_progress(env, samples, who, stop))
            result = await engine_scenario(env, n, label="engine throttled")
        else:
            watch: list[NaiveSync] = []
            sampler = asyncio.create_task(_sample_baseline(watch, samples, stop))
            result = await baseline_scenario(env, n, label="baseline throttled", watch=watch)
        stop.set()
        await sampler
        _clean(result)
        full = result["phases"][0]
        result["limits"] = limits
        result["bounds"] = limit_bounds(full, {"bc": limits["bc"], "dv": limits["dv"]}, DV_DOP_HINT)
        result["boundBy"] = binding(result["bounds"])["limit"]  # which limit set the bound
        result["boundSeconds"] = bound = binding(result["bounds"])["boundSeconds"]
        result["ofBound"] = round(bound / full["seconds"], 3) if bound and full["seconds"] else None
        result["loadAverage"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # 1-min, before / after
        out["throttled" + who.capitalize()] = result
        series[who] = samples
    out["throttleSeries"] = series
    env.settings = env.settings.model_copy(update=unscaled)
    await _fresh(env)
    return out


def _paced(cfg: Config) -> dict[str, Any]:
    window = {"requests_per_window": cfg.throttle_requests, "window_seconds": cfg.throttle_window_s}
    return {f"{side}_{k}": v for side in ("bc", "dataverse") for k, v in window.items()}


async def _sample_baseline(watch: list[NaiveSync], samples: list[dict[str, float]], stop: asyncio.Event) -> None:
    t0 = time.perf_counter()
    while not stop.is_set():
        written = watch[0].counts.records_written if watch else 0
        samples.append({"t": time.perf_counter() - t0, "written": written})
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def memory_scenario(env: BenchEnv, cfg: Config) -> dict[str, Any]:
    """100k BC customers, full sync to Dataverse (create + couple), then the Dataverse side's pass over them.
    The stores are the in-memory fakes here (Azurite would take hours for 200k index rows; see the report):
    the couplings therefore live in THIS process, so the RSS figure is an upper bound."""
    from tests.fakes import FakeStores

    _say(f"memory: {cfg.memory_n} records full sync (in-memory stores)")
    await env.reset_sims()
    stores = FakeStores()
    e = env.engine
    real = (e.couplings, e.errors, e.jobs, e.watermarks)
    e.couplings, e.errors, e.jobs, e.watermarks = stores.couplings, stores.errors, stores.jobs, stores.watermarks
    try:
        await seed(env, cfg.memory_n, 0)
        with PeakRss() as rss:
            phase = await engine_sync(env, "100k full sync, create + couple", full=True, records=cfg.memory_n)
    finally:
        e.couplings, e.errors, e.jobs, e.watermarks = real
        await env.reset_sims()
    out = phase.as_json()
    out["rssStartMB"] = round(rss.start / 2**20, 1)
    out["rssPeakMB"] = round(rss.peak / 2**20, 1)
    out["stores"] = "in-memory fakes (couplings held in the engine process)"
    return out


ONLY = ("throttled", "scaleout", "memory", "growth")


async def _only(cfg: Config) -> dict[str, Any]:
    """One scenario alone (``python -m bench --only throttled``), on its own stack: its figures, no report.
    ``--only memory``: the peak RSS scenario alone (the fresh process gives the figure without earlier scenarios)."""
    if cfg.only == "scaleout":
        return {"scaleout": await scaleout_scenario(cfg.scaleout or ScaleoutConfig())}
    async with bench_env() as env:
        if cfg.only == "memory":
            return {"memory": await memory_scenario(env, cfg)}
        if cfg.only == "growth":
            return {"growth": await growth_scenario(env, cfg.growth_small, cfg.growth_large)}
        return await throttled(env, cfg)


def machine() -> dict[str, Any]:
    return {
        "cpuCount": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "memoryGB": round(psutil.virtual_memory().total / 2**30, 1),
    }


async def run_all(cfg: Config) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "generatedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": cfg.__dict__,
    }
    if cfg.only is not None:
        results.update(await _only(cfg))
        results["wallSeconds"] = round(time.perf_counter() - started, 1)
        return results
    async with bench_env() as env:
        assert isinstance(env.publisher, RecordingPublisher)
        _say("table client CPU: lean vs SDK transactions, point reads vs range scan (#23)")
        results["tablesCpu"] = {
            "transactions": await tables_cpu.transactions(env.runtime.stores),
            "lookups": await tables_cpu.lookups(env.runtime.stores, cfg.lookup_couplings, cfg.lookup_ids),
        }
        await _fresh(env)
        if cfg.memory:  # first: Python rarely returns freed memory, so later scenarios would inflate the peak
            results["memory"] = await memory_scenario(env, cfg)
        results.update(await main_scenarios(env, cfg))
        if cfg.growth:
            sizes = f"{2 * cfg.growth_small:,} then {2 * cfg.growth_large:,}"
            _say(f"CPU per record as the mapping grows: {sizes} couplings")
            await _fresh(env)
            results["growth"] = await growth_scenario(env, cfg.growth_small, cfg.growth_large)
    if cfg.scaleout is not None:  # its own stacks (with hosts), after the engine's stack has stopped
        results["scaleout"] = await scaleout_scenario(cfg.scaleout)
    _say(f"engine CPU over in-memory fakes: {cfg.cpu_n} records")
    results["cpu"] = await engine_cpu(cfg.cpu_n)
    if cfg.e2e:  # after the stack above stopped: one stack at a time
        _say(f"end to end through the local stack: {cfg.e2e_n} records, {cfg.e2e_edits} webhook edits")
        results["e2e"] = await asyncio.to_thread(e2e.run, cfg.e2e_n, cfg.e2e_edits, cfg.e2e_bc_edits)
    results["wallSeconds"] = round(time.perf_counter() - started, 1)
    from bench.report import figures

    results["figures"] = figures(results)
    return results
