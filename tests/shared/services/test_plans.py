"""Plans (#22): the sync's own planner, nothing written, and a sync right after does what the plan said."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.domain.errors import DirectionRequiredError, ValidationFailedError
from shared.domain.model import Direction
from shared.services import synchronize_now
from shared.services.coupling_service import CouplingService
from shared.services.engine import Engine
from shared.services.jobs import JobService
from shared.services.plans import PlanService
from tests.fake_services import FakeRecordService, fake_engine


@pytest.fixture
def engine() -> Engine:
    return fake_engine()


def sides(e: Engine) -> tuple[FakeRecordService, FakeRecordService]:
    assert isinstance(e.bc, FakeRecordService) and isinstance(e.dv, FakeRecordService)
    return e.bc, e.dv


def everything(e: Engine) -> Any:
    """Every store and both services' data, to compare before/after a plan."""
    bc, dv = sides(e)
    c = e.couplings
    return copy.deepcopy(
        (
            bc.rows,
            dv.rows,
            bc.writes,
            dv.writes,
            c.by_bc,  # type: ignore[attr-defined]
            c.archive,  # type: ignore[attr-defined]
            e.errors.rows,  # type: ignore[attr-defined]
            e.watermarks.rows,  # type: ignore[attr-defined]
        )
    )


async def coupled_pair(e: Engine, name: str = "Contoso", phone: str = "111") -> tuple[str, str]:
    bc, dv = sides(e)
    b = bc.put("customers", {"displayName": name, "phoneNumber": phone, "number": "C1", "email": ""})
    d = dv.put("accounts", {"name": name, "telephone1": phone, "emailaddress1": None})
    await CouplingService(e).couple_existing("CUSTOMER", b, d, sync_after=Direction.TO_DATAVERSE)
    return b, d


async def test_plan_of_ids_names_each_action_and_writes_nothing(engine: Engine) -> None:
    bc, dv = sides(engine)
    b1, _d1 = await coupled_pair(engine, "One", "111")
    b2, _ = await coupled_pair(engine, "Two", "222")
    b3, d3 = await coupled_pair(engine, "Three", "333")
    bc.update("customers", b1, phoneNumber="999")  # -> update of Dataverse
    bc.update("customers", b3, phoneNumber="444")
    dv.update("accounts", d3, telephone1="555")  # both changed -> conflict
    uncoupled = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    before = everything(engine)
    answer = await PlanService(engine).plan_ids(
        "CUSTOMER", bc_ids=[b1, b2, b3, uncoupled], direction=Direction.BIDIRECTIONAL
    )
    assert everything(engine) == before
    by_id = {r["bcId"]: r for r in answer["results"]}
    assert by_id[b1]["action"] == "update"
    assert by_id[b1]["changes"] == [{"field": "telephone1", "side": "dataverse", "from": "111", "to": "999"}]
    assert by_id[b2]["action"] == "none" and by_id[b2]["changes"] == []
    assert by_id[b3]["action"] == "conflict" and by_id[b3]["reason"] == "update_conflict"
    assert by_id[uncoupled]["action"] == "not_coupled"
    assert answer["counts"]["modified"] == 1 and answer["counts"]["failed"] == 1


async def test_plan_then_sync_does_what_the_plan_said(engine: Engine) -> None:
    bc, _ = sides(engine)
    b, d = await coupled_pair(engine)
    bc.update("customers", b, phoneNumber="777")
    plan = await PlanService(engine).plan_ids("CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)
    synced = (await synchronize_now.sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)).answer()
    assert plan["results"][0]["action"] == "update" and synced["results"][0]["status"] == "updated"
    assert sides(engine)[1].get("accounts", d)["telephone1"] == plan["results"][0]["changes"][0]["to"]


async def test_skip_and_not_found_actions(engine: Engine) -> None:
    bc, dv = sides(engine)
    b1, d1 = await coupled_pair(engine, "One", "111")
    b2, d2 = await coupled_pair(engine, "Two", "222")
    dv.update("accounts", d1, telephone1="newer")  # the target changed: a one-way sync skips it
    bc.update("customers", b1, phoneNumber="older")
    dv.remove("accounts", d2)
    answer = await PlanService(engine).plan_ids("CUSTOMER", bc_ids=[b1, b2], direction=Direction.TO_DATAVERSE)
    actions_of = {r["bcId"]: (r["action"], r["reason"]) for r in answer["results"]}
    assert actions_of == {b1: ("skip", "target_changed"), b2: ("not_found", "record_not_found")}


async def test_direction_prompt_and_limits(engine: Engine) -> None:
    b, _ = await coupled_pair(engine)
    with pytest.raises(DirectionRequiredError) as info:
        await PlanService(engine).plan_ids("CUSTOMER", bc_ids=[b])
    assert info.value.extra["options"] == [d.value for d in Direction]
    many = [f"{n:08x}-0000-0000-0000-000000000000" for n in range(101)]
    with pytest.raises(ValidationFailedError):
        await PlanService(engine).plan_ids("CUSTOMER", bc_ids=many, direction=Direction.TO_DATAVERSE)


async def test_mapping_wide_plan_job_pages_items_and_writes_nothing(engine: Engine) -> None:
    bc, _ = sides(engine)
    b, _ = await coupled_pair(engine)
    bc.update("customers", b, phoneNumber="123")
    new_ids = [bc.put("customers", {"displayName": f"N{n}", "phoneNumber": "", "number": f"N{n}", "email": ""})
               for n in range(3)]  # fmt: skip
    before = everything(engine)
    job = await PlanService(engine).start_job("CUSTOMER", "full")
    assert job.kind == "plan"
    for msg in engine.publisher.take():  # type: ignore[attr-defined]
        await JobService(engine).handle(msg)
    assert everything(engine) == before
    done = await engine.jobs.get(job.job_id)
    assert done is not None and done.status == "succeeded"
    assert done.counts["inserted"] == 3 and done.counts["modified"] == 1
    first, token = await engine.jobs.plan_items_page(job.job_id, top=2)
    rest, end = await engine.jobs.plan_items_page(job.job_id, top=10, continuation=token)
    assert end is None and len(first) == 2
    items = first + rest
    assert sorted(i["bcId"] for i in items if i["action"] == "create") == sorted(new_ids)
    assert [i["bcId"] for i in items if i["action"] == "update"] == [b]
