"""Figures vs targets, and the report files: ``latest.md``, ``latest.json``, ``throughput.png``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import e2e, growth, scaleout

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _p(results: dict[str, Any], scenario: str, word: str) -> dict[str, Any] | None:
    data = results.get(scenario)
    if not data:
        return None
    return next((p for p in data["phases"] if word in p["name"]), None)


def _fig(name: str, value: float | None, target: str, ok: Callable[[float], bool] | None, note: str = "") -> dict:
    passed = None if value is None or ok is None else bool(ok(value))
    return {"figure": name, "value": value, "target": target, "pass": passed, "note": note}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 1) if a and b else None


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    create = _p(r, "engine", "create + couple")
    existing = _p(r, "engine", "existing couplings")
    tick = _p(r, "engine", "no-change")
    upd = _p(r, "engine", "after 10% updates")
    b_create = _p(r, "baseline", "create + couple")
    b_upd = _p(r, "baseline", "after 10% updates")
    for p in (r.get("defaultSet") or {}).get("phases", []):
        name = p["name"].removeprefix("default set: full sync ")
        if name in ("PAYMENT TERMS", "SHIPMENT METHOD"):
            continue  # option sets: one InsertOptionValue per new code, as in BC (reported in the phases)
        worst = max(p.get("bcRequestsPerRecord", 0), p.get("dvRequestsPerRecord", 0))
        out.append(_fig(f"calls/record, full sync of {name} (default set)", worst, "≤ 0.03", lambda v: v <= 0.03))
    docs = r.get("documents")
    if docs:  # #21: a header with its lines as one unit, in bulk
        ok = docs.get("allCreated")
        out.append(_fig("calls/line, full sync of SALESORDER-ORDER (documents)", docs["callsPerLine"], "≤ 0.05",
                        lambda v, ok=ok: bool(ok) and v <= 0.05))  # fmt: skip
        out.append(_fig("calls/document, full sync of SALESORDER-ORDER", docs["callsPerDocument"], "reported", None))
    for side, label in (("bc", "BC"), ("dv", "Dataverse")):
        key = f"{side}RequestsPerRecord"
        for phase, what in ((create, "create + couple"), (existing, "existing couplings")):
            if phase:
                name = f"{label} calls/record, full sync ({what})"
                out.append(_fig(name, phase[key], "≤ 0.03", lambda v: v <= 0.03))
        if create and b_create:
            out.append(
                _fig(
                    f"{label} calls/record: baseline ÷ engine (full sync)",
                    _ratio(b_create[key], create[key]),
                    "≥ 100×",
                    lambda v: v >= 100,
                    f"baseline {b_create[key]} on {r['baseline']['n']}/side, extrapolated per record",
                )
            )
        if upd and b_upd:
            out.append(
                _fig(
                    f"{label} calls/record: baseline ÷ engine (10% updates)",
                    _ratio(b_upd[key], upd[key]),
                    "report",
                    None,
                )
            )
    if existing:
        out.append(_fig("Table ops/record, full sync of existing couplings", existing["tableOpsPerRecord"], "≤ 0.015",
                        lambda v: v <= 0.015))  # fmt: skip
    if create:
        # Reported, no longer held to ~0.02 (2 rows a record in 100-operation transactions): since #23 a mapping's
        # couplings span 16 bucket partitions, a transaction holds one partition, and the claims read first.
        out.append(_fig("Table ops/record, full sync create + couple", create["tableOpsPerRecord"],
                        "report (was ~0.02 with one partition per mapping)", None))  # fmt: skip
    for phase, what in ((create, "create + couple"), (existing, "existing couplings")):
        if phase:
            out.append(_fig(f"Service Bus messages/record, full sync ({what})", phase["sbMessagesPerRecord"],
                            "≤ 0.002", lambda v: v <= 0.002))  # fmt: skip
    if tick:
        worst = max(tick["bcRequests"], tick["dvRequests"])
        out.append(_fig("No-change tick: calls per side (max of BC, Dataverse)", worst, "≤ 2", lambda v: v <= 2,
                        f"BC {tick['bcRequests']}, Dataverse {tick['dvRequests']}"))  # fmt: skip
    lat_e, lat_b = _p(r, "latencyEngine", "create + couple"), _p(r, "latencyBaseline", "create + couple")
    if lat_e and lat_b:
        out.append(
            _fig(
                "20 ms latency: engine ÷ baseline records/s (full sync)",
                _ratio(lat_e["recordsPerSecond"], lat_b["recordsPerSecond"]),
                "≥ 20×",
                lambda v: v >= 20,
                f"engine {lat_e['recordsPerSecond']}/s (Azurite included), baseline {lat_b['recordsPerSecond']}/s",
            )
        )
    te = r.get("throttledEngine")
    if te:
        took = te["phases"][0]["seconds"]
        out.append(_fig(f"Throttled: engine full sync time vs the limits' bound, bound by {te.get('boundBy')}",
                        te["ofBound"], "≥ 0.9", lambda v: v >= 0.9,
                        f"bound {te['boundSeconds']} s, took {took} s (engine CPU {te['phases'][0]['cpuSeconds']} s, "
                        f"load {te.get('loadAverage')})"))  # fmt: skip
        v = te["verify"]
        out.append(_fig("Throttled: lost updates", v["lostUpdates"], "0", lambda x: x == 0))
        dups = v["duplicateRecords"] + v["duplicateCouplings"]
        out.append(_fig("Throttled: duplicate records + couplings", dups, "0", lambda x: x == 0))
        tb = r.get("throttledBaseline")
        if tb:
            out.append(_fig("Throttled: engine ÷ baseline records/s (full sync)",
                            _ratio(te["phases"][0]["recordsPerSecond"], tb["phases"][0]["recordsPerSecond"]), "report",
                            None))  # fmt: skip
    if "engine" in r:
        v = r["engine"]["verify"]
        out.append(_fig("Main run: lost updates + duplicates + uncoupled", v["lostUpdates"] + v["duplicateRecords"]
                        + v["duplicateCouplings"] + v["uncoupledRecords"], "0", lambda x: x == 0))  # fmt: skip
    m = r.get("memory")
    if m:
        out.append(_fig(f"{m['records']:,} full sync: peak RSS (MB)", m["rssPeakMB"], "≤ 500", lambda v: v <= 500,
                        m["stores"]))  # fmt: skip
        out.append(_fig(f"{m['records']:,} full sync: records/s", m["recordsPerSecond"], "report", None))
    # #23: engine CPU per record on the real clients (Azurite + simulators), next to the baseline's.
    echo = _p(r, "engine", "echoes")
    first = _p(r, "engine", "first tick after the full sync")
    if first and first.get("cpuMsPerRecord") is not None:
        out.append(_fig("Engine CPU ms per echoed record, first tick after the full sync (one-off)",
                        first["cpuMsPerRecord"], "report", None,
                        f"{first['entitiesRead']} entities read, {first['tableOps']} table ops"))  # fmt: skip
    b_tick = _p(r, "baseline", "after 10% updates")
    for phase, base, what, target, limit in (
        (create, b_create, "full sync, create + couple", "≤ 0.3", 0.3),
        (existing, None, "full sync, existing couplings", "≤ 0.3", 0.3),
        (upd, b_tick, "incremental, per changed record", "≤ 0.5", 0.5),
    ):
        if phase and phase.get("cpuMsPerRecord") is not None:
            note = f"baseline {base['cpuMsPerRecord']} ms/record" if base and base.get("cpuMsPerRecord") else ""
            out.append(_fig(f"Engine CPU ms/record, real clients ({what})", phase["cpuMsPerRecord"], target,
                            lambda v, limit=limit: v <= limit, note))  # fmt: skip
    for phase, what in ((upd, "incremental after 10% updates"), (echo, "incremental, echoes of own writes"),
                        (existing, "full sync of existing couplings")):  # fmt: skip
        if phase and phase.get("entitiesReadPerRecord") is not None:
            out.append(_fig(f"Table entities read per record ({what})", phase["entitiesReadPerRecord"], "report",
                            None, f"{phase['entitiesRead']} entities, {phase['tableOps']} table ops"))  # fmt: skip
            if phase is not existing:  # #23: per changed record, what the incremental costs besides CPU
                calls = phase["bcRequests"] + phase["dvRequests"]
                out.append(_fig(f"Table ops per changed record ({what})", phase["tableOpsPerRecord"], "report", None,
                                f"examined {sum(phase['job'].values())} records"))  # fmt: skip
                out.append(_fig(f"BC + Dataverse calls per changed record ({what})",
                                round(calls / phase["records"], 4), "report", None,
                                f"{phase['bcRequests']} BC, {phase['dvRequests']} Dataverse"))  # fmt: skip
    t = r.get("tablesCpu")
    if t:
        tx = t["transactions"]
        out.append(_fig("Table transaction client CPU: SDK ÷ lean writer (100 operations)", tx["sdkOverLean"], "≥ 3×",
                        lambda v: v >= 3, f"SDK {tx['sdk']} ms, lean {tx['lean']} ms per transaction"))  # fmt: skip
        lk = t["lookups"]
        now, before = lk["now"], lk["before"]
        out.append(_fig(f"Lookup of {lk['ids']} random ids in {lk['couplings']:,} couplings: entities read per id",
                        round(now["entitiesRead"] / lk["ids"], 3), "≤ 1 (before: range scan)", lambda v: v <= 1,
                        f"before {before['entitiesRead']} entities; "
                        f"CPU/id now {now['cpuMsPerId']} ms, before {before['cpuMsPerId']} ms; requests "
                        f"{now['requests']} vs {before['requests']}"))  # fmt: skip
    out += scaleout.figures(r)  # #23: N function-host instances on one queue
    out += growth.figures(r)  # #23: CPU per record from 10,000 to 100,000 couplings
    c = r.get("cpu")
    if c:
        note = f"{c['fullSyncCpuMsPerVisit']} ms per pair visit; fakes included"
        out.append(_fig("Engine CPU ms/record (full sync, network excluded)", c["fullSyncCpuMsPerRecord"], "≤ 0.35",
                        lambda v: v <= 0.35, note))  # fmt: skip
    out += e2e.figures(r)
    return out


def table(figs: list[dict[str, Any]]) -> str:
    rows = ["| figure | value | target | pass |", "|---|---:|---|---|"]
    for f in figs:
        mark = {True: "PASS", False: "FAIL", None: "—"}[f["pass"]]
        note = f" ({f['note']})" if f["note"] else ""
        rows.append(f"| {f['figure']}{note} | {f['value']} | {f['target']} | {mark} |")
    return "\n".join(rows)


def phases_table(results: dict[str, Any]) -> str:
    rows = [
        "| scenario / phase | records | s | engine CPU s | CPU ms/rec | rec/s | BC calls | DV calls | BC 429 | DV 429"
        " | table ops | entities read | SB msgs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("baseline", "engine", "latencyBaseline", "latencyEngine", "throttledBaseline", "throttledEngine"):
        for p in (results.get(key) or {}).get("phases", []):
            rows.append(
                f"| {p['name']} | {p['records']} | {p['seconds']} | {p.get('cpuSeconds', '')} | "
                f"{p.get('cpuMsPerRecord') or ''} | {p.get('recordsPerSecond') or ''} | {p['bcRequests']} | "
                f"{p['dvRequests']} | {p.get('bcThrottled', 0)} | {p.get('dvThrottled', 0)} | {p['tableOps']} | "
                f"{p.get('entitiesRead', '')} | {p.get('sbMessages', '')} |"
            )
    return "\n".join(rows)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    cfg = results["config"]
    lines = [
        "# Benchmark report",
        "",
        f"Generated {results['generatedAt']} by `make bench` in {results.get('wallSeconds')} s on "
        f"{m['cpuCount']} CPUs, {m['memoryGB']} GB, Python {m['python']}, {m['platform']}.",
        "",
        "Local simulators (BC, Dataverse), Azurite, the token authority and the AMQP peer run as separate",
        "processes; the engine runs in the benchmark's process. Calls are counted by the simulators",
        "(`/_sim/stats`) and checked against the clients' counters. The baseline (`bench/baseline.py`) is a",
        f"per-record sync run on {cfg['baseline_n']} records per side (fewer than the engine's {cfg['n']});",
        "its per-record figures are extrapolated. Absolute times are noisy and include Azurite, which is slow",
        "on large tables; ratios and counts are the point.",
        "",
        "## Figures vs targets",
        "",
        table(results["figures"]),
        "",
        "## Phases",
        "",
        phases_table(results),
        "",
    ]
    te = results.get("throttledEngine")
    if te:
        lines += [
            "## Throttled runs",
            "",
            f"Limits per user: {cfg['throttle_requests']} requests / {cfg['throttle_window_s']} s on each simulator, "
            f"on BC 5 running + {cfg['throttle_bc_concurrent'] - 5} queued, on Dataverse 52 concurrent, an execution "
            f"budget of {cfg.get('throttle_dv_execution_s')} s per window charged "
            f"{cfg.get('throttle_dv_row_cost_s')} s per row written, and its dop hint 4 (scaled down from 6,000",
            "requests and 1,200 s / 5 min so that the engine's few calls still span several windows).",
            "Bound = (⌈accepted calls ÷ limit⌉ − 1) ×",
            "window for each window limit (Dataverse's execution time: ⌈charged ÷ (budget + dop × largest charge)⌉,",
            "costs being charged when a request ends); the longest is the bound. Each limit, the engine's full sync:",
            "",
            "| limit | bound s | used (accepted requests, execution s, peak in flight) |",
            "|---|---:|---:|",
            *(f"| {b['limit']} | {b['boundSeconds']} | {b['used']} |" for b in te.get("bounds", [])),
            "",
            f"**Bound by: {te.get('boundBy')}** — {te['boundSeconds']} s; the engine took "
            f"{te['phases'][0]['seconds']} s = {te['ofBound']} of the bound (target ≥ 0.9). 429s by reason: "
            f"{te['phases'][0].get('throttledBy', {})}. Engine CPU {te['phases'][0]['cpuSeconds']} s; the box's "
            f"1-minute load average before / after: {te.get('loadAverage')} (2 cores: above ~2 the wall time "
            "stretches). The engine paces itself to the scaled windows (`BC_REQUESTS_PER_WINDOW` / "
            "`DATAVERSE_REQUESTS_PER_WINDOW`).",
            "",
            "Verification read both simulators and the coupling table:",
            "",
            "```json",
            json.dumps(te["verify"], indent=1),
            "```",
            "",
            "![throughput](throughput.png)",
            "",
        ]
    mem = results.get("memory")
    if mem:
        lines += [
            "## 100k full sync",
            "",
            f"{mem['records']:,} BC customers → Dataverse (create + couple), then the Dataverse side's pass:",
            f"{mem['seconds']} s, {mem['recordsPerSecond']} records/s, peak RSS {mem['rssPeakMB']} MB "
            f"(start {mem['rssStartMB']} MB), BC calls {mem['bcRequests']}, Dataverse calls {mem['dvRequests']}.",
            f"Stores: {mem['stores']}.",
            "",
        ]
    lines += scaleout.markdown(results)
    lines += e2e.markdown(results)
    c = results.get("cpu")
    if c:
        lines += ["## Engine CPU (network excluded)", "", "```json", json.dumps(c, indent=1), "```", ""]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> bool:
    series = results.get("throttleSeries")
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for who, samples in series.items():
        if len(samples) < 2:
            continue
        ts = [s["t"] for s in samples]
        rate = [0.0] + [
            (b["written"] - a["written"]) / max(b["t"] - a["t"], 1e-6) for a, b in itertools.pairwise(samples)
        ]
        ax.plot(ts, rate, label=f"{who}: records written/s")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("records written per second")
    ax.set_title("Throughput under service-protection limits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(results: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    chart(results, directory / "throughput.png")
    (directory / "latest.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = directory / "latest.md"
    md.write_text(markdown(results))
    return md
