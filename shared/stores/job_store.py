"""Jobs in Table Storage, all in partition ``jobs`` (so one transaction can touch a job and its markers):

- ``t:<inverted created-at>:<jobId>``: the job (status, counts, its bookkeeping in typed columns:
  ``ExpectedBatches``, ``CompletedBatches``, ``PendingCursors``; ``Detail`` only says why it failed) — RowKey
  order is newest first;
- ``id:<jobId>``: points to the job's row, so ``get`` is a point read (cached per process: it never changes);
- ``b:<jobId>:<batchId>``: marker of an applied counter batch. ``add_counts`` creates the marker and replaces
  the job row (If-Match) in ONE transaction: a re-applied batch fails on the marker (no double count), a
  concurrent updater fails on the ETag and retries with the fresh row (no lost update).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.errors import JobNotFoundError
from shared.domain.model import COUNT_KEYS, Job
from shared.errors import ConflictError
from shared.stores import plan_items  # #22
from shared.stores.tables import (
    Entity,
    Op,
    TableProvider,
    TableTransactionError,
    escape_key,
    etag_of,
    failure_kind,
    get_row,
    prefix_range,
    query_page,
    quote,
    submit,
    to_utc,
    transaction_failure,
    utcnow,
)

PK = "jobs"
TERMINAL = frozenset({"succeeded", "partial", "failed"})
ALLOWED: dict[str, frozenset[str]] = {
    "queued": frozenset({"running"}) | TERMINAL,
    "running": frozenset({"running"}) | TERMINAL,
}
UPDATE_ATTEMPTS = 50  # ETag races between a handful of workers settle within a few attempts each
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TICKS = 10**19 - 1
_SETTABLE = frozenset({"detail", "expected_batches", "pending_cursors", "direction", "started_at", "finished_at"})
_LEGACY_CURSORS = "pendingCursors"  # the key under which rows of the old layout kept their cursors in Detail
_IF_MATCH = MatchConditions.IfNotModified


def job_row_key(job: Job) -> str:
    created = to_utc(job.created_at) or utcnow()
    delta = created - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"t:{_MAX_TICKS - micros:019d}:{escape_key(job.job_id)}"


def to_entity(job: Job, rk: str) -> Entity:
    return {
        "PartitionKey": PK,
        "RowKey": rk,
        "JobId": job.job_id,
        "Mapping": job.mapping,
        "Kind": job.kind,
        "Direction": job.direction,
        "Status": job.status,
        "CreatedAt": to_utc(job.created_at),
        "StartedAt": to_utc(job.started_at),
        "FinishedAt": to_utc(job.finished_at),
        "Counts": json.dumps(job.counts, separators=(",", ":")),
        "ExpectedBatches": job.expected_batches,
        "CompletedBatches": job.completed_batches,
        "PendingCursors": json.dumps(job.pending_cursors, separators=(",", ":")) if job.pending_cursors else None,
        "Detail": job.detail,
    }


def bookkeeping_of(row: Entity) -> tuple[dict[str, str], str | None]:
    """(pending cursors, detail) of a job row. A row of the old layout kept its cursors in ``Detail`` as
    ``{"pendingCursors": {...}}``: they are read as cursors and the row has no detail (written back, it
    takes the new layout)."""
    cursors = dict(json.loads(row.get("PendingCursors") or "{}"))
    detail = row.get("Detail") or None
    if detail is None or not detail.lstrip().startswith("{"):
        return cursors, detail
    try:
        legacy = json.loads(detail)
    except ValueError:
        return cursors, detail
    if not isinstance(legacy, dict) or _LEGACY_CURSORS not in legacy:
        return cursors, detail
    return cursors or {str(k): str(v) for k, v in (legacy[_LEGACY_CURSORS] or {}).items()}, None


def from_entity(row: Entity) -> Job:
    counts = dict.fromkeys(COUNT_KEYS, 0) | json.loads(row.get("Counts") or "{}")
    expected = row.get("ExpectedBatches")
    cursors, detail = bookkeeping_of(row)
    return Job(
        job_id=row["JobId"],
        mapping=row["Mapping"],
        kind=row["Kind"],
        direction=row.get("Direction"),
        status=row["Status"],
        created_at=to_utc(row.get("CreatedAt")),
        started_at=to_utc(row.get("StartedAt")),
        finished_at=to_utc(row.get("FinishedAt")),
        counts=counts,
        expected_batches=int(expected) if expected is not None else None,
        completed_batches=int(row.get("CompletedBatches") or 0),
        pending_cursors=cursors,
        detail=detail,
        row_etag=etag_of(row),
    )


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))


class TableJobStore:
    """``shared.ports.JobStore`` on Table Storage."""

    def __init__(self, tables: TableProvider, table_name: str) -> None:
        self._tables = tables
        self._name = table_name
        self._row_keys: dict[str, str] = {}

    async def _table(self) -> TableClient:
        return await self._tables.get(self._name)

    async def create(self, job: Job) -> Job:
        table = await self._table()
        if not job.job_id:
            job.job_id = uuid.uuid4().hex
        job.created_at = to_utc(job.created_at) or utcnow()
        job.counts = dict.fromkeys(COUNT_KEYS, 0) | dict(job.counts)
        rk = job_row_key(job)
        pointer = {"PartitionKey": PK, "RowKey": f"id:{escape_key(job.job_id)}", "Key": rk}
        try:
            out = await submit(table, [("create", to_entity(job, rk)), ("create", pointer)])
        except TableTransactionError as e:
            if failure_kind(e) == "exists":
                raise ConflictError(f"job {job.job_id} already exists", status=409, service="tables") from e
            raise transaction_failure(e) from e
        self._row_keys[job.job_id] = rk
        job.row_etag = out[0].get("etag")
        return job

    async def _row_key(self, table: TableClient, job_id: str) -> str | None:
        rk = self._row_keys.get(job_id)
        if rk is None:
            pointer = await get_row(table, PK, f"id:{escape_key(job_id)}")
            if pointer is None:
                return None
            rk = self._row_keys[job_id] = pointer["Key"]
        return rk

    async def _load(self, table: TableClient, job_id: str) -> tuple[str, Entity]:
        rk = await self._row_key(table, job_id)
        row = await get_row(table, PK, rk) if rk else None
        if rk is None or row is None:
            raise JobNotFoundError(f"job {job_id} does not exist")
        return rk, row

    async def get(self, job_id: str) -> Job | None:
        table = await self._table()
        try:
            _, row = await self._load(table, job_id)
        except JobNotFoundError:
            return None
        return from_entity(row)

    async def add_counts(self, job_id: str, counts: dict[str, int], *, batch_id: str | None = None) -> None:
        """Adds ``counts``; with ``batch_id`` also counts one completed batch, at most once per batch id."""
        table = await self._table()
        for attempt in range(UPDATE_ATTEMPTS):
            rk, row = await self._load(table, job_id)
            job = from_entity(row)
            for key, value in counts.items():
                job.counts[key] = job.counts.get(key, 0) + int(value)
            ops: list[Op] = []
            if batch_id is not None:
                job.completed_batches += 1
                marker = {"PartitionKey": PK, "RowKey": f"b:{escape_key(job_id)}:{escape_key(batch_id)}"}
                ops.append(("create", marker))  # first: an applied batch is recognised whatever the ETag
            update = {"mode": UpdateMode.REPLACE, "etag": etag_of(row), "match_condition": _IF_MATCH}
            ops.append(("update", to_entity(job, rk), update))
            try:
                await submit(table, ops)
                return
            except TableTransactionError as e:
                kind = failure_kind(e)
                if kind == "exists" and batch_id is not None:
                    return  # this batch was counted before
                if kind != "modified":
                    raise transaction_failure(e) from e
            await _backoff(attempt)
        raise ConflictError(f"job {job_id} counters kept changing concurrently", service="tables")

    async def set_status(self, job_id: str, status: str, **fields: Any) -> Job:
        """queued -> running -> succeeded | partial | failed (queued may finish directly). Terminal states
        stay: a late or backward transition is ignored and the current job returned."""
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a job")
        table = await self._table()
        for attempt in range(UPDATE_ATTEMPTS):
            rk, row = await self._load(table, job_id)
            job = from_entity(row)
            if status not in ALLOWED.get(job.status, frozenset()):
                return job
            now = utcnow()
            job.status = status
            for key, value in fields.items():
                setattr(job, key, value)
            if status == "running" or status in TERMINAL:
                job.started_at = job.started_at or now
            if status in TERMINAL:
                job.finished_at = job.finished_at or now
            update = {"mode": UpdateMode.REPLACE, "etag": etag_of(row), "match_condition": _IF_MATCH}
            try:
                out = await submit(table, [("update", to_entity(job, rk), update)])
            except TableTransactionError as e:
                if failure_kind(e) != "modified":
                    raise transaction_failure(e) from e
                await _backoff(attempt)
                continue
            job.row_etag = out[0].get("etag")
            return job
        raise ConflictError(f"job {job_id} kept changing concurrently", service="tables")

    # --- #22 plans: the items of a plan job live beside it (shared/stores/plan_items.py)
    async def put_plan_items(self, job_id: str, items: list[dict[str, Any]]) -> None:
        await plan_items.put_items(await self._table(), job_id, items)

    async def plan_items_page(
        self, job_id: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await plan_items.page_items(await self._table(), job_id, top=top, continuation=continuation)

    async def list_page(
        self, *, mapping: str | None = None, top: int = 100, continuation: str | None = None
    ) -> tuple[list[Job], str | None]:
        table = await self._table()
        query = f"PartitionKey eq {quote(PK)} and {prefix_range('t:')}"
        if mapping is not None:
            query += f" and Mapping eq {quote(mapping)}"
        rows, token = await query_page(table, query, top=top, continuation=continuation)
        return [from_entity(r) for r in rows], token
