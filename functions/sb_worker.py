"""Service Bus worker: runs one work message through the engine.

A transient failure re-raises so Service Bus redelivers (and dead-letters after maxDeliveryCount);
a malformed message or a permanent failure is logged/recorded and the message completes."""

import json
import logging

import azure.functions as func

from shared.bootstrap import get_engine
from shared.services.jobs import JobService

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%SERVICEBUS_QUEUE%", connection="ServiceBusConnection")
async def sync_worker(msg: func.ServiceBusMessage) -> None:
    try:
        body = json.loads(msg.get_body())
        if not isinstance(body, dict) or body.get("version") != 1 or "kind" not in body:
            raise ValueError("not a version-1 work message")
    except ValueError:
        log.error("Dropping malformed message %s (delivery %s)", msg.message_id, msg.delivery_count)
        return
    await JobService(await get_engine()).handle(body)
