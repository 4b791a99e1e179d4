"""Coupling history (#22): each trigger and action, values hidden by setting, retention, outlives the
coupling, never coupled -> 404."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.model import Direction
from shared.planning.history import TRIGGER
from shared.services import synchronize_now
from shared.services.coupling_service import CouplingService
from shared.services.engine import Engine, utcnow
from shared.services.history import HistoryNotFoundError, HistoryService
from shared.services.jobs import JobService
from tests.fake_services import FakeRecordService, fake_engine


def sides(e: Engine) -> tuple[FakeRecordService, FakeRecordService]:
    assert isinstance(e.bc, FakeRecordService) and isinstance(e.dv, FakeRecordService)
    return e.bc, e.dv


async def pair(e: Engine, phone: str = "111") -> tuple[str, str]:
    bc, dv = sides(e)
    b = bc.put("customers", {"displayName": "C", "phoneNumber": phone, "number": "C1", "email": ""})
    d = dv.put("accounts", {"name": "C", "telephone1": phone, "emailaddress1": None})
    await CouplingService(e).couple_existing("CUSTOMER", b, d, sync_after=None)
    return b, d


async def entries(e: Engine, b: str) -> list[dict]:
    page, _ = await HistoryService(e).page("CUSTOMER", b, top=100)
    return page


async def test_triggers_actions_and_values() -> None:
    e = fake_engine()
    bc, dv = sides(e)
    b, d = await pair(e)
    bc.update("customers", b, phoneNumber="222")
    await synchronize_now.sync_now(e, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)
    bc.update("customers", b, phoneNumber="333")
    dv.update("accounts", d, telephone1="444")
    await synchronize_now.sync_now(e, "CUSTOMER", bc_ids=[b], direction=Direction.BIDIRECTIONAL)  # conflict
    got = await entries(e, b)
    assert [(x["trigger"], x["action"]) for x in got] == [("syncNow", "conflict"), ("syncNow", "updated"),
                                                          ("couple", "coupled")]  # fmt: skip
    assert {"field": "telephone1", "side": "dataverse", "from": "111", "to": "222"} in got[1]["changes"]
    assert got[0]["error"]["code"] == "update_conflict"
    await CouplingService(e).uncouple("CUSTOMER", b)
    after = await entries(e, b)
    assert after[0]["action"] == "uncoupled" and after[0]["trigger"] == "uncouple" and len(after) == 4


async def test_values_hidden_with_the_setting() -> None:
    e = fake_engine(SYNC_HISTORY_VALUES=False)
    b, _ = await pair(e)
    sides(e)[0].update("customers", b, phoneNumber="222")
    await synchronize_now.sync_now(e, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)
    changes = (await entries(e, b))[0]["changes"]
    assert {"field": "telephone1", "side": "dataverse", "from": None, "to": None} in changes
    assert all(c["from"] is None and c["to"] is None for c in changes)


async def test_job_timer_and_retry_triggers_and_unchanged_scheduled_passes_leave_nothing() -> None:
    e = fake_engine()
    b, _ = await pair(e)
    await JobService(e).start("CUSTOMER", "incremental", "bidirectional", full=True, trigger="timer")
    for msg in e.publisher.take():  # type: ignore[attr-defined]
        await JobService(e).handle(msg)
    n = len(await entries(e, b))
    sides(e)[0].update("customers", b, phoneNumber="999")
    await JobService(e).start("CUSTOMER", "full", "bidirectional", full=True)
    for msg in e.publisher.take():  # type: ignore[attr-defined]
        await JobService(e).handle(msg)
    got = await entries(e, b)
    assert len(got) == n + 1 and (got[0]["trigger"], got[0]["action"]) == ("job", "updated")
    await JobService(e).start("CUSTOMER", "full", "bidirectional", full=True, trigger="timer")
    for msg in e.publisher.take():  # type: ignore[attr-defined]
        await JobService(e).handle(msg)
    assert len(await entries(e, b)) == n + 1  # an unchanged scheduled pass leaves no entry


async def test_retention_and_never_coupled() -> None:
    e = fake_engine(SYNC_HISTORY_DAYS=1)
    b, _ = await pair(e)
    c = await e.couplings.get_by_bc_id("CUSTOMER", b)
    assert c is not None
    c.history[0]["at"] = (utcnow() - timedelta(days=3)).isoformat()
    await e.couplings.save_sync_state([c])
    assert await entries(e, b) == []  # expired entries are not shown (and go with the next write)
    await CouplingService(e).uncouple("CUSTOMER", b)
    e.couplings.archive[("CUSTOMER", b)][-1]["at"] = (utcnow() - timedelta(days=2)).isoformat()  # type: ignore[attr-defined]
    assert await HistoryService(e).purge() == 1
    with pytest.raises(HistoryNotFoundError):
        await HistoryService(e).page("CUSTOMER", b)
    with pytest.raises(HistoryNotFoundError):
        await HistoryService(e).page("CUSTOMER", "11111111-1111-1111-1111-111111111111")
    assert TRIGGER.get() in ("uncouple", "job")


async def run_jobs(e: Engine) -> None:
    while msgs := e.publisher.take():  # type: ignore[attr-defined]
        for msg in msgs:
            await JobService(e).handle(msg)


async def test_webhook_retry_match_and_created_entries() -> None:
    e = fake_engine()
    bc, dv = sides(e)
    b, d = await pair(e)
    bc.update("customers", b, phoneNumber="222")
    await JobService(e).handle({"kind": "record-changed", "jobId": "", "mapping": "CUSTOMER", "bcIds": [b]})
    assert ((await entries(e, b))[0]["trigger"], (await entries(e, b))[0]["action"]) == ("webhook", "updated")

    bc.update("customers", b, phoneNumber="333")
    dv.update("accounts", d, telephone1="444")
    refused = (await synchronize_now.sync_now(e, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)).answer()
    assert refused["results"][0]["error"]["code"] == "target_changed"
    assert (await entries(e, b))[0]["action"] == "skipped"
    errors, _ = await e.errors.list_page(mapping="CUSTOMER")
    await JobService(e).start("CUSTOMER", "retry", None, ids=[errors[0].id])
    await run_jobs(e)
    latest = (await entries(e, b))[0]
    assert (latest["trigger"], latest["action"], latest["error"]) == ("retry", "updated", None)

    fresh = bc.put("customers", {"displayName": "Only in BC", "phoneNumber": "", "number": "C9", "email": ""})
    await JobService(e).start("CUSTOMER", "full", "bidirectional", full=True)
    await run_jobs(e)
    assert [(x["trigger"], x["action"]) for x in await entries(e, fresh)] == [("job", "created")]

    twin = bc.put("customers", {"displayName": "Twin", "phoneNumber": "", "number": "C8", "email": ""})
    dv.put("accounts", {"name": "Twin", "telephone1": None, "emailaddress1": None})
    await JobService(e).start("CUSTOMER", "matchCouple", None, bcIds=[twin],
                              matchFields=[{"bc": "displayName", "dataverse": "name", "priority": 1}])  # fmt: skip
    await run_jobs(e)
    assert (await entries(e, twin))[-1] == {**(await entries(e, twin))[-1], "trigger": "match", "action": "coupled"}
    bc.update("customers", b, phoneNumber="555")
    await JobService(e).start("CUSTOMER", "incremental", "bidirectional", full=False, trigger="timer")
    await run_jobs(e)
    assert ((await entries(e, b))[0]["trigger"], (await entries(e, b))[0]["action"]) == ("timer", "updated")


async def test_creates_of_one_batch_each_get_their_own_created_entry() -> None:
    e = fake_engine()
    bc, _dv = sides(e)
    ids = [bc.put("customers", {"displayName": f"New {i}", "phoneNumber": "", "number": f"N{i}", "email": ""})
           for i in range(3)]  # fmt: skip
    mapping = await e.registry.get("CUSTOMER")
    records = (await e.bc.get_many("customers", ids)).values()
    outcome = await CouplingService(e).create_counterparts(mapping, Direction.TO_DATAVERSE, list(records), "job-1")
    assert [r.status for r in outcome.results] == ["created"] * 3
    stored = await e.couplings.get_many_by_bc_ids("CUSTOMER", ids)
    histories = [stored[i].history for i in ids]
    for h in histories:
        assert h == [{"at": h[0]["at"], "jobId": "job-1", "trigger": "job", "action": "created",
                      "direction": "toDataverse", "changes": [], "error": None}]  # fmt: skip
    assert len({id(h[0]) for h in histories}) == len({id(h[0]["changes"]) for h in histories}) == 3
