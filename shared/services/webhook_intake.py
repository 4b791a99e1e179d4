"""Webhook intake: both kinds authenticated here (BC's subscription ``clientState``, Dataverse's webhook key),
then each notification turned into queued work (a ``record-changed`` message, or a mapping's incremental job
for a collection change). Nothing is synchronized inside the request."""

from __future__ import annotations

import hmac
import re
from typing import Any

from shared.config import Settings
from shared.domain.errors import ServiceError, ValidationFailedError
from shared.domain.model import Side
from shared.messaging import work
from shared.planning.automatic import does_automatic_work
from shared.services.dataverse_context import is_echo, parse_dataverse_request
from shared.services.engine import Engine
from shared.services.jobs import JobService
from shared.services.table_choice import mapping_for_row


class WebhookUnauthorizedError(ServiceError):
    code, status, title = "unauthorized", 401, "Webhook not authenticated"


def check_secret(given: object, expected: str | None) -> bool:
    """Constant-time comparison; anything but a string (a forged number, list, object) simply fails, and so
    does everything while the secret is not configured."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(given.encode(), str(expected).encode())


def authenticate_bc(items: list[Any], settings: Settings) -> None:
    """Every notification carries the subscription's ``clientState`` (or, during a rotation, the previous one)."""
    expected = settings.bc_webhook_client_state
    previous = settings.bc_webhook_client_state_previous  # rotation grace: see the setting
    for it in items:
        if not isinstance(it, dict) or not (
            check_secret(it.get("clientState"), expected)
            or (previous is not None and check_secret(it.get("clientState"), previous))
        ):
            raise WebhookUnauthorizedError("clientState does not match the registered subscription.")


def authenticate_dataverse(given: object, settings: Settings) -> None:
    """The service endpoint's key (``?code=`` or ``x-functions-key``) is the configured webhook key."""
    if not check_secret(given, settings.dataverse_webhook_key):
        raise WebhookUnauthorizedError("The webhook key is missing or wrong.")


_RESOURCE = re.compile(r"companies\(([^)]+)\)/(\w+)(?:\(([0-9a-fA-F-]{36})\))?")


async def bc_notification(engine: Engine, body: dict[str, Any]) -> int:
    """Queues the work of a BC webhook notification; returns the number of messages queued."""
    items = body.get("value")
    if not isinstance(items, list) or not items:
        raise ValidationFailedError("A notification has a non-empty 'value' array.")
    authenticate_bc(items, engine.settings)
    by_entity = {m.bc_entity: m for m in await engine.registry.list()}
    msgs: list[dict[str, Any]] = []
    jobs = JobService(engine)
    for it in items:
        m = _RESOURCE.search(str(it.get("resource", "")))
        if not m or m.group(2) not in by_entity:
            continue
        mapping = by_entity[m.group(2)]
        if not does_automatic_work(mapping.state):
            continue  # paused: its next incremental run after resume catches up
        if it.get("changeType") == "collection" or not m.group(3):
            await jobs.start(mapping.name, "incremental", mapping.direction.value, full=False, trigger="webhook")  # #22
            continue
        record_id = m.group(3).lower()
        deleted = it.get("changeType") == "deleted"
        stamp = str(it.get("lastModifiedDateTime", ""))
        msgs.append(work.record_changed(mapping.name, Side.BC, record_id, deleted=deleted, stamp=stamp).to_wire())
    if msgs:
        await engine.publisher.publish(msgs)
    return len(msgs)


async def dataverse_notification(engine: Engine, body: dict[str, Any]) -> int:
    """Queues the change a Dataverse service endpoint announces (after ``authenticate_dataverse``, before the
    body is even read); an echo of our own write, a table no mapping synchronizes, or a paused mapping queue
    nothing. Returns how many."""
    entity, row_id, msg_name, context = parse_dataverse_request(body)
    base = None if is_echo(context) else await mapping_for_row(engine, entity, row_id)
    if base is None:
        return 0
    if not does_automatic_work((await engine.registry.get(base.name)).state):
        return 0  # paused: its next incremental run after resume catches up
    op = str(context.get("OperationId") or context.get("CorrelationId") or "")
    change = work.record_changed(base.name, Side.DATAVERSE, row_id, deleted=msg_name.lower() == "delete", stamp=op)
    await engine.publisher.publish([change.to_wire()])
    return 1
