"""CouplingStore behaviour, against the fake and against Azurite (the ``stores`` fixture)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from shared.domain.errors import AlreadyCoupledError
from shared.domain.model import Coupling
from shared.stores import Stores

M = "CUSTOMER"


def gid() -> str:
    return str(uuid.uuid4())


def cp(bc: str | None = None, dv: str | None = None, mapping: str = M) -> Coupling:
    return Coupling(mapping=mapping, bc_id=bc or gid(), dataverse_id=dv or gid(), coupled_at=datetime.now(UTC))


async def test_couple_and_lookup_both_ways(stores: Stores) -> None:
    c = cp()
    c.bc_values = {"name": "Contoso", "n": 3, "nested": {"a": [1, 2]}}
    assert await stores.couplings.couple(c) == []
    assert c.row_etag
    by_bc = await stores.couplings.get_by_bc_id(M, c.bc_id)
    by_dv = await stores.couplings.get_by_dataverse_id(M, c.dataverse_id)
    assert by_bc is not None and by_dv is not None
    assert by_bc.dataverse_id == c.dataverse_id and by_dv.bc_id == c.bc_id
    assert by_bc.bc_values == c.bc_values and by_bc.dv_values == {}
    assert by_bc.coupled_at == c.coupled_at
    assert by_bc.row_etag == c.row_etag
    # GUIDs compare case-insensitively
    assert (await stores.couplings.get_by_bc_id(M, c.bc_id.upper())) is not None
    assert await stores.couplings.get_by_bc_id("OTHER", c.bc_id) is None
    assert await stores.couplings.get_by_dataverse_id(M, gid()) is None


async def test_couple_rejects_either_side_already_coupled(stores: Stores) -> None:
    c = cp()
    await stores.couplings.couple(c)
    with pytest.raises(AlreadyCoupledError):
        await stores.couplings.couple(cp(bc=c.bc_id))
    with pytest.raises(AlreadyCoupledError):
        await stores.couplings.couple(cp(dv=c.dataverse_id))
    # nothing half-written by the failed attempts
    assert (await stores.couplings.get_by_bc_id(M, c.bc_id)).dataverse_id == c.dataverse_id  # type: ignore[union-attr]
    pages = [p async for p in stores.couplings.iter_all(M)]
    assert sum(len(p) for p in pages) == 1


async def test_concurrent_couple_of_same_record_exactly_one_wins(stores: Stores) -> None:
    bc = gid()
    attempts = [cp(bc=bc) for _ in range(6)]
    results = await asyncio.gather(*(stores.couplings.couple(c) for c in attempts), return_exceptions=True)
    assert sum(1 for r in results if r == []) == 1
    assert sum(1 for r in results if isinstance(r, AlreadyCoupledError)) == 5
    winner = next(c for c, r in zip(attempts, results, strict=True) if r == [])
    assert (await stores.couplings.get_by_bc_id(M, bc)).dataverse_id == winner.dataverse_id  # type: ignore[union-attr]
    losers = [c for c in attempts if c is not winner]
    assert await stores.couplings.get_many_by_dataverse_ids(M, [c.dataverse_id for c in losers]) == {}


async def test_couple_replace_removes_blockers(stores: Stores) -> None:
    a = cp()
    b = cp()
    await stores.couplings.couple(a)
    await stores.couplings.couple(b)
    new = cp(bc=a.bc_id, dv=b.dataverse_id)  # takes a's BC record and b's Dataverse row
    removed = await stores.couplings.couple(new, replace=True)
    assert sorted(r.bc_id for r in removed) == sorted([a.bc_id, b.bc_id])
    assert (await stores.couplings.get_by_bc_id(M, a.bc_id)).dataverse_id == b.dataverse_id  # type: ignore[union-attr]
    assert await stores.couplings.get_by_bc_id(M, b.bc_id) is None
    assert await stores.couplings.get_by_dataverse_id(M, a.dataverse_id) is None
    assert (await stores.couplings.get_by_dataverse_id(M, b.dataverse_id)).bc_id == a.bc_id  # type: ignore[union-attr]
    # replacing the identical pair and a free pair
    assert len(await stores.couplings.couple(cp(bc=a.bc_id, dv=b.dataverse_id), replace=True)) == 1
    assert await stores.couplings.couple(cp(), replace=True) == []
    total = sum(len(p) for p in [p async for p in stores.couplings.iter_all(M)])
    assert total == 2


async def test_couple_many_reports_per_item(stores: Stores) -> None:
    existing = cp()
    await stores.couplings.couple(existing)
    batch = [cp() for _ in range(120)]
    batch[7] = cp(bc=existing.bc_id)  # BC side taken
    batch[80] = cp(dv=existing.dataverse_id)  # Dataverse side taken
    batch[99] = cp(bc=batch[98].bc_id)  # duplicate inside the call
    results = await stores.couplings.couple_many(batch)
    failed = {i for i, r in enumerate(results) if isinstance(r, AlreadyCoupledError)}
    assert failed == {7, 80, 99}
    assert all(isinstance(r, Coupling) for i, r in enumerate(results) if i not in failed)
    found = await stores.couplings.get_many_by_bc_ids(M, [c.bc_id for c in batch])
    assert len(found) == 118  # 119 distinct ids; batch[80] never got coupled
    assert found[batch[98].bc_id].dataverse_id == batch[98].dataverse_id
    assert found[existing.bc_id].dataverse_id == existing.dataverse_id
    assert batch[80].bc_id not in found


async def test_batches_of_250_split_correctly(stores: Stores) -> None:
    batch = [cp() for _ in range(250)]
    results = await stores.couplings.couple_many(batch)
    assert all(isinstance(r, Coupling) for r in results)
    by_dv = await stores.couplings.get_many_by_dataverse_ids(M, [c.dataverse_id for c in batch])
    assert len(by_dv) == 250
    assert all(by_dv[c.dataverse_id].bc_id == c.bc_id for c in batch)
    for c in batch:
        c.last_sync_result = "succeeded"
        c.dv_values = {"name": c.bc_id}
    await stores.couplings.save_sync_state(batch)
    loaded = await stores.couplings.get_many_by_bc_ids(M, [c.bc_id for c in batch])
    assert all(loaded[c.bc_id].dv_values == {"name": c.bc_id} for c in batch)
    removed = await stores.couplings.uncouple_many(M, [c.bc_id for c in batch[:250]])
    assert len(removed) == 250
    assert await stores.couplings.get_many_by_dataverse_ids(M, [c.dataverse_id for c in batch]) == {}


async def test_save_sync_state_roundtrip_and_clearing(stores: Stores) -> None:
    c = cp()
    await stores.couplings.couple(c)
    t = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    c.last_synced_at = t
    c.last_sync_direction = "toDataverse"
    c.last_sync_result = "failed"
    c.last_error = "boom"
    c.consecutive_failures = 2
    c.skipped = True
    c.bc_values = {"x": "é" * 40_000}  # larger than one string property
    c.dv_values = {"y": None, "z": 1.5}
    c.bc_etag, c.dv_etag = 'W/"1"', 'W/"2"'
    c.bc_modified_on, c.dv_modified_on = t, t
    await stores.couplings.save_sync_state([c])
    got = await stores.couplings.get_by_bc_id(M, c.bc_id)
    assert got is not None
    fields = "last_synced_at last_sync_direction last_sync_result last_error consecutive_failures skipped"
    fields += " bc_values dv_values bc_etag dv_etag bc_modified_on dv_modified_on"
    for field in fields.split():
        assert getattr(got, field) == getattr(c, field), field
    assert got.row_etag == c.row_etag
    # a later success clears the error (merge must not keep stale values)
    got.last_error, got.last_sync_result, got.consecutive_failures, got.skipped = None, "succeeded", 0, False
    got.bc_values = {"x": 1}
    await stores.couplings.save_sync_state([got])
    again = await stores.couplings.get_by_bc_id(M, c.bc_id)
    assert again is not None and again.last_error is None and again.skipped is False and again.bc_values == {"x": 1}


async def test_save_sync_state_does_not_resurrect_uncoupled(stores: Stores) -> None:
    a, b = cp(), cp()
    await stores.couplings.couple_many([a, b])
    await stores.couplings.uncouple_many(M, [a.bc_id])
    a.last_sync_result = b.last_sync_result = "succeeded"
    await stores.couplings.save_sync_state([a, b])
    assert await stores.couplings.get_by_bc_id(M, a.bc_id) is None
    assert (await stores.couplings.get_by_bc_id(M, b.bc_id)).last_sync_result == "succeeded"  # type: ignore[union-attr]


async def test_uncouple_many_tolerates_missing(stores: Stores) -> None:
    a, b = cp(), cp()
    await stores.couplings.couple_many([a, b])
    removed = await stores.couplings.uncouple_many(M, [a.bc_id, gid(), a.bc_id])
    assert [r.bc_id for r in removed] == [a.bc_id]
    assert await stores.couplings.get_by_dataverse_id(M, a.dataverse_id) is None
    assert await stores.couplings.get_by_bc_id(M, b.bc_id) is not None
    assert await stores.couplings.uncouple_many(M, []) == []
    # the freed sides can be coupled again
    await stores.couplings.couple(cp(bc=a.bc_id, dv=a.dataverse_id))


async def test_paging_past_1000_and_delete_all(stores: Stores) -> None:
    batch = [cp() for _ in range(1203)]
    await stores.couplings.couple_many(batch)
    await stores.couplings.couple(cp(mapping="CONTACT"))
    pages = [p async for p in stores.couplings.iter_all(M)]
    assert [len(p) for p in pages] == [1000, 203]
    seen: list[str] = []
    token = None
    while True:
        page, token = await stores.couplings.list_page(M, top=500, continuation=token)
        seen += [c.bc_id for c in page]
        if token is None:
            break
    assert len(seen) == 1203 and len(set(seen)) == 1203
    assert set(seen) == {c.bc_id for c in batch}
    # bulk lookups with both strategies give the same answer
    ids = [c.bc_id for c in batch[::3]] + [gid()]
    found = await stores.couplings.get_many_by_bc_ids(M, ids)
    assert set(found) == set(ids[:-1])
    dv_found = await stores.couplings.get_many_by_dataverse_ids(M, [c.dataverse_id for c in batch[:20]])
    assert len(dv_found) == 20
    assert await stores.couplings.delete_all(M) == 1203
    assert [p async for p in stores.couplings.iter_all(M)] == []
    assert await stores.couplings.get_by_dataverse_id(M, batch[0].dataverse_id) is None
    assert len([p async for p in stores.couplings.iter_all("CONTACT")]) == 1


async def test_list_page_rejects_garbage_token(stores: Stores) -> None:
    with pytest.raises(ValueError):
        await stores.couplings.list_page(M, continuation="!!not-a-token!!")


async def test_mapping_names_with_forbidden_characters(stores: Stores) -> None:
    mapping = "A/B\\C#D?E%F\tG"
    c = cp(mapping=mapping)
    await stores.couplings.couple(c)
    got = await stores.couplings.get_by_dataverse_id(mapping, c.dataverse_id)
    assert got is not None and got.mapping == mapping
    page, _ = await stores.couplings.list_page(mapping)
    assert [x.bc_id for x in page] == [c.bc_id]


def _entry(at: str, action: str) -> dict:
    return {"at": at, "jobId": None, "trigger": "job", "action": action, "direction": None, "changes": [],
            "error": None}  # fmt: skip


async def test_history_rides_in_the_state_row_and_outlives_the_coupling(stores: Stores) -> None:
    """#22: entries are saved with the coupling state; an uncoupled record keeps them (also through a second
    coupling); uncouple-all keeps them; an archive past retention is purged; never coupled -> None."""
    c = cp()
    c.history = [_entry("2026-01-01T00:00:00+00:00", "coupled")]
    await stores.couplings.couple(c)
    c.history = [*c.history, _entry("2026-01-02T00:00:00+00:00", "updated")]
    await stores.couplings.save_sync_state([c])
    assert [e["action"] for e in await stores.couplings.history(M, c.bc_id) or []] == ["coupled", "updated"]
    await stores.couplings.uncouple_many(M, [c.bc_id])
    again = cp(bc=c.bc_id)
    again.coupled_at = datetime(2026, 2, 1, tzinfo=UTC)
    again.history = [_entry("2026-02-01T00:00:00+00:00", "coupled")]
    await stores.couplings.couple(again)
    await stores.couplings.uncouple_many(M, [c.bc_id])
    got = await stores.couplings.history(M, c.bc_id.upper()) or []
    assert [e["action"] for e in got] == ["coupled", "updated", "coupled", "uncoupled", "uncoupled"]  # by time
    other = cp()
    other.history = [_entry("2026-01-01T00:00:00+00:00", "coupled")]
    await stores.couplings.couple(other)
    await stores.couplings.uncouple_many(M, [other.bc_id])
    kept = cp()
    kept.history = [_entry("2026-01-03T00:00:00+00:00", "coupled")]
    await stores.couplings.couple(kept)
    await stores.couplings.delete_all(M)
    assert len(await stores.couplings.history(M, c.bc_id) or []) == 5
    assert [e["action"] for e in await stores.couplings.history(M, kept.bc_id) or []] == ["coupled", "uncoupled"]
    assert await stores.couplings.history(M, gid()) is None
    replaced = cp()
    replaced.history = [_entry("2026-01-04T00:00:00+00:00", "coupled")]
    await stores.couplings.couple(replaced)
    await stores.couplings.couple(cp(dv=replaced.dataverse_id), replace=True)  # takes its Dataverse row
    assert [e["action"] for e in await stores.couplings.history(M, replaced.bc_id) or []] == ["coupled", "uncoupled"]
    assert await stores.couplings.purge_history(M, datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert await stores.couplings.purge_history(M, datetime(2999, 1, 1, tzinfo=UTC)) == 4
    assert await stores.couplings.history(M, c.bc_id) is None
