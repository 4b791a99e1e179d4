"""Sync errors in Table Storage. Partition = mapping; one row per (record, direction), RowKey
``<bc:|dv:><id>|<direction>``, so recording the same failure again updates the row. The API's error id is the
base64url of ``PartitionKey/RowKey`` (``/`` never occurs in an escaped key)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.errors import InvalidContinuationError
from shared.domain.model import SyncErrorEntry
from shared.stores.tables import (
    Entity,
    Op,
    TableProvider,
    decode_token,
    dt_literal,
    encode_token,
    escape_key,
    etag_of,
    lookup_rows,
    norm_id,
    query_all,
    quote,
    submit_tolerant,
    to_utc,
    unescape_key,
    utcnow,
)

RECORD_ATTEMPTS = 5


def error_row_key(entry: SyncErrorEntry) -> str:
    record = f"bc:{norm_id(entry.bc_id)}" if entry.bc_id else f"dv:{norm_id(entry.dataverse_id or '')}"
    return f"{record}|{escape_key(entry.direction)}"


def encode_error_id(pk: str, rk: str) -> str:
    return base64.urlsafe_b64encode(f"{pk}/{rk}".encode()).decode().rstrip("=")


def decode_error_id(error_id: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(error_id + "=" * (-len(error_id) % 4)).decode()
    except ValueError:
        return None
    pk, sep, rk = raw.partition("/")
    return (pk, rk) if sep and pk and rk else None


def to_entity(e: SyncErrorEntry, pk: str, rk: str) -> Entity:
    return {
        "PartitionKey": pk,
        "RowKey": rk,
        "Direction": e.direction,
        "Code": e.code,
        "Message": e.message,
        "Transient": bool(e.transient),
        "BcId": e.bc_id or "",
        "DataverseId": e.dataverse_id or "",
        "Attempts": int(e.attempts),
        "FirstOccurredAt": to_utc(e.first_occurred_at),
        "LastOccurredAt": to_utc(e.last_occurred_at),
        "JobId": e.job_id or "",
        "Closed": bool(e.closed),
        "ClosedAt": to_utc(e.closed_at) if e.closed_at else to_utc(datetime(1601, 1, 1)),
    }


def from_entity(row: Entity) -> SyncErrorEntry:
    closed = bool(row.get("Closed", False))
    return SyncErrorEntry(
        id=encode_error_id(row["PartitionKey"], row["RowKey"]),
        mapping=unescape_key(row["PartitionKey"]),
        direction=row["Direction"],
        code=row["Code"],
        message=row["Message"],
        transient=bool(row["Transient"]),
        bc_id=row.get("BcId") or None,
        dataverse_id=row.get("DataverseId") or None,
        attempts=int(row.get("Attempts") or 1),
        first_occurred_at=to_utc(row.get("FirstOccurredAt")),
        last_occurred_at=to_utc(row.get("LastOccurredAt")),
        job_id=row.get("JobId") or None,
        closed=closed,
        closed_at=to_utc(row.get("ClosedAt")) if closed else None,
    )


def _newest_first(e: SyncErrorEntry) -> tuple[str, str]:
    at = e.last_occurred_at.isoformat() if e.last_occurred_at else ""
    return (at, e.id)


class TableSyncErrorStore:
    """``shared.ports.SyncErrorStore`` on Table Storage.

    Newest-first listing sorts the (bounded) set of matching rows in memory and pages with a keyset cursor
    (last occurrence, id); see docs/storage.md for why no inverted-time index rows."""

    def __init__(self, tables: TableProvider, table_name: str) -> None:
        self._tables = tables
        self._name = table_name

    async def _table(self) -> TableClient:
        return await self._tables.get(self._name)

    async def record_many(self, errors: Sequence[SyncErrorEntry]) -> None:
        table = await self._table()
        by_pk: dict[str, dict[str, SyncErrorEntry]] = {}
        for e in errors:
            by_pk.setdefault(escape_key(e.mapping), {})[error_row_key(e)] = e  # last one per key wins
        await asyncio.gather(*(self._record_partition(table, pk, items) for pk, items in by_pk.items()))

    async def _record_partition(self, table: TableClient, pk: str, items: dict[str, SyncErrorEntry]) -> None:
        """Read the existing rows, then create-or-replace with If-Match; rows that changed meanwhile (another
        worker recorded the same error) are read and merged again."""
        todo = dict(items)
        for _ in range(RECORD_ATTEMPTS):
            existing = await lookup_rows(table, pk, todo.keys())
            keys = list(todo)
            ops: list[Op] = []
            for rk in keys:
                ops.append(self._upsert_op(pk, rk, todo[rk], existing.get(rk)))
            retry: dict[str, SyncErrorEntry] = {}

            def drop(
                i: int, kind: str, keys: list[str] = keys, retry: dict[str, SyncErrorEntry] = retry, todo=todo
            ) -> list[int]:
                if kind in ("exists", "modified", "missing"):
                    retry[keys[i]] = todo[keys[i]]
                    return [i]
                return []

            await submit_tolerant(table, ops, drop=drop)
            if not retry:
                return
            todo = retry
            await asyncio.sleep(0.02)
        raise RuntimeError("sync error rows kept changing concurrently")  # pragma: no cover

    @staticmethod
    def _upsert_op(pk: str, rk: str, e: SyncErrorEntry, old: Entity | None) -> Op:
        now = utcnow()
        last = to_utc(e.last_occurred_at) or now
        entry = dataclasses.replace(e)
        entry.last_occurred_at = last
        entry.closed, entry.closed_at = False, None
        if old is None or old.get("Closed"):
            # New, or it re-occurs after the record synced fine: a fresh error.
            entry.attempts = max(1, e.attempts)
            entry.first_occurred_at = to_utc(e.first_occurred_at) or last
            entity = to_entity(entry, pk, rk)
            if old is None:
                return ("create", entity)
        else:
            entry.attempts = int(old.get("Attempts") or 1) + 1
            entry.first_occurred_at = to_utc(old.get("FirstOccurredAt")) or last
            entity = to_entity(entry, pk, rk)
        kw: dict[str, Any] = {"mode": UpdateMode.REPLACE, "etag": etag_of(old), "match_condition": _IF_MATCH}
        return ("update", entity, kw)

    async def close_for_records(self, mapping: str, bc_ids: Sequence[str], dv_ids: Sequence[str] = ()) -> int:
        """Closes the open errors of these BC records (any direction), and of these Dataverse rows among the
        errors that name no BC record (a failed create from Dataverse): one scan of the mapping's open errors
        (few, compared to the records synced) instead of one lookup per record."""
        if not bc_ids and not dv_ids:
            return 0
        table = await self._table()
        pk = escape_key(mapping)
        wanted: set[str] | None = None  # normalised once there is an open error to compare (usually none)
        wanted_dv: set[str] = set()
        now = to_utc(utcnow())
        ops: list[Op] = []
        async for page in query_all(
            table,
            f"PartitionKey eq {quote(pk)} and Closed eq false",
            select=["PartitionKey", "RowKey", "BcId", "DataverseId"],
        ):
            if page and wanted is None:
                wanted, wanted_dv = {norm_id(i) for i in bc_ids}, {norm_id(i) for i in dv_ids}
            for row in page:
                assert wanted is not None
                bc, dv = row.get("BcId"), row.get("DataverseId")
                if (bc and norm_id(bc) in wanted) or (not bc and dv and norm_id(dv) in wanted_dv):
                    entity = {"PartitionKey": pk, "RowKey": row["RowKey"], "Closed": True, "ClosedAt": now}
                    ops.append(("update", entity, {"mode": UpdateMode.MERGE}))
        out = await submit_tolerant(table, ops, drop=lambda i, kind: [i] if kind == "missing" else [])
        return sum(1 for r in out if r is not None)

    async def get_many(self, ids: Sequence[str]) -> list[SyncErrorEntry]:
        table = await self._table()
        keys = [k for k in (decode_error_id(i) for i in ids) if k is not None]
        by_pk: dict[str, list[str]] = {}
        for pk, rk in keys:
            by_pk.setdefault(pk, []).append(rk)
        found: dict[tuple[str, str], Entity] = {}
        for pk, rows in zip(
            by_pk, await asyncio.gather(*(lookup_rows(table, pk, rks) for pk, rks in by_pk.items())), strict=True
        ):
            for rk, row in rows.items():
                found[(pk, rk)] = row
        out: list[SyncErrorEntry] = []
        for key in dict.fromkeys(keys):
            if key in found:
                out.append(from_entity(found[key]))
        return out

    async def list_page(
        self,
        *,
        mapping: str | None = None,
        include_closed: bool = False,
        top: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[SyncErrorEntry], str | None]:
        table = await self._table()
        clauses = []
        if mapping is not None:
            clauses.append(f"PartitionKey eq {quote(escape_key(mapping))}")
        if not include_closed:
            clauses.append("Closed eq false")
        query = " and ".join(clauses)
        entries: list[SyncErrorEntry] = []
        async for page in query_all(table, query):
            entries += [from_entity(r) for r in page]
        entries.sort(key=_newest_first, reverse=True)
        if continuation:
            token = decode_token(continuation)
            if not (isinstance(token, list) and len(token) == 2 and all(isinstance(t, str) for t in token)):
                raise InvalidContinuationError("continuation is not a token this service issued.")
            after = tuple(token)
            entries = [e for e in entries if _newest_first(e) < after]
        top = max(1, top)
        page_items = entries[:top]
        token = encode_token(list(_newest_first(page_items[-1]))) if len(entries) > top else None
        return page_items, token

    async def purge_older_than(self, before: datetime) -> int:
        """Deletes every error (open or closed) last seen before ``before``."""
        table = await self._table()
        by_pk: dict[str, list[Op]] = {}
        async for page in query_all(
            table, f"LastOccurredAt lt {dt_literal(before)}", select=["PartitionKey", "RowKey"]
        ):
            for row in page:
                by_pk.setdefault(row["PartitionKey"], []).append(("delete", dict(row), {}))
        count = 0
        for ops in by_pk.values():
            out = await submit_tolerant(table, ops, drop=lambda i, kind: [i] if kind == "missing" else [])
            count += sum(1 for r in out if r is not None)
        return count


_IF_MATCH = MatchConditions.IfNotModified
