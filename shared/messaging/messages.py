"""A work message on the wire: the typed models of ``shared.messaging.work`` as Service Bus messages.

Body = the message's JSON (UTF-8), ``message_id`` = ``messageId`` (deterministic, so the queue's duplicate
detection drops re-sends), ``subject`` = kind, ``correlation_id`` = job id.
A body that does not validate is a permanent failure (``MessageFormatError``): redelivering it cannot help.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from azure.servicebus import ServiceBusMessage

from shared.messaging.work import parse

CONTENT_TYPE = "application/json"


def to_service_bus_message(message: Mapping[str, Any]) -> ServiceBusMessage:
    work = parse(message)
    data = work.to_wire()
    return ServiceBusMessage(
        json.dumps(data, separators=(",", ":")),
        message_id=data["messageId"],
        subject=data["kind"],
        correlation_id=work.job_id or None,
        content_type=CONTENT_TYPE,
        application_properties={"kind": data["kind"], "version": work.version, "mapping": work.mapping},
    )
