"""Dead-letter helpers: replay messages from ``<queue>/$DeadLetterQueue`` back onto the queue."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient

log = logging.getLogger(__name__)

# Properties the broker adds when dead-lettering; a replayed message starts clean.
_BROKER_PROPERTIES = {"DeadLetterReason", "DeadLetterErrorDescription"}


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def application_properties(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    """The message's application properties with str keys/values (pyamqp hands out bytes)."""
    return {str(_text(k)): _text(v) for k, v in (message.application_properties or {}).items()}


def body_bytes(message: ServiceBusReceivedMessage) -> bytes:
    body = message.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return b"".join(bytes(part) for part in body)


def replay_copy(message: ServiceBusReceivedMessage) -> ServiceBusMessage:
    """The message to re-send. It gets a fresh ``message_id`` (``<original>:replay:<n>``): the original id
    is still inside the queue's duplicate-detection window and would be dropped. Processing stays
    idempotent because the body (job id, batch id) is unchanged."""
    props = {k: v for k, v in application_properties(message).items() if k not in _BROKER_PROPERTIES}
    original = str(props.get("replayOf") or message.message_id or "")
    props["replayOf"] = original
    props["deadLetterReason"] = str(message.dead_letter_reason or "")
    return ServiceBusMessage(
        body_bytes(message),
        message_id=f"{original[:80]}:replay:{uuid.uuid4().hex[:12]}",
        subject=message.subject,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        application_properties=props,
    )


async def replay_dead_letters(
    client: ServiceBusClient, queue_name: str, *, max_messages: int = 100, max_wait_time: float = 5.0
) -> int:
    """Moves up to ``max_messages`` dead-lettered messages back onto ``queue_name``; returns how many.
    Each one is re-sent before it is completed, so a crash in between duplicates, never loses."""
    replayed = 0
    async with (
        client.get_queue_receiver(queue_name, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver,
        client.get_queue_sender(queue_name) as sender,
    ):
        while replayed < max_messages:
            batch = await receiver.receive_messages(
                max_message_count=min(100, max_messages - replayed), max_wait_time=max_wait_time
            )
            if not batch:
                break
            await sender.send_messages([replay_copy(m) for m in batch])
            for message in batch:
                await receiver.complete_message(message)
                log.info("replayed %s (dead-lettered: %s)", message.message_id, _text(message.dead_letter_reason))
            replayed += len(batch)
    return replayed
