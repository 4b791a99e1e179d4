"""One local stack for the reliability and security suites, fault injection, consistency checks, tallies.

The stack runs on free ports (next to other engineers' stacks) with its own log directory, so the
secrets-in-logs test reads only this stack's logs. It is started once per session (`shared_stack()`),
whichever of tests/reliability or tests/security asks first, and stopped at session end.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from local.stack import Stack
from shared.config import PROJECT_ROOT
from tests.integration.conftest import ApiClient
from tests.integration.sims import SimClients

ENV = {"SYNC_SCHEDULED_SYNC": "false"}
PROBLEM = "application/problem+json"
SIMS = ("bc_sim", "dv_sim")


# The suites' stack is the project's own launcher (it passes each simulator its free-port audience).
ReliabilityStack = Stack


_lock = threading.Lock()
_stack: ReliabilityStack | None = None


def shared_stack() -> ReliabilityStack:
    global _stack
    with _lock:
        if _stack is None:
            instance = ReliabilityStack.on_free_ports(env=ENV)
            instance.log_dir = PROJECT_ROOT / ".local" / f"reliability-logs-{os.getpid()}"
            instance.start()
            _stack = instance
        return _stack


def stop_shared_stack() -> None:
    global _stack
    with _lock:
        if _stack is not None:
            _stack.stop()
            _stack = None


# ----------------------------------------------------------------------------- tallies for the summary
@dataclass
class Tally:
    cases: int = 0
    faults_injected: int = 0
    jobs: int = 0
    lost: int = 0
    duplicated: int = 0
    five_xx: int = 0
    bad_inputs: int = 0
    status_counts: Counter[int] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    # What the known-bug (xfail) cases saw: kept out of the totals above, shown separately.
    known_bug_cases: int = 0
    known_bug_lost: int = 0
    known_bug_duplicated: int = 0
    known_bug_five_xx: int = 0

    def marks(self) -> tuple[int, int, int]:
        return self.lost, self.duplicated, self.five_xx

    def move_to_known_bugs(self, before: tuple[int, int, int]) -> None:
        lost, dup, five = (now - then for now, then in zip(self.marks(), before, strict=True))
        self.lost, self.duplicated, self.five_xx = before
        self.known_bug_cases += 1
        self.known_bug_lost += lost
        self.known_bug_duplicated += dup
        self.known_bug_five_xx += five


TALLY = Tally()


# ----------------------------------------------------------------------------- simulator control
class SimControl:
    """The simulators' unauthenticated `/_sim/` API."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = requests.Session()
        self.http.trust_env = False

    def _url(self, sim: str, path: str) -> str:
        return f"{self.stack.url(sim)}/_sim/{path}"

    def fault(self, sim: str, **body: Any) -> None:
        r = self.http.post(self._url(sim, "faults"), json=body, timeout=10)
        assert r.status_code in (200, 201, 204), r.text

    def clear(self) -> None:
        for sim in SIMS:
            self.http.delete(self._url(sim, "faults"), timeout=10)

    def stats(self, sim: str) -> dict[str, Any]:
        return self.http.get(self._url(sim, "stats"), timeout=10).json()

    def injected(self) -> int:
        return sum(int(self.stats(s).get("faultsInjected", 0)) for s in SIMS)

    def pending_faults(self) -> int:
        return sum(sum(int(f.get("count", 0) or 0) for f in self.stats(s).get("faults", [])) for s in SIMS)


@dataclass
class World:
    stack: Stack
    api: ApiClient
    sims: SimClients
    ctl: SimControl


def make_world(stack: Stack) -> World:
    return World(stack, ApiClient(stack.host_url, stack.function_key), SimClients.for_stack(stack), SimControl(stack))


def tag() -> str:
    return uuid.uuid4().hex[:10]


