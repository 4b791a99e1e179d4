"""The use cases behind the HTTP API: each handler calls exactly one of these."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Sequence
from typing import Any

from shared.domain.errors import CannotAutoCoupleError, MappingNotFoundError, ServiceError, ValidationFailedError
from shared.domain.model import Direction, Job
from shared.errors import SyncError
from shared.mappings.config import TableMapping
from shared.messaging.message_ids import bounded_message_id
from shared.planning.automatic import does_automatic_work
from shared.planning.decisions import upstream_failure_is_per_record
from shared.planning.history import TRIGGER  # #22
from shared.services.coupling_service import CouplingService
from shared.services.engine import Engine, new_job_id, utcnow
from shared.services.jobs import BATCH_SIZE, JobService, message
from shared.services.sync_service import RecordResult, SyncOutcome, SyncService, resolve_direction
from shared.services.table_choice import mapping_for_row

log = logging.getLogger(__name__)

ECHO_TAG = "bc-sync"


class WebhookUnauthorizedError(ServiceError):
    code, status, title = "unauthorized", 401, "Webhook not authenticated"


# ------------------------------------------------------------------ synchronize now
async def sync_ids(
    engine: Engine,
    mapping: TableMapping,
    bc_ids: Sequence[str],
    dv_ids: Sequence[str],
    direction: Direction,
    *,
    force: bool = False,
    job_id: str | None = None,
) -> SyncOutcome:
    """Synchronizes the coupled records among these ids; the others are ``not_coupled``. Order kept."""
    if mapping.lines is not None:  # #21: documents sync a header with its lines as one unit
        from shared.services.documents import sync_document_ids

        return await sync_document_ids(engine, mapping, bc_ids, dv_ids, job_id, direction)
    outcome = SyncOutcome()
    if bc_ids:
        keys = list(dict.fromkeys(bc_ids))  # a record named twice counts once
        found = await engine.couplings.get_many_by_bc_ids(mapping.name, keys)
    else:
        keys = list(dict.fromkeys(dv_ids))
        found = await engine.couplings.get_many_by_dataverse_ids(mapping.name, keys)
    couplings = [found[k] for k in dict.fromkeys(keys) if k in found]
    svc = SyncService(engine)
    try:
        synced = await svc.sync_couplings(mapping, couplings, direction, force=force, job_id=job_id)
    except SyncError as e:
        if not upstream_failure_is_per_record(e.service, e.transient):
            raise
        synced = await svc.upstream_failed(mapping, couplings, direction, e, job_id)
    by_key = {(r.bc_id if bc_ids else r.dataverse_id): r for r in synced.results}
    for k in keys:
        r = by_key.get(k)
        if r is None:
            r = RecordResult(
                k if bc_ids else None,
                None if bc_ids else k,
                "not_coupled",
                direction.value,
                "not_coupled",
                "The record is not coupled; set up a coupling first.",
            )
        outcome.add(r)
    return outcome


async def sync_now(
    engine: Engine,
    mapping_name: str,
    *,
    bc_ids: Sequence[str] = (),
    dv_ids: Sequence[str] = (),
    direction: Direction | None = None,
    force: bool = False,
) -> tuple[int, dict[str, Any], Job | None]:
    """``(200, answer, None)`` for up to the inline limit, else ``(202, answer, job)``."""
    TRIGGER.set("syncNow")  # #22 history
    mapping = await engine.registry.get(mapping_name)
    chosen = resolve_direction(mapping, direction)
    ids = list(bc_ids) or list(dv_ids)
    if chosen is None:
        sample = list(dict.fromkeys(ids))[:BATCH_SIZE]
        if bc_ids:
            found = await engine.couplings.get_many_by_bc_ids(mapping.name, sample)
        else:
            found = await engine.couplings.get_many_by_dataverse_ids(mapping.name, sample)
        raise await SyncService(engine).direction_prompt(mapping, list(found.values()))
    if len(ids) > engine.settings.sync_inline_limit:
        key = "bcIds" if bc_ids else "dataverseIds"
        msgs = [
            message(
                "sync-batch",
                "",
                mapping.name,
                batch=str(i),
                direction=chosen.value,
                force=force,
                **{key: ids[start : start + BATCH_SIZE]},
            )
            for i, start in enumerate(range(0, len(ids), BATCH_SIZE))
        ]
        job = await JobService(engine).start(mapping.name, "syncNow", chosen.value, messages=msgs)
        return 202, {"jobId": job.job_id, "status": "queued"}, job
    job = Job(
        job_id=new_job_id(),
        mapping=mapping.name,
        kind="syncNow",
        direction=chosen.value,
        created_at=utcnow(),
        started_at=utcnow(),
        status="running",
        expected_batches=1,
    )
    await engine.jobs.create(job)
    outcome = await sync_ids(engine, mapping, bc_ids, dv_ids, chosen, force=force, job_id=job.job_id)
    await engine.jobs.add_counts(job.job_id, outcome.counts, batch_id="0")
    status = "partial" if outcome.counts["failed"] else "succeeded"
    await engine.jobs.set_status(job.job_id, status, finished_at=utcnow())
    return 200, {"jobId": job.job_id, "results": [r.as_json() for r in outcome.results], "counts": outcome.counts}, None


# ------------------------------------------------------------------ synchronize from Dataverse
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_dataverse_request(body: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(entity logical name, row id, message name, context) from the simple body or a RemoteExecutionContext."""
    if "PrimaryEntityName" in body or "InputParameters" in body or "MessageName" in body:
        entity = body.get("PrimaryEntityName")
        row_id = body.get("PrimaryEntityId")
        msg = body.get("MessageName") or "Update"
        if not isinstance(entity, str) or not entity:
            raise ValidationFailedError("The execution context has no PrimaryEntityName.")
        if not isinstance(row_id, str) or not _GUID.match(row_id):
            raise ValidationFailedError("The execution context has no valid PrimaryEntityId (a GUID).")
        if not isinstance(msg, str):
            raise ValidationFailedError("MessageName must be a string.")
        shared_vars = body.get("SharedVariables")
        if shared_vars is not None and not (
            isinstance(shared_vars, list) and all(isinstance(v, dict) for v in shared_vars)
        ):
            raise ValidationFailedError("SharedVariables must be a list of {key, value} objects.")
        return entity, row_id.lower(), msg, body
    entity = body.get("entityName")
    row_id = body.get("id")
    if not isinstance(entity, str) or not entity:
        raise ValidationFailedError("entityName is required (a Dataverse table logical name, e.g. 'account').")
    if not isinstance(row_id, str) or not _GUID.match(row_id):
        raise ValidationFailedError("id is required and must be a GUID.")
    return entity, row_id.lower(), "Update", {}


