"""The job row on Table Storage: a job's bookkeeping (expected and completed batches, the pending change-feed
cursors) lives in typed columns, ``Detail`` only says why a job failed, and a row of the old layout (cursors
as JSON in ``Detail``) still reads and completes."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.data.tables import UpdateMode

from functions._models import job_json
from shared.config import Settings
from shared.domain.model import Job, Side
from shared.services.jobs import JobService
from shared.stores import Stores
from shared.stores.job_store import bookkeeping_of, from_entity, to_entity
from tests.fake_services import fake_engine
from tests.fakes import FakeStores

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DELTA = "https://org.crm.dynamics.com/api/data/v9.2/accounts?$deltatoken=919042%2108%2f22%2f2017"
CURSORS = {"bc": "2026-01-02T03:04:05.000Z", "dataverse": DELTA}


def running_job(**kw: Any) -> Job:
    fields: dict[str, Any] = {"status": "running", "created_at": T0, "expected_batches": 4, "completed_batches": 1}
    return Job(job_id="j1", mapping="CUSTOMER", kind="incremental", direction="bidirectional", **fields | kw)


def test_pending_cursors_have_their_own_column_and_detail_stays_empty() -> None:
    row = to_entity(running_job(pending_cursors=CURSORS), "t:1:j1")
    assert json.loads(row["PendingCursors"]) == CURSORS and row["Detail"] is None
    assert (row["ExpectedBatches"], row["CompletedBatches"]) == (4, 1)
    back = from_entity(row)
    assert back.pending_cursors == CURSORS and back.detail is None and back.expected_batches == 4
    assert to_entity(running_job(), "t:1:j1")["PendingCursors"] is None  # no cursors: no property written


@pytest.mark.parametrize(("row", "cursors", "detail"), [
    ({"Detail": json.dumps({"pendingCursors": CURSORS})}, CURSORS, None),  # the old layout
    ({"Detail": json.dumps({"pendingCursors": {}})}, {}, None),
    ({"Detail": json.dumps({"pendingCursors": None})}, {}, None),
    ({"PendingCursors": json.dumps(CURSORS), "Detail": None}, CURSORS, None),  # the new layout
    ({"PendingCursors": json.dumps(CURSORS), "Detail": "upstream down"}, CURSORS, "upstream down"),
    ({"Detail": "upstream down"}, {}, "upstream down"),
    ({"Detail": "{not json: a failure's own words"}, {}, "{not json: a failure's own words"),
    ({"Detail": '{"error": "boom"}'}, {}, '{"error": "boom"}'),  # JSON, but not bookkeeping
    ({"Detail": ""}, {}, None),
    ({}, {}, None),
])  # fmt: skip
def test_bookkeeping_of_a_row_in_either_layout(row: dict[str, Any], cursors: dict[str, str], detail: str) -> None:
    assert bookkeeping_of(row) == (cursors, detail)


def test_an_old_row_written_back_takes_the_new_layout_and_reads_the_same() -> None:
    old = to_entity(running_job(), "t:1:j1") | {"Detail": json.dumps({"pendingCursors": CURSORS})}
    old.pop("PendingCursors")
    once = to_entity(from_entity(old), "t:1:j1")
    assert once["Detail"] is None and json.loads(once["PendingCursors"]) == CURSORS
    assert to_entity(from_entity(once), "t:1:j1") == once  # reading and writing again changes nothing


async def test_pending_cursors_are_kept_until_cleared_and_never_shown(stores: Stores | FakeStores) -> None:
    j = await stores.jobs.create(Job(job_id=uuid.uuid4().hex, mapping="CUSTOMER", kind="incremental", direction=None))
    await stores.jobs.set_status(j.job_id, "running", expected_batches=3, pending_cursors=CURSORS)
    await stores.jobs.add_counts(j.job_id, {"modified": 2}, batch_id="b1")  # a counter update keeps them
    got = await stores.jobs.get(j.job_id)
    assert got is not None and got.pending_cursors == CURSORS and got.detail is None and got.completed_batches == 1
    assert "deltatoken" not in json.dumps(job_json(got)) and "detail" not in job_json(got)
    done = await stores.jobs.set_status(j.job_id, "succeeded", pending_cursors={})
    assert done.pending_cursors == {}
    got = await stores.jobs.get(j.job_id)
    assert got is not None and got.pending_cursors == {} and got.status == "succeeded"


async def _to_old_layout(stores: Stores, job_id: str) -> None:
    """Rewrites a job row as the version before typed bookkeeping wrote it: the cursors in ``Detail``."""
    table = await stores.jobs._table()
    rk = await stores.jobs._row_key(table, job_id)
    row = await table.get_entity("jobs", rk)
    cursors = json.loads(row.pop("PendingCursors"))
    row["Detail"] = json.dumps({"pendingCursors": cursors})
    await table.update_entity(row, mode=UpdateMode.REPLACE)


async def test_a_fanned_out_job_of_the_old_layout_still_completes_and_moves_its_watermark(
    table_stores: Stores,
) -> None:
    engine = dataclasses.replace(
        fake_engine(),
        settings=Settings(SYNC_FANOUT_MIN_RECORDS=5, SYNC_FANOUT_BATCH_SIZE=4),
        jobs=table_stores.jobs,
        watermarks=table_stores.watermarks,
    )
    for i in range(10):
        engine.bc.put("customers", {"displayName": f"F{i}", "number": f"F{i}"})
    jobs = JobService(engine)
    job = await jobs.start("CUSTOMER", "incremental", "bidirectional", full=False)
    await jobs.handle(engine.publisher.take()[0])
    batches = engine.publisher.take()
    running = await engine.jobs.get(job.job_id)
    assert running is not None and running.expected_batches == 4 and set(running.pending_cursors) == {"bc", "dataverse"}
    shown = json.dumps(job_json(running))
    assert "ursor" not in shown and "detail" not in shown
    await _to_old_layout(table_stores, job.job_id)
    old = await engine.jobs.get(job.job_id)
    assert old is not None and old.pending_cursors == running.pending_cursors and old.detail is None
    for m in batches:
        await jobs.handle(m)
    done = await engine.jobs.get(job.job_id)
    assert done is not None and done.status == "succeeded" and done.counts["inserted"] == 10
    assert done.pending_cursors == {} and done.detail is None and "detail" not in job_json(done)
    for side in Side:
        assert (await engine.watermarks.get("CUSTOMER", side)).cursor == running.pending_cursors[side.value]