# ----------------------------------------------------------------------------- consistency
def consistency(world: World, mapping: str = "CUSTOMER", *, names: list[str] | None = None) -> dict[str, int]:
    """Reads both simulators and the coupling table through the API and asserts the invariants:
    no duplicate couplings (each bcId and each dataverseId at most once), every coupling points at two
    existing records, and every `names` value exists exactly once on each side, coupled to each other.
    Returns the counts; adds what it finds to the session tally before asserting."""
    assert mapping == "CUSTOMER", "the checks below use the CUSTOMER field names"
    couplings = world.api.all_pages(f"/api/mappings/{mapping}/couplings")
    bc = {r["id"].lower(): r for r in world.sims.bc_all("customers")}
    dv = {r["accountid"].lower(): r for r in world.sims.dv_all("accounts")}
    bc_ids = Counter(c["bcId"] for c in couplings)
    dv_ids = Counter(c["dataverseId"] for c in couplings)
    dup_couplings = sum(n - 1 for n in bc_ids.values() if n > 1) + sum(n - 1 for n in dv_ids.values() if n > 1)
    dangling = [c for c in couplings if c["bcId"] not in bc or c["dataverseId"] not in dv]
    dup_records = lost = 0
    problems: list[str] = []
    by_bc = {c["bcId"]: c["dataverseId"] for c in couplings}
    for name in names or []:
        on_bc = [rid for rid, r in bc.items() if r.get("displayName") == name]
        on_dv = [rid for rid, r in dv.items() if r.get("name") == name]
        dup_records += max(0, len(on_bc) - 1) + max(0, len(on_dv) - 1)
        if not on_bc or not on_dv:
            lost += 1
            problems.append(f"{name!r}: bc={len(on_bc)} dv={len(on_dv)}")
        elif by_bc.get(on_bc[0]) != on_dv[0]:
            lost += 1
            problems.append(f"{name!r} not coupled to its counterpart")
    TALLY.duplicated += dup_couplings + dup_records
    TALLY.lost += lost
    assert dup_couplings == 0, f"duplicate couplings: {[k for k, n in (bc_ids + dv_ids).items() if n > 1]}"
    assert dup_records == 0, f"duplicate records among {names}"
    assert not dangling, f"couplings to missing records: {dangling[:3]}"
    assert lost == 0, f"lost: {problems}"
    return {"couplings": len(couplings), "bc": len(bc), "dv": len(dv)}


def assert_problem_4xx(resp: requests.Response) -> None:
    TALLY.status_counts[resp.status_code] += 1
    if resp.status_code >= 500:
        TALLY.five_xx += 1
    assert 400 <= resp.status_code < 500, f"{resp.status_code} {resp.text[:300]}"
    assert resp.headers.get("Content-Type", "").split(";")[0] == PROBLEM, resp.headers
    body = resp.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    assert body.get("status") == resp.status_code, body
    assert "Traceback" not in resp.text


def count_5xx(resp: requests.Response) -> requests.Response:
    if resp.status_code >= 500:
        TALLY.five_xx += 1
    return resp


def summary_lines() -> list[str]:
    t = TALLY
    lines = [
        f"reliability: {t.cases} fault cases, {t.faults_injected} injected faults survived, {t.jobs} jobs checked, "
        f"{t.lost} lost, {t.duplicated} duplicated, {t.five_xx} x 5xx",
    ]
    if t.known_bug_cases:
        lines.append(
            f"known bugs (xfail, reported): {t.known_bug_cases} cases saw {t.known_bug_lost} lost, "
            f"{t.known_bug_duplicated} duplicated, {t.known_bug_five_xx} x 5xx"
        )
    if t.bad_inputs:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(t.status_counts.items()))
        lines.append(f"bad-input corpus: {t.bad_inputs} hostile requests -> {statuses}")
    lines += t.notes
    return lines


_printed = False


def write_summary(terminalreporter: Any) -> None:
    """The session's counts in the terminal report, once (both suites' conftests call this)."""
    global _printed
    if _printed or not (TALLY.cases or TALLY.bad_inputs):
        return
    _printed = True
    terminalreporter.section("reliability & security summary")
    for line in summary_lines():
        terminalreporter.write_line(line)