def is_echo(context: dict[str, Any]) -> bool:
    """A change this service made itself: its write carried our tag (shared variable ``tag``)."""
    for var in context.get("SharedVariables") or []:
        if isinstance(var, dict) and var.get("key") == "tag" and var.get("value") == ECHO_TAG:
            return True
    return False


async def sync_from_dataverse(engine: Engine, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    entity, row_id, _message_name, context = parse_dataverse_request(body)
    TRIGGER.set("syncNow")  # #22 history
    base = await mapping_for_row(engine, entity, row_id)
    if base is None:
        raise MappingNotFoundError(f"No table mapping synchronizes the Dataverse table '{entity[:60]}'.")
    mapping = await engine.registry.get(base.name)
    coupling = await engine.couplings.get_by_dataverse_id(mapping.name, row_id)
    if context and is_echo(context):
        return 200, {"ignored": True}
    if coupling is not None:
        direction = Direction.FROM_DATAVERSE if mapping.allows(Direction.FROM_DATAVERSE) else Direction.TO_DATAVERSE
        outcome = await SyncService(engine).sync_couplings(mapping, [coupling], direction)
        result = outcome.results[0]
        return 200, {
            "mapping": mapping.name,
            "bcId": coupling.bc_id,
            "dataverseId": row_id,
            "created": False,
            "result": result.as_json(),
        }
    if mapping.sync_only_coupled or not mapping.allows(Direction.FROM_DATAVERSE):
        reason = (
            f"mapping {mapping.name} has syncOnlyCoupled on"
            if mapping.sync_only_coupled
            else f"mapping {mapping.name} synchronizes {mapping.direction.value} only"
        )
        raise CannotAutoCoupleError(f"The Dataverse row is not coupled and cannot be coupled automatically: {reason}.")
    rows = await engine.dv.get_many(mapping.dataverse_entity_set, [row_id], select=mapping.dataverse_select)
    if row_id not in rows:
        from shared.domain.errors import RecordNotFoundError

        raise RecordNotFoundError(f"Dataverse {mapping.dataverse_entity_set} {row_id} does not exist.")
    outcome = await CouplingService(engine).create_counterparts(mapping, Direction.FROM_DATAVERSE, [rows[row_id]])
    result = outcome.results[0]
    if result.status != "created" and (won := await engine.couplings.get_by_dataverse_id(mapping.name, row_id)):
        # A concurrent call created and coupled it first: the same coupling, not created by this call.
        return 200, {
            "mapping": mapping.name,
            "bcId": won.bc_id,
            "dataverseId": row_id,
            "created": False,
            "result": RecordResult(won.bc_id, row_id, "unchanged", Direction.FROM_DATAVERSE.value).as_json(),
        }
    if result.status != "created":
        from shared.errors import TransientError

        raise TransientError(result.error_message or "The Business Central record could not be created.")
    return 201, {
        "mapping": mapping.name,
        "bcId": result.bc_id,
        "dataverseId": row_id,
        "created": True,
        "result": result.as_json(),
    }


# ------------------------------------------------------------------ webhooks
def check_secret(given: object, expected: str | None) -> bool:
    """Constant-time comparison; anything but a string (a forged number, list, object) simply fails, and so
    does everything while the secret is not configured."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(given.encode(), str(expected).encode())


_RESOURCE = re.compile(r"companies\(([^)]+)\)/(\w+)(?:\(([0-9a-fA-F-]{36})\))?")


async def bc_notification(engine: Engine, body: dict[str, Any]) -> int:
    """Queues the work of a BC webhook notification; returns the number of messages queued."""
    items = body.get("value")
    if not isinstance(items, list) or not items:
        raise ValidationFailedError("A notification has a non-empty 'value' array.")
    expected = engine.settings.bc_webhook_client_state
    previous = engine.settings.bc_webhook_client_state_previous  # rotation grace: see the setting
    for it in items:
        if not isinstance(it, dict) or not (
            check_secret(it.get("clientState"), expected)
            or (previous is not None and check_secret(it.get("clientState"), previous))
        ):
            raise WebhookUnauthorizedError("clientState does not match the registered subscription.")
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
        msgs.append(
            {
                "version": 1,
                "kind": "record-changed",
                "jobId": "",
                "mapping": mapping.name,
                "messageId": bounded_message_id("bc", mapping.name, record_id, it.get("lastModifiedDateTime", "")),
                "bcIds": [record_id],
                "deleted": deleted,
            }
        )
    if msgs:
        await engine.publisher.publish(msgs)
    return len(msgs)


async def dataverse_notification(engine: Engine, body: dict[str, Any]) -> int:
    entity, row_id, msg_name, context = parse_dataverse_request(body)
    base = None if is_echo(context) else await mapping_for_row(engine, entity, row_id)
    if base is None:
        return 0
    if not does_automatic_work((await engine.registry.get(base.name)).state):
        return 0  # paused: its next incremental run after resume catches up
    op = str(context.get("OperationId") or context.get("CorrelationId") or "")
    await engine.publisher.publish(
        [
            {
                "version": 1,
                "kind": "record-changed",
                "jobId": "",
                "mapping": base.name,
                "messageId": bounded_message_id("dv", base.name, row_id, op),
                "dataverseIds": [row_id],
                "deleted": msg_name.lower() == "delete",
            }
        ]
    )
    return 1
