"""The benchmark at CI size (500 records per side, baseline 30): asserts call counts and ratios only, which are
deterministic; times are not asserted. Starts its own Azurite, authority, simulators and AMQP peer on free
ports (~20 s)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from bench.report import figures
from bench.run import SMALL, run_all


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return asyncio.run(run_all(dataclasses.replace(SMALL, cpu_n=200)))


def _phase(r: dict[str, Any], scenario: str, word: str) -> dict[str, Any]:
    return next(p for p in r[scenario]["phases"] if word in p["name"])


def test_full_sync_calls_per_record_within_target_and_100x_below_baseline(results: dict[str, Any]) -> None:
    create = _phase(results, "engine", "create + couple")
    existing = _phase(results, "engine", "existing couplings")
    base = _phase(results, "baseline", "create + couple")
    for side in ("bc", "dv"):
        key = f"{side}RequestsPerRecord"
        assert create[key] <= 0.03 and existing[key] <= 0.03, (side, create[key], existing[key])
        assert base[key] / create[key] >= 100, (side, base[key], create[key])
        # The simulators saw exactly what the clients sent (no hidden retries, no calls from elsewhere).
        assert create[f"{side}Requests"] == create[f"{side}ClientCalls"]
    assert base["bcRequestsPerRecord"] >= 1 and base["dvRequestsPerRecord"] >= 1  # the baseline is per record


def test_service_bus_messages_per_record(results: dict[str, Any]) -> None:
    for word in ("create + couple", "existing couplings"):
        assert _phase(results, "engine", word)["sbMessagesPerRecord"] <= 0.002


def test_no_lost_updates_no_duplicates(results: dict[str, Any]) -> None:
    v = results["engine"]["verify"]
    assert v["ok"], v
    assert v["updatesChecked"] == 100


def test_figures_carry_targets_and_verdicts(results: dict[str, Any]) -> None:
    figs = {f["figure"]: f for f in figures(results)}
    assert figs["BC calls/record, full sync (create + couple)"]["pass"] is True
    assert all({"value", "target", "pass"} <= f.keys() for f in figs.values())


# A known engine inefficiency (reported to the lead); strict: this starts failing once fixed, so flip it.
def test_no_change_tick_is_bounded_not_per_record(results: dict[str, Any]) -> None:
    # Target is <= 2 per side; BC's 2 s change-feed overlap can re-deliver the last writes (then the pair is
    # re-read on both sides: up to 4 calls). Timing-dependent, so only the bound independent of N is asserted.
    tick = _phase(results, "engine", "no-change")
    assert tick["bcRequests"] <= 4 and tick["dvRequests"] <= 4, tick
    assert tick["tableOps"] <= 30, tick


@pytest.mark.xfail(strict=True, reason="each pair is visited from both sides and saved each time")
def test_table_ops_per_record_on_full_sync_of_existing_couplings(results: dict[str, Any]) -> None:
    assert _phase(results, "engine", "existing couplings")["tableOpsPerRecord"] <= 0.015
