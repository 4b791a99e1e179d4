"""#23: couplings spread over hash buckets. The pure parts (bucket, partition keys, what an existing claim means,
list tokens) with literals; on Azurite, the two writes of a coupling interrupted in between (a crash leaves no
duplicate and no dangling coupling, and the leftover is taken over), and the migration from one partition per
mapping, interrupted and re-run."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.errors import AlreadyCoupledError, InvalidContinuationError
from shared.domain.model import Coupling
from shared.errors import ConflictError
from shared.stores import Stores, TableCouplingStore
from shared.stores import coupling_store as cs
from shared.stores.coupling_store import (
    BUCKETS,
    _list_position,
    bucket_of,
    claim_verdict,
    index_rk,
    migrate_couplings,
    migrate_mapping,
    old_partition,
    partition,
    partition_of,
    state_rk,
    to_archive_entity,
    to_index_entity,
    to_state_entity,
)
from shared.stores.tables import encode_token, escape_key, query_all, quote

M = "CUSTOMER"


class Killed(Exception):
    """The process died here."""


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def cp(bc: str | None = None, dv: str | None = None, mapping: str = M) -> Coupling:
    return Coupling(mapping, bc or str(uuid.uuid4()), dv or str(uuid.uuid4()), datetime.now(UTC))


# ---------------------------------------------------------------------------------------------- pure
def test_buckets_are_a_stable_hash_of_the_normalized_id() -> None:
    assert bucket_of("x") == 0x11F6 % 16 == 6  # sha1("x") starts 11f6
    assert partition("CUSTOMER", 6) == "CUSTOMER%|6" and partition("A/B", 10) == "A%2FB%|a"
    assert partition_of(M, "bc:x") == partition_of(M, "dv:x") == partition_of(M, "h:x") == "CUSTOMER%|6"
    assert old_partition("A/B") == "A%2FB"  # '%' then '|' is never an escape: no bucket key is an old key
    assert partition_of(M, state_rk("ABC")) == partition_of(M, state_rk("abc"))  # ids compare case-insensitively
    ids = [str(uuid.UUID(int=n * 7919)) for n in range(1600)]
    counts = [sum(1 for i in ids if bucket_of(i) == b) for b in range(BUCKETS)]
    assert min(counts) > 60 and max(counts) < 140  # ~100 each


@pytest.mark.parametrize(
    ("holder", "points_back", "claimed_at", "verdict"),
    [
        ("B1", True, NOW - timedelta(days=1), "coupled"),  # a complete coupling holds it
        ("b1", True, NOW, "coupled"),
        ("B2", False, NOW - timedelta(seconds=10), "pending"),  # another couple may still write its state row
        ("B2", False, None, "pending"),
        ("B2", False, NOW - timedelta(minutes=6), "take"),  # a leftover past the lease
        ("b1", False, NOW, "take"),  # our own earlier attempt's claim
    ],
)
def test_claim_verdict(holder: str, points_back: bool, claimed_at: datetime | None, verdict: str) -> None:
    assert claim_verdict(holder=holder, points_back=points_back, claimed_at=claimed_at, bc_id="B1", now=NOW) == verdict


def test_list_tokens_are_opaque_positions_and_garbage_is_refused() -> None:
    assert _list_position(None) == (0, None)
    assert _list_position(encode_token({"b": 3, "c": "abc"})) == (3, "abc")
    for bad in ({"b": 16, "c": None}, {"b": "1", "c": None}, {"b": 1}, {"PartitionKey": "x"}, [1]):
        with pytest.raises(InvalidContinuationError):
            _list_position(encode_token(bad))


# ---------------------------------------------------------------------------------------------- Azurite
async def _raw(stores: Stores, pk: str) -> dict[str, dict[str, Any]]:
    table = await stores.tables.get(stores.couplings._name)
    return {r["RowKey"]: r async for page in query_all(table, f"PartitionKey eq {quote(pk)}") for r in page}


async def _all(store: TableCouplingStore, mapping: str = M) -> list[Coupling]:
    return [c async for page in store.iter_all(mapping) for c in page]


async def test_rows_sit_in_the_buckets_of_their_ids(table_stores: Stores) -> None:
    c = cp()
    await table_stores.couplings.couple(c)
    state = await _raw(table_stores, partition_of(M, state_rk(c.bc_id)))
    index = await _raw(table_stores, partition_of(M, index_rk(c.dataverse_id)))
    assert state[state_rk(c.bc_id)]["DataverseId"] == c.dataverse_id
    assert index[index_rk(c.dataverse_id)]["BcId"] == c.bc_id


def _crash_on(monkeypatch: pytest.MonkeyPatch, kind: str, prefix: str) -> None:
    """The process dies when it sends its first ``kind`` of a ``prefix`` row (after the writes before it)."""
    real = cs.submit_partitioned

    async def submit(table: Any, ops: Any, **kw: Any) -> Any:
        if ops and ops[0][0] == kind and ops[0][1]["RowKey"].startswith(prefix):
            raise Killed
        return await real(table, ops, **kw)

    monkeypatch.setattr(cs, "submit_partitioned", submit)


async def test_a_crash_between_claim_and_state_row_leaves_no_coupling_and_a_leftover_taken_over(
    table_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = table_stores.couplings
    first = cp()
    with monkeypatch.context() as m:
        _crash_on(m, "create", "bc:")
        with pytest.raises(Killed):
            await store.couple(first)
    assert index_rk(first.dataverse_id) in await _raw(table_stores, partition_of(M, index_rk(first.dataverse_id)))
    assert await store.get_by_dataverse_id(M, first.dataverse_id) is None  # the claim alone is no coupling
    assert await store.get_by_bc_id(M, first.bc_id) is None and await _all(store) == []
    with pytest.raises(AlreadyCoupledError):  # a fresh claim: its couple may still be writing
        await store.couple(cp(dv=first.dataverse_id))
    await store.couple(cp(bc=first.bc_id, dv=first.dataverse_id))  # the same coupling retried takes it over
    assert [c.bc_id for c in await _all(store)] == [first.bc_id]
    # another leftover, past its lease: another BC record takes the Dataverse row
    second = cp()
    with monkeypatch.context() as m:
        _crash_on(m, "create", "bc:")
        with pytest.raises(Killed):
            await store.couple_many([second])
    monkeypatch.setattr(cs, "CLAIM_LEASE", timedelta(0))
    other = cp(dv=second.dataverse_id)
    assert await store.couple_many([other]) == [other]
    assert (await store.get_by_dataverse_id(M, second.dataverse_id)).bc_id == other.bc_id  # type: ignore[union-attr]
    assert sorted(c.bc_id for c in await _all(store)) == sorted([first.bc_id, other.bc_id])


async def test_a_crash_inside_uncouple_frees_both_sides(table_stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    store = table_stores.couplings
    a, b = cp(), cp()
    await store.couple_many([a, b])
    with monkeypatch.context() as m:
        _crash_on(m, "delete", "dv:")  # the state rows are gone, their index rows not yet
        with pytest.raises(Killed):
            await store.uncouple_many(M, [a.bc_id, b.bc_id])
    assert await store.get_many_by_dataverse_ids(M, [a.dataverse_id, b.dataverse_id]) == {}
    assert await _all(store) == []
    await store.couple(cp(bc=a.bc_id, dv=a.dataverse_id))  # the same pair again
    monkeypatch.setattr(cs, "CLAIM_LEASE", timedelta(0))
    c = cp(dv=b.dataverse_id)
    await store.couple(c)  # the leftover of another record, past its lease
    assert sorted(x.bc_id for x in await _all(store)) == sorted([a.bc_id, c.bc_id])
    assert await store.uncouple_many(M, [a.bc_id, c.bc_id]) != []
    assert await _all(store) == []
    assert index_rk(a.dataverse_id) not in await _raw(table_stores, partition_of(M, index_rk(a.dataverse_id)))


async def test_a_failed_state_insert_releases_its_claim(table_stores: Stores) -> None:
    store = table_stores.couplings
    a = cp()
    await store.couple(a)
    loser = cp(bc=a.bc_id)  # the BC record is coupled: the claim of its new Dataverse row goes again
    with pytest.raises(AlreadyCoupledError):
        await store.couple(loser)
    assert index_rk(loser.dataverse_id) not in await _raw(table_stores, partition_of(M, index_rk(loser.dataverse_id)))
    assert await store.couple_many([cp(dv=loser.dataverse_id)]) != []  # free at once


async def test_concurrent_couples_of_one_dataverse_row_exactly_one_wins(table_stores: Stores) -> None:
    store = table_stores.couplings
    dv = str(uuid.uuid4())
    attempts = [cp(dv=dv) for _ in range(6)]
    results = await asyncio.gather(*(store.couple(c) for c in attempts), return_exceptions=True)
    assert sum(1 for r in results if r == []) == 1
    assert all(isinstance(r, AlreadyCoupledError) for r in results if r != [])
    assert len(await _all(store)) == 1


async def test_list_page_walks_every_bucket_with_stable_tokens(table_stores: Stores) -> None:
    store = table_stores.couplings
    batch = [cp() for _ in range(90)]
    await store.couple_many(batch)
    seen, token, pages = [], None, 0
    while True:
        page, nxt = await store.list_page(M, top=7, continuation=token)
        again, nxt_again = await store.list_page(M, top=7, continuation=token)
        assert [c.bc_id for c in again] == [c.bc_id for c in page] and nxt_again == nxt
        seen += [c.bc_id for c in page]
        pages += 1
        token = nxt
        if token is None:
            break
        assert len(page) == 7
    assert sorted(seen) == sorted(c.bc_id for c in batch) and pages == 13


def _old_layout(op: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row where the old layout kept it: partition ``escape_key(mapping)``."""
    return (op[0], op[1] | {"PartitionKey": op[1]["PartitionKey"].rsplit("%|", 1)[0]})


