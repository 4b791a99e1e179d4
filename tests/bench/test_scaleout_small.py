"""The scale-out scenario at CI size (bench/scaleout.py): 1,200 records fanned out in 24 sync-batch messages,
once with 1 and once with 2 function-host instances on the same queue, each on its own stack (~40 s).
Asserts counts, verification and that both instances took messages; times are not asserted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.scaleout import SMALL_SCALEOUT, figures, markdown, scaleout_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return asyncio.run(scaleout_scenario(SMALL_SCALEOUT))


def test_every_run_syncs_every_record_once_and_leaves_nothing_on_the_queue(results: dict[str, Any]) -> None:
    assert [r["workers"] for r in results["runs"]] == [1, 2]
    for run in results["runs"]:
        assert run["status"] == "succeeded", run
        assert run["counts"] == {"inserted": 1200, "coupled": 1200}, run
        assert run["batches"]["completed"] == run["batches"]["expected"] == 1 + 24, run  # job message + batches
        v = run["verify"]
        assert v["ok"] and v["bcRecords"] == v["dvRecords"] == v["couplings"] == 1200, v
        assert v["duplicateRecords"] == v["duplicateCouplings"] == v["uncoupledRecords"] == 0, v
        q = run["queue"]
        assert q["active"] == q["locked"] == q["deadLetter"] == 0 and q["receivers"] == run["workers"], q
        assert run["failedInvocations"] == 0, run
        assert run["ok"], run


def test_both_workers_took_messages_and_each_message_was_handled_once(results: dict[str, Any]) -> None:
    two = results["runs"][1]
    assert set(two["messagesByWorker"]) == {"host", "host-2"}
    assert all(n > 0 for n in two["messagesByWorker"].values()), two["messagesByWorker"]
    # Every message exactly once across the instances: the job's message plus its batches, no redelivery.
    assert two["messagesHandled"] == two["batches"]["expected"], two
    assert results["runs"][0]["messagesByWorker"] == {"host": 25}


def test_the_figures_and_the_report_section(results: dict[str, Any]) -> None:
    figs = {f["figure"]: f for f in figures({"scaleout": results})}
    lost = next(f for name, f in figs.items() if "lost + duplicated" in name)
    assert lost["value"] == 0 and lost["pass"] is True
    speed = next(f for name, f in figs.items() if "speed-up" in name)
    assert speed["target"] == "≥ 1.7×" and speed["value"] == results["speedup"] > 0
    assert all({"value", "target", "pass"} <= f.keys() for f in figs.values())
    assert "## Scale-out" in markdown({"scaleout": results})
