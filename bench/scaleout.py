"""Scale-out (#23): one fanned-out full sync run by 1, then N function-host instances on the same Service Bus
queue, as Flex Consumption adds instances. Each run has its own stack (Azurite, authority, simulators, AMQP
peer, hosts) with the same seed and latency; the job is started and watched over the HTTP API, like an
operator would, and everything is verified afterwards: both simulators and the coupling table (nothing lost,
nothing duplicated), the job's counts, the queue (nothing left, nothing dead-lettered) and each host's share
of the messages."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

import psutil

from bench.engine_runs import BC_ENTITY, BC_PREFIX, DV_ENTITY, DV_PREFIX, MAPPING, verify
from bench.env import BenchEnv, bench_env
from shared.config import PROJECT_ROOT

WORKER_FUNCTION = "sync_worker"  # functions/sb_worker.py
FINISHED = ("succeeded", "partial", "failed")


@dataclass(frozen=True)
class ScaleoutConfig:
    records: int = 20_000  # in all: half seeded in BC (customers), half in Dataverse (accounts), none coupled
    workers: tuple[int, ...] = (1, 2)
    latency_ms: float = 50  # on every BC and Dataverse answer (POST /_sim/faults {"latencyMs": ...})
    batch_size: int = 500  # SYNC_FANOUT_BATCH_SIZE: records per fanned-out sync-batch message
    min_records: int = 1000  # SYNC_FANOUT_MIN_RECORDS: a change page above this is fanned out
    timeout_s: float = 1800
    target_speedup: float = 1.7  # the second run (N workers) at least this much faster than the first (1)


SMALL_SCALEOUT = ScaleoutConfig(records=1_200, latency_ms=10, batch_size=50, min_records=100, timeout_s=300)


def _say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


async def _get(env: BenchEnv, url: str) -> Any:
    async with env.session.get(url, headers={"x-functions-key": env.stack.function_key}) as r:
        r.raise_for_status()
        return await r.json()


async def queue_counts(env: BenchEnv) -> dict[str, int]:
    """The work queue's counts at the AMQP peer (active, locked, deadLetter, receivers, ...)."""
    url = f"http://127.0.0.1:{env.stack.ports['amqp_control']}/queues"
    async with env.session.get(url) as r:
        return dict((await r.json()).get(env.settings.servicebus_queue.lower(), {}))


async def table_requests(env: BenchEnv) -> int:
    """Requests the tables proxy forwarded to Azurite so far (a transaction counts once)."""
    ctx = ssl.create_default_context(cafile=str(env.stack.ca_file))
    async with env.session.get(f"{env.stack.url('azurite')}/_proxy/stats", ssl=ctx) as r:
        return int((await r.json())["forwarded"])


async def _wait_for_receivers(env: BenchEnv, workers: int, within: float = 60) -> None:
    """Every host's Service Bus trigger attached (a host answers HTTP before its receiver link is open)."""
    deadline = time.monotonic() + within
    while (await queue_counts(env)).get("receivers", 0) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {(await queue_counts(env)).get('receivers', 0)} of {workers} receivers")
        await asyncio.sleep(0.2)


async def _run_job(env: BenchEnv, within: float) -> dict[str, Any]:
    headers = {"x-functions-key": env.stack.function_key}
    url = f"{env.stack.host_url}/api/mappings/{MAPPING}/jobs"
    async with env.session.post(url, json={"kind": "full"}, headers=headers) as r:
        if r.status != 202:
            raise RuntimeError(f"POST {url}: {r.status} {await r.text()}")
        job_id = (await r.json())["jobId"]
    deadline = time.monotonic() + within
    while True:
        job = await _get(env, f"{env.stack.host_url}/api/jobs/{job_id}")
        if job["status"] in FINISHED:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job not finished in {within:g} s: {job}")
        await asyncio.sleep(0.1)


async def _sample_load(loads: list[float]) -> None:
    while True:
        loads.append(os.getloadavg()[0])
        await asyncio.sleep(1)


async def _settled_queue(env: BenchEnv, within: float = 30) -> dict[str, int]:
    """The queue once the last settlements reached the peer: they arrive after the job row says finished
    (0.5 s was not enough on a loaded box: 2 messages still locked at load 18). Whatever is still active or
    locked after ``within`` seconds is reported as it is, and fails the run."""
    deadline = time.monotonic() + within
    while True:
        queue = await queue_counts(env)
        if queue.get("active", 0) == queue.get("locked", 0) == 0 or time.monotonic() > deadline:
            return queue
        await asyncio.sleep(0.2)


async def _worker_shares(env: BenchEnv) -> dict[str, dict[str, int]]:
    out = {}
    for name, url in env.stack.worker_urls.items():
        counts = (await _get(env, f"{url}/admin/host/invocations"))["functions"]
        out[name] = counts.get(WORKER_FUNCTION, {"succeeded": 0, "failed": 0})
    return out


