"""Synced marks (#23): one small-row read of every coupling tells a change page's rows that their couplings'
last syncs already saw them, for the in-memory fake and Table Storage alike; ids compare case-insensitively."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.domain.model import Coupling, Side
from shared.planning.decisions import holds_synced_mark
from shared.stores import Stores
from shared.stores.coupling_store import BUCKETS, TableCouplingStore
from shared.stores.tables import ENTITIES_READ
from tests.fakes import FakeStores

M = "CUSTOMER"
T = datetime(2026, 12, 3, 10, 0, 0, 123000, tzinfo=UTC)
KEYS = ["name", "phone"]


def _cp(n: int) -> Coupling:
    return Coupling(
        mapping=M,
        bc_id=str(uuid.uuid4()).upper(),
        dataverse_id=str(uuid.uuid4()).upper(),
        coupled_at=T,
        bc_values={"name": f"C{n}", "phone": "1"},
        dv_values={"name": f"C{n}", "phone": "1"} if n % 2 else {"name": f"C{n}"},  # odd: every key synced
        bc_modified_on=T + timedelta(seconds=n),
    )


async def test_marks_hold_the_bc_stamp_and_the_dataverse_snapshot_of_every_coupling(
    stores: Stores | FakeStores,
) -> None:
    batch = [_cp(n) for n in range(40)]
    await stores.couplings.couple_many(batch)
    await stores.couplings.couple_many([Coupling(mapping="OTHER", bc_id=str(uuid.uuid4()), dataverse_id="x",
                                                 coupled_at=T)])  # fmt: skip
    bc = await stores.couplings.synced_marks(M, Side.BC, KEYS)
    assert bc == {c.bc_id.lower(): c.bc_modified_on for c in batch}  # another mapping's couplings are not in it
    dv = await stores.couplings.synced_marks(M, Side.DATAVERSE, KEYS)
    assert set(dv) == {c.dataverse_id.lower() for c in batch}
    for n, c in enumerate(batch):
        mark = dv[c.dataverse_id.lower()]
        if n % 2:
            assert holds_synced_mark(KEYS, {"name": f"C{n}", "phone": "1"}, mark)
            assert not holds_synced_mark(KEYS, {"name": f"C{n}", "phone": "2"}, mark)
        else:
            assert mark is None  # "phone" never synced: no row of it matches


async def test_marks_follow_the_last_sync(stores: Stores | FakeStores) -> None:
    c = _cp(1)
    await stores.couplings.couple_many([c])
    c.dv_values = {"name": "Renamed", "phone": "9"}
    c.bc_modified_on = T + timedelta(hours=1)
    await stores.couplings.save_sync_state([c])
    assert (await stores.couplings.synced_marks(M, Side.BC, KEYS)) == {c.bc_id.lower(): c.bc_modified_on}
    mark = (await stores.couplings.synced_marks(M, Side.DATAVERSE, KEYS))[c.dataverse_id.lower()]
    assert holds_synced_mark(KEYS, {"name": "Renamed", "phone": "9"}, mark)
    assert not holds_synced_mark(KEYS, {"name": "C1", "phone": "1"}, mark)


async def test_marks_read_each_coupling_once_and_measure_the_buckets_for_later_lookups(table_stores: Stores) -> None:
    batch = [_cp(n) for n in range(300)]
    await table_stores.couplings.couple_many(batch)
    store = TableCouplingStore(table_stores.tables, table_stores.couplings._name)  # another process: knows nothing
    assert await store.estimated_count(M) is None
    await store.synced_marks(M, Side.BC, KEYS)  # its first use of the mapping (one empty look at the old layout)
    counter = table_stores.op_counter
    counter.reset()
    ENTITIES_READ.reset()
    marks = await store.synced_marks(M, Side.DATAVERSE, KEYS)
    assert len(marks) == 300 and ENTITIES_READ.reset() == 300  # state rows only, one each
    assert counter.reset() == BUCKETS  # one page per bucket
    assert await store.estimated_count(M) == 300  # every state row was read: the buckets are measured
    ENTITIES_READ.reset()
    few = [c.bc_id for c in batch[:5]]
    assert set(await store.get_many_by_bc_ids(M, few)) == set(few)
    assert ENTITIES_READ.reset() == 5  # measured sparse: point reads, no probing scan
