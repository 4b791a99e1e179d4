"""Coupling lookups on Azurite read only what they need (#23): point reads for ids that are sparse in their key
range, key-list queries (12 ids a request, only those rows returned) or a range scan only when the ids are dense
there, a scan that turns out sparse stops, and the lean row decoder gives what the SDK's deserializer gives."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.domain.model import Coupling
from shared.stores import Stores, TableCouplingStore, coupling_store
from shared.stores.coupling_store import (
    BUCKETS,
    from_state_entity,
    history_of,
    lookup_plan,
    partition_of,
    state_history,
    state_rk,
    to_state_entity,
)
from shared.stores.tables import ENTITIES_READ, KEYS_PER_QUERY, entity_of, key_list_filter

M = "CUSTOMER"


def _cp(**kw: object) -> Coupling:
    return Coupling(
        mapping=M, bc_id=str(uuid.uuid4()), dataverse_id=str(uuid.uuid4()), coupled_at=datetime.now(UTC), **kw
    )


async def _seeded(stores: Stores, n: int) -> list[Coupling]:
    batch = [_cp() for _ in range(n)]
    await stores.couplings.couple_many(batch)
    return batch


def _fresh_store(stores: Stores) -> TableCouplingStore:
    """Another process's store over the same table: it has measured nothing yet."""
    return TableCouplingStore(stores.tables, stores.couplings._name)


def test_lookup_plan_weighs_requests_against_rows_and_never_scans_for_sparse_keys() -> None:
    assert lookup_plan(1, 5.0) == "point"  # a lone key: one point read
    assert lookup_plan(10, 321.0) == "point"  # 1 in 32.1 of the range wanted: sparse
    assert lookup_plan(10, 320.0) == "list"  # 1 in 32: one key-list query for the 10
    assert lookup_plan(62, 1250.0) == "list"  # 1 in 20 (an incremental's ids in a bucket): 6 queries, no scan
    assert lookup_plan(2, 3.0) == "list"  # a key-list query returns only the keys: never a scan for <= 12
    assert lookup_plan(12, 12.0) == "list"
    assert lookup_plan(100, 300.0) == "scan"  # 1 request for 300 rows beats 9 key-list queries
    assert lookup_plan(100, 1500.0) == "list"  # 9 requests beat reading 1,500 state rows
    assert lookup_plan(100, 1500.0, request_rows=250) == "scan"  # ... but not 1,500 small index rows
    assert lookup_plan(1000, 1000.0) == "scan"  # a full sync's page: its whole range
    assert lookup_plan(31, None) == "point"  # not measured: no probing scan for a few keys
    assert lookup_plan(32, None) == "probe"


async def test_sparse_ids_are_point_reads_once_the_partition_is_measured(table_stores: Stores) -> None:
    batch = await _seeded(table_stores, 3000)
    store, counter = table_stores.couplings, table_stores.op_counter
    _ = [p async for p in store.iter_all(M)]  # measures the partition
    by_bucket = {partition_of(M, state_rk(c.bc_id)): c for c in batch}  # one id per bucket: sparse everywhere
    wanted = list(by_bucket.values())[:12]
    counter.reset()
    ENTITIES_READ.reset()
    found = await store.get_many_by_bc_ids(M, [c.bc_id for c in wanted])
    assert set(found) == {c.bc_id for c in wanted}
    assert ENTITIES_READ.reset() == 12 and counter.reset() == 12  # one point read per id, nothing else


async def test_ids_read_only_their_rows_once_the_partition_is_measured(table_stores: Stores) -> None:
    batch = await _seeded(table_stores, 1500)
    store, counter = table_stores.couplings, table_stores.op_counter
    _ = [p async for p in store.iter_all(M)]  # measures the partition
    wanted = random.sample(batch, 60)
    missing = [str(uuid.uuid4()) for _ in range(10)]
    counter.reset()
    ENTITIES_READ.reset()
    found = await store.get_many_by_bc_ids(M, [c.bc_id for c in wanted] + missing)
    assert set(found) == {c.bc_id for c in wanted}
    assert ENTITIES_READ.reset() == 60  # never the partition (1,500 state rows) for 70 ids; a missing id reads none
    assert counter.reset() <= 70  # point reads where sparse, key-list queries (<= 12 ids each) where not


async def test_moderately_dense_ids_are_key_list_queries_returning_only_them(table_stores: Stores) -> None:
    batch = await _seeded(table_stores, 1500)
    store, counter = table_stores.couplings, table_stores.op_counter
    _ = [p async for p in store.iter_all(M)]
    per_bucket: dict[str, list[Coupling]] = {}
    for c in batch:
        per_bucket.setdefault(partition_of(M, state_rk(c.bc_id)), []).append(c)
    # 8 of each bucket's ~94 rows (1 in 12), spread over its whole key range: dense enough, <= 12 keys a bucket
    wanted = [c for rows in per_bucket.values() for c in random.sample(rows, 8)]
    counter.reset()
    ENTITIES_READ.reset()
    found = await store.get_many_by_bc_ids(M, [c.bc_id for c in wanted])
    assert {(c.bc_id, c.dataverse_id) for c in found.values()} == {(c.bc_id, c.dataverse_id) for c in wanted}
    assert ENTITIES_READ.reset() == len(wanted) == 8 * BUCKETS  # only the rows asked for
    assert counter.reset() == BUCKETS  # one key-list query per bucket, not one request per id


def test_a_key_list_filter_is_bounded_by_its_keys_range() -> None:
    assert key_list_filter("P%|a", ["bc:2", "bc:1'x"]) == (
        "PartitionKey eq 'P%|a' and RowKey ge 'bc:1''x' and RowKey le 'bc:2'"
        " and (RowKey eq 'bc:2' or RowKey eq 'bc:1''x')"
    )
    for bad in ([], [f"k{i}" for i in range(KEYS_PER_QUERY + 1)]):
        with pytest.raises(ValueError):
            key_list_filter("p", bad)


