"""Couplings in Table Storage, spread over ``BUCKETS`` hash-bucket partitions per mapping: per coupling a state
row ``bc:<bcId>`` (the whole coupling) in the BC id's bucket and an index row ``dv:<dataverseId>`` (-> bcId) in
the Dataverse id's bucket. The two rows may sit in different partitions, so they are written in order (the
index row is claimed first, the state row second) and a coupling counts only when both agree. See
docs/storage.md ("Couplings")."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.errors import AlreadyCoupledError, InvalidContinuationError
from shared.domain.model import Coupling, Side
from shared.errors import ConflictError
from shared.planning import history
from shared.planning.decisions import snapshot_mark
from shared.stores._json import compact, compact_str
from shared.stores.tables import (
    KEYS_PER_QUERY,
    MAX_PAGE,
    Entity,
    Op,
    TableProvider,
    decode_token,
    encode_token,
    entity_of,
    escape_key,
    etag_of,
    key_rows,
    norm_id,
    point_rows,
    prefix_range,
    query_all,
    query_page,
    quote,
    raw_pages,
    submit_partitioned,
    to_utc,
    unescape_key,
)

STATE = "bc:"
INDEX = "dv:"
ARCHIVE = "h:"  # #22: the history of an uncoupled record (the state row held it while coupled)
PART_CHARS = 30_000  # a string property holds ≤64 KiB (UTF-16): larger snapshots span several properties
# A point read costs ~0.7 ms of client CPU (the azure-core pipeline) and 1 entity; a scanned row ~4-14 µs and 1
# entity of the partition's 2,000/s. So: a range scan only when >= 1 in DENSE_SHARE rows of the keys' range is
# wanted, key-list queries down to 1 in LIST_SHARE, else point reads — never a scan of a whole partition for a
# few ids (lookup_plan; docs/storage.md, "Lookups").
DENSE_SHARE = 16
# A key-list query (12 ids a request, bounded by their key range) reads the range on the service but returns only
# the ids: allowed up to 1 wanted in LIST_SHARE rows of the range (an incremental's changes + echoes are ~1 in 20
# of a bucket at 10 % changed), where point reads would cost ~60x the client CPU per id (docs/storage.md).
LIST_SHARE = 32
MIN_SCAN_KEYS = 32  # per partition (bucket), density not measured yet: below this, point reads (no probing scan)
# Client CPU of a request (azure-core pipeline + aiohttp, ~0.7-1.2 ms) in units of one row of a query page (JSON +
# key check): ~14 µs a state row (snapshots), ~4 µs an index row. What lookup_plan weighs (measured on Azurite, #23).
REQUEST_ROWS = 80
INDEX_REQUEST_ROWS = 250
# Range scans in flight per store (process): each holds a decoded page of up to 1,000 state rows (~4 MB), and
# a fanned-out job's workers look up 16 buckets for each of their 8 batches at once (#23: unbounded, the host
# held ~100 pages, +300 MB at 100,000 records). Point reads are bounded by the Tables connection pool.
SCAN_CONCURRENCY = 8
MIN_MEASURED_SPAN = 0.01  # a scan over less of the key space does not set the density estimate
_HEX = 12  # leading hex digits of a GUID key that place it in the key space
REPLACE_ATTEMPTS = 4
_IF_MATCH = MatchConditions.IfNotModified
BUCKETS = 16  # partitions per mapping; fixed (another count needs a migration like migrate_mapping)
_SEP = "%|"  # escape_key never writes '%' but before two hex digits: no bucket key equals an old-layout key
# A claimed index row whose state row does not point back is a coupling still being written for CLAIM_LEASE
# (another couple treats it as taken), then a leftover that a later couple takes over. A couple that has
# not written its state row CLAIM_GUARD after claiming gives up instead (so a lapsed claim is never used).
CLAIM_LEASE = timedelta(minutes=5)
CLAIM_GUARD = timedelta(minutes=2)


def bucket_of(key_id: str) -> int:
    """The bucket of a normalized id (``norm_id``): a stable hash, uniform whatever the ids look like."""
    return int(hashlib.sha1(key_id.encode(), usedforsecurity=False).hexdigest()[:4], 16) % BUCKETS


@functools.lru_cache(maxsize=4096)  # a few mappings x BUCKETS; asked several times per coupling written or read
def partition(mapping: str, bucket: int) -> str:
    return f"{escape_key(mapping)}{_SEP}{bucket:x}"


def partitions(mapping: str) -> list[str]:
    return [partition(mapping, b) for b in range(BUCKETS)]


def partition_of(mapping: str, row_key: str) -> str:
    """The partition of a coupling row: ``bc:``/``h:`` rows by their BC id, ``dv:`` rows by their Dataverse id."""
    return partition(mapping, bucket_of(row_key.split(":", 1)[1]))


def old_partition(mapping: str) -> str:
    """The partition of every coupling row of a mapping before the buckets (see :func:`migrate_mapping`)."""
    return escape_key(mapping)


def claim_verdict(*, holder: str, points_back: bool, claimed_at: datetime | None, bc_id: str, now: datetime) -> str:
    """What an existing index row (claimed by BC record ``holder`` at ``claimed_at``) means to a couple of
    ``bc_id`` with its Dataverse row. ``points_back``: the holder's state row names this Dataverse row.

    - ``coupled``: a complete coupling holds the Dataverse row;
    - ``pending``: another couple claimed it less than ``CLAIM_LEASE`` ago and may still write its state row;
    - ``take``: a leftover (our own earlier attempt, a crash between the two writes, an interrupted
      uncouple): the caller takes it over with an If-Match write."""
    if points_back:
        return "coupled"
    if norm_id(holder) == norm_id(bc_id):
        return "take"
    if claimed_at is None or now - claimed_at < CLAIM_LEASE:
        return "pending"
    return "take"


def lookup_plan(keys: int, rows_in_range: float | None, request_rows: int = REQUEST_ROWS) -> str:
    """How one partition's lookup of ``keys`` row keys reads them, given the rows of their kind estimated
    between the smallest and the largest key (None: not measured yet):

    - ``point``: a point read per key — when the keys are sparse in their range (fewer than 1 in
      ``LIST_SHARE`` of its rows wanted: never a scan of a partition for a few ids), or a lone key;
    - ``list``: key-list queries of 12 keys each (the service reads the range, returns only the keys);
    - ``scan``: one range scan (1,000 rows a page), at least 1 in ``DENSE_SHARE`` rows wanted and so dense
      that its rows cost less client CPU than the key-list requests;
    - ``probe``: not measured, and enough keys for a probing range scan to pay (it measures the density).
    """
    if rows_in_range is None:
        return "probe" if keys >= MIN_SCAN_KEYS else "point"
    if keys <= 1 or rows_in_range > LIST_SHARE * keys:
        return "point"
    list_cost = math.ceil(keys / KEYS_PER_QUERY) * request_rows + keys
    scan_cost = math.ceil(max(rows_in_range, 1) / MAX_PAGE) * request_rows + rows_in_range
    dense = rows_in_range <= DENSE_SHARE * keys
    return "scan" if dense and keys > KEYS_PER_QUERY and scan_cost < list_cost else "list"


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
    text = compact_str(values)
    if len(text) <= PART_CHARS:  # the common case: one property
        return {f"{prefix}Values": text or "{}", f"{prefix}Parts": 1}
    parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
    out: dict[str, Any] = {f"{prefix}Values": parts[0], f"{prefix}Parts": len(parts)}
    for n, part in enumerate(parts[1:], start=1):
        out[f"{prefix}Values{n}"] = part
    return out


def _join(prefix: str, row: Entity, empty: str = "{}") -> Any:
    count = int(row.get(f"{prefix}Parts") or 1)
    text = row.get(f"{prefix}Values") or empty
    if count > 1:
        text += "".join(row.get(f"{prefix}Values{n}", "") for n in range(1, count))
    return json.loads(text)


def archive_rk(bc_id: str) -> str:
    return ARCHIVE + norm_id(bc_id)


_ARCHIVED = re.compile(r"^(H\d+)Parts$")


def history_of(row: Entity | None) -> list[dict[str, Any]]:
    """The history entries a state row (``Hist*``) or an archive row (``H<coupled-at>*``, one group of
    properties per former coupling of the record) holds (#22), oldest first."""
    if row is None:
        return []
    groups = ["Hist"] + [m.group(1) for k in row if k[:1] == "H" and (m := _ARCHIVED.match(k))]
    entries = [e for g in groups for e in (_join(g, row, "[]") if f"{g}Values" in row else [])]
    return sorted(entries, key=lambda e: e.get("at", ""))


def _at(entry: dict[str, Any]) -> str:
    return entry.get("at", "")  # type: ignore[no-any-return]


def state_history(row: Entity) -> list[dict[str, Any]]:
    """The history a state row holds: its ``Hist*`` properties only (a state row never holds the archive
    rows' ``H<coupled-at>`` groups), without looking at every property name as :func:`history_of` does."""
    entries = _join("Hist", row, "[]") if "HistValues" in row else []
    return sorted(entries, key=_at) if len(entries) > 1 else entries


def to_archive_entity(c: Coupling) -> Entity:
    """Merged into the archive row without reading it: each coupling's entries get their own properties."""
    last = max((e.get("at", "") for e in c.history), default="")
    group = f"H{int(to_utc(c.coupled_at).timestamp() * 1000)}"  # type: ignore[union-attr]
    rk = archive_rk(c.bc_id)
    return {"PartitionKey": partition_of(c.mapping, rk), "RowKey": rk, "BcId": c.bc_id, "LastAt": last} | (
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
    return {"Sync": compact(sync), "Skipped": bool(c.skipped)} | (
        _split("Bc", c.bc_values) | _split("Dv", c.dv_values) | _split("Hist", c.history)  # type: ignore[arg-type]
    )


def state_key(c: Coupling) -> Entity:
    rk = state_rk(c.bc_id)
    return {"PartitionKey": partition_of(c.mapping, rk), "RowKey": rk}


def index_key(c: Coupling) -> Entity:
    rk = index_rk(c.dataverse_id)
    return {"PartitionKey": partition_of(c.mapping, rk), "RowKey": rk}


def to_state_entity(c: Coupling) -> Entity:
    return (
        state_key(c)
        | {
            "BcId": c.bc_id,
            "DataverseId": c.dataverse_id,
            "CoupledAt": to_utc(c.coupled_at),
        }
        | sync_properties(c)
    )


def to_index_entity(c: Coupling) -> Entity:
    return index_key(c) | {"BcId": c.bc_id}


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
        history=state_history(row),
    )


class TableCouplingStore:
    """``shared.ports.CouplingStore`` on Table Storage."""

    def __init__(self, tables: TableProvider, table_name: str) -> None:
        self._tables = tables
        self._name = table_name
        self._density: dict[tuple[str, str], float] = {}  # (partition, row kind) -> rows per unit key space
        self._bucketed: set[str] = set()  # mappings whose old-layout rows this process has moved (or found none)
        self._layout_lock = asyncio.Lock()
        self._scans: asyncio.Semaphore | None = None  # SCAN_CONCURRENCY; made on the loop that uses it

    async def _table(self, mapping: str | None = None) -> TableClient:
        """The table; with a mapping, after making sure no row of it is left in the old layout (once per
        process and mapping: one empty query when there is nothing to move)."""
        table = await self._tables.get(self._name)
        if mapping is not None and mapping not in self._bucketed:
            async with self._layout_lock:
                if mapping not in self._bucketed:
                    await migrate_mapping(table, mapping)
                    self._bucketed.add(mapping)
        return table

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
            if c is not None and norm_id(c.dataverse_id) == norm_id(dv_id):  # a leftover claim: not a coupling
                out[dv_id] = c
        return out

    async def _rows(self, mapping: str, prefix: str, row_keys: Sequence[str] | Any) -> dict[str, Entity]:
        """Rows of one kind by key, each bucket's keys read from their own partition, concurrently."""
        table = await self._table(mapping)
        by_pk: dict[str, list[str]] = {}
        for rk in set(row_keys):
            by_pk.setdefault(partition_of(mapping, rk), []).append(rk)
        found: dict[str, Entity] = {}
        for rows in await asyncio.gather(*(self._partition_rows(table, pk, prefix, ks) for pk, ks in by_pk.items())):
            found |= rows
        return found

    async def _partition_rows(self, table: TableClient, pk: str, prefix: str, row_keys: list[str]) -> dict[str, Entity]:
        """Rows by key in one partition, touching only what the lookup needs (``lookup_plan``): concurrent point
        reads, unless the keys are dense in their key range (at least 1 in ``LIST_SHARE`` of the rows between
        the smallest and the largest key is wanted): then key-list queries (12 keys a request, only the keys
        returned) or, denser still (e.g. a full sync's page), a range scan (~1 request per 1,000 rows). Ids are
        GUIDs (uniform in the key space, also within a bucket), so the share is estimated from the partition's
        measured density; a probing scan (density not measured yet) that turns out sparser than it looked stops
        and point-reads the keys it has not reached (docs/storage.md, "Lookups")."""
        keys = sorted(set(row_keys))
        if not keys:
            return {}
        span = _span(prefix, keys[0], keys[-1])
        if span is None:  # not GUIDs: no density estimate
            return await point_rows(table, pk, keys)
        plan = self._plan(pk, prefix, keys, span)
        if plan == "scan":
            async with self._scan_lane():
                # Another lookup's scan may have measured this partition while this one waited for a lane.
                plan = self._plan(pk, prefix, keys, span)
                if plan == "scan":
                    found, left = await self._scan(table, pk, prefix, keys, span)
            if plan == "scan":
                return found | await point_rows(table, pk, left) if left else found
        if plan == "list":
            return await key_rows(table, pk, keys)
        return await point_rows(table, pk, keys)

    def _scan_lane(self) -> asyncio.Semaphore:
        """The bound on this store's range scans in flight (``SCAN_CONCURRENCY``), made on the loop using it."""
        if self._scans is None:
            self._scans = asyncio.Semaphore(SCAN_CONCURRENCY)
        return self._scans

    async def estimated_count(self, mapping: str) -> float | None:
        """The mapping's couplings as this process measured them (range scans, ``iter_all``); None while some
        bucket is not measured yet."""
        for prefix in (STATE, INDEX):
            known = [self._density.get((pk, prefix)) for pk in partitions(mapping)]
            if all(d is not None for d in known):
                return sum(d for d in known if d is not None)
        return None

    async def synced_marks(self, mapping: str, side: Side, keys: Sequence[str]) -> dict[str, Any]:
        """Per coupling, what tells a change-feed row of ``side`` that its last sync already saw it, by the
        side's lower-case id: for BC the ``lastModifiedDateTime`` the last sync saw, for Dataverse the
        ``snapshot_mark`` of the Dataverse snapshot over ``keys`` (Dataverse stamps whole seconds and its
        bulk writes answer no version). One scan of every bucket's state rows, only those columns read."""
        table = await self._table(mapping)
        bc = side == Side.BC
        select = ["BcId", "Sync"] if bc else ["DataverseId", "DvValues", "DvParts"]

        counts: dict[str, int] = {}

        async def bucket(pk: str) -> dict[str, Any]:
            marks: dict[str, Any] = {}
            async with self._scan_lane():
                query = f"PartitionKey eq {quote(pk)} and {prefix_range(STATE)}"
                async for page in raw_pages(table, query, select=select):
                    counts[pk] = counts.get(pk, 0) + len(page)
                    for raw in page:
                        if bc:
                            seen = json.loads(raw.get("Sync") or "{}").get("bcModifiedOn")
                            marks[raw["BcId"].lower()] = _dt(seen)
                        elif int(raw.get("DvParts") or 1) == 1:  # a snapshot over several properties: no mark
                            snapshot = json.loads(raw.get("DvValues") or "{}")
                            marks[raw["DataverseId"].lower()] = snapshot_mark(keys, snapshot)
            return marks

        out: dict[str, Any] = {}
        for marks in await asyncio.gather(*(bucket(pk) for pk in partitions(mapping))):
            out |= marks
        self._measured(mapping, counts)  # every state row was read: the lookups that follow know the density
        return out

    def _plan(self, pk: str, prefix: str, keys: list[str], span: float) -> str:
        """``lookup_plan`` for these keys with the partition's measured density (None: not measured yet)."""
        density = self._density.get((pk, prefix))  # rows of this kind per unit of key space
        cost = REQUEST_ROWS if prefix == STATE else INDEX_REQUEST_ROWS  # index rows are small: scans cost less
        plan = lookup_plan(len(keys), None if density is None else density * span, cost)
        return "scan" if plan == "probe" else plan  # a probing scan is a range scan that measures the density

    async def _scan(
        self, table: TableClient, pk: str, prefix: str, keys: list[str], span: float
    ) -> tuple[dict[str, Entity], list[str]]:
        """The range scan of ``_partition_rows`` (sorted ``keys`` spanning ``span`` of the key space): the rows
        found, and the keys it stopped short of (the rest of the range proved sparse: point-read them)."""
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
            del page  # not held while the next page is read
            covered = _span(prefix, keys[0], last) or 0.0
            if covered >= span:
                continue
            left = [k for k in keys if k > last]
            projected = read / covered * (span - covered) if covered > 0 else math.inf
            if left and projected > DENSE_SHARE * len(left) + MAX_PAGE:  # sparser than it looked: stop
                if covered > 0:
                    self._density[(pk, prefix)] = read / covered
                return found, left
        if span > MIN_MEASURED_SPAN:
            self._density[(pk, prefix)] = read / span
        return found, []

    async def _lookup(self, table: TableClient, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Entity]:
        """Rows by (PartitionKey, RowKey), point reads grouped per partition (the write paths' few reads)."""
        by_pk: dict[str, list[str]] = {}
        for pk, rk in keys:
            by_pk.setdefault(pk, []).append(rk)
        found = await asyncio.gather(*(point_rows(table, pk, rks) for pk, rks in by_pk.items()))
        return {(pk, rk): row for pk, rows in zip(by_pk, found, strict=True) for rk, row in rows.items()}

    async def list_page(
        self, mapping: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[Coupling], str | None]:
        """A page of state rows, bucket after bucket. The token is the base64url of the bucket and the
        service's token within it: opaque to API clients, and the same for the same position."""
        table = await self._table(mapping)
        bucket, inner = _list_position(continuation)
        top = max(1, min(top, MAX_PAGE))
        out: list[Coupling] = []
        while bucket < BUCKETS and len(out) < top:
            query = f"PartitionKey eq {quote(partition(mapping, bucket))} and {prefix_range(STATE)}"
            rows, inner = await query_page(table, query, top=top - len(out), continuation=inner)
            out += [from_state_entity(mapping, r) for r in rows]
            if inner is None:
                bucket += 1
        return out, (encode_token({"b": bucket, "c": inner}) if bucket < BUCKETS else None)

    async def iter_all(self, mapping: str) -> AsyncIterator[list[Coupling]]:
        """Every coupling in pages of ``MAX_PAGE``, bucket after bucket (one query page per 1,000 rows of a
        bucket); measures each partition's density for later lookups."""
        table = await self._table(mapping)
        pending: list[Coupling] = []
        counts: dict[str, int] = {}
        for pk in partitions(mapping):
            seen = 0
            async for page in query_all(table, f"PartitionKey eq {quote(pk)} and {prefix_range(STATE)}"):
                seen += len(page)
                pending += [from_state_entity(mapping, r) for r in page]
                while len(pending) >= MAX_PAGE:
                    yield pending[:MAX_PAGE]
                    pending = pending[MAX_PAGE:]
            counts[pk] = seen
        if pending:
            yield pending
        self._measured(mapping, counts)

    def _measured(self, mapping: str, counts: dict[str, int]) -> None:
        """The density of every bucket from a read of all its state rows (``counts``: rows per partition)."""
        average = sum(counts.values()) / BUCKETS  # one index row per state row, hashed independently
        for pk in partitions(mapping):
            self._density[(pk, STATE)] = float(counts.get(pk, 0))
            self._density[(pk, INDEX)] = average

    # ------------------------------------------------------------------ couple
    async def couple(self, coupling: Coupling, *, replace: bool = False) -> list[Coupling]:
        removed: list[Coupling] = []
        for _ in range(REPLACE_ATTEMPTS if replace else 1):
            if replace:
                holder = await self.get_by_dataverse_id(coupling.mapping, coupling.dataverse_id)
                ids = [coupling.bc_id] + ([holder.bc_id] if holder is not None else [])
                removed += await self.uncouple_many(coupling.mapping, ids)  # #22: archived with their history
            (result,) = await self.couple_many([coupling])
            if not isinstance(result, Exception):
                return removed
            if not isinstance(result, AlreadyCoupledError):
                raise result
            if not replace:
                raise await self._already_coupled(coupling) from result
            await asyncio.sleep(0.05)  # someone coupled either side meanwhile: remove it again
        raise ConflictError(f"coupling {coupling.bc_id} kept changing concurrently", service="tables")

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
        """Couples in two steps, each batched per partition (≤100 rows a transaction): claim the Dataverse
        rows' index rows, then create the state rows. A claim that exists is looked at (``claim_verdict``):
        a leftover is taken over, anything else makes the coupling ``AlreadyCoupledError``; a state row that
        exists makes it ``AlreadyCoupledError`` and its claim is released (docs/storage.md, "Writes")."""
        results: list[Coupling | Exception] = list(couplings)
        todo: list[int] = []
        seen: set[tuple[str, str]] = set()
        for i, c in enumerate(couplings):
            keys = {(c.mapping, state_rk(c.bc_id)), (c.mapping, index_rk(c.dataverse_id))}
            if keys & seen:  # the same record twice in one call: the first wins
                results[i] = _taken(c)
                continue
            seen |= keys
            todo.append(i)
        for mapping in {couplings[i].mapping for i in todo}:
            await self._table(mapping)
        table = await self._table()
        started = datetime.now(UTC)
        etag_of_claim: dict[int, str | None] = {}
        for i, claim in zip(todo, await self._claim(table, [couplings[i] for i in todo]), strict=True):
            if isinstance(claim, Exception):
                results[i] = claim
            else:
                etag_of_claim[i] = claim
        todo = list(etag_of_claim)
        items = [couplings[i] for i in todo]
        if datetime.now(UTC) - started > CLAIM_GUARD:  # a lapsed claim may be taken over: never build on it
            await self._release(table, [(c, etag_of_claim[i]) for i, c in zip(todo, items, strict=True)])
            for i in todo:
                results[i] = ConflictError("coupling took too long; retry", service="tables")
            return results
        out = await submit_partitioned(
            table, [("create", to_state_entity(c)) for c in items], drop=lambda n, kind: [n] if kind == "exists" else []
        )
        failed = [n for n, res in enumerate(out) if res is None]
        if failed:  # the BC record is coupled: release the claim unless its coupling is this one (a race)
            states = await self._lookup(table, [_key(state_key(items[n])) for n in failed])
            release = []
            for n in failed:
                c, row = items[n], states.get(_key(state_key(items[n])))
                results[todo[n]] = _taken(c)
                if row is None or norm_id(row["DataverseId"]) != norm_id(c.dataverse_id):
                    release.append((c, etag_of_claim[todo[n]]))
            await self._release(table, release)
        created: dict[str, int] = {}
        for n, res in enumerate(out):
            if res is not None:
                items[n].row_etag = res.get("etag")
                for key in (state_key(items[n]), index_key(items[n])):
                    created[key["PartitionKey"]] = created.get(key["PartitionKey"], 0) + 1
        for pk, count in created.items():  # the partitions grew: keep the lookups' density estimates current
            for kind in (STATE, INDEX):
                if (pk, kind) in self._density:
                    self._density[(pk, kind)] += count / 2
        return results

    async def _claim(self, table: TableClient, items: Sequence[Coupling]) -> list[str | Exception | None]:
        """Claims each coupling's index row: a create, or an If-Match takeover of a leftover. Per item the
        ETag of the claim, or ``AlreadyCoupledError`` when the Dataverse row is coupled or being coupled."""
        claimed: dict[int, str | None] = {}  # item -> the ETag of its claim
        todo = list(range(len(items)))
        for _ in range(REPLACE_ATTEMPTS):
            if not todo:
                break
            ops: list[Op] = [("create", to_index_entity(items[n])) for n in todo]
            out = await submit_partitioned(table, ops, drop=lambda n, kind: [n] if kind == "exists" else [])
            held = []
            for n, res in zip(todo, out, strict=True):
                if res is None:
                    held.append(n)
                else:
                    claimed[n] = res.get("etag")
            if not held:
                break
            index = await self._lookup(table, [_key(index_key(items[n])) for n in held])
            rows = {n: index.get(_key(index_key(items[n]))) for n in held}
            holder_key = {n: _state_key_of(items[n].mapping, row["BcId"]) for n, row in rows.items() if row is not None}
            holders = await self._lookup(table, holder_key.values())
            now = datetime.now(UTC)
            take: list[tuple[int, Entity]] = []
            todo = [n for n, row in rows.items() if row is None]  # gone meanwhile: create it again
            for n, row in rows.items():
                if row is None:
                    continue
                state = holders.get(holder_key[n])
                verdict = claim_verdict(
                    holder=row["BcId"],
                    points_back=state is not None and norm_id(state["DataverseId"]) == norm_id(items[n].dataverse_id),
                    claimed_at=to_utc(row.metadata.get("timestamp")),
                    bc_id=items[n].bc_id,
                    now=now,
                )
                if verdict == "take":
                    take.append((n, row))
            ops = [
                ("update", to_index_entity(items[n]), {"mode": UpdateMode.REPLACE, "etag": etag_of(row),
                                                        "match_condition": _IF_MATCH})
                for n, row in take
            ]  # fmt: skip
            out = await submit_partitioned(
                table, ops, drop=lambda n, kind: [n] if kind in ("modified", "missing") else []
            )
            for (n, _row), res in zip(take, out, strict=True):
                if res is not None:
                    claimed[n] = res.get("etag")
                else:
                    todo.append(n)  # raced: look again
        # Built only for the items not claimed (an exception per item costs more than the claim's bookkeeping).
        return [claimed[n] if n in claimed else _taken(c) for n, c in enumerate(items)]

    async def _release(self, table: TableClient, claims: Sequence[tuple[Coupling, str | None]]) -> None:
        """Deletes index rows this process wrote, If-Match their ETag (a row someone took over stays)."""
        ops: list[Op] = [("delete", index_key(c), {"etag": etag, "match_condition": _IF_MATCH}) for c, etag in claims]
        await submit_partitioned(table, ops, drop=lambda n, kind: [n] if kind in ("modified", "missing") else [])

    # ------------------------------------------------------------------ sync bookkeeping
    async def save_sync_state(self, couplings: Sequence[Coupling]) -> None:
        """Merges the sync properties into the state rows (If-Match ``*``: the row must exist, so a coupling
        removed meanwhile is not resurrected; last writer wins otherwise — see docs/storage.md)."""
        if not couplings:
            return
        for mapping in {c.mapping for c in couplings}:
            await self._table(mapping)
        ops: list[Op] = [("update", state_key(c) | sync_properties(c), {"mode": UpdateMode.MERGE}) for c in couplings]
        out = await submit_partitioned(await self._table(), ops, drop=lambda i, kind: [i] if kind == "missing" else [])
        for c, res in zip(couplings, out, strict=True):
            if res is not None:
                c.row_etag = res.get("etag")

    # ------------------------------------------------------------------ uncouple
    async def uncouple_many(self, mapping: str, bc_ids: Sequence[str]) -> list[Coupling]:
        """Deletes the state rows (If-Match their read ETag, so a coupling that changed meanwhile is read
        again), then the index rows that still point to them (If-Match: one taken over stays). Missing
        couplings are skipped. A crash in between leaves a leftover index row that readers ignore."""
        table = await self._table(mapping)
        removed: list[Coupling] = []
        todo = list(dict.fromkeys(bc_ids))
        for _ in range(REPLACE_ATTEMPTS):
            found = list((await self.get_many_by_bc_ids(mapping, todo)).values())
            if not found:
                break
            retry: list[str] = []

            def drop(n: int, kind: str, found: list[Coupling] = found, retry: list[str] = retry) -> list[int]:
                if kind == "modified":
                    retry.append(found[n].bc_id)  # changed meanwhile: read again
                return [n] if kind in ("modified", "missing") else []

            ops: list[Op] = [
                ("delete", state_key(c), {"etag": c.row_etag, "match_condition": _IF_MATCH}) for c in found
            ]
            out = await submit_partitioned(table, ops, drop=drop)
            gone = [c for c, res in zip(found, out, strict=True) if res is not None]
            index = await self._lookup(table, [_key(index_key(c)) for c in gone])
            await self._release(
                table,
                [
                    (c, etag_of(row))
                    for c in gone
                    if (row := index.get(_key(index_key(c)))) is not None and norm_id(row["BcId"]) == norm_id(c.bc_id)
                ],
            )
            removed += gone
            todo = retry
            if not todo:
                break
        await self._archive(table, removed)
        return removed

    # ------------------------------------------------------------------ history (#22)
    async def _archive(self, table: TableClient, removed: Sequence[Coupling]) -> None:
        """Keeps the history of uncoupled records, with an ``uncoupled`` entry: one merge-upsert per record,
        100 per transaction, no read (what earlier couplings of the record left stays in its own properties)."""
        if not removed:
            return
        now = datetime.now(UTC)
        ops: list[Op] = []
        for c in removed:
            c.history = [*c.history, history.entry(now, trigger=history.TRIGGER.get(), action="uncoupled")]
            ops.append(("upsert", to_archive_entity(c), {"mode": UpdateMode.MERGE}))
        await submit_partitioned(table, ops, drop=lambda i, kind: [])

    async def history(self, mapping: str, bc_id: str) -> list[dict[str, Any]] | None:
        """Every entry of this record's couplings, oldest first; None when it was never coupled (or its
        history expired). One request: the state and archive rows share the BC id's bucket."""
        table = await self._table(mapping)
        rows = await point_rows(table, partition_of(mapping, state_rk(bc_id)), [state_rk(bc_id), archive_rk(bc_id)])
        if not rows:
            return None
        entries = history_of(rows.get(archive_rk(bc_id))) + history_of(rows.get(state_rk(bc_id)))
        return sorted(entries, key=lambda e: e.get("at", ""))

    async def purge_history(self, mapping: str, before: datetime) -> int:
        """Deletes archive rows whose newest entry is older than ``before``: a key-range query over the
        archive rows of each bucket (never the couplings), one page per bucket per call (a timer tick)."""
        table = await self._table(mapping)
        cutoff = quote(to_utc(before).isoformat())  # type: ignore[union-attr]

        async def one(pk: str) -> int:
            query = f"PartitionKey eq {quote(pk)} and {prefix_range(ARCHIVE)} and LastAt lt {cutoff}"
            async for page in query_all(table, query, select=["PartitionKey", "RowKey"]):
                ops: list[Op] = [("delete", {"PartitionKey": pk, "RowKey": r["RowKey"]}, {}) for r in page]
                return sum(await _delete_chunks(table, ops))
            return 0

        return sum(await asyncio.gather(*(one(pk) for pk in partitions(mapping))))

    async def delete_all(self, mapping: str) -> int:
        """Deletes each bucket page by page (1,000 rows read, 10 transactions of 100 deletes); leftover index
        rows go too."""
        table = await self._table(mapping)
        count = 0
        for pk in partitions(mapping):
            async for page in query_all(table, f"PartitionKey eq {quote(pk)}"):
                # #22: the state rows' history moves to archive rows first (one transaction per 100 records).
                await self._archive(table, [from_state_entity(mapping, r) for r in page
                                            if r["RowKey"].startswith(STATE)])  # fmt: skip
                ops: list[Op] = [
                    ("delete", {"PartitionKey": pk, "RowKey": r["RowKey"]}, {})
                    for r in page
                    if not r["RowKey"].startswith(ARCHIVE)  # #22: an uncoupled record keeps its history
                ]
                out = await _delete_chunks(table, ops)
                count += sum(1 for op, ok in zip(ops, out, strict=True) if ok and op[1]["RowKey"].startswith(STATE))
        self._density = {k: v for k, v in self._density.items() if not k[0].startswith(escape_key(mapping) + _SEP)}
        return count


def _taken(c: Coupling) -> AlreadyCoupledError:
    return AlreadyCoupledError(f"BC record {c.bc_id} or Dataverse row {c.dataverse_id} is already coupled")


def _key(entity: Entity) -> tuple[str, str]:
    return entity["PartitionKey"], entity["RowKey"]


def _state_key_of(mapping: str, bc_id: str) -> tuple[str, str]:
    return partition_of(mapping, state_rk(bc_id)), state_rk(bc_id)


def _list_position(token: str | None) -> tuple[int, str | None]:
    if not token:
        return 0, None
    value = decode_token(token)
    if (
        not isinstance(value, dict)
        or set(value) != {"b", "c"}
        or not isinstance(value["b"], int)
        or not 0 <= value["b"] < BUCKETS
        or not (value["c"] is None or isinstance(value["c"], str))
    ):
        raise InvalidContinuationError("continuation is not a token this service issued.")
    return value["b"], value["c"]


async def _delete_chunks(table: TableClient, ops: list[Op]) -> list[bool]:
    """Deletes in (concurrent) transactions; rows already gone are tolerated."""
    out = await submit_partitioned(table, ops, drop=lambda i, kind: [i] if kind == "missing" else [])
    return [res is not None for res in out]


# ---------------------------------------------------------------------- migration from one partition per mapping
async def migrate_mapping(table: TableClient, mapping: str, *, page_size: int = MAX_PAGE) -> int:
    """Moves a mapping's rows from the old layout (every row in partition ``escape_key(mapping)``) to their
    buckets, a page at a time: create each row in its bucket (one already there is newer or the same copy:
    kept), then delete the page from the old partition. Idempotent and resumable: a crash leaves rows that
    exist in both places, and the next run skips their copies and deletes them. Returns the rows moved."""
    old = old_partition(mapping)
    moved = 0
    while True:
        page: list[Entity] = []
        async for rows in query_all(table, f"PartitionKey eq {quote(old)}", page_size=page_size):
            page = rows
            break
        if not page:
            return moved
        copies: list[Op] = [("create", dict(r) | {"PartitionKey": partition_of(mapping, r["RowKey"])}) for r in page]
        await submit_partitioned(table, copies, drop=lambda i, kind: [i] if kind == "exists" else [])
        await _delete_chunks(table, [("delete", {"PartitionKey": old, "RowKey": r["RowKey"]}, {}) for r in page])
        moved += len(page)


async def old_layout_mappings(table: TableClient) -> list[str]:
    """Mappings with rows left in the old layout (a scan of the table's keys: for the one-off job only)."""
    found: set[str] = set()
    async for page in query_all(table, "", select=["PartitionKey"]):
        found |= {unescape_key(r["PartitionKey"]) for r in page if _SEP not in r["PartitionKey"]}
    return sorted(found)


async def migrate_couplings(store: TableCouplingStore, mappings: Sequence[str] | None = None) -> dict[str, int]:
    """The one-off job: moves every given mapping (default: every one found in the old layout) to buckets."""
    table = await store._table()
    moved = {}
    for mapping in mappings if mappings is not None else await old_layout_mappings(table):
        moved[mapping] = await migrate_mapping(table, mapping)
        store._bucketed.add(mapping)
    return moved
