"""bench/e2e.py at CI size through the real local stack (host, Service Bus, simulators, Azurite on free ports):
asserts counts only (every record coupled once, calls per side of the no-change tick, every edit arrived),
never times. ~1 min."""

from __future__ import annotations

from typing import Any

import pytest

from bench import e2e
from bench.report import figures

pytestmark = [pytest.mark.stack, pytest.mark.slow]

N = 300


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return {"e2e": e2e.run(N, edits=3, bc_edits=1, ticks=2)}


def test_every_record_is_coupled_once_through_the_http_job(results: dict[str, Any]) -> None:
    full = results["e2e"]["fullSync"]
    assert full["status"] == "succeeded", full
    assert full["counts"]["inserted"] == N and full["counts"].get("failed", 0) == 0, full
    v = full["verify"]
    assert v == {**v, "dvRecords": N, "couplings": N, "duplicateDvRecords": 0, "duplicateCouplings": 0, "ok": True}


def test_no_change_tick_costs_at_most_two_calls_per_side(results: dict[str, Any]) -> None:
    full = results["e2e"]["fullSync"]
    for t in full["ticks"]:
        assert t["status"] == "succeeded" and "inserted" not in t["counts"] and "modified" not in t["counts"], t
    tick = full["noChangeTick"]
    assert tick["bcRequests"] <= 2 and tick["dvRequests"] <= 2, tick
    # The API's job also brings the parent mappings up to date: a fixed cost, not one per record.
    api = full["apiTick"]
    assert api["bcRequests"] < 10 and api["dvRequests"] < 10, api


def test_every_process_of_the_stack_was_sampled(results: dict[str, Any]) -> None:
    peaks = results["e2e"]["fullSync"]["peakRssMB"]
    assert {"host", "bc_sim", "dv_sim", "azurite", "amqp_peer"} <= peaks.keys(), peaks
    assert results["e2e"]["fullSync"]["hostCpuSeconds"] > 0


def test_edits_reach_the_other_side_and_figures_carry_verdicts(results: dict[str, Any]) -> None:
    lat = results["e2e"]["latency"]
    assert lat["dvToBc"]["edits"] == 3 and lat["bcToDv"]["edits"] == 1, lat
    figs = {f["figure"]: f for f in figures(results)}
    names = [k for k in figs if k.startswith("E2E")]
    assert len(names) == 10, names
    stack = figs[f"E2E {N} records: peak RSS per process of the stack (MB, the largest; Azurite apart)"]
    peaks = results["e2e"]["fullSync"]["peakRssMB"]
    assert stack["value"] == max(v for k, v in peaks.items() if not k.startswith("azurite")), (stack, peaks)
    assert figs[f"E2E {N} records: peak RSS of Azurite, the Table Storage emulator (MB)"]["target"] == "report"
    first = figs[f"E2E first tick after {N} (reads the job's own creates back): seconds"]
    assert first["value"] == results["e2e"]["fullSync"]["ticks"][0]["seconds"] > 0
    assert figs[f"E2E {N} records (HTTP job, host workers): missing + duplicate records/couplings"]["pass"] is True
