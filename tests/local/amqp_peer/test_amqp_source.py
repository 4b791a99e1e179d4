"""AmqpQueueSource: the local host's Service Bus trigger over the real SDK against the local peer."""

from __future__ import annotations

import asyncio
import uuid

import azure.functions as func
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient

from local.host.amqp_source import AmqpQueueSource
from tests.local.amqp_peer.peer_process import PeerProcess


async def test_handler_gets_functions_messages_success_completes_failure_abandons(peer: PeerProcess) -> None:
    q = f"src-{uuid.uuid4().hex[:8]}"
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(
                [
                    ServiceBusMessage(
                        '{"ok": true}',
                        message_id="good",
                        subject="sync-batch",
                        correlation_id="job-9",
                        content_type="application/json",
                        application_properties={"kind": "sync-batch"},
                    ),
                    ServiceBusMessage("boom", message_id="bad"),
                ]
            )
    seen: list[func.ServiceBusMessage] = []
    stop = asyncio.Event()

    async def handler(message: func.ServiceBusMessage) -> None:
        seen.append(message)
        if message.message_id == "bad":
            raise RuntimeError("poison")

    async def stop_when_done() -> None:
        while not (sum(m.message_id == "bad" for m in seen) >= 3 and any(m.message_id == "good" for m in seen)):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # let the last abandon settle
        stop.set()

    source = AmqpQueueSource(peer.connection_string, max_concurrent=2)
    await asyncio.wait_for(asyncio.gather(source.run(q, handler, stop), stop_when_done()), 30)

    good = next(m for m in seen if m.message_id == "good")
    assert isinstance(good, func.ServiceBusMessage)
    assert good.get_body() == b'{"ok": true}'
    assert (good.correlation_id, good.content_type, good.label) == ("job-9", "application/json", "sync-batch")
    assert good.delivery_count == 1  # as the Functions trigger counts: 1 on the first delivery
    assert good.application_properties == {"kind": "sync-batch"}
    assert good.sequence_number and good.enqueued_time_utc is not None and good.lock_token
    bad = [m.delivery_count for m in seen if m.message_id == "bad"]
    assert bad == [1, 2, 3]  # abandoned each time, redelivered with a higher count
    assert source.completed == 1 and source.abandoned == 3
    counts = peer.counts(q)
    assert counts["active"] == 0 and counts["locked"] == 0 and counts["deadLetter"] == 1  # max delivery count 3
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_receiver(q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            [dead] = await dlq.peek_messages()
            assert dead.message_id == "bad" and dead.dead_letter_reason == "MaxDeliveryCountExceeded"


async def test_run_returns_promptly_when_stopped_on_an_idle_queue(peer: PeerProcess) -> None:
    stop = asyncio.Event()

    async def handler(message: func.ServiceBusMessage) -> None:
        raise AssertionError("no messages expected")

    task = asyncio.create_task(
        AmqpQueueSource(peer.connection_string).run(f"idle-{uuid.uuid4().hex[:6]}", handler, stop)
    )
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_function_longer_than_the_lock_keeps_it_by_renewal_and_completes_once(
    short_lock_peer: PeerProcess,
) -> None:
    q = f"long-{uuid.uuid4().hex[:8]}"
    async with ServiceBusClient.from_connection_string(short_lock_peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(ServiceBusMessage("slow", message_id="slow"))
    seen: list[int] = []
    stop = asyncio.Event()

    async def handler(message: func.ServiceBusMessage) -> None:
        seen.append(message.delivery_count)
        await asyncio.sleep(4.5)  # three lock durations (1.5 s) of work
        stop.set()

    source = AmqpQueueSource(short_lock_peer.connection_string, max_lock_renewal_seconds=60)
    await asyncio.wait_for(source.run(q, handler, stop), 30)
    assert seen == [1]  # never redelivered while it ran
    assert source.completed == 1 and source.renewed >= 2
    assert short_lock_peer.counts(q)["active"] == 0


async def test_past_the_renewal_limit_the_lock_expires_and_the_message_is_redelivered(
    short_lock_peer: PeerProcess,
) -> None:
    q = f"limit-{uuid.uuid4().hex[:8]}"
    async with ServiceBusClient.from_connection_string(short_lock_peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(ServiceBusMessage("slow", message_id="slow"))
    seen: list[int] = []
    stop = asyncio.Event()

    async def handler(message: func.ServiceBusMessage) -> None:
        seen.append(message.delivery_count)
        if len(seen) == 1:
            await asyncio.sleep(3.5)  # past the 0.2 s renewal limit and the 1.5 s lock
        else:
            stop.set()

    source = AmqpQueueSource(short_lock_peer.connection_string, max_concurrent=2, max_lock_renewal_seconds=0.2)
    await asyncio.wait_for(source.run(q, handler, stop), 30)
    assert seen[:2] == [1, 2]
    assert source.renewed == 0


def test_next_renewal_is_halfway_through_what_is_left_of_the_lock() -> None:
    from datetime import UTC, datetime, timedelta

    from local.host.amqp_source import next_renewal_in

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_renewal_in(now + timedelta(seconds=30), now) == 15
    assert next_renewal_in(now + timedelta(seconds=0.2), now) == 0.5  # never a busy loop
    assert next_renewal_in(None, now) == 0.5


async def test_two_hosts_on_one_queue_share_the_messages_each_once(peer: PeerProcess) -> None:
    # Scale-out (Flex Consumption instances): two triggers, each its own connection, compete on one queue.
    q = f"scale-{uuid.uuid4().hex[:8]}"
    total, per_host = 40, 4
    handled: dict[str, list[str]] = {"a": [], "b": []}
    running = {"now": 0, "max": 0}
    stop = asyncio.Event()

    def handler_of(name: str):  # type: ignore[no-untyped-def]
        async def handler(message: func.ServiceBusMessage) -> None:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
            await asyncio.sleep(0.1)  # a function waiting on BC / Dataverse
            handled[name].append(str(message.message_id))
            running["now"] -= 1

        return handler

    sources = {name: AmqpQueueSource(peer.connection_string, max_concurrent=per_host) for name in handled}
    tasks = [asyncio.create_task(s.run(q, handler_of(name), stop)) for name, s in sources.items()]
    for _ in range(100):  # both receivers attached before anything is sent
        if peer.counts(q).get("receivers") == 2:
            break
        await asyncio.sleep(0.05)
    assert peer.counts(q)["receivers"] == 2
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages([ServiceBusMessage("{}", message_id=f"m{i}") for i in range(total)])
    for _ in range(300):
        if len(handled["a"]) + len(handled["b"]) >= total and peer.counts(q)["locked"] == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)

    ids = handled["a"] + handled["b"]
    assert sorted(ids) == sorted(f"m{i}" for i in range(total))  # each exactly once
    assert len(handled["a"]) >= total // 4 and len(handled["b"]) >= total // 4, handled
    assert running["max"] > per_host  # both hosts worked at the same time, not one after the other
    assert sources["a"].completed + sources["b"].completed == total
    counts = peer.counts(q)
    assert counts["active"] == counts["locked"] == counts["deadLetter"] == 0 and counts["receivers"] == 0
