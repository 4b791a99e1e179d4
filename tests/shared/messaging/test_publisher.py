"""ServiceBusPublisher and dead-letter replay against the local AMQP peer."""

from __future__ import annotations

import time
import uuid

import pytest
from azure.servicebus.aio import ServiceBusClient

from shared.config import settings_from_env
from shared.errors import ConfigurationError, PermanentError
from shared.messaging.publisher import ServiceBusPublisher
from shared.messaging.receiver import body_bytes
from shared.messaging.work import MessageFormatError, decode
from tests.local.amqp_peer.peer_process import PeerProcess


def work(i: int, job: str = "job-1", pad: int = 0) -> dict[str, object]:
    return {
        "version": 1,
        "kind": "sync-batch",
        "jobId": job,
        "mapping": "customers",
        "batch": str(i),
        "direction": "toDataverse",
        "bcIds": [f"id-{i}", "x" * pad],
    }


async def test_publishes_5000_in_few_sends_and_each_arrives_once(
    peer: PeerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    q = f"pub-{uuid.uuid4().hex[:8]}"
    publisher = ServiceBusPublisher(q, connection_string=peer.connection_string)
    started = time.perf_counter()
    await publisher.publish([work(i) for i in range(5000)])
    seconds = time.perf_counter() - started
    assert publisher.message_count == 5000
    assert 1 < publisher.send_count < 50  # packed into 256 KB batches
    await publisher.publish([work(0)])  # same messageId: dropped by duplicate detection
    assert peer.counts(q)["active"] == 5000 and peer.counts(q)["duplicatesDropped"] == 1
    sender_before = publisher._sender
    await publisher.publish([work(9999)])
    assert publisher._sender is sender_before  # one long-lived sender
    await publisher.aclose()

    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        async with client.get_queue_receiver(q, prefetch_count=500) as receiver:
            [first] = await receiver.receive_messages(max_wait_time=3)
            msg = decode(body_bytes(first))
            assert first.subject == "sync-batch" and first.correlation_id == "job-1"
            assert first.message_id == f"job-1:sync-batch:{msg.batch}"
    with capsys.disabled():
        print(f"\n[publisher] 5000 msgs in {publisher.send_count} sends: {5000 / seconds:,.0f} msg/s")


async def test_never_sends_above_the_limit_and_rejects_what_cannot_fit(peer: PeerProcess) -> None:
    q = f"big-{uuid.uuid4().hex[:8]}"
    publisher = ServiceBusPublisher(q, connection_string=peer.connection_string, max_batch_bytes=20_000)
    try:
        await publisher.publish([work(i, pad=6000) for i in range(10)])  # ~6 KB each -> 3 per batch
        assert publisher.send_count >= 4 and publisher.message_count == 10
        with pytest.raises(PermanentError):
            await publisher.publish([work(99, pad=50_000)])
        with pytest.raises(MessageFormatError):
            await publisher.publish([work(100), {"kind": "nope"}])
        assert publisher.message_count == 10  # nothing of an invalid call was sent
    finally:
        await publisher.aclose()
    assert peer.counts(q)["active"] == 10


def test_from_settings_and_configuration_errors() -> None:
    settings = settings_from_env({"SERVICEBUS_QUEUE": "other"})
    publisher = ServiceBusPublisher.from_settings(settings)
    assert publisher.queue_name == "other"
    with pytest.raises(ConfigurationError):
        ServiceBusPublisher("q")


async def test_open_opens_the_one_link_that_publish_then_uses(peer: PeerProcess) -> None:
    q = f"open-{uuid.uuid4().hex[:8]}"
    publisher = ServiceBusPublisher(q, connection_string=peer.connection_string)
    assert publisher._sender is None
    await publisher.open()
    opened = publisher._sender
    assert opened is not None
    await publisher.open()  # idempotent: still the one link
    await publisher.publish([work(1)])
    assert publisher._sender is opened and publisher.send_count == 1
    assert peer.counts(q)["active"] == 1
    await publisher.aclose()
