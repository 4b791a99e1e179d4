"""Service Bus worker: runs one work message through the engine.

The body is decoded into its typed work message (``shared.messaging.work``) and dispatched by kind. A
transient failure re-raises so Service Bus redelivers (and dead-letters after maxDeliveryCount); a
malformed message or a permanent failure is logged/recorded and the message completes."""

import logging

import azure.functions as func

from shared.bootstrap import get_engine
from shared.services.jobs import JobService

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%SERVICEBUS_QUEUE%", connection="ServiceBusConnection")
async def sync_worker(msg: func.ServiceBusMessage) -> None:
    log.debug("work message %s (delivery %s)", msg.message_id, msg.delivery_count)
    await JobService(await get_engine()).receive(msg.get_body(), enqueued_at=msg.enqueued_time_utc)
