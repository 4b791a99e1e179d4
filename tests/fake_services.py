"""In-memory fakes of the connector and messaging ports (RecordService, MessagePublisher) for engine tests."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.model import ChangePage, RemoteRecord, WriteOp, WriteResult
from shared.errors import NotFoundError, PermanentError, PreconditionFailedError, SyncError

_clock = itertools.count(1)
_BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _tick() -> datetime:
    return _BASE + timedelta(milliseconds=next(_clock))


class FakeRecordService:
    """One side (BC or Dataverse): entity -> id -> fields, with ETags, modified-on and a change log.

    Supports the ``in`` filters the engine builds (``field in ('a','b')``); ``fail_writes`` makes the
    next writes of the given ids fail with the given error."""

    def __init__(
        self, name: str, *, primary_keys: dict[str, str] | None = None, numbering: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.numbering = numbering or {}  # entity -> number prefix the service assigns on create (like BC)
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.meta: dict[str, dict[str, tuple[str, datetime]]] = {}
        self.deleted: dict[str, list[tuple[int, str]]] = {}
        self.version = 0
        self.primary_keys = primary_keys or {}
        self.calls: dict[str, int] = {"read": 0, "write": 0}
        self.writes: list[tuple[str, WriteOp]] = []
        self.fail_writes: dict[str, SyncError] = {}
        self.fail_writes_once: dict[str, SyncError] = {}
        self.options: dict[tuple[str, str], dict[int, str]] = {}

    # -------------------------------------------------------------- option sets (Dataverse metadata API)
    async def get_options(self, logical_name: str, attribute: str) -> dict[int, str]:
        self.calls["read"] += 1
        return dict(self.options.get((logical_name, attribute), {}))

    async def insert_option(self, logical_name: str, attribute: str, label: str) -> int:
        self.calls["write"] += 1
        options = self.options.setdefault((logical_name, attribute), {})
        value = max([99_999_999, *options]) + 1
        options[value] = label
        return value

    # -------------------------------------------------------------- test helpers
    def put(self, entity: str, fields: dict[str, Any], record_id: str | None = None) -> str:
        rid = (record_id or str(uuid.uuid4())).lower()
        self.rows.setdefault(entity, {})[rid] = dict(fields)
        self._touch(entity, rid)
        return rid

    def update(self, entity: str, rid: str, **fields: Any) -> None:
        self.rows[entity][rid].update(fields)
        self._touch(entity, rid)

    def remove(self, entity: str, rid: str) -> None:
        del self.rows[entity][rid]
        del self.meta[entity][rid]
        self.version += 1
        self.deleted.setdefault(entity, []).append((self.version, rid))

    def get(self, entity: str, rid: str) -> dict[str, Any] | None:
        return self.rows.get(entity, {}).get(rid)

    def _touch(self, entity: str, rid: str) -> None:
        self.version += 1
        self.meta.setdefault(entity, {})[rid] = (f'W/"{self.version}"', _tick())

    def _record(self, entity: str, rid: str) -> RemoteRecord:
        etag, modified = self.meta[entity][rid]
        pk = self.primary_keys.get(entity, "id")
        return RemoteRecord(id=rid, fields={pk: rid, **self.rows[entity][rid]}, etag=etag, modified_on=modified)

    # -------------------------------------------------------------- RecordService
    async def list_records(
        self, entity: str, *, select: Sequence[str] | None = None, filter: str | None = None
    ) -> AsyncIterator[list[RemoteRecord]]:
        self.calls["read"] += 1
        records = [self._record(entity, rid) for rid in self.rows.get(entity, {})]
        m = re.fullmatch(r"(\w+) in \((.*)\)", filter) if filter else None
        if m:
            raw = [v.strip() for v in m.group(2).split(",")]
            # quoted strings, or bare GUIDs as BC's ``in`` over ids takes them
            values = {v[1:-1].replace("''", "'") if v.startswith("'") else v for v in raw}
            records = [r for r in records if str(r.fields.get(m.group(1))) in values]
        elif filter:
            from local.odata import parse_filter  # any other filter: the simulators' own $filter evaluator

            pred = parse_filter(filter, case_insensitive=True, dialect="dataverse" if self.name == "dv" else "bc")
            records = [r for r in records if pred({"statecode": 0, **r.fields})]
        yield records

    async def iter_changes(
        self, entity: str, cursor: str | None, *, select: Sequence[str] | None = None
    ) -> AsyncIterator[ChangePage]:
        self.calls["read"] += 1
        since = int(cursor) if cursor else 0
        changed = [rid for rid, (etag, _) in self.meta.get(entity, {}).items() if int(etag[3:-1]) > since]
        deleted = [rid for v, rid in self.deleted.get(entity, []) if v > since] if cursor else []
        yield ChangePage(
            records=[self._record(entity, rid) for rid in changed],
            deleted_ids=deleted,
            next_cursor=str(self.version),
            is_last=True,
        )

    async def get_many(
        self, entity: str, ids: Sequence[str], *, select: Sequence[str] | None = None
    ) -> dict[str, RemoteRecord]:
        self.calls["read"] += 1
        rows = self.rows.get(entity, {})
        return {i.lower(): self._record(entity, i.lower()) for i in ids if i.lower() in rows}

    async def write_many(self, entity: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        self.calls["write"] += 1
        out = []
        for op in ops:
            self.writes.append((entity, op))
            key = (op.id or op.ref).lower()
            if key in self.fail_writes or key in self.fail_writes_once:
                error = self.fail_writes.get(key) or self.fail_writes_once.pop(key)
                out.append(WriteResult(op.ref, False, error=error))
                continue
            rows = self.rows.setdefault(entity, {})
            if op.kind == "create":
                number = op.fields.get("number")
                if entity in self.numbering and number and any(r.get("number") == number for r in rows.values()):
                    out.append(WriteResult(op.ref, False, error=PermanentError("duplicate No.", status=400)))
                    continue
                rid = (op.id or str(uuid.uuid4())).lower()
                if rid in rows:  # a fixed key already taken: the real connector answers with the existing row
                    out.append(WriteResult(op.ref, True, self._record(entity, rid), existed=True))
                    continue
                fields = {k: v for k, v in op.fields.items() if k != self.primary_keys.get(entity)}
                rows[rid] = _apply_binds(fields)
                if entity in self.numbering and not rows[rid].get("number"):
                    rows[rid]["number"] = f"{self.numbering[entity]}{self.version:05d}"
                self._touch(entity, rid)
                out.append(WriteResult(op.ref, True, self._record(entity, rid)))
            elif op.kind == "update":
                rid = (op.id or "").lower()
                if rid not in rows:
                    out.append(WriteResult(op.ref, False, error=NotFoundError("gone", status=404)))
                    continue
                if op.etag and op.etag != "*" and op.etag != self.meta[entity][rid][0]:
                    out.append(WriteResult(op.ref, False, error=PreconditionFailedError("stale", status=412)))
                    continue
                rows[rid].update(_apply_binds(op.fields))
                self._touch(entity, rid)
                out.append(WriteResult(op.ref, True, self._record(entity, rid)))
            else:
                rid = (op.id or "").lower()
                if rid in rows:
                    self.remove(entity, rid)
                out.append(WriteResult(op.ref, True))
        return out


def _apply_binds(fields: dict[str, Any]) -> dict[str, Any]:
    """``parentcustomerid_account@odata.bind: /accounts(x)`` is read back as ``_parentcustomerid_value``."""
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if k.endswith("@odata.bind"):
            attr = k.split("@")[0].rsplit("_", 1)[0]
            out[f"_{attr}_value"] = v[v.index("(") + 1 : -1] if v else None
        else:
            out[k] = v
    return out


class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.sends = 0

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        self.sends += 1
        self.messages.extend(messages)

    def take(self) -> list[dict[str, Any]]:
        out, self.messages = self.messages, []
        return out

    async def aclose(self) -> None:
        return None


DV_PRIMARY_KEYS = {"accounts": "accountid", "contacts": "contactid", "products": "productid"}


def fake_engine(**settings: Any) -> Any:
    """An ``Engine`` with the shipped mappings over in-memory fakes of every port (``settings`` by env name)."""
    from shared.config import Settings
    from shared.mappings.config import load_mapping_file
    from shared.services.engine import Engine
    from shared.services.registry import MappingRegistry
    from tests.fakes import FakeStores

    s = Settings(**settings)
    stores = FakeStores()
    return Engine(
        settings=s,
        registry=MappingRegistry(load_mapping_file(s.mappings_file), stores.documents, legacy_settings=stores.settings),
        bc=FakeRecordService("bc"),
        dv=FakeRecordService("dv", primary_keys=DV_PRIMARY_KEYS),
        couplings=stores.couplings,
        errors=stores.errors,
        jobs=stores.jobs,
        watermarks=stores.watermarks,
        publisher=FakePublisher(),
    )
