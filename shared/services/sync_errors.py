"""Sync errors as the API lists them (pure): the one builder of a ``SyncErrorEntry`` from a record result,
its stable id, and the failed creates. A record whose create failed has no coupling yet, so its error
names the source record alone (``bcId`` or ``dataverseId``) and retry-all creates it again."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from shared.domain.model import Outcome, SyncErrorEntry
from shared.planning.decisions import CREATE_FAILED, DUPLICATE_KEY, PARENT_NOT_COUPLED

if TYPE_CHECKING:
    from shared.services.sync_service import RecordResult


def error_id(mapping: str, bc_id: str | None, dv_id: str | None, direction: str | None) -> str:
    raw = f"{mapping}|{bc_id or ''}|{dv_id or ''}|{direction or ''}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def error_entry(
    mapping: str,
    result: RecordResult,
    job_id: str | None,
    now: datetime,
    *,
    bc_id: str | None = None,
    dataverse_id: str | None = None,
    default_code: str = "sync_failed",
    default_message: str = "",
) -> SyncErrorEntry:
    """The sync error of a failed record; the ids default to the result's (a coupled pair passes its own)."""
    bc = bc_id if bc_id is not None else result.bc_id
    dv = dataverse_id if dataverse_id is not None else result.dataverse_id
    return SyncErrorEntry(
        id=error_id(mapping, bc, dv, result.direction),
        mapping=mapping,
        direction=result.direction or "",
        code=result.error_code or default_code,
        message=result.error_message or default_message,
        transient=result.transient,
        bc_id=bc,
        dataverse_id=dv,
        first_occurred_at=now,
        last_occurred_at=now,
        job_id=job_id or None,
    )


def create_error_entry(mapping: str, result: RecordResult, job_id: str | None, now: datetime) -> SyncErrorEntry:
    """The sync error of a failed create (no coupling: the source record alone is named)."""
    return error_entry(
        mapping, result, job_id, now, default_code=CREATE_FAILED, default_message="The record could not be created."
    )


def failed_creates(results: Sequence[RecordResult]) -> list[RecordResult]:
    """The results of creates that failed (a concurrent caller coupling the pair first is not a failure)."""
    codes = (CREATE_FAILED, DUPLICATE_KEY, PARENT_NOT_COUPLED)
    return [r for r in results if r.status == Outcome.FAILED and r.error_code in codes]


def created_sources(results: Sequence[RecordResult]) -> tuple[list[str], list[str]]:
    """(BC ids, Dataverse ids) of the pairs just created: their earlier create errors are closed."""
    created = [r for r in results if r.status == Outcome.CREATED]
    return [r.bc_id for r in created if r.bc_id], [r.dataverse_id for r in created if r.dataverse_id]
