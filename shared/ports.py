"""The ports the engine depends on. Adapters (Table Storage, BC/Dataverse clients, Service Bus)
implement them; tests use the in-memory fakes in ``tests/fakes.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from shared.domain.model import (
    ChangePage,
    Coupling,
    Job,
    MappingSettings,
    RemoteRecord,
    Side,
    SyncErrorEntry,
    Watermark,
    WriteOp,
    WriteResult,
)


# ----------------------------------------------------------------------------- connectors
class RecordService(Protocol):
    """What the engine needs from one side (BC or Dataverse). ``entity`` is the BC entity set
    (``customers``) or the Dataverse entity set (``accounts``)."""

    async def list_records(
        self, entity: str, *, select: Sequence[str] | None = None, filter: str | None = None
    ) -> AsyncIterator[list[RemoteRecord]]:
        """Every matching record, one server page at a time (large pages, nextLink followed)."""
        ...

    async def iter_changes(
        self, entity: str, cursor: str | None, *, select: Sequence[str] | None = None
    ) -> AsyncIterator[ChangePage]:
        """Changes since ``cursor`` (None: everything, and start tracking); the last page carries
        ``next_cursor`` to store once every change was applied."""
        ...

    async def get_many(
        self, entity: str, ids: Sequence[str], *, select: Sequence[str] | None = None
    ) -> dict[str, RemoteRecord]:
        """The records with these ids (missing ones are absent from the answer)."""
        ...

    async def write_many(self, entity: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Creates/updates/deletes in as few calls as the service allows; one result per op, in order.
        A failing op never hides the outcome of the others."""
        ...


# ----------------------------------------------------------------------------- stores
class CouplingStore(Protocol):
    async def get_by_bc_id(self, mapping: str, bc_id: str) -> Coupling | None: ...

    async def get_by_dataverse_id(self, mapping: str, dataverse_id: str) -> Coupling | None: ...

    async def get_many_by_bc_ids(self, mapping: str, bc_ids: Sequence[str]) -> dict[str, Coupling]: ...

    async def get_many_by_dataverse_ids(self, mapping: str, dataverse_ids: Sequence[str]) -> dict[str, Coupling]:
        """Keyed by Dataverse id."""
        ...

    async def estimated_count(self, mapping: str) -> float | None:
        """How many couplings the mapping has, as far as this process knows (None: not known yet)."""
        ...

    async def synced_marks(self, mapping: str, side: Side, keys: Sequence[str]) -> dict[str, Any]:
        """Per coupling, by ``side``'s lower-case id, what its last sync saw of that side: BC, the
        ``lastModifiedDateTime``; Dataverse, the ``snapshot_mark`` of the snapshot over ``keys``."""
        ...

    async def couple(self, coupling: Coupling, *, replace: bool = False) -> list[Coupling]:
        """Writes a new coupling atomically. Raises ``AlreadyCoupledError`` when either side is coupled
        (to anything) and ``replace`` is false; with ``replace`` removes those first. Returns the
        couplings that were removed to make room."""
        ...

    async def couple_many(self, couplings: Sequence[Coupling]) -> list[Coupling | Exception]:
        """Bulk ``couple`` without replace (used when the engine created the counterparts); per item the
        stored coupling or the ``AlreadyCoupledError``."""
        ...

    async def save_sync_state(self, couplings: Sequence[Coupling]) -> None:
        """Persists the sync bookkeeping (snapshot, ETags, results, skipped) of existing couplings, batched."""
        ...

    async def uncouple_many(self, mapping: str, bc_ids: Sequence[str]) -> list[Coupling]:
        """Removes these couplings (both index rows); returns the ones that existed."""
        ...

    async def list_page(
        self, mapping: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[Coupling], str | None]: ...

    async def iter_all(self, mapping: str) -> AsyncIterator[list[Coupling]]: ...

    async def delete_all(self, mapping: str) -> int: ...

    async def history(self, mapping: str, bc_id: str) -> list[dict[str, Any]] | None:
        """#22: the record's history entries, oldest first (None: never coupled)."""
        ...

    async def purge_history(self, mapping: str, before: datetime) -> int: ...


class SyncErrorStore(Protocol):
    async def record_many(self, errors: Sequence[SyncErrorEntry]) -> None:
        """Upserts per (mapping, record, direction): counts attempts, keeps first/last time."""
        ...

    async def close_for_records(self, mapping: str, bc_ids: Sequence[str], dv_ids: Sequence[str] = ()) -> int: ...

    async def get_many(self, ids: Sequence[str]) -> list[SyncErrorEntry]: ...

    async def list_page(
        self,
        *,
        mapping: str | None = None,
        include_closed: bool = False,
        top: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[SyncErrorEntry], str | None]:
        """Newest first."""
        ...

    async def purge_older_than(self, before: datetime) -> int: ...


class JobStore(Protocol):
    async def create(self, job: Job) -> Job: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def add_counts(self, job_id: str, counts: dict[str, int], *, batch_id: str | None = None) -> None:
        """Adds to the counters without lost updates under concurrent workers; idempotent per batch_id."""
        ...

    async def set_status(self, job_id: str, status: str, **fields: Any) -> Job: ...

    async def put_plan_items(self, job_id: str, items: list[dict[str, Any]]) -> None:
        """Stores the items of a plan job (#22)."""
        ...

    async def plan_items_page(
        self, job_id: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    async def list_page(
        self, *, mapping: str | None = None, top: int = 100, continuation: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Newest first."""
        ...


class WatermarkStore(Protocol):
    async def get(self, mapping: str, side: Side) -> Watermark: ...

    async def put(self, watermark: Watermark) -> Watermark:
        """Optimistic concurrency on ``row_etag``; raises ``shared.errors.PreconditionFailedError``."""
        ...


class MappingSettingsStore(Protocol):
    async def get_all(self) -> dict[str, MappingSettings]: ...

    async def put(self, settings: MappingSettings) -> MappingSettings: ...


# ----------------------------------------------------------------------------- messaging
class MessagePublisher(Protocol):
    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        """Sends JSON work messages (each with ``kind``, ``messageId``, ``jobId``) in as few batches as fit."""
        ...
