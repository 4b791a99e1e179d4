"""bench/limits.py: the least time each service-protection limit allows, and which one binds."""

from __future__ import annotations

from bench.limits import binding, bound_seconds, execution_bound, limit_bounds

LIMITS = {
    "bc": {"requestsPerWindow": 10, "windowSeconds": 5, "maxConcurrent": 100},
    "dv": {"requestsPerWindow": 10, "windowSeconds": 5, "maxConcurrent": 52, "executionSecondsPerWindow": 2,
           "executionSecondsPerRow": 0.0005},
}  # fmt: skip


def test_window_bound_counts_the_windows_after_the_first() -> None:
    assert [bound_seconds(n, 10, 5) for n in (0, 10, 11, 20, 21, 35)] == [0, 0, 5, 5, 10, 15]


def test_execution_bound_allows_for_what_is_in_flight_when_the_budget_is_reached() -> None:
    assert execution_bound(8.0, 2, 5, 0.0, 1) == 15  # 4 budgets: 3 windows after the first
    assert execution_bound(8.0, 2, 5, 0.5, 4) == 5  # up to 2 + 4 x 0.5 per window
    assert execution_bound(8.0, 2, 5, 2.0, 4) == 0


def test_the_longest_bound_names_the_limit() -> None:
    phase = {"bcRequests": 25, "bcThrottled": 2, "dvRequests": 40, "dvThrottled": 5, "dvInFlightMax": 4,
             "executionSeconds": {"bc": 0.3, "dv": 1.5}, "dvExecutionMaxSeconds": 0.1}  # fmt: skip
    bounds = limit_bounds(phase, LIMITS, 4)
    by = {b["limit"]: b for b in bounds}
    assert by["BC requests (10 / 5 s)"]["boundSeconds"] == 10 and by["BC requests (10 / 5 s)"]["used"] == 23
    assert by["Dataverse requests (10 / 5 s)"]["boundSeconds"] == 15
    assert by["Dataverse execution time (2 s / 5 s, 0.5 ms per row written)"]["boundSeconds"] == 0
    assert by["Dataverse concurrent requests (52)"] == {"limit": "Dataverse concurrent requests (52)",
                                                          "boundSeconds": 0.0, "used": 4}  # fmt: skip
    assert binding(bounds)["limit"] == "Dataverse requests (10 / 5 s)"
    phase["executionSeconds"]["dv"] = 12.0  # a heavier write load: the execution budget binds
    assert binding(limit_bounds(phase, LIMITS, 4))["limit"].startswith("Dataverse execution time")


def test_the_throttled_engine_paces_to_the_scaled_windows() -> None:
    from bench.run import Config, _paced
    from shared.config import Settings

    paced = _paced(Config())
    assert set(paced) <= set(Settings.model_fields)  # model_copy(update=...) would take a misspelt name silently
    assert paced == {"bc_requests_per_window": 10, "bc_window_seconds": 5,
                     "dataverse_requests_per_window": 10, "dataverse_window_seconds": 5}  # fmt: skip
