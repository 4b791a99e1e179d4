"""The local host's pluggable Service Bus queue source, and the in-process implementation.

`QueueSource.run(queue_name, handler, stop)` receives messages until `stop` is set, awaits `handler` for each,
completes the message when it returns and abandons it when it raises (redelivery with a higher delivery
count; dead-lettered after `max_delivery_count` attempts, like Service Bus' `MaxDeliveryCount`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import azure.functions as func
from azure.functions.servicebus import ServiceBusMessage as _FullServiceBusMessage

log = logging.getLogger("local.host.queues")

MessageHandler = Callable[[func.ServiceBusMessage], Awaitable[None]]


class QueueSource(Protocol):
    async def run(self, queue_name: str, handler: MessageHandler, stop: asyncio.Event) -> None: ...


def build_service_bus_message(
    body: bytes | str,
    *,
    message_id: str | None = None,
    delivery_count: int = 1,
    application_properties: Mapping[str, Any] | None = None,
    content_type: str | None = None,
    correlation_id: str | None = None,
    subject: str | None = None,
    session_id: str | None = None,
    sequence_number: int | None = None,
    enqueued_time_utc: dt.datetime | None = None,
    lock_token: str | None = None,
) -> func.ServiceBusMessage:
    """A `func.ServiceBusMessage` with the metadata the real worker fills in (message id, delivery count...)."""
    props = dict(application_properties or {})
    return _FullServiceBusMessage(
        body=body.encode() if isinstance(body, str) else bytes(body),
        application_properties=props,
        user_properties=props,
        content_type=content_type,
        correlation_id=correlation_id,
        delivery_count=delivery_count,
        enqueued_time_utc=enqueued_time_utc or dt.datetime.now(dt.UTC),
        lock_token=lock_token or str(uuid.uuid4()),
        message_id=message_id or uuid.uuid4().hex,
        sequence_number=sequence_number,
        session_id=session_id,
        subject=subject,
        label=subject,
    )


@dataclass
class _Envelope:
    body: bytes
    message_id: str
    sequence_number: int
    enqueued_time_utc: dt.datetime
    application_properties: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    delivery_count: int = 0
    dead_letter_reason: str | None = None


class InMemoryQueueSource:
    """Queues that live in the host process (asyncio queues), with Service Bus' redelivery semantics."""

    def __init__(self, *, max_delivery_count: int = 10, max_concurrent_calls: int = 1) -> None:
        self.max_delivery_count = max_delivery_count
        self.max_concurrent_calls = max(1, max_concurrent_calls)
        self._queues: dict[str, asyncio.Queue[_Envelope]] = {}
        self._dead: dict[str, list[_Envelope]] = {}
        self._completed: dict[str, int] = {}
        self._sequence = 0

    def _queue(self, name: str) -> asyncio.Queue[_Envelope]:
        return self._queues.setdefault(name, asyncio.Queue())

    def send(
        self,
        queue_name: str,
        body: bytes | str,
        *,
        message_id: str | None = None,
        application_properties: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        correlation_id: str | None = None,
        subject: str | None = None,
    ) -> str:
        """Enqueue a message (call from the loop the source runs on); returns its message id."""
        self._sequence += 1
        envelope = _Envelope(
            body=body.encode() if isinstance(body, str) else bytes(body),
            message_id=message_id or uuid.uuid4().hex,
            sequence_number=self._sequence,
            enqueued_time_utc=dt.datetime.now(dt.UTC),
            application_properties=dict(application_properties or {}),
            content_type=content_type,
            correlation_id=correlation_id,
            subject=subject,
        )
        self._queue(queue_name).put_nowait(envelope)
        return envelope.message_id

    def pending(self, queue_name: str) -> int:
        return self._queue(queue_name).qsize()

    def completed(self, queue_name: str) -> int:
        return self._completed.get(queue_name, 0)

    def dead_letters(self, queue_name: str) -> list[func.ServiceBusMessage]:
        return [self._to_message(e) for e in self._dead.get(queue_name, [])]

    def _to_message(self, e: _Envelope) -> func.ServiceBusMessage:
        return build_service_bus_message(
            e.body,
            message_id=e.message_id,
            delivery_count=e.delivery_count,
            application_properties=e.application_properties,
            content_type=e.content_type,
            correlation_id=e.correlation_id,
            subject=e.subject,
            sequence_number=e.sequence_number,
            enqueued_time_utc=e.enqueued_time_utc,
        )

    async def run(self, queue_name: str, handler: MessageHandler, stop: asyncio.Event) -> None:
        workers = [
            asyncio.create_task(self._worker(queue_name, handler, stop)) for _ in range(self.max_concurrent_calls)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, queue_name: str, handler: MessageHandler, stop: asyncio.Event) -> None:
        queue = self._queue(queue_name)
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getting
                    if getting.done() and not getting.cancelled():
                        queue.put_nowait(getting.result())  # received just as we stopped: leave it queued
                    break
                envelope = getting.result()
                envelope.delivery_count += 1  # the message is now locked by this receiver
                try:
                    await handler(self._to_message(envelope))
                except Exception as exc:  # abandon: Service Bus redelivers until MaxDeliveryCount
                    self._abandon(queue_name, envelope, exc)
                else:
                    self._completed[queue_name] = self._completed.get(queue_name, 0) + 1
        finally:
            stopping.cancel()

    def _abandon(self, queue_name: str, envelope: _Envelope, exc: Exception) -> None:
        if envelope.delivery_count >= self.max_delivery_count:
            envelope.dead_letter_reason = "MaxDeliveryCountExceeded"
            self._dead.setdefault(queue_name, []).append(envelope)
            log.warning(
                "Message %s on '%s' dead-lettered after %d deliveries (%s)",
                envelope.message_id,
                queue_name,
                envelope.delivery_count,
                type(exc).__name__,
            )
        else:
            self._queue(queue_name).put_nowait(envelope)
