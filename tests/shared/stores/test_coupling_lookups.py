"""Coupling lookups on Azurite read only what they need (#23): point reads for ids that are sparse in their key
range, a range scan only when the ids are dense there, a scan that turns out sparse stops, and the lean row
decoder gives what the SDK's deserializer gives."""

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
from shared.stores.coupling_store import BUCKETS, from_state_entity, partition_of, state_rk
from shared.stores.tables import ENTITIES_READ, entity_of

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


async def test_sparse_ids_are_point_reads_once_the_partition_is_measured(table_stores: Stores) -> None:
    batch = await _seeded(table_stores, 1500)
    store, counter = table_stores.couplings, table_stores.op_counter
    _ = [p async for p in store.iter_all(M)]  # measures the partition
    wanted = random.sample(batch, 60)
    missing = [str(uuid.uuid4()) for _ in range(10)]
    counter.reset()
    ENTITIES_READ.reset()
    found = await store.get_many_by_bc_ids(M, [c.bc_id for c in wanted] + missing)
    assert set(found) == {c.bc_id for c in wanted}
    assert ENTITIES_READ.reset() == 60  # never the partition (1,500 state rows) for 70 ids
    assert counter.reset() == 70  # one point read per id; a missing row is a 404, not a scan


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
