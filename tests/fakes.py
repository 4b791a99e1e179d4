"""In-memory fakes of the ports (``shared.ports``) for unit tests of the engine and the API."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import itertools
import json
import pickle
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.domain.errors import AlreadyCoupledError, InvalidContinuationError, JobNotFoundError
from shared.domain.model import COUNT_KEYS, Coupling, Job, MappingSettings, Side, SyncErrorEntry, Watermark
from shared.errors import ConflictError, PreconditionFailedError
from shared.planning import history
from shared.planning.decisions import snapshot_mark

# =============================================================================== stores (owner: stores engineer)
# Behaviour mirrors shared/stores (the same suite in tests/shared/stores runs against both): ids compared
# case-insensitively, snapshots round-trip through JSON, rows carry ETags, continuation tokens are opaque.

_etags = itertools.count(1)


def _etag() -> str:
    return f'W/"fake-{next(_etags)}"'


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _untoken(token: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidContinuationError("continuation is not a token this service issued.") from e


def _json_copy(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))


class _PackedCouplings(MutableMapping[tuple[str, str], Coupling]):
    """(mapping, lower bc id) -> coupling, each held pickled as the real store holds it serialised in its row:
    a 100,000-coupling job over the fakes (make bench's memory figure) would otherwise measure the fake's
    Python objects, not the engine. Every read is a fresh copy, as a table read is."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], bytes] = {}

    def __getitem__(self, key: tuple[str, str]) -> Coupling:
        return pickle.loads(self._rows[key])  # noqa: S301 - our own bytes, never input

    def __setitem__(self, key: tuple[str, str], value: Coupling) -> None:
        self._rows[key] = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def __delitem__(self, key: tuple[str, str]) -> None:
        del self._rows[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows


class FakeCouplingStore:
    def __init__(self) -> None:
        self.by_bc = _PackedCouplings()  # (mapping, lower bc id) -> coupling
        self.by_dv: dict[tuple[str, str], str] = {}  # (mapping, lower dv id) -> lower bc id
        self.lock = asyncio.Lock()
        self.archive: dict[tuple[str, str], list[dict[str, Any]]] = {}  # #22: history of uncoupled records

    def _store(self, c: Coupling) -> Coupling:
        stored = dataclasses.replace(
            c,
            coupled_at=_utc(c.coupled_at),
            last_synced_at=_utc(c.last_synced_at),
            bc_modified_on=_utc(c.bc_modified_on),
            dv_modified_on=_utc(c.dv_modified_on),
            bc_values=_json_copy(c.bc_values),
            dv_values=_json_copy(c.dv_values),
            row_etag=_etag(),
        )
        self.by_bc[(c.mapping, c.bc_id.lower())] = stored
        self.by_dv[(c.mapping, c.dataverse_id.lower())] = c.bc_id.lower()
        c.row_etag = stored.row_etag
        return stored

    def _remove(self, c: Coupling) -> None:
        self.by_bc.pop((c.mapping, c.bc_id.lower()), None)
        if self.by_dv.get((c.mapping, c.dataverse_id.lower())) == c.bc_id.lower():
            del self.by_dv[(c.mapping, c.dataverse_id.lower())]

    async def get_by_bc_id(self, mapping: str, bc_id: str) -> Coupling | None:
        c = self.by_bc.get((mapping, bc_id.lower()))
        return c  # a fresh copy: every read of by_bc unpickles one

    async def get_by_dataverse_id(self, mapping: str, dataverse_id: str) -> Coupling | None:
        bc = self.by_dv.get((mapping, dataverse_id.lower()))
        return await self.get_by_bc_id(mapping, bc) if bc else None

    async def get_many_by_bc_ids(self, mapping: str, bc_ids: Sequence[str]) -> dict[str, Coupling]:
        return {i: c for i in bc_ids if (c := await self.get_by_bc_id(mapping, i)) is not None}

    async def get_many_by_dataverse_ids(self, mapping: str, dataverse_ids: Sequence[str]) -> dict[str, Coupling]:
        return {i: c for i in dataverse_ids if (c := await self.get_by_dataverse_id(mapping, i)) is not None}

    async def estimated_count(self, mapping: str) -> float | None:
        return float(sum(1 for k in self.by_bc if k[0] == mapping))

    async def synced_marks(self, mapping: str, side: Side, keys: Sequence[str]) -> dict[str, Any]:
        rows = [c for k, c in self.by_bc.items() if k[0] == mapping]
        if side == Side.BC:
            return {c.bc_id.lower(): c.bc_modified_on for c in rows}
        return {c.dataverse_id.lower(): snapshot_mark(keys, c.dv_values) for c in rows}

    def _blockers(self, c: Coupling) -> list[Coupling]:
        found = [self.by_bc.get((c.mapping, c.bc_id.lower()))]
        bc = self.by_dv.get((c.mapping, c.dataverse_id.lower()))
        if bc is not None and bc != c.bc_id.lower():
            found.append(self.by_bc.get((c.mapping, bc)))
        return [b for b in found if b is not None]

    async def couple(self, coupling: Coupling, *, replace: bool = False) -> list[Coupling]:
        async with self.lock:
            blockers = self._blockers(coupling)
            if blockers and not replace:
                raise AlreadyCoupledError(
                    f"BC record {coupling.bc_id} or Dataverse row {coupling.dataverse_id} is already coupled"
                )
            for b in blockers:
                self._remove(b)
            self._store(coupling)
            removed = blockers
        self._archive_removed(coupling.mapping, removed)  # #22
        return removed

    async def couple_many(self, couplings: Sequence[Coupling]) -> list[Coupling | Exception]:
        out: list[Coupling | Exception] = []
        for c in couplings:
            try:
                await self.couple(c)
                out.append(c)
            except AlreadyCoupledError as e:
                out.append(e)
        return out

    async def save_sync_state(self, couplings: Sequence[Coupling]) -> None:
        for c in couplings:
            old = self.by_bc.get((c.mapping, c.bc_id.lower()))
            if old is None:
                continue  # removed meanwhile: not resurrected
            stored = self._store(dataclasses.replace(c, dataverse_id=old.dataverse_id, coupled_at=old.coupled_at))
            c.row_etag = stored.row_etag

    async def uncouple_many(self, mapping: str, bc_ids: Sequence[str]) -> list[Coupling]:
        removed = []
        for i in dict.fromkeys(bc_ids):
            c = self.by_bc.get((mapping, i.lower()))
            if c is not None:
                self._remove(c)
                removed.append(c)
        self._archive_removed(mapping, removed)
        return removed

    def _archive_removed(self, mapping: str, removed: list[Coupling]) -> None:
        now = datetime.now(UTC)
        for c in removed:
            c.history = [*c.history, history.entry(now, trigger=history.TRIGGER.get(), action="uncoupled")]
            old = self.archive.get((mapping, c.bc_id.lower()), [])
            self.archive[(mapping, c.bc_id.lower())] = [*old, *copy.deepcopy(c.history)]

    async def history(self, mapping: str, bc_id: str) -> list[dict[str, Any]] | None:
        state = self.by_bc.get((mapping, bc_id.lower()))
        old = self.archive.get((mapping, bc_id.lower()))
        if state is None and old is None:
            return None
        merged = {(e["at"], e["action"]): e for e in [*(old or []), *(state.history if state else [])]}
        return copy.deepcopy(sorted(merged.values(), key=lambda e: e["at"]))

    async def purge_history(self, mapping: str, before: datetime) -> int:
        gone = [k for k, v in self.archive.items() if k[0] == mapping and max(e["at"] for e in v) < before.isoformat()]
        for k in gone:
            del self.archive[k]
        return len(gone)

    def _sorted(self, mapping: str) -> list[Coupling]:
        return [self.by_bc[k] for k in sorted(k for k in self.by_bc if k[0] == mapping)]

    async def list_page(
        self, mapping: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[Coupling], str | None]:
        after = _untoken(continuation) if continuation else ""
        rows = [c for c in self._sorted(mapping) if c.bc_id.lower() > after]
        top = max(1, min(top, 1000))
        page = rows[:top]
        return page, (_token(page[-1].bc_id.lower()) if len(rows) > top else None)

    async def iter_all(self, mapping: str) -> AsyncIterator[list[Coupling]]:
        rows = self._sorted(mapping)
        for i in range(0, len(rows), 1000):
            yield rows[i : i + 1000]

    async def delete_all(self, mapping: str) -> int:
        rows = self._sorted(mapping)
        await self.uncouple_many(mapping, [c.bc_id for c in rows])  # #22: their history is kept
        return len(rows)


def _error_key(e: SyncErrorEntry) -> str:
    record = f"bc:{e.bc_id.lower()}" if e.bc_id else f"dv:{(e.dataverse_id or '').lower()}"
    return f"{e.mapping}/{record}|{e.direction}"


class FakeSyncErrorStore:
    def __init__(self) -> None:
        self.rows: dict[str, SyncErrorEntry] = {}

    async def record_many(self, errors: Sequence[SyncErrorEntry]) -> None:
        for e in errors:
            key = _error_key(e)
            old = self.rows.get(key)
            new = dataclasses.replace(e, id=_token(key), closed=False, closed_at=None)
            new.last_occurred_at = _utc(e.last_occurred_at) or _now()
            if old is None or old.closed:
                new.attempts = max(1, e.attempts)
                new.first_occurred_at = _utc(e.first_occurred_at) or new.last_occurred_at
            else:
                new.attempts = old.attempts + 1
                new.first_occurred_at = old.first_occurred_at
            self.rows[key] = new

    async def close_for_records(self, mapping: str, bc_ids: Sequence[str], dv_ids: Sequence[str] = ()) -> int:
        wanted = {i.lower() for i in bc_ids}
        wanted_dv = {i.lower() for i in dv_ids}
        n = 0
        for e in self.rows.values():
            if e.mapping != mapping or e.closed:
                continue
            if (e.bc_id and e.bc_id.lower() in wanted) or (
                not e.bc_id and e.dataverse_id and e.dataverse_id.lower() in wanted_dv
            ):
                e.closed, e.closed_at = True, _now()
                n += 1
        return n

    async def get_many(self, ids: Sequence[str]) -> list[SyncErrorEntry]:
        by_id = {e.id: e for e in self.rows.values()}
        return [copy.deepcopy(by_id[i]) for i in dict.fromkeys(ids) if i in by_id]

    async def list_page(
        self,
        *,
        mapping: str | None = None,
        include_closed: bool = False,
        top: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[SyncErrorEntry], str | None]:
        def order(e: SyncErrorEntry) -> tuple[str, str]:
            return (e.last_occurred_at.isoformat() if e.last_occurred_at else "", e.id)

        rows = [
            e
            for e in self.rows.values()
            if (mapping is None or e.mapping == mapping) and (include_closed or not e.closed)
        ]
        rows.sort(key=order, reverse=True)
        if continuation:
            after = tuple(_untoken(continuation))
            rows = [e for e in rows if order(e) < after]
        page = rows[: max(1, top)]
        token = _token(list(order(page[-1]))) if len(rows) > len(page) else None
        return [copy.deepcopy(e) for e in page], token

    async def purge_older_than(self, before: datetime) -> int:
        old = [k for k, e in self.rows.items() if e.last_occurred_at and e.last_occurred_at < _utc(before)]
        for k in old:
            del self.rows[k]
        return len(old)


_ALLOWED = {
    "queued": {"running", "succeeded", "partial", "failed"},
    "running": {"running", "succeeded", "partial", "failed"},
}
_SETTABLE = {"detail", "expected_batches", "pending_cursors", "direction", "started_at", "finished_at"}


class FakeJobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.batches: set[tuple[str, str]] = set()
        self.plan_items: dict[str, list[dict[str, Any]]] = {}

    async def put_plan_items(self, job_id: str, items: list[dict[str, Any]]) -> None:
        self.plan_items[job_id] = copy.deepcopy(items)

    async def plan_items_page(
        self, job_id: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        offset = int(_untoken(continuation)) if continuation else 0
        items = self.plan_items.get(job_id, [])
        page = items[offset : offset + top]
        return copy.deepcopy(page), (_token(offset + len(page)) if offset + len(page) < len(items) else None)

    async def create(self, job: Job) -> Job:
        if not job.job_id:
            job.job_id = uuid.uuid4().hex
        if job.job_id in self.jobs:
            raise ConflictError(f"job {job.job_id} already exists", status=409)
        job.created_at = _utc(job.created_at) or _now()
        job.counts = dict.fromkeys(COUNT_KEYS, 0) | dict(job.counts)
        job.row_etag = _etag()
        self.jobs[job.job_id] = copy.deepcopy(job)
        return job

    async def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return copy.deepcopy(job) if job else None

    def _job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise JobNotFoundError(f"job {job_id} does not exist")
        return self.jobs[job_id]

    async def add_counts(self, job_id: str, counts: dict[str, int], *, batch_id: str | None = None) -> None:
        job = self._job(job_id)
        if batch_id is not None:
            if (job_id, batch_id) in self.batches:
                return
            self.batches.add((job_id, batch_id))
            job.completed_batches += 1
        for k, v in counts.items():
            job.counts[k] = job.counts.get(k, 0) + int(v)
        job.row_etag = _etag()

    async def set_status(self, job_id: str, status: str, **fields: Any) -> Job:
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a job")
        job = self._job(job_id)
        if status in _ALLOWED.get(job.status, set()):
            now = _now()
            job.status = status
            for k, v in fields.items():
                setattr(job, k, v)
            job.started_at = job.started_at or now
            if status in ("succeeded", "partial", "failed"):
                job.finished_at = job.finished_at or now
            job.row_etag = _etag()
        return copy.deepcopy(job)

    async def list_page(
        self, *, mapping: str | None = None, top: int = 100, continuation: str | None = None
    ) -> tuple[list[Job], str | None]:
        def order(j: Job) -> tuple[str, str]:
            return (j.created_at.isoformat() if j.created_at else "", j.job_id)

        rows = sorted((j for j in self.jobs.values() if mapping is None or j.mapping == mapping), key=order)
        rows.reverse()
        if continuation:
            after = tuple(_untoken(continuation))
            rows = [j for j in rows if order(j) < after]
        page = rows[: max(1, min(top, 1000))]
        token = _token(list(order(page[-1]))) if len(rows) > len(page) else None
        return [copy.deepcopy(j) for j in page], token


class FakeWatermarkStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Watermark] = {}

    async def get(self, mapping: str, side: Side) -> Watermark:
        w = self.rows.get((mapping, Side(side).value))
        return copy.deepcopy(w) if w else Watermark(mapping=mapping, side=Side(side))

    async def put(self, watermark: Watermark) -> Watermark:
        key = (watermark.mapping, Side(watermark.side).value)
        current = self.rows.get(key)
        if (current.row_etag if current else None) != watermark.row_etag:
            raise PreconditionFailedError(f"watermark {key} changed meanwhile", status=412)
        stored = Watermark(watermark.mapping, Side(watermark.side), watermark.cursor, _now(), _etag())
        self.rows[key] = stored
        return copy.deepcopy(stored)


class FakeMappingSettingsStore:
    def __init__(self) -> None:
        self.rows: dict[str, MappingSettings] = {}

    async def get_all(self) -> dict[str, MappingSettings]:
        return copy.deepcopy(self.rows)

    async def put(self, settings: MappingSettings) -> MappingSettings:
        current = self.rows.get(settings.mapping)
        if settings.row_etag is not None and (current is None or current.row_etag != settings.row_etag):
            raise PreconditionFailedError(f"settings of {settings.mapping} changed meanwhile", status=412)
        stored = dataclasses.replace(settings, row_etag=_etag())
        self.rows[settings.mapping] = stored
        return copy.deepcopy(stored)


class FakeMappingDocumentStore:
    """``shared.services.registry.MappingDocumentStore`` in memory (versions kept, optimistic writes)."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        self.history: list[Any] = []

    async def get_all(self) -> dict[str, Any]:
        return {k: v.copy() for k, v in self.rows.items()}

    async def get(self, name: str) -> Any:
        doc = self.rows.get(name)
        return doc.copy() if doc else None

    async def put(self, doc: Any) -> Any:
        current = self.rows.get(doc.name)
        if (current is None) != (doc.row_etag is None) or (current and current.row_etag != doc.row_etag):
            raise PreconditionFailedError(f"the mapping {doc.name} was changed meanwhile", status=412)
        stored = doc.copy()
        stored.version = doc.version + 1
        stored.row_etag = _etag()
        self.rows[doc.name] = stored
        self.history.append(stored.copy())
        return stored.copy()

    async def delete(self, name: str, row_etag: str | None) -> None:
        current = self.rows.get(name)
        if current is not None and row_etag is not None and current.row_etag != row_etag:
            raise PreconditionFailedError(f"the mapping {name} was changed meanwhile", status=412)
        self.rows.pop(name, None)


@dataclasses.dataclass(slots=True)
class FakeOpCounter:
    count: int = 0


@dataclasses.dataclass(slots=True)
class FakeStores:
    """Same shape as ``shared.stores.Stores``."""

    couplings: FakeCouplingStore = dataclasses.field(default_factory=FakeCouplingStore)
    errors: FakeSyncErrorStore = dataclasses.field(default_factory=FakeSyncErrorStore)
    jobs: FakeJobStore = dataclasses.field(default_factory=FakeJobStore)
    watermarks: FakeWatermarkStore = dataclasses.field(default_factory=FakeWatermarkStore)
    settings: FakeMappingSettingsStore = dataclasses.field(default_factory=FakeMappingSettingsStore)
    documents: FakeMappingDocumentStore = dataclasses.field(default_factory=FakeMappingDocumentStore)
    op_counter: FakeOpCounter = dataclasses.field(default_factory=FakeOpCounter)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None


# =============================================================================== end of stores fakes