async def test_an_unmeasured_lookup_never_reads_rows_it_does_not_need(table_stores: Stores) -> None:
    batch = await _seeded(table_stores, 3000)
    store = _fresh_store(table_stores)
    wanted = random.sample(batch, 40)
    ENTITIES_READ.reset()
    found = await store.get_many_by_bc_ids(M, [c.bc_id for c in wanted])
    assert set(found) == {c.bc_id for c in wanted}
    assert ENTITIES_READ.reset() <= 1000 + 40  # at most one probing page, then point reads for the rest
    again = await store.get_many_by_bc_ids(M, [c.bc_id for c in random.sample(batch, 40)])
    assert len(again) == 40 and ENTITIES_READ.reset() == 40  # the density it measured: point reads at once


async def test_dense_ids_are_one_range_scan_per_bucket(table_stores: Stores) -> None:
    batch = await _seeded(table_stores, 1200)
    store, counter = _fresh_store(table_stores), table_stores.op_counter
    await store.get_many_by_bc_ids(M, [])  # its first use of the mapping: one (empty) look at the old layout
    page = sorted(batch, key=lambda c: state_rk(c.bc_id))[100:1100]  # a sorted page: dense in its key range
    counter.reset()
    ENTITIES_READ.reset()
    found = await store.get_many_by_bc_ids(M, [c.bc_id for c in page])
    assert len(found) == 1000
    assert counter.reset() == BUCKETS and ENTITIES_READ.reset() == 1000  # exactly the rows of the range


async def test_dataverse_ids_read_their_index_row_and_state_row_only(table_stores: Stores) -> None:
    batch = await _seeded(table_stores, 1500)
    store = table_stores.couplings
    _ = [p async for p in store.iter_all(M)]
    wanted = random.sample(batch, 60)
    ENTITIES_READ.reset()
    found = await store.get_many_by_dataverse_ids(M, [c.dataverse_id.upper() for c in wanted])
    assert {c.bc_id for c in found.values()} == {c.bc_id for c in wanted}
    assert ENTITIES_READ.reset() == 120  # one index row + one state row per id


async def test_the_lean_decoder_matches_the_sdk(table_stores: Stores) -> None:
    c = _cp(bc_values={"name": "ü" * 40_000}, dv_values={"n": 1.5}, last_sync_result="succeeded", skipped=True)
    c.history = [{"at": "2024-01-01T00:00:00+00:00", "action": "coupled"}]
    await table_stores.couplings.couple(c)
    table = await table_stores.tables.get(table_stores.couplings._name)
    sdk_row = await table.get_entity(partition_of(M, state_rk(c.bc_id)), state_rk(c.bc_id))
    lean_row = (await table_stores.couplings._rows(M, "bc:", [state_rk(c.bc_id)]))[state_rk(c.bc_id)]
    assert dict(lean_row) == dict(sdk_row)
    assert lean_row.metadata["etag"] == sdk_row.metadata["etag"]
    assert lean_row.metadata["timestamp"] == sdk_row.metadata["timestamp"]
    assert from_state_entity(M, lean_row) == from_state_entity(M, sdk_row)
    raw = {"odata.etag": "e", "PartitionKey": "p", "RowKey": "r", "N": "5", "N@odata.type": "Edm.Int64",
           "D": "2024-01-02T03:04:05.1234567Z", "D@odata.type": "Edm.DateTime", "S": "x"}  # fmt: skip
    row = entity_of(raw)
    d = datetime(2024, 1, 2, 3, 4, 5, 123456, UTC)
    assert row == {"PartitionKey": "p", "RowKey": "r", "N": 5, "D": d, "S": "x"}
    assert row.metadata == {"etag": "e", "timestamp": None}


def test_a_state_rows_history_reads_as_the_generic_reader_reads_it() -> None:
    c = _cp()
    assert state_history(to_state_entity(c)) == history_of(to_state_entity(c)) == []
    c.history = [{"at": "2024-01-02T00:00:00+00:00", "action": "synced"}, {"at": "2024-01-01T00:00:00+00:00"}]
    row = to_state_entity(c)
    assert state_history(row) == history_of(row) == sorted(c.history, key=lambda e: e["at"])
    c.history = [{"at": "x", "detail": "é" * 40_000}]  # split over several properties
    assert state_history(to_state_entity(c)) == history_of(to_state_entity(c)) == c.history


async def test_concurrent_lookups_hold_at_most_scan_concurrency_pages(
    table_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fanned-out job's workers look up 16 buckets for each batch at once: the range scans in flight (each
    holding a decoded page of up to 1,000 rows) are bounded per process, and every lookup still finds its rows."""
    batch = await _seeded(table_stores, 1200)
    store = _fresh_store(table_stores)  # nothing measured: every bucket's first lookup scans
    live, peak = 0, 0
    real = coupling_store.raw_pages

    async def counting(*args: Any, **kw: Any) -> AsyncIterator[list[dict[str, Any]]]:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        try:
            async for page in real(*args, **kw):
                yield page
        finally:
            live -= 1

    monkeypatch.setattr(coupling_store, "raw_pages", counting)
    pages = [sorted(batch, key=lambda c: state_rk(c.bc_id))[i : i + 600] for i in (0, 300, 600)]
    found = await asyncio.gather(*(store.get_many_by_bc_ids(M, [c.bc_id for c in p]) for p in pages))
    assert [len(f) for f in found] == [600, 600, 600]
    assert 1 < peak <= coupling_store.SCAN_CONCURRENCY < 3 * BUCKETS
