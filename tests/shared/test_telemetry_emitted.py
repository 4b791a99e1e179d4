"""Every metric the README, docs/operations.md and the workbook name is emitted by the production code paths
(the engine over fakes, the worker's entry, the connectors' retry policy), with the outcome vocabulary."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry
from shared.connectors.http import ServiceHttp
from shared.domain.model import Direction, Outcome
from shared.services import synchronize_now
from shared.services.coupling_service import CouplingService
from shared.services.jobs import JobService
from tests.fake_services import fake_engine
from tests.shared.connectors.test_connectors_http import FakeCredential

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    r = InMemoryMetricReader()
    telemetry.reset_instruments(MeterProvider(metric_readers=[r]))
    yield r
    telemetry.reset_instruments()


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def documented_metrics() -> set[str]:
    """The metric names of the README's and the operations doc's tables and of the workbook's queries."""
    names: set[str] = set()
    for doc in ("README.md", "docs/operations.md"):
        names |= set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", (ROOT / doc).read_text(), re.M))
    names |= set(re.findall(r'name == "([a-z_]+\.[a-z_]+)"', (ROOT / "infra/bicep/app/monitoring.bicep").read_text()))
    return names


async def throttled_once(mapping: str) -> None:
    """A 429 the connectors' retry policy waits out, while work of ``mapping`` runs."""
    calls = 0

    async def handler(_request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.json_response({"error": {"code": "TooMany"}}, status=429, headers={"Retry-After": "0"})
        return web.json_response({"value": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    http = ServiceHttp(service="dataverse", base_url=str(server.make_url("")).rstrip("/"), credential=FakeCredential(),
                       scope="api://x/.default", max_concurrency=1, retry_backoff_base=0.01)  # fmt: skip
    token = telemetry.CURRENT_MAPPING.set(mapping)
    try:
        await http.request("GET", str(server.make_url("/accounts")))
    finally:
        telemetry.CURRENT_MAPPING.reset(token)
        await http.aclose()
        await server.close()


async def test_the_documented_metrics_are_what_the_engine_emits(reader: InMemoryMetricReader) -> None:
    documented = documented_metrics()
    assert {
        "sync.records",
        "sync.conflicts",
        "sync.jobs",
        "sync.throttled",
        "sync.latency_ms",
        "queue.lag_ms",
    } <= documented
    engine = fake_engine()
    bc, dv = engine.bc, engine.dv
    b = bc.put("customers", {"displayName": "Contoso", "phoneNumber": "111", "number": "C1", "email": ""})
    d = dv.put("accounts", {"name": "Contoso", "telephone1": "111", "emailaddress1": None})
    await CouplingService(engine).couple_existing("CUSTOMER", b, d, sync_after=Direction.TO_DATAVERSE)
    # a conflict: both sides changed the same field since the last sync
    bc.update("customers", b, phoneNumber="444")
    dv.update("accounts", d, telephone1="555")
    answer = (
        await synchronize_now.sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.BIDIRECTIONAL)
    ).answer()
    assert answer["results"][0]["status"] == "conflict" and answer["counts"]["failed"] == 1
    # a queued job, delivered two seconds after it was enqueued: new records are created
    bc.put("customers", {"displayName": "Fabrikam", "number": "C2"})
    job = await JobService(engine).start("CUSTOMER", "incremental", "bidirectional", full=False)
    [msg] = engine.publisher.take()
    await JobService(engine).receive(json.dumps(msg), enqueued_at=datetime.now(UTC) - timedelta(seconds=2))
    assert (await engine.jobs.get(job.job_id)).status == "partial"  # the conflict is still there
    await throttled_once("CUSTOMER")

    emitted = points(reader)
    assert documented <= set(emitted), f"documented but never emitted: {sorted(documented - set(emitted))}"
    records = {p.attributes["outcome"]: p.value for p in emitted["sync.records"]}
    assert set(records) <= {o.value for o in Outcome}, records  # the record result statuses, nothing else
    # Synchronize now's conflict and the job's: one result per run (the Dataverse feed does not sync the pair
    # the BC feed's pass just synced, which before added a third result, skipped, as it had failed twice)
    assert records["conflict"] == 2 and "skipped" not in records and records["created"] == 1
    (conflicts,) = emitted["sync.conflicts"]
    assert conflicts.value == 2 and dict(conflicts.attributes) == {"mapping": "CUSTOMER", "direction": "bidirectional"}
    jobs = {(p.attributes["kind"], p.attributes["outcome"]): p.value for p in emitted["sync.jobs"]}
    assert jobs == {("syncNow", "partial"): 1, ("incremental", "partial"): 1}  # inline Synchronize now counts too
    (lag,) = emitted["queue.lag_ms"]
    assert lag.count == 1 and 1500 < lag.sum < 60_000
    assert all(p.attributes["operation"] == "batch" and p.count >= 1 for p in emitted["sync.latency_ms"])
    (throttled,) = emitted["sync.throttled"]
    assert throttled.value == 1 and dict(throttled.attributes) == {"service": "dataverse", "mapping": "CUSTOMER"}


def test_job_counts_follow_the_outcome_vocabulary() -> None:
    from shared.domain.model import COUNT_KEYS, COUNT_OF, final_status
    from shared.services.sync_service import RecordResult, SyncOutcome

    assert set(COUNT_OF) == set(Outcome) and set(COUNT_OF.values()) <= set(COUNT_KEYS)
    out = SyncOutcome()
    for status in ("created", "updated", "unchanged", "coupled", "conflict", "failed", "not_coupled", "not_found",
                   "skipped"):  # fmt: skip
        out.add(RecordResult("b", "d", status, "toDataverse"))  # type: ignore[arg-type]
    assert {k: v for k, v in out.counts.items() if v} == {
        "inserted": 1, "modified": 1, "unchanged": 1, "coupled": 2, "failed": 3, "skipped": 2
    }  # fmt: skip
    assert out.by_outcome()[Outcome.CONFLICT] == 1 and final_status(out.counts) == "partial"
    assert all(isinstance(r.status, Outcome) for r in out.results)
    with pytest.raises(ValueError):
        RecordResult("b", "d", "mangled", None)  # type: ignore[arg-type]
