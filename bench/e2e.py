"""End to end through the REAL local stack (#23): an HTTP job, the Service Bus fan-out, the function host's
workers, the simulators and Azurite, each in its own process (``local.stack``, free ports).

- ``full_sync``: ``n`` BC customers (simulator seed), ``POST /api/mappings/CUSTOMER/jobs {"kind": "full"}``,
  waited for over HTTP; verified on Dataverse (one account per customer) and through the API's couplings
  (each BC id and each Dataverse id once). Time, CPU of the host's process tree per record, peak RSS of every
  process of the stack (sampled), then no-change incremental ticks (``/_sim/stats`` request counts per side).
- ``latency``: a Dataverse webhook (``POST /api/webhooks/dataverse``) to the BC write, per edit; and BC's own
  notifications to the Dataverse write (the simulator's coalescing window is ``--notify-delay 1`` locally,
  i.e. BC's 30 s delay compressed to 1 s; reported separately).

``python -m bench.e2e [--n N] [--edits N] [--out bench/results/e2e-100k.json]`` runs it alone (``--out``: also
the run as json + md); ``make bench`` runs it after the other scenarios (``make bench BENCH_ARGS="--e2e-n N"``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests

from local.stack import Stack

MAPPING = "CUSTOMER"
RSS_TARGET_MB = 300
SEED_CHUNK = 20_000  # the seed route answers with every row it made: chunks keep each answer small


def _say(msg: str) -> None:
    print(f"[bench e2e] {msg}", flush=True)


# ----- measuring the stack's processes -----
def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _label(component: str, proc: psutil.Process, root: psutil.Process) -> str:
    if proc.pid == root.pid:
        return component
    try:
        return f"{component}/{proc.name()}"
    except psutil.NoSuchProcess:
        return f"{component}/{proc.pid}"


class StackSampler:
    """Peak RSS of every process of the stack (each component's process and its children), every 100 ms,
    in a thread; and CPU seconds of one component's process tree (children that ended included)."""

    def __init__(self, stack: Stack, interval: float = 0.1) -> None:
        self.roots = {c.name: psutil.Process(c.process.pid) for c in stack.started if c.process}
        self.interval = interval
        self.peak: dict[str, int] = {}
        self._cpu: dict[int, float] = {}  # pid -> last CPU seconds seen (kept after the process ends)
        self._owner: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def sample(self) -> None:
        with self._lock:
            for name, root in self.roots.items():
                for proc in _tree(root):
                    try:
                        rss = proc.memory_info().rss
                        times = proc.cpu_times()
                    except psutil.NoSuchProcess:
                        continue
                    label = _label(name, proc, root)
                    self.peak[label] = max(self.peak.get(label, 0), rss)
                    self._cpu[proc.pid] = times.user + times.system
                    self._owner[proc.pid] = name

    def cpu_seconds(self, component: str) -> float:
        self.sample()
        return sum(v for pid, v in self._cpu.items() if self._owner[pid] == component)

    def reset_peaks(self) -> None:
        with self._lock:
            self.peak = {}

    def peaks_mb(self) -> dict[str, float]:
        self.sample()
        return {k: round(v / 2**20, 1) for k, v in sorted(self.peak.items())}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> StackSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----- talking to the stack -----
class Api:
    """The service's HTTP API with the function key (``requests``, never through a proxy)."""

    def __init__(self, stack: Stack) -> None:
        self.base = stack.host_url
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["x-functions-key"] = stack.function_key

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.http.request(method, path if path.startswith("http") else self.base + path, **kw)

    def start_job(self, kind: str) -> str:
        r = self.call("POST", f"/api/mappings/{MAPPING}/jobs", json={"kind": kind})
        if r.status_code != 202:
            raise RuntimeError(f"job not accepted: {r.status_code} {r.text}")
        return str(r.json()["jobId"])

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while True:
            try:  # a slow answer (Azurite busy under the job's load) is waited out, not a failure
                job = self.call("GET", f"/api/jobs/{job_id}", timeout=120).json()
            except requests.RequestException as exc:
                _say(f"job {job_id}: no answer yet ({type(exc).__name__})")
            if job.get("status") in ("succeeded", "partial", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job not finished in {timeout:.0f} s: {job}")
            time.sleep(0.5)

    def all_pages(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        body = self.call("GET", path, params={"top": 1000}).json()
        while True:
            out += body["value"]
            if not body.get("nextLink"):
                return out
            body = self.call("GET", body["nextLink"]).json()


def _sim(stack: Stack, name: str, method: str, path: str, body: Any = None) -> Any:
    r = requests.request(method, stack.url(name) + path, json=body, timeout=120, proxies={"http": "", "https": ""})
    r.raise_for_status()
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else None


def sim_requests(stack: Stack) -> dict[str, int]:
    return {side: int(_sim(stack, f"{side}_sim", "GET", "/_sim/stats")["requests"]) for side in ("bc", "dv")}


def seed_customers(stack: Stack, n: int, prefix: str) -> None:
    for start in range(0, n, SEED_CHUNK):
        body = {"entity": "customers", "count": min(SEED_CHUNK, n - start), "prefix": f"{prefix}{start}-"}
        _sim(stack, "bc_sim", "POST", "/_sim/seed", body)


def start_stack() -> Stack:
    """The whole stack on free ports, scheduled syncs off (only the benchmark's jobs run)."""
    stack = Stack.on_free_ports(env={"SYNC_SCHEDULED_SYNC": "false"}, readiness_timeout=60)
    return stack.start()


@contextmanager
def running_stack() -> Iterator[Stack]:
    stack = start_stack()
    try:
        yield stack
    finally:
        stack.stop()


# ----- scenario 1: n records end to end, then no-change ticks -----
def verify_coupled(stack: Stack, api: Api, prefix: str, n: int) -> dict[str, Any]:
    """Every seeded customer once on Dataverse and coupled once: names and ids unique on both sides."""
    from tests.integration.sims import SimClients

    sims = SimClients.for_stack(stack)
    names: list[str] = []
    url: str | None = f"{sims.dv_api}/accounts"
    params: dict[str, str] | None = {"$filter": f"startswith(name,'{prefix}')", "$select": "name"}
    while url:
        r = sims._dv("GET", url, params=params, headers={"Prefer": "odata.maxpagesize=5000"})
        r.raise_for_status()
        names += [row["name"] for row in r.json()["value"]]
        url, params = r.json().get("@odata.nextLink"), None
    couplings = [c for c in api.all_pages(f"/api/mappings/{MAPPING}/couplings") if c.get("dataverseId")]
    bc_ids = {c["bcId"] for c in couplings}
    dv_ids = {c["dataverseId"] for c in couplings}
    out = {
        "expected": n,
        "dvRecords": len(names),
        "duplicateDvRecords": len(names) - len(set(names)),
        "couplings": len(couplings),
        "duplicateCouplings": (len(couplings) - len(bc_ids)) + (len(couplings) - len(dv_ids)),
    }
    out["ok"] = (
        out["dvRecords"] == out["couplings"] == n and out["duplicateDvRecords"] == 0 and out["duplicateCouplings"] == 0
    )
    return out


def _routes(stack: Stack) -> dict[str, dict[str, int]]:
    return {side: dict(_sim(stack, f"{side}_sim", "GET", "/_sim/stats")["byRoute"]) for side in ("bc", "dv")}


async def _timer_job(stack: Stack) -> str:
    """The CUSTOMER job the timer starts (``shared.services.schedule``: one incremental job per due mapping,
    the mappings in dependency order, no parents run first), started in this process against the stack's
    tables and Service Bus; the host's workers run it."""
    from shared.bootstrap import build_runtime
    from shared.config import settings_from_env
    from shared.services.jobs import JobService

    runtime = build_runtime(settings_from_env(stack.child_env()))
    try:
        job = await JobService(runtime.engine).start(
            MAPPING, "incremental", "bidirectional", full=False, trigger="timer"
        )
    finally:
        await runtime.aclose()
    return job.job_id


def tick(stack: Stack, api: Api, *, timer: bool = False, timeout: float = 300) -> dict[str, Any]:
    """One incremental job of CUSTOMER, over HTTP (the API's job brings the parent mappings up to date first)
    or as the timer starts it; the simulators' request counts it cost (per side), and by route."""
    before, routes0 = sim_requests(stack), _routes(stack)
    t0 = time.perf_counter()
    job = api.wait(asyncio.run(_timer_job(stack)) if timer else api.start_job("incremental"), timeout)
    after, routes1 = sim_requests(stack), _routes(stack)
    out: dict[str, Any] = {
        "started": "timer" if timer else "api",
        "status": job["status"],
        "seconds": round(time.perf_counter() - t0, 2),
        "counts": {k: v for k, v in job["counts"].items() if v},
    }
    for side in before:
        out[f"{side}Requests"] = after[side] - before[side]
        diff = {k: v - routes0[side].get(k, 0) for k, v in routes1[side].items()}
        out[f"{side}ByRoute"] = {k: v for k, v in diff.items() if v}
    return out


def full_sync(stack: Stack, n: int, *, ticks: int = 2, timeout: float | None = None) -> dict[str, Any]:
    api = Api(stack)
    prefix = f"E2e{uuid.uuid4().hex[:6]}"
    _say(f"seeding {n:,} BC customers")
    seed_customers(stack, n, prefix)
    with StackSampler(stack) as sampler:
        sampler.reset_peaks()  # the seed's own peak (one big answer) is not the sync's
        cpu0, t0 = sampler.cpu_seconds("host"), time.perf_counter()
        before = sim_requests(stack)
        _say(f"full job of {MAPPING} over HTTP")
        job = api.wait(api.start_job("full"), timeout or max(600, n / 20))
        seconds = time.perf_counter() - t0
        cpu = sampler.cpu_seconds("host") - cpu0
        after = sim_requests(stack)
        peaks = sampler.peaks_mb()
    _say(f"full job {job['status']} in {seconds:.1f} s; verifying")
    result: dict[str, Any] = {
        "n": n,
        "status": job["status"],
        "counts": {k: v for k, v in job["counts"].items() if v},
        "batches": job.get("batches"),
        "seconds": round(seconds, 2),
        "recordsPerSecond": round(n / seconds, 1) if seconds else None,
        "hostCpuSeconds": round(cpu, 2),
        "hostCpuMsPerRecord": round(cpu * 1000 / n, 3) if n else None,
        "bcRequests": after["bc"] - before["bc"],
        "dvRequests": after["dv"] - before["dv"],
        "peakRssMB": peaks,
        "peakRssMaxMB": max(peaks.values()) if peaks else None,
        "verify": verify_coupled(stack, api, prefix, n),
    }
    # The first tick after the full job may see the service's own creates in Dataverse's change feed (echoes);
    # the ticks after it are the no-change cost: the scheduled one (the timer's job of the mapping) is the
    # target's; the API's incremental job also brings CUSTOMER's parent mappings up to date (fixed per job).
    # The echo tick reads the n creates back (100,000: 20 Dataverse pages, a coupling lookup per record): minutes.
    tick_timeout = max(300, n / 50)
    result["ticks"] = [tick(stack, api, timer=True, timeout=tick_timeout) for _ in range(ticks)]
    result["noChangeTick"] = result["ticks"][-1]
    result["apiTick"] = tick(stack, api, timeout=tick_timeout)
    return result


# ----- scenario 2: webhook latency -----
def _wait(predicate: Callable[[], bool], timeout: float = 30.0, poll: float = 0.02) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(poll)
    raise TimeoutError("the change did not reach the other side in time")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _summary(samples: list[float]) -> dict[str, Any]:
    return {
        "edits": len(samples),
        "p50": round(statistics.median(samples), 3) if samples else None,
        "p95": round(p, 3) if (p := percentile(samples, 0.95)) is not None else None,
        "max": round(max(samples), 3) if samples else None,
        "samples": [round(s, 3) for s in samples],
    }


async def _bc_subscriptions(stack: Stack, *, remove: bool) -> None:
    from shared.bootstrap import build_runtime
    from shared.config import settings_from_env
    from shared.services.webhooks import ensure_bc_subscriptions

    runtime = build_runtime(settings_from_env(stack.child_env()))
    try:
        if remove:
            for sub in await runtime.bc.list_subscriptions():
                await runtime.bc.delete_subscription(sub["subscriptionId"])
        else:
            await ensure_bc_subscriptions(runtime.engine, runtime.bc)
    finally:
        await runtime.aclose()


def latency(stack: Stack, edits: int, bc_edits: int) -> dict[str, Any]:
    """``edits`` Dataverse webhooks → BC writes (one coupled pair, one edit at a time, timed from the webhook's
    POST to the BC record showing the value), then ``bc_edits`` BC edits → Dataverse through BC's own
    notifications (timed from the BC PATCH)."""
    from tests.integration.sims import SimClients, dataverse_context

    sims = SimClients.for_stack(stack)
    api = Api(stack)
    name = f"Lat {uuid.uuid4().hex[:8]}"
    b = sims.bc_create("customers", displayName=name, phoneNumber="+1 0")
    d = sims.dv_create("accounts", name=name, telephone1="+1 0")
    r = api.call("POST", f"/api/mappings/{MAPPING}/couplings", json={"bcId": b, "dataverseId": d})
    if r.status_code != 201:
        raise RuntimeError(f"coupling not made: {r.status_code} {r.text}")
    key = stack.child_env().get("DATAVERSE_WEBHOOK_KEY", "local-dv-webhook-key")
    hook_url = f"{stack.host_url}/api/webhooks/dataverse"
    dv_to_bc: list[float] = []
    _say(f"latency: {edits} Dataverse webhooks -> BC")
    for i in range(edits):
        phone = f"+2 {i:04d}"
        sims.dv_patch("accounts", d, telephone1=phone)
        t0 = time.perf_counter()
        hook = api.http.post(hook_url, params={"code": key}, json=dataverse_context(d, name, phone), timeout=10)
        if hook.status_code != 202:
            raise RuntimeError(f"webhook refused: {hook.status_code} {hook.text}")
        _wait(lambda p=phone: (sims.bc_get("customers", b) or {}).get("phoneNumber") == p)
        dv_to_bc.append(time.perf_counter() - t0)
    bc_to_dv: list[float] = []
    if bc_edits:
        _say(f"latency: {bc_edits} BC edits -> Dataverse (BC notifications, 1 s coalescing locally)")
        asyncio.run(_bc_subscriptions(stack, remove=False))
        try:
            time.sleep(1.5)  # the service's own write above (if any) notified and settled
            for i in range(bc_edits):
                phone = f"+1 {i:04d}"
                t0 = time.perf_counter()
                sims.bc_patch("customers", b, phoneNumber=phone)
                _wait(lambda p=phone: (sims.dv_get("accounts", d) or {}).get("telephone1") == p)
                bc_to_dv.append(time.perf_counter() - t0)
                time.sleep(1.2)  # each edit its own notification window
        finally:
            asyncio.run(_bc_subscriptions(stack, remove=True))
    return {
        "dvToBc": _summary(dv_to_bc),
        "bcToDv": _summary(bc_to_dv),
        "bcNotifyDelaySeconds": 1.0,
        "note": "BC->Dataverse: the BC simulator coalesces notifications for 1 s (--notify-delay 1), real BC ~30 s",
    }


def run(n: int, edits: int = 50, bc_edits: int = 10, ticks: int = 2) -> dict[str, Any]:
    """Both scenarios on one stack: ``n`` records first (so its verification sees only its own records), then
    the latency of single edits next to them."""
    with running_stack() as stack:
        out: dict[str, Any] = {}
        if n:
            out["fullSync"] = full_sync(stack, n, ticks=ticks)
        if edits or bc_edits:
            out["latency"] = latency(stack, edits, bc_edits)
        return out


# ----- the report's figures and section (bench/report.py) -----
def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.report import _fig

    out: list[dict[str, Any]] = []
    e = r.get("e2e") or {}
    full, lat = e.get("fullSync"), e.get("latency")
    if full:
        n, v = full["n"], full["verify"]
        wrong = abs(v["expected"] - v["dvRecords"]) + abs(v["expected"] - v["couplings"])
        wrong += v["duplicateDvRecords"] + v["duplicateCouplings"]
        out.append(_fig(f"E2E {n:,} records (HTTP job, host workers): missing + duplicate records/couplings", wrong,
                        "0", lambda x: x == 0, f"job {full['status']}, {v['dvRecords']:,} accounts, "
                        f"{v['couplings']:,} couplings"))  # fmt: skip
        out.append(_fig(f"E2E {n:,} records: records/s", full["recordsPerSecond"], "report", None,
                        f"{full['seconds']} s"))  # fmt: skip
        out.append(_fig(f"E2E {n:,} records: host process tree CPU ms/record", full["hostCpuMsPerRecord"], "report",
                        None, f"{full['hostCpuSeconds']} s CPU"))  # fmt: skip
        peaks = full["peakRssMB"]
        note = ", ".join(f"{k} {v}" for k, v in peaks.items()) + "; the simulators and Azurite hold the data set"
        out.append(_fig(f"E2E {n:,} records: peak RSS of the function host (MB)", peaks.get("host"),
                        f"≤ {RSS_TARGET_MB}", lambda x: x <= RSS_TARGET_MB))  # fmt: skip
        # Azurite is the emulator of a managed service (in Azure the rows are not in any process of ours); it
        # keeps every row of every table in memory (LokiJS, with or without disk persistence): reported apart.
        ours = {k: v for k, v in peaks.items() if not k.startswith("azurite")}
        emulator = max((v for k, v in peaks.items() if k.startswith("azurite")), default=None)
        out.append(_fig(f"E2E {n:,} records: peak RSS per process of the stack (MB, the largest; Azurite apart)",
                        max(ours.values()) if ours else None, f"≤ {RSS_TARGET_MB}", lambda x: x <= RSS_TARGET_MB,
                        note))  # fmt: skip
        out.append(_fig(f"E2E {n:,} records: peak RSS of Azurite, the Table Storage emulator (MB)", emulator,
                        "report", None, "every row of every table in its memory; a service in Azure"))  # fmt: skip
        echo = (full.get("ticks") or [{}])[0]
        if "seconds" in echo:
            out.append(_fig(f"E2E first tick after {n:,} (reads the job's own creates back): seconds", echo["seconds"],
                            "report", None, f"counts {echo.get('counts')}, BC {echo.get('bcRequests')}, "
                            f"Dataverse {echo.get('dvRequests')} requests"))  # fmt: skip
        t, a = full["noChangeTick"], full.get("apiTick") or {}
        out.append(_fig(f"E2E no-change tick after {n:,} (timer's job): calls per side (max of BC, Dataverse)",
                        max(t["bcRequests"], t["dvRequests"]), "≤ 2", lambda x: x <= 2,
                        f"BC {t['bcRequests']}, Dataverse {t['dvRequests']}; the API's incremental job, which also "
                        f"brings the parent mappings up to date: BC {a.get('bcRequests')}, "
                        f"Dataverse {a.get('dvRequests')}"))  # fmt: skip
    if lat and lat["dvToBc"]["edits"]:
        d = lat["dvToBc"]
        out.append(_fig("E2E Dataverse webhook → BC write: p95 (s)", d["p95"], "≤ 2", lambda x: x <= 2,
                        f"{d['edits']} edits, p50 {d['p50']} s, max {d['max']} s"))  # fmt: skip
    if lat and lat["bcToDv"]["edits"]:
        b = lat["bcToDv"]
        out.append(_fig("E2E BC edit → notification → Dataverse write: p95 (s)", b["p95"], "report", None,
                        f"{b['edits']} edits, p50 {b['p50']} s; BC simulator coalesces "
                        f"{lat['bcNotifyDelaySeconds']:g} s (real BC ~30 s)"))  # fmt: skip
    return out


def markdown(r: dict[str, Any]) -> list[str]:
    e = r.get("e2e")
    if not e:
        return []
    lines = [
        "## End to end through the local stack",
        "",
        "Every part in its own process (`local.stack` on free ports): the job started with `POST",
        "/api/mappings/CUSTOMER/jobs`, fanned out over Service Bus (the AMQP peer) to the host's workers, which",
        "call the simulators and Azurite. CPU is the host's process tree (psutil), RSS is sampled every 100 ms",
        "for every process. Calls are the simulators' `/_sim/stats` counts.",
        "",
    ]
    full = e.get("fullSync")
    if full:
        slim = {k: v for k, v in full.items() if k not in ("ticks",)}
        lines += ["```json", json.dumps(slim, indent=1), "```", ""]
    lat = e.get("latency")
    if lat:
        slim = {k: ({kk: vv for kk, vv in v.items() if kk != "samples"} if isinstance(v, dict) else v)
                for k, v in lat.items()}  # fmt: skip
        lines += ["Latency (seconds):", "", "```json", json.dumps(slim, indent=1), "```", ""]
    return lines


def write(result: dict[str, Any], path: Path) -> Path:
    """``path`` (.json: the run with its machine and figures) and the same name in .md (the figures and the
    section of the report): a run of this scenario alone, e.g. ``bench/results/e2e-100k.json``."""
    from bench.report import table
    from bench.run import machine

    doc = {"generatedAt": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "e2e": result}
    doc["figures"] = figures(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    m = doc["machine"]
    md = [
        f"# `python -m bench.e2e` ({doc['generatedAt']})",
        "",
        f"{m['cpuCount']} CPUs, {m['memoryGB']} GB, Python {m['python']}, {m['platform']}.",
        "",
        table(doc["figures"]),
        "",
        *markdown(doc),
    ]
    path.with_suffix(".md").write_text("\n".join(md), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="BC customers in the full job")
    parser.add_argument("--edits", type=int, default=50, help="Dataverse webhook edits timed")
    parser.add_argument("--bc-edits", type=int, default=10, help="BC edits timed (notifications)")
    parser.add_argument("--ticks", type=int, default=2, help="incremental ticks after the full job")
    parser.add_argument("--out", type=Path, help="also write the run to this .json (and its .md)")
    args = parser.parse_args(argv)
    result = run(args.n, args.edits, args.bc_edits, args.ticks)
    if args.out:
        _say(f"written {write(result, args.out)}")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
