"""Couplings in Table Storage. Partition = mapping; per coupling a state row ``bc:<bcId>`` (the whole
coupling) and an index row ``dv:<dataverseId>`` (-> bcId), always written and deleted together in one
transaction. See docs/storage.md."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.errors import AlreadyCoupledError
from shared.domain.model import Coupling
from shared.errors import ConflictError
from shared.planning import history
from shared.stores.tables import (
    MAX_PAGE,
    Entity,
    Op,
    TableProvider,
    TableTransactionError,
    entity_of,
    escape_key,
    etag_of,
    failure_kind,
    lookup_rows,
    norm_id,
    point_rows,
    prefix_range,
    query_all,
    query_page,
    quote,
    raw_pages,
    submit,
    submit_tolerant,
    to_utc,
    transaction_failure,
)

STATE = "bc:"
INDEX = "dv:"
ARCHIVE = "h:"  # #22: the history of an uncoupled record (the state row held it while coupled)
PART_CHARS = 30_000  # a string property holds ≤64 KiB (UTF-16): larger snapshots span several properties
# A point read costs ~0.5 ms of client CPU (the azure-core pipeline) and 1 entity; a scanned row ~5 µs and 1
# entity of the partition's 2,000/s. So: a range scan when ≥ 1 in DENSE_SHARE rows of the keys' range is
# wanted, else point reads — never a scan of a whole partition for a few ids (docs/storage.md, "Lookups").
DENSE_SHARE = 16
MIN_SCAN_KEYS = 32  # below this, point reads whatever the density
MIN_MEASURED_SPAN = 0.01  # a scan over less of the key space does not set the density estimate
_HEX = 12  # leading hex digits of a GUID key that place it in the key space
REPLACE_ATTEMPTS = 4
_IF_MATCH = MatchConditions.IfNotModified


def _position(prefix: str, key: str) -> float | None:
    """Where a key lies in its kind's key space, in [0, 1): GUID ids are uniform there. None for other ids."""
    digits = key[len(prefix) : len(prefix) + _HEX].replace("-", "")
    try:
        return int(digits.ljust(_HEX, "0")[:_HEX], 16) / 16**_HEX if digits else None
    except ValueError:
        return None


def _span(prefix: str, low: str, high: str) -> float | None:
    a, b = _position(prefix, low), _position(prefix, high)
    return None if a is None or b is None else max(b - a, 1 / 16**_HEX)


def state_rk(bc_id: str) -> str:
    return STATE + norm_id(bc_id)


def index_rk(dataverse_id: str) -> str:
    return INDEX + norm_id(dataverse_id)


def _iso(value: datetime | None) -> str | None:
    value = to_utc(value)
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return to_utc(datetime.fromisoformat(value)) if value else None


