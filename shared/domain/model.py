"""Plain data shared by the engine, the stores and the connectors (no I/O, no framework imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


class Direction(StrEnum):
    TO_DATAVERSE = "toDataverse"  # BC's ToIntegrationTable
    FROM_DATAVERSE = "fromDataverse"  # BC's FromIntegrationTable
    BIDIRECTIONAL = "bidirectional"


class Side(StrEnum):
    BC = "bc"
    DATAVERSE = "dataverse"


class Outcome(StrEnum):
    """What happened to one record: the contract's record result statuses, one vocabulary from the planner
    to the record results, job counts (``COUNT_OF``), sync errors, metrics (``sync.records`` ``outcome``) and
    logs."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    COUPLED = "coupled"
    CONFLICT = "conflict"
    FAILED = "failed"
    NOT_COUPLED = "not_coupled"
    NOT_FOUND = "not_found"
    SKIPPED = "skipped"

    @property
    def succeeded(self) -> bool:
        """The pair is in sync after this (its coupling's ``lastSyncResult`` is ``succeeded``)."""
        return self in (Outcome.UPDATED, Outcome.UNCHANGED)


# The job count (``COUNT_KEYS``) each outcome adds to: a conflict or a vanished record is a failure of the
# job (``partial``); a created record also counts ``coupled`` (the contract: "once in inserted and once in
# coupled").
COUNT_OF: dict[Outcome, str] = {
    Outcome.CREATED: "inserted",
    Outcome.UPDATED: "modified",
    Outcome.UNCHANGED: "unchanged",
    Outcome.COUPLED: "coupled",
    Outcome.CONFLICT: "failed",
    Outcome.FAILED: "failed",
    Outcome.NOT_COUPLED: "skipped",
    Outcome.NOT_FOUND: "failed",
    Outcome.SKIPPED: "skipped",
}


# ----------------------------------------------------------------------------- remote records
@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """One BC record or Dataverse row as read (or returned after a write)."""

    id: str  # lower-case GUID
    fields: dict[str, Any]  # raw JSON fields, without @odata.* annotations
    etag: str | None = None
    modified_on: datetime | None = None  # BC lastModifiedDateTime / Dataverse modifiedon (UTC)


WriteKind = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One write in a batch. ``ref`` is the caller's correlation key, echoed in the result."""

    kind: WriteKind
    ref: str
    id: str | None = None  # update/delete: the target id; create: an optional pre-chosen id
    fields: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None  # If-Match; None = unconditional ("*") where the service needs one


@dataclass(frozen=True, slots=True)
class WriteResult:
    ref: str
    ok: bool
    record: RemoteRecord | None = None  # state after the write (id, etag, modified_on) when ok
    error: Exception | None = None  # a shared.errors.SyncError when not ok
    existed: bool = False  # a create answered by a record that was already there (same deterministic key)


@dataclass(slots=True)
class ChangePage:
    """One page of changes since a cursor. ``next_cursor`` is set on the last page only."""

    records: list[RemoteRecord]
    deleted_ids: list[str] = field(default_factory=list)
    next_cursor: str | None = None
    is_last: bool = False
    full_resync_required: bool = False  # the cursor expired (Dataverse delta token too old)


# ----------------------------------------------------------------------------- stored state
@dataclass(slots=True)
class Coupling:
    """One coupling of a BC record with a Dataverse row (BC's "CRM Integration Record")."""

    mapping: str
    bc_id: str
    dataverse_id: str
    coupled_at: datetime
    last_synced_at: datetime | None = None
    last_sync_direction: str | None = None
    last_sync_result: Literal["succeeded", "failed", "skipped"] | None = None
    last_error: str | None = None
    skipped: bool = False
    consecutive_failures: int = 0
    # Last-synced snapshot: mapped field values per side as they were after the last sync.
    bc_values: dict[str, Any] = field(default_factory=dict)
    dv_values: dict[str, Any] = field(default_factory=dict)
    bc_etag: str | None = None
    dv_etag: str | None = None
    bc_modified_on: datetime | None = None
    dv_modified_on: datetime | None = None
    row_etag: str | None = None  # the table row's ETag (optimistic concurrency), set by the store
    # #22: this coupling's history entries, oldest first (shared/planning/history.py); stored in its state row.
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class SyncErrorEntry:
    """One open (or closed) sync error, upserted per record + direction."""

    id: str
    mapping: str
    direction: str
    code: str
    message: str
    transient: bool
    bc_id: str | None = None
    dataverse_id: str | None = None
    attempts: int = 1
    first_occurred_at: datetime | None = None
    last_occurred_at: datetime | None = None
    job_id: str | None = None
    closed: bool = False
    closed_at: datetime | None = None


COUNT_KEYS = ("inserted", "modified", "deleted", "unchanged", "skipped", "failed", "coupled", "uncoupled")
JobStatus = Literal["queued", "running", "succeeded", "partial", "failed"]


def final_status(counts: dict[str, int]) -> JobStatus:
    """A finished job's (or sync pass's) status: ``partial`` when some record failed or was in conflict."""
    return "partial" if counts.get("failed", 0) else "succeeded"


JobKind = Literal["syncNow", "full", "incremental", "uncoupleAll", "matchCouple", "record", "retry"]


@dataclass(slots=True)
class Job:
    job_id: str
    mapping: str
    kind: str
    direction: str | None
    status: str = "queued"
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    expected_batches: int | None = None  # set once fan-out is known; the job ends when all are done
    completed_batches: int = 0
    # Bookkeeping of a fanned-out change-feed run, never shown by the API: side -> the cursor (a BC timestamp
    # or a Dataverse delta link) its watermark moves to when the last batch is done.
    pending_cursors: dict[str, str] = field(default_factory=dict)
    detail: str | None = None  # why the job failed, as the API shows it
    row_etag: str | None = None


@dataclass(slots=True)
class Watermark:
    """Cursor of one mapping and side: a timestamp (BC) or a delta link (Dataverse)."""

    mapping: str
    side: Side
    cursor: str | None = None
    updated_at: datetime | None = None
    row_etag: str | None = None


@dataclass(slots=True)
class MappingSettings:
    """Run-time overrides of a table mapping (PATCH /api/mappings/{m})."""

    mapping: str
    direction: Direction | None = None
    sync_only_coupled: bool | None = None
    state: Literal["running", "paused"] | None = None
    row_etag: str | None = None
