"""The Synchronize-now use cases: records named by id (inline up to the limit, else a job) and the
synchronize-from-Dataverse call (sync a coupled row, or create and couple its BC counterpart)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.domain.errors import CannotAutoCoupleError, MappingNotFoundError
from shared.domain.model import Direction, Job, Outcome
from shared.errors import SyncError
from shared.mappings.config import TableMapping
from shared.messaging import work
from shared.planning.decisions import upstream_failure_is_per_record
from shared.planning.history import TRIGGER  # #22
from shared.services.coupling_service import CouplingService
from shared.services.dataverse_context import is_echo, parse_dataverse_request
from shared.services.engine import Engine, new_job_id, utcnow
from shared.services.jobs import BATCH_SIZE, JobService
from shared.services.sync_service import RecordResult, SyncOutcome, SyncService, resolve_direction
from shared.services.table_choice import mapping_for_row
from shared.telemetry import CURRENT_MAPPING

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncNowResult:
    """What Synchronize now did: the inline job and its record results, or the job it queued (``outcome``
    None: more ids than the inline limit). The handler maps it to 200 or 202."""

    job: Job
    outcome: SyncOutcome | None = None

    @property
    def queued(self) -> bool:
        return self.outcome is None

    def answer(self) -> dict[str, Any]:
        if self.outcome is None:
            return {"jobId": self.job.job_id, "status": "queued"}
        return {
            "jobId": self.job.job_id,
            "results": [r.as_json() for r in self.outcome.results],
            "counts": self.outcome.counts,
        }


@dataclass(frozen=True, slots=True)
class DataverseSyncResult:
    """What synchronize-from-Dataverse did with one row: synced its coupling, created and coupled its BC
    counterpart (``created``: the handler answers 201), or nothing (``ignored``: our own echo)."""

    mapping: str | None = None
    bc_id: str | None = None
    dataverse_id: str | None = None
    result: RecordResult | None = None
    created: bool = False
    ignored: bool = False

    def answer(self) -> dict[str, Any]:
        if self.ignored:
            return {"ignored": True}
        return {
            "mapping": self.mapping,
            "bcId": self.bc_id,
            "dataverseId": self.dataverse_id,
            "created": self.created,
            "result": self.result.as_json() if self.result is not None else None,
        }


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
                Outcome.NOT_COUPLED,
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
) -> SyncNowResult:
    """Up to the inline limit: synchronized here, in an inline job (the same job lifecycle and metrics as a
    queued one); more: a queued job."""
    TRIGGER.set("syncNow")  # #22 history
    mapping = await engine.registry.get(mapping_name)
    CURRENT_MAPPING.set(mapping.name)
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
        chunks = [ids[start : start + BATCH_SIZE] for start in range(0, len(ids), BATCH_SIZE)]
        msgs = [
            work.SyncBatch(
                mapping=mapping.name,
                direction=chosen.value,
                force=force,
                bc_ids=chunk if bc_ids else None,
                dataverse_ids=None if bc_ids else chunk,
            )
            for chunk in chunks
        ]
        job = await JobService(engine).start(mapping.name, "syncNow", chosen.value, messages=msgs)
        return SyncNowResult(job)
    job = Job(job_id=new_job_id(), mapping=mapping.name, kind="syncNow", direction=chosen.value, created_at=utcnow())
    outcome = await JobService(engine).run_inline(
        job, lambda: sync_ids(engine, mapping, bc_ids, dv_ids, chosen, force=force, job_id=job.job_id)
    )
    return SyncNowResult(job, outcome)


async def sync_from_dataverse(engine: Engine, body: dict[str, Any]) -> DataverseSyncResult:
    entity, row_id, _message_name, context = parse_dataverse_request(body)
    TRIGGER.set("syncNow")  # #22 history
    base = await mapping_for_row(engine, entity, row_id)
    if base is None:
        raise MappingNotFoundError(f"No table mapping synchronizes the Dataverse table '{entity[:60]}'.")
    mapping = await engine.registry.get(base.name)
    coupling = await engine.couplings.get_by_dataverse_id(mapping.name, row_id)
    if context and is_echo(context):
        return DataverseSyncResult(ignored=True)
    if coupling is not None:
        direction = Direction.FROM_DATAVERSE if mapping.allows(Direction.FROM_DATAVERSE) else Direction.TO_DATAVERSE
        outcome = await SyncService(engine).sync_couplings(mapping, [coupling], direction)
        return DataverseSyncResult(mapping.name, coupling.bc_id, row_id, outcome.results[0])
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
    if result.status != Outcome.CREATED and (won := await engine.couplings.get_by_dataverse_id(mapping.name, row_id)):
        # A concurrent call created and coupled it first: the same coupling, not created by this call.
        same = RecordResult(won.bc_id, row_id, Outcome.UNCHANGED, Direction.FROM_DATAVERSE.value)
        return DataverseSyncResult(mapping.name, won.bc_id, row_id, same)
    if result.status != Outcome.CREATED:
        from shared.errors import TransientError

        raise TransientError(result.error_message or "The Business Central record could not be created.")
    return DataverseSyncResult(mapping.name, result.bc_id, row_id, result, created=True)
