"""The least time the simulators' service-protection limits allow for what a run sent, limit by limit, and
which limit bound it (the throttled scenario of ``bench/run.py``). Pure functions over a phase's counts."""

from __future__ import annotations

import math
from typing import Any


def bound_seconds(accepted: float, per_window: float, window: float) -> float:
    """The least time a sliding window of ``per_window`` (requests, or seconds of execution) per ``window``
    seconds allows for ``accepted`` of them: the first window's worth at once, then one window per further
    batch."""
    if per_window <= 0:
        return 0.0
    return max(0, math.ceil(accepted / per_window) - 1) * window


def execution_bound(charged: float, budget: float, window: float, largest: float, concurrent: int) -> float:
    """Dataverse's execution-time budget: a request is refused while the window's charged time is at the
    budget, but its own cost is charged when it ends, so a window can hold up to the budget plus what the
    requests in flight then add (at most ``concurrent`` of the ``largest`` charge): a lower bound."""
    return bound_seconds(charged, budget + concurrent * largest, window)


def limit_bounds(phase: dict[str, Any], limits: dict[str, dict[str, Any]], dv_concurrency: int) -> list[dict[str, Any]]:
    """Each limit with the least time it allows for the phase's accepted calls (``limits``: the simulators'
    ``/_sim/limits`` answers by side; ``dv_concurrency``: the most Dataverse requests the client runs at once,
    its dop hint). Concurrency limits give no time bound from counts: their peak use is reported instead."""
    out = []
    for side, label in (("bc", "BC"), ("dv", "Dataverse")):
        lim = limits[side]
        accepted = phase[f"{side}Requests"] - phase[f"{side}Throttled"]
        window = float(lim["windowSeconds"])
        out.append(
            {
                "limit": f"{label} requests ({lim['requestsPerWindow']} / {window:g} s)",
                "boundSeconds": bound_seconds(accepted, lim["requestsPerWindow"], window),
                "used": accepted,
            }
        )
        budget = lim.get("executionSecondsPerWindow")
        if budget:
            charged = phase.get("executionSeconds", {}).get(side, 0.0)  # (the baseline does not report it)
            largest = phase.get(f"{side}ExecutionMaxSeconds", 0.0)
            out.append(
                {
                    "limit": f"{label} execution time ({budget:g} s / {window:g} s, "
                    f"{lim.get('executionSecondsPerRow', 0) * 1000:g} ms per row written)",
                    "boundSeconds": execution_bound(charged, budget, window, largest, dv_concurrency),
                    "used": round(charged, 3),
                }
            )
        out.append(
            {
                "limit": f"{label} concurrent requests ({lim['maxConcurrent']})",
                "boundSeconds": 0.0,
                "used": phase.get(f"{side}InFlightMax", 0),
            }
        )
    return out


def binding(bounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The limit whose bound is the longest (ties: the first listed)."""
    return max(bounds, key=lambda b: b["boundSeconds"])