def process_cpu(env: BenchEnv) -> dict[str, float]:
    """CPU seconds so far of each component's processes (simulators, peer, each host; the tables proxy and
    the Azurite behind it apart)."""
    out: dict[str, float] = {}
    for c in env.stack.started:
        if c.process is None:
            continue
        try:
            root = psutil.Process(c.process.pid)
            for proc in (root, *root.children(recursive=True)):
                t = proc.cpu_times()
                key = c.name if proc is root else f"{c.name}/{proc.name()}"  # azurite/node behind the proxy
                out[key] = out.get(key, 0.0) + t.user + t.system
        except psutil.Error:
            continue
    return out


async def one_run(cfg: ScaleoutConfig, workers: int) -> dict[str, Any]:
    """A fresh stack with ``workers`` hosts, the seed, the latency, one full sync job; measured and verified."""
    host_env = {
        "SYNC_SCHEDULED_SYNC": "false",
        "SYNC_FANOUT_BATCH_SIZE": str(cfg.batch_size),
        "SYNC_FANOUT_MIN_RECORDS": str(cfg.min_records),
    }
    async with bench_env(workers=workers, env=host_env) as env:
        await _wait_for_receivers(env, workers)
        half = cfg.records // 2
        await env.bc_sim.seed(BC_ENTITY, half, BC_PREFIX)
        await env.dv_sim.seed(DV_ENTITY, cfg.records - half, DV_PREFIX)
        for sim in (env.bc_sim, env.dv_sim):
            await sim.latency(cfg.latency_ms)
        before = await asyncio.gather(env.bc_sim.stats(), env.dv_sim.stats())
        cpu_before, tables_before = process_cpu(env), await table_requests(env)
        load_before = os.getloadavg()[0]  # the box's other work (shared cores) makes times noisy
        loads: list[float] = []
        sampler = asyncio.create_task(_sample_load(loads))
        started = time.perf_counter()
        try:
            job = await _run_job(env, cfg.timeout_s)
        finally:
            sampler.cancel()
        seconds = time.perf_counter() - started
        cpu = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in process_cpu(env).items()}
        tables = await table_requests(env) - tables_before
        after = await asyncio.gather(env.bc_sim.stats(), env.dv_sim.stats())
        for sim in (env.bc_sim, env.dv_sim):
            await sim.latency(0)
        queue = await _settled_queue(env)
        shares = await _worker_shares(env)
        checked = await verify(env, cfg.records, {}, {})
    counts = job["counts"]
    calls = {
        key: a[stat] - b[stat]
        for key, stat, a, b in (
            ("bcRequests", "requests", after[0], before[0]),
            ("dvRequests", "requests", after[1], before[1]),
            ("bcThrottled", "throttled", after[0], before[0]),
            ("dvThrottled", "throttled", after[1], before[1]),
        )
    }
    handled = sum(s["succeeded"] for s in shares.values())
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "recordsPerSecond": round(cfg.records / seconds, 1),
        "status": job["status"],
        "counts": {k: v for k, v in counts.items() if v},
        "batches": job["batches"],
        **calls,
        "tableRequests": tables,
        "loadAverage": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-min, before / after the job
        "loadDuring": round(sum(loads) / len(loads), 2) if loads else None,  # mean 1-min load, sampled each second
        "cpuSecondsByProcess": cpu,  # what each process spent during the job (2 shared cores: the ceiling)
        "cpuSeconds": round(sum(cpu.values()), 1),
        "hostCpuSeconds": round(sum(v for k, v in cpu.items() if k.startswith("host")), 1),  # the part that scales
        # The least wall time the box allows for that CPU, whatever the number of instances: all of it on all cores.
        "boxFloorSeconds": round(sum(cpu.values()) / (os.cpu_count() or 1), 1),
        "messagesByWorker": {name: s["succeeded"] for name, s in shares.items()},
        "failedInvocations": sum(s["failed"] for s in shares.values()),
        "messagesHandled": handled,
        "queue": queue,
        "verify": checked,
        "ok": job["status"] == "succeeded"
        and counts.get("inserted", 0) == cfg.records
        and counts.get("failed", 0) == 0
        and checked["ok"]
        and queue.get("active", 0) == queue.get("locked", 0) == queue.get("deadLetter", 0) == 0
        and all(s["succeeded"] > 0 for s in shares.values()),
    }


