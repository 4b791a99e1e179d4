"""The benchmark's world: the local stack's processes on free ports, the engine built on them, and helpers
to drive the simulators' ``/_sim/`` control routes.

The simulators, Azurite, the token authority and the AMQP peer run as separate processes (``local.stack``),
so the engine's process (this one) is the only thing measured for RSS and CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from local.stack import Component, Stack
from shared.bootstrap import Runtime, build_runtime
from shared.config import Settings, settings_from_env
from shared.identity import AsyncMsalCredential, Credentials, build_credentials
from shared.messaging.publisher import ServiceBusPublisher
from shared.services.engine import Engine
from shared.stores.tables import ENTITIES_READ

COMPONENTS = {"azurite", "authority", "bc_sim", "dv_sim", "amqp_peer"}


class BenchStack(Stack):
    """``Stack`` whose Dataverse simulator accepts tokens for its own (free-port) URL: the simulator's
    default audience is the contract's ``http://127.0.0.1:7082``, which only fits the fixed ports."""

    def components(self) -> list[Component]:
        out = super().components()
        for c in out:
            if c.name == "dv_sim" and "--no-auth" not in c.argv and "--audience" not in c.argv:
                c.argv += ["--audience", self.url("dv_sim")]
        return out


class SimControl:
    """The unauthenticated ``/_sim/`` routes of one simulator."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, f"{self.base}{path}", json=body) as r:
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
            return await r.json() if r.content_type == "application/json" else None

    async def stats(self) -> dict[str, Any]:
        return await self.call("GET", "/_sim/stats")

    async def reset(self, *, data: bool = False) -> None:
        await self.call("POST", "/_sim/reset" + ("?data=true" if data else ""))

    async def latency(self, ms: float) -> None:
        if ms:
            await self.call("POST", "/_sim/faults", {"latencyMs": ms})
        else:
            await self.call("DELETE", "/_sim/faults")

    async def limits(self, **values: Any) -> dict[str, Any]:
        return await self.call("POST", "/_sim/limits", values) if values else await self.call("GET", "/_sim/limits")

    async def seed(self, entity: str, count: int, prefix: str, fields: dict[str, Any] | None = None) -> None:
        # The seed route holds every row in one answer; chunks keep each answer small.
        for start in range(0, count, 20_000):
            body = {"entity": entity, "count": min(20_000, count - start), "prefix": f"{prefix}{start}-"}
            if fields:
                body["fields"] = fields
            await self.call("POST", "/_sim/seed", body)


class RecordingPublisher:
    """The real ``ServiceBusPublisher`` (every message really goes to the AMQP peer and is counted there),
    plus a copy of each message so the benchmark can play the worker and handle it inline, in place of the
    Service Bus trigger."""

    def __init__(self, inner: ServiceBusPublisher) -> None:
        self.inner = inner
        self.pending: list[dict[str, Any]] = []

    @property
    def message_count(self) -> int:
        return self.inner.message_count

    @property
    def send_count(self) -> int:
        return self.inner.send_count

    async def open(self) -> None:
        await self.inner.open()

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        await self.inner.publish(messages)
        self.pending.extend(dict(m) for m in messages)

    def take(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Snapshot:
    """Counters of every channel at one moment (differences give a phase's cost)."""

    bc_requests: int
    bc_throttled: int
    bc_by_route: dict[str, int]
    dv_requests: int
    dv_throttled: int
    dv_by_route: dict[str, int]
    bc_client: int
    dv_client: int
    table_ops: int
    sb_messages: int
    sb_sends: int
    entities_read: int = 0  # entities the table service returned to reads (shared.stores.tables.ENTITIES_READ)
    # Service protection as the simulators saw it: 429s by reason, execution time charged (Dataverse's budget),
    # the largest single charge and the peak of requests in flight (cumulative since the last reset).
    throttled_by: dict[str, int] = field(default_factory=dict)  # "bc:throttled_requests" -> n
    execution_seconds: dict[str, float] = field(default_factory=dict)  # "bc" / "dv" -> seconds charged
    peaks: dict[str, float] = field(default_factory=dict)  # "dvExecutionMaxSeconds", "bcInFlightMax", ...

    def minus(self, before: Snapshot) -> dict[str, Any]:
        def routes(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}

        return {
            "bcRequests": self.bc_requests - before.bc_requests,
            "bcThrottled": self.bc_throttled - before.bc_throttled,
            "bcByRoute": routes(self.bc_by_route, before.bc_by_route),
            "dvRequests": self.dv_requests - before.dv_requests,
            "dvThrottled": self.dv_throttled - before.dv_throttled,
            "dvByRoute": routes(self.dv_by_route, before.dv_by_route),
            "bcClientCalls": self.bc_client - before.bc_client,
            "dvClientCalls": self.dv_client - before.dv_client,
            "tableOps": self.table_ops - before.table_ops,
            "sbMessages": self.sb_messages - before.sb_messages,
            "sbSends": self.sb_sends - before.sb_sends,
            "entitiesRead": self.entities_read - before.entities_read,
            "throttledBy": routes(self.throttled_by, before.throttled_by),
            "executionSeconds": {
                k: round(v - before.execution_seconds.get(k, 0.0), 3) for k, v in self.execution_seconds.items()
            },
            **self.peaks,
        }


@dataclass
class BenchEnv:
    stack: Stack
    settings: Settings
    credential: AsyncMsalCredential  # the app registration's (BC/Dataverse calls of the baseline)
    runtime: Runtime
    bc_sim: SimControl
    dv_sim: SimControl
    session: aiohttp.ClientSession
    credentials: Credentials

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    @property
    def publisher(self) -> RecordingPublisher:
        return self.runtime.publisher  # type: ignore[no-any-return]

    async def snapshot(self) -> Snapshot:
        bc, dv = await asyncio.gather(self.bc_sim.stats(), self.dv_sim.stats())
        return Snapshot(
            bc["requests"],
            bc["throttled"],
            dict(bc["byRoute"]),
            dv["requests"],
            dv["throttled"],
            dict(dv["byRoute"]),
            self.runtime.bc.calls.total,
            self.runtime.dv.calls.total,
            self.runtime.stores.op_counter.count,
            self.runtime.publisher.message_count,
            self.runtime.publisher.send_count,
            ENTITIES_READ.count,
            throttled_by={
                f"{side}:{k}": v for side, st in (("bc", bc), ("dv", dv)) for k, v in st["throttledBy"].items()
            },
            execution_seconds={"bc": bc["executionSeconds"], "dv": dv["executionSeconds"]},
            peaks={
                "bcExecutionMaxSeconds": bc["executionMaxSeconds"],
                "dvExecutionMaxSeconds": dv["executionMaxSeconds"],
                "bcInFlightMax": bc["inFlightMax"],
                "dvInFlightMax": dv["inFlightMax"],
            },
        )

    async def fresh_tables(self) -> None:
        """New, empty tables for the next scenario (a new prefix: no deletes of big tables needed)."""
        await self.runtime.aclose()
        self.settings = self.settings.model_copy(update={"table_prefix": f"b{uuid.uuid4().hex[:10]}"})
        self.runtime = await warm_runtime(build_bench_runtime(self.settings, self.credentials))

    async def reset_sims(self) -> None:
        for sim in (self.bc_sim, self.dv_sim):
            await sim.reset(data=True)
            await sim.latency(0)
        await self.bc_sim.limits(requestsPerWindow=1_000_000, windowSeconds=300, maxConcurrent=100)
        # The throttled scenario's execution-time budget is undone too (Dataverse's: 1,200 s / 5 min, no row cost).
        await self.dv_sim.limits(requestsPerWindow=1_000_000, windowSeconds=300, maxConcurrent=52,
                                 executionSecondsPerWindow=1200, executionSecondsPerRow=0)  # fmt: skip


async def warm_runtime(runtime: Runtime) -> Runtime:
    """A scenario times jobs on a warm process, as the service's are after their first message: the Service Bus
    link (opened once per process) is opened before, not inside the first job's time."""
    assert isinstance(runtime.publisher, RecordingPublisher)
    await runtime.publisher.open()
    return runtime


def build_bench_runtime(settings: Settings, credentials: Credentials) -> Runtime:
    """``shared.bootstrap.build_runtime`` with this run's settings and credentials, recording published messages."""
    return build_runtime(settings, credentials=credentials, wrap_publisher=RecordingPublisher)


@contextlib.asynccontextmanager
async def bench_env(*, workers: int = 0, env: Mapping[str, str] | None = None) -> AsyncIterator[BenchEnv]:
    """Starts the stack's backing services on free ports. ``workers`` = 0: no function host, the engine runs
    in this process; N: N function-host instances too (scale-out), with ``env`` and this run's tables."""
    prefix = f"b{uuid.uuid4().hex[:10]}"
    only = COMPONENTS | ({"host"} if workers else set())
    stack_env = {"SYNC_TABLE_PREFIX": prefix, **(env or {})}
    stack = BenchStack.on_free_ports(only=only, readiness_timeout=60, workers=max(1, workers), env=stack_env)
    await asyncio.to_thread(stack.start)
    try:
        settings = settings_from_env(stack.child_env())
        credentials = build_credentials(settings)  # both identities, as the service runs
        credential = credentials.apps
        runtime = await warm_runtime(build_bench_runtime(settings, credentials))
        async with aiohttp.ClientSession(trust_env=False) as session:
            bench = BenchEnv(
                stack,
                settings,
                credential,
                runtime,
                SimControl(session, stack.url("bc_sim")),
                SimControl(session, stack.url("dv_sim")),
                session,
                credentials,
            )
            try:
                yield bench
            finally:
                await bench.runtime.aclose()
    finally:
        await asyncio.to_thread(stack.stop)
