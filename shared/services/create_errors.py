"""Failed creates as sync errors (pure): a record whose create failed has no coupling yet, so its error
names the source record alone (``bcId`` or ``dataverseId``) and retry-all creates it again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shared.domain.model import SyncErrorEntry
from shared.services.sync_service import RecordResult, error_id

CREATE_FAILED = "create_failed"


def failed_creates(results: Sequence[RecordResult]) -> list[RecordResult]:
    """The results of creates that failed (a concurrent caller coupling the pair first is not a failure)."""
    return [r for r in results if r.status == "failed" and r.error_code in (CREATE_FAILED, "parent_not_coupled")]


def create_error_entry(mapping: str, result: RecordResult, job_id: str | None, now: datetime) -> SyncErrorEntry:
    return SyncErrorEntry(
        id=error_id(mapping, result.bc_id, result.dataverse_id, result.direction),
        mapping=mapping,
        direction=result.direction or "",
        code=result.error_code or CREATE_FAILED,
        message=result.error_message or "The record could not be created.",
        transient=result.transient,
        bc_id=result.bc_id,
        dataverse_id=result.dataverse_id,
        first_occurred_at=now,
        last_occurred_at=now,
        job_id=job_id or None,
    )


def created_sources(results: Sequence[RecordResult]) -> tuple[list[str], list[str]]:
    """(BC ids, Dataverse ids) of the pairs just created: their earlier create errors are closed."""
    created = [r for r in results if r.status == "created"]
    return [r.bc_id for r in created if r.bc_id], [r.dataverse_id for r in created if r.dataverse_id]