async def test_migration_from_one_partition_per_mapping_interrupted_and_rerun(
    table_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = await table_stores.tables.get(table_stores.couplings._name)
    couplings = [cp() for _ in range(250)] + [cp(mapping="A/B") for _ in range(3)]
    couplings[0].history = [{"at": "2026-01-01T00:00:00+00:00", "action": "coupled"}]
    ops = [("create", to_state_entity(c)) for c in couplings] + [("create", to_index_entity(c)) for c in couplings]
    gone = cp()
    gone.history = [{"at": "2026-01-02T00:00:00+00:00", "action": "coupled"}]
    ops.append(("upsert", to_archive_entity(gone)))  # an uncoupled record's history
    ops.append(("create", {"PartitionKey": old_partition(M), "RowKey": index_rk(str(uuid.uuid4())), "BcId": "x"}))
    for op in ops:  # the old layout: every row of a mapping in one partition
        old = _old_layout(op)
        await (table.create_entity(old[1]) if old[0] == "create" else table.upsert_entity(old[1]))
    assert len(await _raw(table_stores, old_partition(M))) == 502

    real = cs._delete_chunks
    calls = 0

    async def dies_on_second_delete(t: Any, o: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Killed  # the second page is copied, not yet deleted
        return await real(t, o)

    with monkeypatch.context() as m:
        m.setattr(cs, "_delete_chunks", dies_on_second_delete)
        with pytest.raises(Killed):
            await migrate_mapping(table, M, page_size=100)
    left = await _raw(table_stores, old_partition(M))
    assert 0 < len(left) < 502

    store = TableCouplingStore(table_stores.tables, table_stores.couplings._name)  # another process
    moved = await migrate_couplings(store)
    assert moved == {"A/B": 6, M: len(left)}
    assert await migrate_couplings(store) == {} and await migrate_mapping(table, M) == 0  # nothing left
    assert await _raw(table_stores, old_partition(M)) == {}
    got = await _all(store)
    assert sorted(c.bc_id for c in got) == sorted(c.bc_id for c in couplings[:250])  # every coupling once
    found = await store.get_many_by_dataverse_ids(M, [c.dataverse_id for c in couplings[:250]])
    assert {d: c.bc_id for d, c in found.items()} == {c.dataverse_id: c.bc_id for c in couplings[:250]}
    assert [e["action"] for e in await store.history(M, couplings[0].bc_id) or []] == ["coupled"]
    assert [e["action"] for e in await store.history(M, gone.bc_id) or []] == ["coupled"]
    assert len(await _all(store, "A/B")) == 3


async def test_a_store_moves_an_old_layout_mapping_before_its_first_use(table_stores: Stores) -> None:
    table = await table_stores.tables.get(table_stores.couplings._name)
    c = cp()
    for entity in (to_state_entity(c), to_index_entity(c)):
        await table.create_entity(entity | {"PartitionKey": escape_key(M)})
    store = TableCouplingStore(table_stores.tables, table_stores.couplings._name)
    assert (await store.get_by_dataverse_id(M, c.dataverse_id)).bc_id == c.bc_id  # type: ignore[union-attr]
    assert await _raw(table_stores, old_partition(M)) == {}


async def test_racing_couples_and_uncouples_keep_each_side_coupled_at_most_once(table_stores: Stores) -> None:
    store = table_stores.couplings
    bcs, dvs = [str(uuid.uuid4()) for _ in range(12)], [str(uuid.uuid4()) for _ in range(12)]

    async def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(25):
            b, d = rnd.choice(bcs), rnd.choice(dvs)
            if rnd.random() < 0.6:
                await store.couple_many([cp(bc=b, dv=d)])
            elif rnd.random() < 0.5:
                await store.uncouple_many(M, [b])
            else:
                with contextlib.suppress(ConflictError):  # a replace that kept racing gives up
                    await store.couple(cp(bc=b, dv=d), replace=True)

    await asyncio.gather(*(worker(n) for n in range(6)))
    couplings = await _all(store)
    assert len({c.dataverse_id for c in couplings}) == len(couplings)  # no Dataverse row twice
    assert len({c.bc_id for c in couplings}) == len(couplings)
    by_dv = await store.get_many_by_dataverse_ids(M, dvs)
    assert {d: c.bc_id for d, c in by_dv.items()} == {c.dataverse_id: c.bc_id for c in couplings}  # no dangling