def _split(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(values, separators=(",", ":"), default=str)
    parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or ["{}"]
    out: dict[str, Any] = {f"{prefix}Values": parts[0], f"{prefix}Parts": len(parts)}
    for n, part in enumerate(parts[1:], start=1):
        out[f"{prefix}Values{n}"] = part
    return out


def _join(prefix: str, row: Entity, empty: str = "{}") -> Any:
    count = int(row.get(f"{prefix}Parts") or 1)
    text = (row.get(f"{prefix}Values") or empty) + "".join(row.get(f"{prefix}Values{n}", "") for n in range(1, count))
    return json.loads(text)


def archive_rk(bc_id: str) -> str:
    return ARCHIVE + norm_id(bc_id)


_ARCHIVED = re.compile(r"^(H\d+)Parts$")


def history_of(row: Entity | None) -> list[dict[str, Any]]:
    """The history entries a state row (``Hist*``) or an archive row (``H<coupled-at>*``, one group of
    properties per former coupling of the record) holds (#22), oldest first."""
    if row is None:
        return []
    groups = ["Hist"] + [m.group(1) for k in row if (m := _ARCHIVED.match(k))]
    entries = [e for g in groups for e in (_join(g, row, "[]") if f"{g}Values" in row else [])]
    return sorted(entries, key=lambda e: e.get("at", ""))


def to_archive_entity(c: Coupling) -> Entity:
    """Merged into the archive row without reading it: each coupling's entries get their own properties."""
    last = max((e.get("at", "") for e in c.history), default="")
    group = f"H{int(to_utc(c.coupled_at).timestamp() * 1000)}"  # type: ignore[union-attr]
    return {"PartitionKey": escape_key(c.mapping), "RowKey": archive_rk(c.bc_id), "BcId": c.bc_id, "LastAt": last} | (
        _split(group, c.history)  # type: ignore[arg-type]
    )


def sync_properties(c: Coupling) -> dict[str, Any]:
    """The bookkeeping a sync rewrites. Every value is non-null (a merge skips null properties, which would
    keep stale values), so the optional fields travel as one JSON document."""
    sync = {
        "lastSyncedAt": _iso(c.last_synced_at),
        "lastSyncDirection": c.last_sync_direction,
        "lastSyncResult": c.last_sync_result,
        "lastError": c.last_error,
        "consecutiveFailures": c.consecutive_failures,
        "bcEtag": c.bc_etag,
        "dvEtag": c.dv_etag,
        "bcModifiedOn": _iso(c.bc_modified_on),
        "dvModifiedOn": _iso(c.dv_modified_on),
    }
    return {"Sync": json.dumps(sync, separators=(",", ":")), "Skipped": bool(c.skipped)} | (
        _split("Bc", c.bc_values) | _split("Dv", c.dv_values) | _split("Hist", c.history)  # type: ignore[arg-type]
    )


def to_state_entity(c: Coupling) -> Entity:
    return {
        "PartitionKey": escape_key(c.mapping),
        "RowKey": state_rk(c.bc_id),
        "BcId": c.bc_id,
        "DataverseId": c.dataverse_id,
        "CoupledAt": to_utc(c.coupled_at),
    } | sync_properties(c)


def to_index_entity(c: Coupling) -> Entity:
    return {"PartitionKey": escape_key(c.mapping), "RowKey": index_rk(c.dataverse_id), "BcId": c.bc_id}


def from_state_entity(mapping: str, row: Entity) -> Coupling:
    sync = json.loads(row.get("Sync") or "{}")
    return Coupling(
        mapping=mapping,
        bc_id=row["BcId"],
        dataverse_id=row["DataverseId"],
        coupled_at=to_utc(row["CoupledAt"]),  # type: ignore[arg-type]
        last_synced_at=_dt(sync.get("lastSyncedAt")),
        last_sync_direction=sync.get("lastSyncDirection"),
        last_sync_result=sync.get("lastSyncResult"),
        last_error=sync.get("lastError"),
        skipped=bool(row.get("Skipped", False)),
        consecutive_failures=int(sync.get("consecutiveFailures") or 0),
        bc_values=_join("Bc", row),
        dv_values=_join("Dv", row),
        bc_etag=sync.get("bcEtag"),
        dv_etag=sync.get("dvEtag"),
        bc_modified_on=_dt(sync.get("bcModifiedOn")),
        dv_modified_on=_dt(sync.get("dvModifiedOn")),
        row_etag=etag_of(row),
        history=history_of(row),
    )


class TableCouplingStore:
    """``shared.ports.CouplingStore`` on Table Storage."""

    def __init__(self, tables: TableProvider, table_name: str) -> None:
        self._tables = tables
        self._name = table_name
        self._density: dict[tuple[str, str], float] = {}  # (partition, row kind) -> rows per unit key space

    async def _table(self) -> TableClient:
        return await self._tables.get(self._name)

    # ------------------------------------------------------------------ reads
    async def get_by_bc_id(self, mapping: str, bc_id: str) -> Coupling | None:
        found = await self.get_many_by_bc_ids(mapping, [bc_id])
        return next(iter(found.values()), None)

    async def get_by_dataverse_id(self, mapping: str, dataverse_id: str) -> Coupling | None:
        found = await self.get_many_by_dataverse_ids(mapping, [dataverse_id])
        return next(iter(found.values()), None)

    async def get_many_by_bc_ids(self, mapping: str, bc_ids: Sequence[str]) -> dict[str, Coupling]:
        wanted = {state_rk(i): i for i in bc_ids}
        rows = await self._rows(mapping, STATE, wanted.keys())
        return {wanted[rk]: from_state_entity(mapping, row) for rk, row in rows.items()}

    async def get_many_by_dataverse_ids(self, mapping: str, dataverse_ids: Sequence[str]) -> dict[str, Coupling]:
        wanted = {index_rk(i): i for i in dataverse_ids}
        index = await self._rows(mapping, INDEX, wanted.keys())
        bc_of = {wanted[rk]: row["BcId"] for rk, row in index.items()}
        couplings = await self.get_many_by_bc_ids(mapping, list(set(bc_of.values())))
        out: dict[str, Coupling] = {}
        for dv_id, bc_id in bc_of.items():
            c = couplings.get(bc_id)
            if c is not None and norm_id(c.dataverse_id) == norm_id(dv_id):  # skip a stale index row
                out[dv_id] = c
        return out

    async def _rows(self, mapping: str, prefix: str, row_keys: Sequence[str] | Any) -> dict[str, Entity]:
        """Rows by key, touching only what the lookup needs: concurrent point reads, unless the keys are dense
        in their key range (at least 1 in ``DENSE_SHARE`` of the rows between the smallest and the largest
        key is wanted, e.g. a full sync's page), where a range scan reads ~1 request per 1,000 rows instead
        of one per key. Ids are GUIDs (uniform in the key space), so the share is estimated from the
        partition's measured density; a scan that turns out sparser than estimated stops and point-reads
        the keys it has not reached (docs/storage.md, "Lookups")."""
        keys = sorted(set(row_keys))
        if not keys:
            return {}
        table = await self._table()
        pk = escape_key(mapping)
        span = _span(prefix, keys[0], keys[-1])
        density = self._density.get((pk, prefix))  # rows of this kind per unit of key space
        if (
            len(keys) < MIN_SCAN_KEYS
            or span is None
            or (density is not None and density * span > DENSE_SHARE * len(keys))
        ):
            return await point_rows(table, pk, keys)
        query = (
            f"PartitionKey eq {quote(pk)} and RowKey ge {quote(keys[0])} and RowKey le {quote(keys[-1])}"
            f" and {prefix_range(prefix)}"
        )
        wanted = set(keys)
        found: dict[str, Entity] = {}
        read, last = 0, keys[0]
        async for page in raw_pages(table, query):
            read += len(page)
            for raw in page:
                if raw["RowKey"] in wanted:
                    found[raw["RowKey"]] = entity_of(raw)  # only the rows kept are decoded
            last = page[-1]["RowKey"]
            covered = _span(prefix, keys[0], last) or 0.0
            if covered >= span:
                continue
            left = [k for k in keys if k > last]
            projected = read / covered * (span - covered) if covered > 0 else math.inf
            if left and projected > DENSE_SHARE * len(left) + MAX_PAGE:  # sparser than it looked: stop
                if covered > 0:
                    self._density[(pk, prefix)] = read / covered
                found |= await point_rows(table, pk, left)
                return found
        if span > MIN_MEASURED_SPAN:
            self._density[(pk, prefix)] = read / span
        return found

    async def list_page(
        self, mapping: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[Coupling], str | None]:
        table = await self._table()
        query = f"PartitionKey eq {quote(escape_key(mapping))} and {prefix_range(STATE)}"
        rows, token = await query_page(table, query, top=top, continuation=continuation)
        return [from_state_entity(mapping, r) for r in rows], token

    async def iter_all(self, mapping: str) -> AsyncIterator[list[Coupling]]:
        table = await self._table()
        pk = escape_key(mapping)
        seen = 0
        async for page in query_all(table, f"PartitionKey eq {quote(pk)} and {prefix_range(STATE)}"):
            seen += len(page)
            yield [from_state_entity(mapping, r) for r in page]
        self._density[(pk, STATE)] = self._density[(pk, INDEX)] = float(seen)  # one index row per state row

    # ------------------------------------------------------------------ couple
    async def couple(self, coupling: Coupling, *, replace: bool = False) -> list[Coupling]:
        table = await self._table()
        if not replace:
            ops: list[Op] = [("create", to_state_entity(coupling)), ("create", to_index_entity(coupling))]
            try:
                out = await submit(table, ops)
            except TableTransactionError as e:
                if failure_kind(e) == "exists":
                    raise await self._already_coupled(coupling) from e
                raise transaction_failure(e) from e
            coupling.row_etag = out[0].get("etag")
            return []
        for _ in range(REPLACE_ATTEMPTS):
            try:
                removed = await self._replace(table, coupling)
                await self._archive(table, coupling.mapping, removed)  # #22: replaced couplings keep their history
                return removed
            except TableTransactionError as e:
                if failure_kind(e) not in ("exists", "modified", "missing"):
                    raise transaction_failure(e) from e
                await asyncio.sleep(0.05)  # someone changed these rows meanwhile: read again
        raise ConflictError(f"coupling {coupling.bc_id} kept changing concurrently", service="tables")

    async def _replace(self, table: TableClient, c: Coupling) -> list[Coupling]:
        """One transaction that turns whatever couples either side into the new coupling. Rows that stay are
        replaced (If-Match), rows that go are deleted (If-Match), so a concurrent change fails the whole
        transaction and we start over."""
        pk = escape_key(c.mapping)
        new_state, new_index = to_state_entity(c), to_index_entity(c)
        rows = await lookup_rows(table, pk, [new_state["RowKey"], new_index["RowKey"]])
        old_b = rows.get(new_state["RowKey"])  # the BC record's current coupling
        idx_d = rows.get(new_index["RowKey"])  # the Dataverse row's current index row
        old_z = None  # the coupling that holds the Dataverse row, when it is another BC record
        extra_keys = []
        if idx_d is not None and norm_id(idx_d["BcId"]) != norm_id(c.bc_id):
            extra_keys.append(state_rk(idx_d["BcId"]))
        if old_b is not None and norm_id(old_b["DataverseId"]) != norm_id(c.dataverse_id):
            extra_keys.append(index_rk(old_b["DataverseId"]))
        extra = await lookup_rows(table, pk, extra_keys)
        if idx_d is not None and extra_keys and extra_keys[0].startswith(STATE):
            old_z = extra.get(extra_keys[0])

        ops: list[Op] = []
        if old_b is None:
            ops.append(("create", new_state))
        else:
            ops.append(
                (
                    "update",
                    new_state,
                    {"mode": UpdateMode.REPLACE, "etag": etag_of(old_b), "match_condition": _IF_MATCH},
                )
            )
            old_index = extra.get(index_rk(old_b["DataverseId"]))
            if old_index is not None:
                ops.append(("delete", old_index, {"etag": etag_of(old_index), "match_condition": _IF_MATCH}))
        if idx_d is None:
            ops.append(("create", new_index))
        else:
            ops.append(
                (
                    "update",
                    new_index,
                    {"mode": UpdateMode.REPLACE, "etag": etag_of(idx_d), "match_condition": _IF_MATCH},
                )
            )
            if old_z is not None:
                ops.append(("delete", old_z, {"etag": etag_of(old_z), "match_condition": _IF_MATCH}))
        out = await submit(table, ops)
        c.row_etag = out[0].get("etag")
        removed = [from_state_entity(c.mapping, r) for r in (old_b, old_z) if r is not None]
        return removed

    async def _already_coupled(self, c: Coupling) -> AlreadyCoupledError:
        by_bc = await self.get_by_bc_id(c.mapping, c.bc_id)
        by_dv = await self.get_by_dataverse_id(c.mapping, c.dataverse_id)
        parts = []
        if by_bc is not None:
            parts.append(f"BC record {c.bc_id} is coupled to Dataverse row {by_bc.dataverse_id}")
        if by_dv is not None:
            parts.append(f"Dataverse row {c.dataverse_id} is coupled to BC record {by_dv.bc_id}")
        detail = "; ".join(parts) or f"BC record {c.bc_id} or Dataverse row {c.dataverse_id} is already coupled"
        return AlreadyCoupledError(
            detail, bcCoupledTo=by_bc and by_bc.dataverse_id, dataverseCoupledTo=by_dv and by_dv.bc_id
        )

    async def couple_many(self, couplings: Sequence[Coupling]) -> list[Coupling | Exception]:
        """Creates in transactions of 50 couplings (100 rows); a coupling whose row exists is dropped from its
        transaction with ``AlreadyCoupledError`` and the rest resubmitted."""
        results: list[Coupling | Exception] = list(couplings)
        by_mapping: dict[str, list[int]] = {}
        seen: set[tuple[str, str]] = set()
        for i, c in enumerate(couplings):
            keys = {(c.mapping, state_rk(c.bc_id)), (c.mapping, index_rk(c.dataverse_id))}
            if keys & seen:  # the same record twice in one call: the first wins
                results[i] = AlreadyCoupledError(
                    f"BC record {c.bc_id} or Dataverse row {c.dataverse_id} is already coupled"
                )
                continue
            seen |= keys
            by_mapping.setdefault(c.mapping, []).append(i)
        table = await self._table()

        async def one_mapping(idx: list[int]) -> None:
            ops: list[Op] = []
            for i in idx:
                ops += [("create", to_state_entity(couplings[i])), ("create", to_index_entity(couplings[i]))]

            def drop(op_index: int, kind: str) -> list[int]:
                if kind != "exists":
                    return []
                i = idx[op_index // 2]
                c = couplings[i]
                results[i] = AlreadyCoupledError(
                    f"BC record {c.bc_id} or Dataverse row {c.dataverse_id} is already coupled"
                )
                first = op_index - op_index % 2
                return [first, first + 1]

            out = await submit_tolerant(table, ops, drop=drop, groups=[[2 * n, 2 * n + 1] for n in range(len(idx))])
            created = 0
            for n, i in enumerate(idx):
                if out[2 * n] is not None:
                    couplings[i].row_etag = out[2 * n].get("etag")  # type: ignore[union-attr]
                    created += 1
            pk = escape_key(couplings[idx[0]].mapping)
            for kind in (STATE, INDEX):  # the partition grew: keep the lookup's density estimate current
                if (pk, kind) in self._density:
                    self._density[(pk, kind)] += created

        await asyncio.gather(*(one_mapping(idx) for idx in by_mapping.values()))
        return results

    # ------------------------------------------------------------------ sync bookkeeping
    async def save_sync_state(self, couplings: Sequence[Coupling]) -> None:
        """Merges the sync properties into the state rows (If-Match ``*``: the row must exist, so a coupling
        removed meanwhile is not resurrected; last writer wins otherwise — see docs/storage.md)."""
        table = await self._table()
        by_mapping: dict[str, list[Coupling]] = {}
        for c in couplings:
            by_mapping.setdefault(c.mapping, []).append(c)

        async def one_mapping(items: list[Coupling]) -> None:
            ops: list[Op] = []
            for c in items:
                entity = {"PartitionKey": escape_key(c.mapping), "RowKey": state_rk(c.bc_id)} | sync_properties(c)
                ops.append(("update", entity, {"mode": UpdateMode.MERGE}))
            out = await submit_tolerant(table, ops, drop=lambda i, kind: [i] if kind == "missing" else [])
            for c, res in zip(items, out, strict=True):
                if res is not None:
                    c.row_etag = res.get("etag")

        await asyncio.gather(*(one_mapping(items) for items in by_mapping.values()))

    # ------------------------------------------------------------------ uncouple
    async def uncouple_many(self, mapping: str, bc_ids: Sequence[str]) -> list[Coupling]:
        """Deletes both rows per coupling (state row If-Match its read ETag, so a coupling that changed
        meanwhile is read again). Missing couplings are skipped."""
        table = await self._table()
        removed: list[Coupling] = []
        todo = list(dict.fromkeys(bc_ids))
        for _ in range(REPLACE_ATTEMPTS):
            found = list((await self.get_many_by_bc_ids(mapping, todo)).values())
            if not found:
                break
            ops: list[Op] = []
            for c in found:
                ops.append(("delete", to_state_entity(c), {"etag": c.row_etag, "match_condition": _IF_MATCH}))
                ops.append(("delete", to_index_entity(c), {}))
            retry: list[str] = []

            def drop(op_index: int, kind: str, found: list[Coupling] = found, retry: list[str] = retry) -> list[int]:
                first = op_index - op_index % 2
                if kind == "modified" or (kind == "missing" and op_index % 2 == 0):
                    retry.append(found[op_index // 2].bc_id)  # changed or gone: read again
                elif kind != "missing":
                    return []
                # The index row alone missing: delete the state row by itself.
                return [first, first + 1] if op_index % 2 == 0 or kind == "modified" else [op_index]

            out = await submit_tolerant(table, ops, drop=drop, groups=[[2 * n, 2 * n + 1] for n in range(len(found))])
            removed += [c for n, c in enumerate(found) if out[2 * n] is not None]
            todo = retry
            if not todo:
                break
        await self._archive(table, mapping, removed)
        return removed

    # ------------------------------------------------------------------ history (#22)
    async def _archive(self, table: TableClient, mapping: str, removed: Sequence[Coupling]) -> None:
        """Keeps the history of uncoupled records, with an ``uncoupled`` entry: one merge-upsert per record,
        100 per transaction, no read (what earlier couplings of the record left stays in its own properties)."""
        if not removed:
            return
        now = datetime.now(UTC)
        ops: list[Op] = []
        for c in removed:
            c.history = [*c.history, history.entry(now, trigger=history.TRIGGER.get(), action="uncoupled")]
            ops.append(("upsert", to_archive_entity(c), {"mode": UpdateMode.MERGE}))
        await submit_tolerant(table, ops, drop=lambda i, kind: [])

    async def history(self, mapping: str, bc_id: str) -> list[dict[str, Any]] | None:
        """Every entry of this record's couplings, oldest first; None when it was never coupled (or its
        history expired). One request: the state and archive rows in one lookup."""
        rows = await lookup_rows(await self._table(), escape_key(mapping), [state_rk(bc_id), archive_rk(bc_id)])
        if not rows:
            return None
        entries = history_of(rows.get(archive_rk(bc_id))) + history_of(rows.get(state_rk(bc_id)))
        return sorted(entries, key=lambda e: e.get("at", ""))

    async def purge_history(self, mapping: str, before: datetime) -> int:
        """Deletes archive rows whose newest entry is older than ``before``: a key-range query over the
        archive rows of one partition (never the couplings), one page per call (a timer tick)."""
        table = await self._table()
        query = (
            f"PartitionKey eq {quote(escape_key(mapping))} and {prefix_range(ARCHIVE)}"
            f" and LastAt lt {quote(to_utc(before).isoformat())}"  # type: ignore[union-attr]
        )
        async for page in query_all(table, query, select=["PartitionKey", "RowKey"]):
            ops: list[Op] = [("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]}, {}) for r in page]
            return sum(await _delete_chunks(table, ops))
        return 0

    async def delete_all(self, mapping: str) -> int:
        """Deletes the partition page by page (1,000 rows read, 10 transactions of 100 deletes)."""
        table = await self._table()
        pk = escape_key(mapping)
        count = 0
        async for page in query_all(table, f"PartitionKey eq {quote(pk)}"):
            # #22: the state rows' history moves to archive rows first (one transaction per 100 records).
            await self._archive(table, mapping, [from_state_entity(mapping, r) for r in page
                                                 if r["RowKey"].startswith(STATE)])  # fmt: skip
            ops: list[Op] = [
                ("delete", {"PartitionKey": pk, "RowKey": r["RowKey"]}, {})
                for r in page
                if not r["RowKey"].startswith(ARCHIVE)  # #22: an uncoupled record keeps its history
            ]
            out = await _delete_chunks(table, ops)
            count += sum(1 for op, ok in zip(ops, out, strict=True) if ok and op[1]["RowKey"].startswith(STATE))
        self._density = {k: v for k, v in self._density.items() if k[0] != pk}
        return count


async def _delete_chunks(table: TableClient, ops: list[Op]) -> list[bool]:
    """Deletes in (concurrent) transactions; rows already gone are tolerated."""
    out = await submit_tolerant(table, ops, drop=lambda i, kind: [i] if kind == "missing" else [])
    return [res is not None for res in out]
