"""``AmqpQueueSource``: the local host's Service Bus trigger over the real azure-servicebus SDK (against
the local AMQP peer, or a real namespace). Like the Functions trigger with autoComplete: receive in
peek-lock, call the function with an ``azure.functions.ServiceBusMessage``, complete on success, abandon
on exception (redelivery with delivery count + 1; dead-lettered after MaxDeliveryCount). While the function
runs, the message lock is renewed as the Functions host does, up to host.json's
``maxAutoLockRenewalDuration``; a function that runs longer loses its lock and the message is redelivered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import azure.functions as func
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import ServiceBusError

from local.host.queues import MessageHandler, build_service_bus_message
from shared.messaging.receiver import application_properties, body_bytes

log = logging.getLogger("local.host.amqp_source")

RECEIVE_WAIT_SECONDS = 0.5  # how often `stop` is looked at while the queue is idle
RECONNECT_SECONDS = 1.0
MIN_RENEW_INTERVAL_SECONDS = 0.5


def next_renewal_in(locked_until: datetime | None, now: datetime) -> float:
    """Seconds until the lock should be renewed: halfway through what is left of it (as the SDK's renewer)."""
    if locked_until is None:
        return MIN_RENEW_INTERVAL_SECONDS
    left = (locked_until - now).total_seconds()
    return max(MIN_RENEW_INTERVAL_SECONDS, left / 2)


def to_functions_message(message: ServiceBusReceivedMessage) -> func.ServiceBusMessage:
    """SDK message -> the object the Functions worker hands to a Service Bus-triggered function. The
    trigger's delivery count is 1 on the first delivery (the AMQP header counts previous ones)."""
    return build_service_bus_message(
        body_bytes(message),
        message_id=str(message.message_id) if message.message_id is not None else None,
        delivery_count=(message.delivery_count or 0) + 1,
        application_properties=application_properties(message),
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        subject=message.subject,
        session_id=message.session_id,
        sequence_number=message.sequence_number,
        enqueued_time_utc=message.enqueued_time_utc,
        lock_token=str(message.lock_token) if message.lock_token else None,
    )


class AmqpQueueSource:
    """``connection_string`` (SAS), or ``client_factory`` (an identity-based connection: namespace + the managed
    identity's credential, as the Functions host's ``ServiceBusConnection__fullyQualifiedNamespace``)."""

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        max_concurrent: int = 4,
        client_factory: Callable[[], ServiceBusClient] | None = None,
        max_lock_renewal_seconds: float = 300.0,
    ) -> None:
        if connection_string is None and client_factory is None:
            raise ValueError("AmqpQueueSource needs a connection string or a client factory")
        self.connection_string = connection_string
        self.client_factory = client_factory or (lambda: ServiceBusClient.from_connection_string(connection_string))
        self.max_concurrent = max(1, max_concurrent)
        self.max_lock_renewal_seconds = max_lock_renewal_seconds
        self.renewed = 0
        self.completed = 0
        self.abandoned = 0

    async def run(self, queue_name: str, handler: MessageHandler, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self.client_factory() as client:
                    async with client.get_queue_receiver(queue_name) as receiver:
                        await self._pump(receiver, handler, stop)
            except (ServiceBusError, OSError) as e:  # peer not up yet / connection lost: reconnect
                log.warning("receiving from %s failed (%s); reconnecting", queue_name, e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RECONNECT_SECONDS)

    async def _pump(self, receiver: ServiceBusReceiver, handler: MessageHandler, stop: asyncio.Event) -> None:
        # One receiver link: SDK calls on it (receive, settle) are serialized; handlers run concurrently.
        sdk_lock = asyncio.Lock()
        running: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = self.max_concurrent - len(running)
                if free <= 0:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                async with sdk_lock:
                    # One message per call, as each of the Functions host's concurrent calls takes its own: asked
                    # for more, the SDK waits another 0.2 s for them after the first, and the first waits too.
                    batch = await receiver.receive_messages(max_message_count=1, max_wait_time=RECEIVE_WAIT_SECONDS)
                for message in batch:
                    task = asyncio.create_task(self._process(receiver, sdk_lock, message, handler))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if not batch and running:
                    await asyncio.sleep(0)  # let settlements take the lock
        finally:
            if running:  # finish (and settle) what was received before closing the link
                await asyncio.gather(*running, return_exceptions=True)

    async def _process(
        self,
        receiver: ServiceBusReceiver,
        sdk_lock: asyncio.Lock,
        message: ServiceBusReceivedMessage,
        handler: MessageHandler,
    ) -> None:
        failure: BaseException | None = None
        renewal = asyncio.create_task(self._renew_lock(receiver, sdk_lock, message))
        try:
            await handler(to_functions_message(message))
        except Exception as e:
            failure = e
            log.warning("function failed for message %s (%s); abandoning", message.message_id, type(e).__name__)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        try:
            async with sdk_lock:
                if failure is None:
                    await receiver.complete_message(message)
                    self.completed += 1
                else:
                    await receiver.abandon_message(message)
                    self.abandoned += 1
        except ServiceBusError as e:  # lock lost: the peer redelivers it anyway
            log.warning("settling message %s failed: %s", message.message_id, e)

    async def _renew_lock(
        self, receiver: ServiceBusReceiver, sdk_lock: asyncio.Lock, message: ServiceBusReceivedMessage
    ) -> None:
        give_up_at = time.monotonic() + self.max_lock_renewal_seconds
        while True:
            wait = next_renewal_in(message.locked_until_utc, datetime.now(UTC))
            if time.monotonic() + wait > give_up_at:
                return
            await asyncio.sleep(wait)
            try:
                async with sdk_lock:
                    await receiver.renew_message_lock(message)
                self.renewed += 1
            except ServiceBusError as e:  # lock already lost: settlement will fail and the peer redelivers
                log.warning("renewing the lock of message %s failed: %s", message.message_id, e)
                return
