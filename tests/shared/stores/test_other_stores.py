"""SyncErrorStore, JobStore, WatermarkStore, MappingSettingsStore against the fake and Azurite."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.errors import JobNotFoundError
from shared.domain.model import COUNT_KEYS, Direction, Job, MappingSettings, Side, SyncErrorEntry, Watermark
from shared.errors import ConflictError, PreconditionFailedError
from shared.stores import Stores

M = "CUSTOMER"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def gid() -> str:
    return str(uuid.uuid4())


def err(
    bc: str | None, direction: str = "toDataverse", at: datetime = T0, mapping: str = M, **kw: object
) -> SyncErrorEntry:
    fields: dict = {"code": "boom", "message": "it failed", "transient": False} | kw
    return SyncErrorEntry(id="", mapping=mapping, direction=direction, bc_id=bc, last_occurred_at=at, **fields)


# ----------------------------------------------------------------------------- sync errors
async def test_record_upserts_per_record_and_direction(stores: Stores) -> None:
    bc = gid()
    await stores.errors.record_many([err(bc, at=T0, job_id="j1")])
    await stores.errors.record_many(
        [err(bc, at=T0 + timedelta(minutes=1), transient=True, message="again", job_id="j2")]
    )
    await stores.errors.record_many([err(bc, direction="fromDataverse", at=T0 + timedelta(minutes=2))])
    page, token = await stores.errors.list_page(mapping=M)
    assert token is None
    assert [e.direction for e in page] == ["fromDataverse", "toDataverse"]  # newest first
    e = page[1]
    assert e.attempts == 2 and e.first_occurred_at == T0 and e.last_occurred_at == T0 + timedelta(minutes=1)
    assert e.transient is True and e.message == "again" and e.job_id == "j2" and e.bc_id == bc
    assert e.id and e.id != page[0].id
    got = await stores.errors.get_many([e.id, "bm9wZQ", page[0].id])
    assert [g.id for g in got] == [e.id, page[0].id]


async def test_record_many_batches_and_same_key_in_one_call(stores: Stores) -> None:
    ids = [gid() for _ in range(230)]
    await stores.errors.record_many([err(i, at=T0 + timedelta(seconds=n)) for n, i in enumerate(ids)])
    await stores.errors.record_many([err(i, at=T0 + timedelta(hours=1)) for i in ids[:120]])
    seen = []
    token = None
    while True:
        page, token = await stores.errors.list_page(mapping=M, top=100, continuation=token)
        seen += page
        if not token:
            break
    assert len(seen) == 230 and len({e.id for e in seen}) == 230
    assert [e.last_occurred_at for e in seen] == sorted((e.last_occurred_at for e in seen), reverse=True)
    assert {e.bc_id: e.attempts for e in seen} == {i: (2 if n < 120 else 1) for n, i in enumerate(ids)}


async def test_close_for_records_by_dataverse_id_closes_only_errors_naming_no_bc_record(stores: Stores) -> None:
    d, b = gid(), gid()
    await stores.errors.record_many(
        [err(None, direction="fromDataverse", dataverse_id=d), err(b, dataverse_id=d), err(None, dataverse_id=gid())]
    )
    assert await stores.errors.close_for_records(M, [], [d.upper()]) == 1
    open_page, _ = await stores.errors.list_page(mapping=M)
    assert {(e.bc_id, e.dataverse_id == d) for e in open_page} >= {(b, True)}
    assert all(not (e.bc_id is None and e.dataverse_id == d) for e in open_page)


async def test_close_for_records_and_reopen(stores: Stores) -> None:
    a, b = gid(), gid()
    await stores.errors.record_many([err(a), err(a, direction="fromDataverse"), err(b), err(gid(), mapping="CONTACT")])
    assert await stores.errors.close_for_records(M, [a.upper()]) == 2
    assert await stores.errors.close_for_records(M, [a]) == 0
    open_page, _ = await stores.errors.list_page(mapping=M)
    assert [e.bc_id for e in open_page] == [b]
    all_page, _ = await stores.errors.list_page(mapping=M, include_closed=True)
    closed = [e for e in all_page if e.closed]
    assert len(closed) == 2 and all(e.closed_at is not None for e in closed)
    everything, _ = await stores.errors.list_page(include_closed=True)
    assert len(everything) == 4
    # the record fails again: a fresh open error
    await stores.errors.record_many([err(a, at=T0 + timedelta(days=1))])
    again = [e for e in (await stores.errors.list_page(mapping=M))[0] if e.bc_id == a]
    assert len(again) == 1 and again[0].attempts == 1 and again[0].first_occurred_at == T0 + timedelta(days=1)


async def test_dataverse_only_errors_and_purge(stores: Stores) -> None:
    dv = gid()
    await stores.errors.record_many([SyncErrorEntry(id="", mapping=M, direction="fromDataverse", code="x",
                                                    message="m", transient=False, dataverse_id=dv,
                                                    last_occurred_at=T0)])  # fmt: skip
    await stores.errors.record_many([err(gid(), at=T0 + timedelta(days=10))])
    page, _ = await stores.errors.list_page()
    assert page[-1].dataverse_id == dv and page[-1].bc_id is None
    assert await stores.errors.purge_older_than(T0 + timedelta(days=5)) == 1
    page, _ = await stores.errors.list_page()
    assert len(page) == 1 and page[0].bc_id is not None


# ----------------------------------------------------------------------------- jobs
def job(mapping: str = M, at: datetime | None = None) -> Job:
    return Job(job_id=uuid.uuid4().hex, mapping=mapping, kind="full", direction="toDataverse", created_at=at)


async def test_job_create_get_and_status_transitions(stores: Stores) -> None:
    j = await stores.jobs.create(job())
    assert j.status == "queued" and j.counts == dict.fromkeys(COUNT_KEYS, 0) and j.created_at is not None
    with pytest.raises(ConflictError):
        await stores.jobs.create(Job(job_id=j.job_id, mapping=M, kind="full", direction=None))
    assert await stores.jobs.get("nope") is None
    running = await stores.jobs.set_status(j.job_id, "running", expected_batches=3)
    assert running.status == "running" and running.started_at is not None and running.expected_batches == 3
    done = await stores.jobs.set_status(j.job_id, "partial", detail="2 failed")
    assert done.status == "partial" and done.finished_at is not None and done.detail == "2 failed"
    late = await stores.jobs.set_status(j.job_id, "running")  # terminal stays
    assert late.status == "partial"
    got = await stores.jobs.get(j.job_id)
    assert got is not None and got.status == "partial" and got.expected_batches == 3 and got.detail == "2 failed"
    with pytest.raises(JobNotFoundError):
        await stores.jobs.set_status("nope", "running")
    with pytest.raises(ValueError):
        await stores.jobs.set_status(j.job_id, "running", counts={})


async def test_job_counters_from_8_concurrent_updaters_add_up(stores: Stores) -> None:
    j = await stores.jobs.create(job())

    async def worker(w: int) -> None:
        for n in range(6):
            await stores.jobs.add_counts(j.job_id, {"modified": 3, "failed": 1}, batch_id=f"w{w}-b{n}")

    await asyncio.gather(*(worker(w) for w in range(8)))
    got = await stores.jobs.get(j.job_id)
    assert got is not None
    assert got.counts["modified"] == 8 * 6 * 3 and got.counts["failed"] == 8 * 6
    assert got.completed_batches == 48


async def test_job_counters_idempotent_per_batch_id(stores: Stores) -> None:
    j = await stores.jobs.create(job())
    await stores.jobs.add_counts(j.job_id, {"inserted": 5}, batch_id="b1")
    await asyncio.gather(*(stores.jobs.add_counts(j.job_id, {"inserted": 5}, batch_id="b1") for _ in range(4)))
    await stores.jobs.add_counts(j.job_id, {"inserted": 1})
    await stores.jobs.add_counts(j.job_id, {"inserted": 1})
    got = await stores.jobs.get(j.job_id)
    assert got is not None and got.counts["inserted"] == 7 and got.completed_batches == 1
    with pytest.raises(JobNotFoundError):
        await stores.jobs.add_counts("nope", {"inserted": 1})


async def test_jobs_listed_newest_first_with_paging_and_mapping_filter(stores: Stores) -> None:
    created = []
    for n in range(7):
        created.append(await stores.jobs.create(job(mapping=M if n % 2 else "CONTACT", at=T0 + timedelta(minutes=n))))
    page, token = await stores.jobs.list_page(top=3)
    assert [j.job_id for j in page] == [c.job_id for c in created[::-1][:3]]
    rest, token2 = await stores.jobs.list_page(top=10, continuation=token)
    assert [j.job_id for j in rest] == [c.job_id for c in created[::-1][3:]] and token2 is None
    mine, _ = await stores.jobs.list_page(mapping=M, top=10)
    assert [j.job_id for j in mine] == [c.job_id for c in created[::-1] if c.mapping == M]


# ----------------------------------------------------------------------------- watermarks
async def test_watermark_optimistic_concurrency(stores: Stores) -> None:
    empty = await stores.watermarks.get(M, Side.BC)
    assert empty.cursor is None and empty.row_etag is None
    first = await stores.watermarks.put(Watermark(mapping=M, side=Side.BC, cursor="2024-01-01T00:00:00Z"))
    assert first.row_etag and first.updated_at is not None
    with pytest.raises(PreconditionFailedError):  # create-only when no etag
        await stores.watermarks.put(Watermark(mapping=M, side=Side.BC, cursor="x"))
    second = await stores.watermarks.put(Watermark(mapping=M, side=Side.BC, cursor="c2", row_etag=first.row_etag))
    with pytest.raises(PreconditionFailedError):  # stale etag
        await stores.watermarks.put(Watermark(mapping=M, side=Side.BC, cursor="c3", row_etag=first.row_etag))
    got = await stores.watermarks.get(M, Side.BC)
    assert got.cursor == "c2" and got.row_etag == second.row_etag
    assert (await stores.watermarks.get(M, Side.DATAVERSE)).cursor is None
    cleared = await stores.watermarks.put(Watermark(mapping=M, side=Side.BC, cursor=None, row_etag=got.row_etag))
    assert (await stores.watermarks.get(M, Side.BC)).cursor is None and cleared.row_etag


# ----------------------------------------------------------------------------- mapping settings
async def test_mapping_settings_put_and_get_all(stores: Stores) -> None:
    assert await stores.settings.get_all() == {}
    s = await stores.settings.put(MappingSettings(mapping=M, direction=Direction.TO_DATAVERSE, state="paused"))
    await stores.settings.put(MappingSettings(mapping="CONTACT", sync_only_coupled=False))
    all_ = await stores.settings.get_all()
    assert set(all_) == {M, "CONTACT"}
    assert (
        all_[M].direction is Direction.TO_DATAVERSE and all_[M].state == "paused" and all_[M].sync_only_coupled is None
    )
    assert all_["CONTACT"].sync_only_coupled is False and all_["CONTACT"].direction is None
    updated = await stores.settings.put(MappingSettings(mapping=M, state="running", row_etag=s.row_etag))
    assert (await stores.settings.get_all())[M].direction is None  # put replaces the overrides
    with pytest.raises(PreconditionFailedError):
        await stores.settings.put(MappingSettings(mapping=M, state="paused", row_etag=s.row_etag))
    assert updated.row_etag != s.row_etag