async def scaleout_scenario(cfg: ScaleoutConfig = ScaleoutConfig()) -> dict[str, Any]:
    runs = []
    for workers in cfg.workers:
        _say(
            f"scale-out: {cfg.records} records, {workers} worker(s), {cfg.latency_ms:g} ms latency, "
            f"batches of {cfg.batch_size}"
        )
        runs.append(await one_run(cfg, workers))
        _say(f"scale-out: {workers} worker(s) took {runs[-1]['seconds']} s, by worker {runs[-1]['messagesByWorker']}")
    first, last = runs[0], runs[-1]
    speedup = round(first["seconds"] / last["seconds"], 2) if len(runs) > 1 and last["seconds"] else None
    return {
        "records": cfg.records,
        "latencyMs": cfg.latency_ms,
        "batchSize": cfg.batch_size,
        "minRecords": cfg.min_records,
        "maxConcurrentCalls": _max_concurrent_calls(),
        "runs": runs,
        "speedup": speedup,
        "targetSpeedup": cfg.target_speedup,
        "ok": all(r["ok"] for r in runs),
    }


def _max_concurrent_calls() -> int:
    """host.json's ``extensions.serviceBus.maxConcurrentCalls``: messages one instance handles at once."""
    host_json = json.loads((PROJECT_ROOT / "host.json").read_text())
    return int(host_json["extensions"]["serviceBus"]["maxConcurrentCalls"])


# ----------------------------------------------------------------------------------------------- report
def _lost_and_duplicated(run: dict[str, Any]) -> int:
    v = run["verify"]
    lost = v["uncoupledRecords"] + v["lostUpdates"] + max(0, v["expectedPairs"] - v["couplings"])
    return lost + v["duplicateRecords"] + v["duplicateCouplings"] + run["queue"].get("deadLetter", 0)


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The scale-out figures vs targets (``bench.report.figures`` adds them)."""
    from bench.report import _fig

    s = results.get("scaleout")
    if not s:
        return []
    runs = s["runs"]
    first, last = runs[0], runs[-1]
    note = ", ".join(
        f"{r['workers']} worker(s) {r['seconds']} s (CPU {r.get('cpuSeconds')} s, hosts {r.get('hostCpuSeconds')} s, "
        f"box floor {r.get('boxFloorSeconds')} s, load {r.get('loadDuring')})"
        for r in runs
    )
    out = [
        _fig(
            f"Scale-out: {last['workers']} workers ÷ 1, full sync of {s['records']:,} records at "
            f"{s['latencyMs']:g} ms latency (speed-up)",
            s["speedup"],
            f"≥ {s['targetSpeedup']}×",
            lambda v: v >= s["targetSpeedup"],
            note,
        ),
        _fig(
            "Scale-out: records lost + duplicated (every run; both sides, couplings, dead letters)",
            sum(_lost_and_duplicated(r) for r in runs),
            "0",
            lambda v: v == 0,
        ),
        _fig(
            f"Scale-out: fewest messages taken by one of the {last['workers']} workers",
            min(last["messagesByWorker"].values()),
            "> 0 (every worker took messages)",
            lambda v: v > 0,
            f"by worker {last['messagesByWorker']}",
        ),
    ]
    if first["workers"] == 1:
        out.append(_fig("Scale-out: job succeeded with exact counts in every run", all(r["ok"] for r in runs),
                        "True", lambda v: bool(v)))  # fmt: skip
    return out


def markdown(results: dict[str, Any]) -> list[str]:
    """The report's scale-out section (``bench.report.markdown`` adds it)."""
    s = results.get("scaleout")
    if not s:
        return []
    lines = [
        "## Scale-out",
        "",
        f"One full sync of {s['records']:,} uncoupled records (half BC customers, half Dataverse accounts) with "
        f"{s['latencyMs']:g} ms on every BC and Dataverse answer, fanned out in sync-batch messages of "
        f"{s['batchSize']} records (pages above {s['minRecords']}); each run on its own stack with N function-host "
        f"instances on the same queue, each taking {s['maxConcurrentCalls']} messages at a time (host.json "
        "`maxConcurrentCalls`). Time = from the job's POST to its finished status. CPU = seconds each process "
        "spent during the job (the box's cores are shared by all of them).",
        "",
        "| workers | s | records/s | messages by worker | BC calls | DV calls | 429s | table requests"
        " | CPU s by process | CPU s in all / box floor s | load avg before / during / after |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in s["runs"]:
        cpu = ", ".join(f"{k} {v}" for k, v in r["cpuSecondsByProcess"].items() if v >= 0.1)
        before, after = r.get("loadAverage") or [None, None]
        lines.append(
            f"| {r['workers']} | {r['seconds']} | {r['recordsPerSecond']} | {r['messagesByWorker']} | "
            f"{r['bcRequests']} | {r['dvRequests']} | {r['bcThrottled'] + r['dvThrottled']} | {r['tableRequests']} | "
            f"{cpu} | {r.get('cpuSeconds')} / {r.get('boxFloorSeconds')} | "
            f"{before} / {r.get('loadDuring')} / {after} |"
        )
    lines += ["", "How instances, `maxConcurrentCalls` and the batch sizes map to the services' limits: "
              "[docs/scaling.md](../../docs/scaling.md).", ""]  # fmt: skip
    return lines
