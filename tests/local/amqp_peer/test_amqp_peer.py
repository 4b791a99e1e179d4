"""The local AMQP peer, driven by the real azure-servicebus async client."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import MessageLockLostError

from shared.messaging.receiver import application_properties, body_bytes, replay_dead_letters
from tests.local.amqp_peer.peer_process import ROOT, PeerProcess


def qname() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


async def test_send_receive_complete(peer: PeerProcess) -> None:
    q = qname()
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(
                ServiceBusMessage(
                    '{"a": 1}',
                    message_id="m-1",
                    subject="sync-batch",
                    correlation_id="job-1",
                    content_type="application/json",
                    application_properties={"kind": "sync-batch", "n": 7},
                )
            )
        assert peer.counts(q)["active"] == 1
        async with client.get_queue_receiver(q) as receiver:
            [msg] = await receiver.receive_messages(max_message_count=5, max_wait_time=3)
            assert body_bytes(msg) == b'{"a": 1}'
            assert (msg.message_id, msg.subject, msg.correlation_id) == ("m-1", "sync-batch", "job-1")
            assert msg.content_type == "application/json"
            assert application_properties(msg) == {"kind": "sync-batch", "n": 7}
            assert msg.delivery_count == 0 and msg.sequence_number >= 1
            assert msg.locked_until_utc > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
            assert abs((dt.datetime.now(dt.UTC) - msg.enqueued_time_utc).total_seconds()) < 10
            assert peer.counts(q)["locked"] == 1
            await receiver.complete_message(msg)
            assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.5) == []
    assert peer.counts(q) | {"duplicatesDropped": 0} == {
        "active": 0,
        "scheduled": 0,
        "locked": 0,
        "deadLetter": 0,
        "duplicatesDropped": 0,
        "receivers": 0,  # the receiver link closed with its context
    }


async def test_abandon_redelivers_with_higher_delivery_count_and_renew_extends_lock(peer: PeerProcess) -> None:
    q = qname()
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(ServiceBusMessage("x", message_id="ab-1"))
        async with client.get_queue_receiver(q) as receiver:
            [first] = await receiver.receive_messages(max_wait_time=3)
            before = first.locked_until_utc
            await asyncio.sleep(0.2)
            renewed = await receiver.renew_message_lock(first)
            assert renewed > before
            await receiver.abandon_message(first)
            [again] = await receiver.receive_messages(max_wait_time=3)
            assert again.message_id == "ab-1"
            assert again.delivery_count == first.delivery_count + 1 == 1
            assert again.lock_token != first.lock_token
            await receiver.complete_message(again)


async def test_poison_message_dead_letters_after_max_delivery_count_and_replays(peer: PeerProcess) -> None:
    q = qname()
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(ServiceBusMessage("poison", message_id="p-1", application_properties={"k": "v"}))
        async with client.get_queue_receiver(q) as receiver:
            for _ in range(3):  # max delivery count 3
                [msg] = await receiver.receive_messages(max_wait_time=3)
                await receiver.abandon_message(msg)
            assert await receiver.receive_messages(max_wait_time=0.5) == []
        assert peer.counts(q)["deadLetter"] == 1
        async with client.get_queue_receiver(q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            [peeked] = await dlq.peek_messages(max_message_count=5)
            assert peeked.dead_letter_reason == "MaxDeliveryCountExceeded"
            assert peeked.message_id == "p-1"

        assert await replay_dead_letters(client, q, max_messages=10, max_wait_time=1) == 1
        assert peer.counts(q)["deadLetter"] == 0
        async with client.get_queue_receiver(q) as receiver:
            [back] = await receiver.receive_messages(max_wait_time=3)
            assert body_bytes(back) == b"poison"
            props = application_properties(back)
            assert props["replayOf"] == "p-1" and props["k"] == "v" and "DeadLetterReason" not in props
            assert back.delivery_count == 0
            await receiver.complete_message(back)


async def test_explicit_dead_letter_keeps_reason_and_description(peer: PeerProcess) -> None:
    q = qname()
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(ServiceBusMessage("bad"))
        async with client.get_queue_receiver(q) as receiver:
            [msg] = await receiver.receive_messages(max_wait_time=3)
            await receiver.dead_letter_message(msg, reason="InvalidMessage", error_description="not JSON")
        async with client.get_queue_receiver(q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            [dead] = await dlq.receive_messages(max_wait_time=3)
            assert (dead.dead_letter_reason, dead.dead_letter_error_description) == ("InvalidMessage", "not JSON")
            await dlq.complete_message(dead)
    assert peer.counts(q)["deadLetter"] == 0


async def test_lock_expiry_redelivers_with_count_plus_one(short_lock_peer: PeerProcess) -> None:
    q = qname()
    async with ServiceBusClient.from_connection_string(short_lock_peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(ServiceBusMessage("slow", message_id="slow-1"))
        async with client.get_queue_receiver(q) as receiver:
            [held] = await receiver.receive_messages(max_wait_time=3)
            assert await receiver.receive_messages(max_wait_time=0.5) == []  # locked: invisible
            await asyncio.sleep(1.8)
            [again] = await receiver.receive_messages(max_wait_time=3)
            assert again.message_id == "slow-1" and again.delivery_count == 1
            with pytest.raises(MessageLockLostError):
                await receiver.complete_message(held)
            await receiver.complete_message(again)
    assert short_lock_peer.counts(q)["active"] == 0


async def test_scheduled_enqueue(peer: PeerProcess) -> None:
    q = qname()
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
            await sender.send_messages(ServiceBusMessage("later", scheduled_enqueue_time_utc=at))
            [seq] = await sender.schedule_messages(ServiceBusMessage("later-2"), at)
            assert seq > 0
        assert peer.counts(q)["scheduled"] == 2
        async with client.get_queue_receiver(q) as receiver:
            assert await receiver.receive_messages(max_wait_time=0.5) == []
            await asyncio.sleep(max(0.0, (at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
            got = await receiver.receive_messages(max_message_count=5, max_wait_time=3)
            if len(got) < 2:
                got += await receiver.receive_messages(max_message_count=5, max_wait_time=2)
            assert sorted(body_bytes(m) for m in got) == [b"later", b"later-2"]
            assert all(m.enqueued_time_utc is not None for m in got)
            for m in got:
                await receiver.complete_message(m)


async def test_duplicate_message_id_within_window_is_dropped(peer: PeerProcess) -> None:
    q = qname()
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages(ServiceBusMessage("one", message_id="job:sync-batch:1"))
            await sender.send_messages(ServiceBusMessage("again", message_id="job:sync-batch:1"))
            await sender.send_messages(
                [
                    ServiceBusMessage("b", message_id="job:sync-batch:2"),
                    ServiceBusMessage("b", message_id="job:sync-batch:2"),
                ]
            )
        counts = peer.counts(q)
        assert counts["active"] == 2 and counts["duplicatesDropped"] == 2
        async with client.get_queue_receiver(q, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got = await receiver.receive_messages(max_message_count=10, max_wait_time=2)
            assert sorted(body_bytes(m) for m in got) == [b"b", b"one"]
    # receive-and-delete: pre-settled, gone without a settlement
    assert peer.counts(q)["active"] == 0 and peer.counts(q)["locked"] == 0


async def test_batch_of_5000_received_exactly_once(peer: PeerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    q = qname()
    total = 5000
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        started = time.perf_counter()
        sends = 0
        async with client.get_queue_sender(q) as sender:
            batch = await sender.create_message_batch()
            for i in range(total):
                message = ServiceBusMessage(f'{{"i": {i}, "pad": "{"x" * 100}"}}', message_id=f"bulk-{i}")
                try:
                    batch.add_message(message)
                except ValueError:
                    await sender.send_messages(batch)
                    sends += 1
                    batch = await sender.create_message_batch()
                    batch.add_message(message)
            await sender.send_messages(batch)
            sends += 1
        send_seconds = time.perf_counter() - started
        assert peer.counts(q)["active"] == total

        seen: list[str] = []
        started = time.perf_counter()
        async with client.get_queue_receiver(q, prefetch_count=200) as receiver:
            while len(seen) < total:
                got = await receiver.receive_messages(max_message_count=200, max_wait_time=2)
                if not got:
                    break
                for m in got:
                    seen.append(str(m.message_id))
                    await receiver.complete_message(m)
        receive_seconds = time.perf_counter() - started
    assert len(seen) == total and len(set(seen)) == total
    assert peer.counts(q)["active"] == 0 and peer.counts(q)["locked"] == 0
    with capsys.disabled():
        print(
            f"\n[amqp_peer] batched send {total} msgs in {sends} sends: {total / send_seconds:,.0f} msg/s; "
            f"peek-lock receive+complete: {total / receive_seconds:,.0f} msg/s"
        )


CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from azure.servicebus.aio import ServiceBusClient

    async def main(cs, q, n):
        client = ServiceBusClient.from_connection_string(cs)
        receiver = client.get_queue_receiver(q)
        await receiver.__aenter__()
        got = []
        while len(got) < n:
            got += await receiver.receive_messages(max_message_count=n - len(got), max_wait_time=3)
        print("received", len(got), flush=True)
        await asyncio.sleep(60)  # "processing" -- killed here, nothing settled

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_consumer_killed_mid_batch_messages_redelivered_after_lock_expiry(short_lock_peer: PeerProcess) -> None:
    q = qname()
    n = 20
    async with ServiceBusClient.from_connection_string(short_lock_peer.connection_string) as client:
        async with client.get_queue_sender(q) as sender:
            await sender.send_messages([ServiceBusMessage(str(i), message_id=f"k-{i}") for i in range(n)])
        consumer = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, short_lock_peer.connection_string, q, str(n)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            line = await asyncio.wait_for(asyncio.to_thread(consumer.stdout.readline), 20)  # type: ignore[union-attr]
            assert line.decode().strip() == f"received {n}"
            assert short_lock_peer.counts(q)["locked"] == n
        finally:
            os.kill(consumer.pid, signal.SIGKILL)
            consumer.wait(5)
        async with client.get_queue_receiver(q) as receiver:
            got: list = []
            deadline = time.monotonic() + 10
            while len(got) < n and time.monotonic() < deadline:
                got += await receiver.receive_messages(max_message_count=n, max_wait_time=1)
            assert sorted(str(m.message_id) for m in got) == sorted(f"k-{i}" for i in range(n))
            assert {m.delivery_count for m in got} == {1}
            for m in got:
                await receiver.complete_message(m)
    assert short_lock_peer.counts(q)["active"] == 0


IDLE_CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from azure.servicebus.aio import ServiceBusClient

    async def main(cs, q):
        async with ServiceBusClient.from_connection_string(cs) as client:
            async with client.get_queue_receiver(q) as receiver:
                print("attached", flush=True)
                while True:  # an idle host's trigger: credit out, waiting for messages
                    await receiver.receive_messages(max_message_count=8, max_wait_time=0.5)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_killed_consumer_s_link_gets_no_more_messages(peer: PeerProcess) -> None:
    """A consumer killed while its link has credit: its link goes with its connection (as Service Bus detaches
    it), so the next message goes to a live receiver at once, not to the dead link to wait out a 30 s lock."""
    q = qname()
    consumer = subprocess.Popen(
        [sys.executable, "-c", IDLE_CONSUMER, peer.connection_string, q], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(consumer.stdout.readline), 20)  # type: ignore[union-attr]
        assert line.decode().strip() == "attached"
        assert peer.counts(q)["receivers"] == 1
        await asyncio.sleep(1)  # a few receive calls: credit granted
    finally:
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.wait(5)
    deadline = time.monotonic() + 5
    while peer.counts(q)["receivers"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert peer.counts(q)["receivers"] == 0
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_receiver(q) as receiver:
            async with client.get_queue_sender(q) as sender:
                await sender.send_messages(ServiceBusMessage("after the kill", message_id="after-kill"))
            got = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
            assert [str(m.message_id) for m in got] == ["after-kill"]
            assert got[0].delivery_count == 0  # first delivery: it never went to the dead link
            await receiver.complete_message(got[0])
    assert peer.counts(q)["active"] == peer.counts(q)["locked"] == 0
