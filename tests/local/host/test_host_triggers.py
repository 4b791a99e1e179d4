"""Timer and Service Bus triggers: the admin invoke API, the timer loop, and the in-memory queue source."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import azure.functions as func
import pytest
from aiohttp.test_utils import TestClient, TestServer

from local.host import InMemoryQueueSource, LocalHost, default_queue_source, load_functions
from tests.local.host import sample_app

KEY = "test-key"
APP = "tests.local.host.sample_app"


async def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "0 0 0 1 1 *")
    monkeypatch.setenv("SAMPLE_QUEUE", "sample-q")
    sample_app.EVENTS.clear()
    sample_app.QUEUE_ATTEMPTS.clear()


@pytest.fixture
def source() -> InMemoryQueueSource:
    return InMemoryQueueSource(max_delivery_count=3)


@pytest.fixture
async def client(source: InMemoryQueueSource) -> AsyncIterator[TestClient]:
    host = LocalHost(load_functions(APP), function_key=KEY, queue_source=source, run_timers=False)
    async with TestClient(TestServer(host.create_app(), host="127.0.0.1", port=0)) as c:
        yield c


async def test_admin_invokes_a_timer_function(client: TestClient) -> None:
    resp = await client.post("/admin/functions/yearly", json={"input": ""}, headers={"x-functions-key": KEY})
    assert resp.status == 202
    await wait_for(lambda: ("yearly", False) in sample_app.EVENTS)


async def test_admin_invokes_a_queue_function_with_input_as_body(client: TestClient) -> None:
    resp = await client.post(
        "/admin/functions/work?wait=true", json={"input": '{"job": 7}'}, headers={"x-functions-key": KEY}
    )
    assert resp.status == 202
    assert (await resp.json())["status"] == "Succeeded"
    (name, (body, delivery_count, message_id)) = sample_app.EVENTS[-1]
    assert (name, body, delivery_count) == ("work", '{"job": 7}', 1)
    assert message_id


async def test_admin_invoke_failure_is_reported_and_host_keeps_running(client: TestClient) -> None:
    resp = await client.post("/admin/functions/failing_timer?wait=true", json={}, headers={"x-functions-key": KEY})
    assert resp.status == 202
    assert (await resp.json())["status"] == "Failed"
    assert (await client.get("/admin/host/status")).status == 200


async def test_invocations_are_counted_per_function_and_outcome(client: TestClient) -> None:
    # Several hosts on one queue (scale-out): each tells how many messages it took.
    assert (await client.get("/admin/host/invocations")).status == 401
    for name in ("work", "work", "failing_timer"):
        await client.post(f"/admin/functions/{name}?wait=true", json={"input": "{}"}, headers={"x-functions-key": KEY})
    resp = await client.get("/admin/host/invocations", headers={"x-functions-key": KEY})
    body = await resp.json()
    assert body["functions"]["work"] == {"succeeded": 2, "failed": 0}
    assert body["functions"]["failing_timer"] == {"succeeded": 0, "failed": 1}
    assert body["pid"] > 0


async def test_admin_invoke_needs_key_known_name_and_non_http(client: TestClient) -> None:
    assert (await client.post("/admin/functions/yearly", json={})).status == 401
    resp = await client.post("/admin/functions/nope", json={}, headers={"x-functions-key": KEY})
    assert resp.status == 404 and (await resp.json())["code"] == "function_not_found"
    assert (await client.post("/admin/functions/item", json={}, headers={"x-functions-key": KEY})).status == 400
    resp = await client.post("/admin/functions/yearly", data=b"{bad", headers={"x-functions-key": KEY})
    assert resp.status == 400


async def test_queue_trigger_receives_sent_messages(client: TestClient, source: InMemoryQueueSource) -> None:
    resp = await client.post("/admin/queues/sample-q/messages", data=b"hello", headers={"x-functions-key": KEY})
    assert resp.status == 201
    await wait_for(lambda: any(e[0] == "work" and e[1][0] == "hello" for e in sample_app.EVENTS))
    await wait_for(lambda: source.completed("sample-q") == 1)


async def test_failing_message_is_redelivered_then_dead_lettered(
    client: TestClient, source: InMemoryQueueSource
) -> None:
    source.send("sample-q", "fail-1", application_properties={"kind": "x"})
    await wait_for(lambda: len(source.dead_letters("sample-q")) == 1)
    assert sample_app.QUEUE_ATTEMPTS["fail-1"] == 3  # max_delivery_count attempts, then the dead-letter queue
    dead = source.dead_letters("sample-q")[0]
    assert isinstance(dead, func.ServiceBusMessage)
    assert dead.delivery_count == 3 and dead.get_body() == b"fail-1"
    assert dead.application_properties == {"kind": "x"}
    assert source.pending("sample-q") == 0


async def test_in_memory_source_redelivers_with_increasing_delivery_count() -> None:
    source = InMemoryQueueSource()
    seen: list[int] = []

    async def handler(msg: func.ServiceBusMessage) -> None:
        seen.append(msg.delivery_count)
        if len(seen) < 3:
            raise RuntimeError("transient")

    stop = asyncio.Event()
    source.send("q", b"x")
    runner = asyncio.create_task(source.run("q", handler, stop))
    await wait_for(lambda: source.completed("q") == 1)
    stop.set()
    await asyncio.wait_for(runner, 2)
    assert seen == [1, 2, 3]
    assert source.dead_letters("q") == []


async def test_in_memory_source_stops_promptly_and_keeps_unreceived_messages() -> None:
    source = InMemoryQueueSource(max_concurrent_calls=2)
    stop = asyncio.Event()

    async def handler(msg: func.ServiceBusMessage) -> None:
        raise AssertionError("nothing should be received")

    runner = asyncio.create_task(source.run("empty", handler, stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(runner, 2)
    source.send("empty", b"later")
    assert source.pending("empty") == 1


async def test_timer_runs_on_its_schedule(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "* * * * * *")  # every second
    specs = [s for s in load_functions(APP) if s.name == "tick"]
    host = LocalHost(specs, function_key=KEY, run_timers=True)
    with caplog.at_level(logging.INFO):
        async with TestClient(TestServer(host.create_app(), host="127.0.0.1", port=0)):
            await wait_for(lambda: sample_app.EVENTS.count(("tick", False)) >= 2, seconds=4)
    assert any("Reason='Timer fired at" in r.getMessage() for r in caplog.records)


async def test_a_failing_timer_does_not_stop_its_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky(timer: func.TimerRequest) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    spec = next(s for s in load_functions(APP) if s.name == "failing_timer")
    spec.handler, spec.schedule = flaky, "* * * * * *"
    host = LocalHost([spec], function_key=KEY)
    async with TestClient(TestServer(host.create_app(), host="127.0.0.1", port=0)) as c:
        await wait_for(lambda: len(calls) >= 2, seconds=4)
        assert (await c.get("/admin/host/status")).status == 200


def test_queue_source_is_chosen_by_env() -> None:
    assert isinstance(default_queue_source({"SYNC_LOCAL_QUEUE_SOURCE": "memory"}), InMemoryQueueSource)
    with pytest.raises(ValueError):
        default_queue_source({"SYNC_LOCAL_QUEUE_SOURCE": "carrier-pigeon"})
