"""The engine's rules on the real parts: simulators (through the real connectors and MSAL tokens) and
Azurite (through the Table Storage stores). Each test uses fresh records, so tests don't interfere."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.bootstrap import Runtime, build_runtime
from shared.config import settings_from_env
from shared.domain.errors import AlreadyCoupledError, CannotAutoCoupleError
from shared.domain.model import Direction, Side
from shared.services import synchronize_now
from shared.services.coupling_service import CouplingService
from shared.services.jobs import JobService

pytestmark = pytest.mark.stack


@pytest.fixture
async def rt(stack: Any) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings_from_env({**stack.child_env(), "SYNC_TABLE_PREFIX": "eng" + uuid.uuid4().hex[:8]}))
    yield runtime
    await runtime.aclose()


def _name(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:10]}"


async def _sync(rt: Runtime, b: str, direction: Direction, **kw: Any) -> dict[str, Any]:
    answer = (await synchronize_now.sync_now(rt.engine, "CUSTOMER", bc_ids=[b], direction=direction, **kw)).answer()
    return answer["results"][0]


async def test_create_new_both_ways_and_match_with_multi_match(rt: Runtime, world: dict[str, Any]) -> None:
    sims = world["sims"]
    svc = CouplingService(rt.engine)
    b = sims.bc_create("customers", displayName=_name("New"), phoneNumber="+1 5")
    c = await svc.couple_create_new("CUSTOMER", bc_id=b)
    assert sims.dv_get("accounts", c.dataverse_id)["telephone1"] == "+1 5"
    with pytest.raises(AlreadyCoupledError):
        await svc.couple_create_new("CUSTOMER", bc_id=b)
    d = sims.dv_create("accounts", name=_name("FromDv"))
    c2 = await svc.couple_create_new("CUSTOMER", dv_id=d)
    assert sims.bc_get("customers", c2.bc_id)["displayName"] == sims.dv_get("accounts", d)["name"]

    twin = _name("Twin")
    b2 = sims.bc_create("customers", displayName=twin)
    sims.dv_create("accounts", name=twin)
    sims.dv_create("accounts", name=twin)
    b3 = sims.bc_create("customers", displayName=_name("Single"))
    single = sims.bc_get("customers", b3)
    d3 = sims.dv_create("accounts", name="x", accountnumber=single["number"])
    mapping = await rt.engine.registry.get("CUSTOMER")
    recs = await rt.bc.get_many("customers", [b2, b3], select=mapping.bc_select)
    outcome = await svc.match_couple(mapping, list(recs.values()))
    by = {r.bc_id: r for r in outcome.results}
    # BC's rules (contract part 2): two candidates at every priority leave the record unmatched.
    assert by[b2].error_code == "no_unique_match" and by[b3].status == "coupled" and by[b3].dataverse_id == d3


async def test_each_direction_merge_conflict_and_echo(rt: Runtime, world: dict[str, Any]) -> None:
    sims = world["sims"]
    name = _name("Dir")
    b = sims.bc_create("customers", displayName=name, phoneNumber="+1 1")
    d = sims.dv_create("accounts", name=name, telephone1="+1 1")
    await CouplingService(rt.engine).couple_existing("CUSTOMER", b, d, sync_after=Direction.TO_DATAVERSE)
    sims.bc_patch("customers", b, phoneNumber="+1 2")
    assert (await _sync(rt, b, Direction.TO_DATAVERSE))["status"] == "updated"
    sims.dv_patch("accounts", d, telephone1="+1 3")
    assert (await _sync(rt, b, Direction.FROM_DATAVERSE))["status"] == "updated"
    assert sims.bc_get("customers", b)["phoneNumber"] == "+1 3"
    sims.bc_patch("customers", b, city="Aarhus")
    sims.dv_patch("accounts", d, websiteurl="https://example.com")
    assert (await _sync(rt, b, Direction.BIDIRECTIONAL))["status"] == "updated"
    assert sims.dv_get("accounts", d)["address1_city"] == "Aarhus"
    assert sims.bc_get("customers", b)["website"] == "https://example.com"
    etags = (sims.bc_get("customers", b)["@odata.etag"], sims.dv_get("accounts", d)["@odata.etag"])
    for direction in Direction:  # echo suppression: nothing changed since our own writes
        assert (await _sync(rt, b, direction))["status"] == "unchanged"
    assert (sims.bc_get("customers", b)["@odata.etag"], sims.dv_get("accounts", d)["@odata.etag"]) == etags
    sims.bc_patch("customers", b, phoneNumber="+1 8")
    sims.dv_patch("accounts", d, telephone1="+1 9")
    result = await _sync(rt, b, Direction.BIDIRECTIONAL)
    assert result["status"] == "conflict"
    errors, _ = await rt.engine.errors.list_page(mapping="CUSTOMER")
    assert any(e.bc_id == b and e.code == "update_conflict" for e in errors)
    assert (await _sync(rt, b, Direction.TO_DATAVERSE))["error"]["code"] == "target_changed"
    assert (await _sync(rt, b, Direction.TO_DATAVERSE, force=True))["status"] == "updated"


async def test_auto_couple_refusals(rt: Runtime, world: dict[str, Any]) -> None:
    sims = world["sims"]
    d = sims.dv_create("accounts", name=_name("Refuse"))
    await rt.engine.registry.update("CUSTOMER", direction=Direction.TO_DATAVERSE)
    with pytest.raises(CannotAutoCoupleError, match="toDataverse"):
        await synchronize_now.sync_from_dataverse(rt.engine, {"entityName": "account", "id": d})
    await rt.engine.registry.update("CUSTOMER", direction=Direction.BIDIRECTIONAL, sync_only_coupled=True)
    with pytest.raises(CannotAutoCoupleError, match="syncOnlyCoupled"):
        await synchronize_now.sync_from_dataverse(rt.engine, {"entityName": "account", "id": d})
    await rt.engine.registry.update("CUSTOMER", sync_only_coupled=False)
    body = (await synchronize_now.sync_from_dataverse(rt.engine, {"entityName": "account", "id": d})).answer()
    assert body["created"] is True


async def test_dependency_failure_then_success(rt: Runtime, world: dict[str, Any]) -> None:
    sims = world["sims"]
    cust = sims.bc_create("customers", displayName=_name("Parent"))
    number = sims.bc_get("customers", cust)["number"]
    # BC requires the company contact to exist; this service reads its number as the customer's number.
    sims.bc_create("contacts", displayName="Parent company", type="Company", number=number)
    contact = sims.bc_create("contacts", displayName=_name("Kid"), type="Person", companyNumber=number)
    dv_contact = sims.dv_create("contacts", lastname="Kid")
    svc = CouplingService(rt.engine)
    await svc.couple_existing("CONTACT", contact, dv_contact, sync_after=None)
    ans = (
        await synchronize_now.sync_now(rt.engine, "CONTACT", bc_ids=[contact], direction=Direction.TO_DATAVERSE)
    ).answer()
    assert ans["results"][0]["error"]["code"] == "parent_not_coupled"
    parent = await svc.couple_create_new("CUSTOMER", bc_id=cust)
    ans = (
        await synchronize_now.sync_now(rt.engine, "CONTACT", bc_ids=[contact], direction=Direction.TO_DATAVERSE)
    ).answer()
    assert ans["results"][0]["status"] == "updated", ans
    assert sims.dv_get("contacts", dv_contact)["_parentcustomerid_value"] == parent.dataverse_id


@pytest.mark.parametrize("policy", ["none", "removeCoupling", "restore", "delete"])
async def test_deletion_policies(rt: Runtime, world: dict[str, Any], policy: str) -> None:
    sims = world["sims"]
    shipped = rt.engine.registry.shipped("CUSTOMER")
    rt.engine.registry._by_name["CUSTOMER"] = shipped.model_copy(update={"deletion_policy": policy})
    name = _name("Del")
    b = sims.bc_create("customers", displayName=name)
    d = sims.dv_create("accounts", name=name)
    await CouplingService(rt.engine).couple_existing("CUSTOMER", b, d, sync_after=Direction.TO_DATAVERSE)
    jobs = JobService(rt.engine)
    mapping = await rt.engine.registry.get("CUSTOMER")
    await jobs.run_mapping_sync(mapping, full=False, job_id=None)  # baseline watermarks
    world["sims"]._dv("DELETE", f"{sims.dv_api}/accounts({d})")
    await jobs.run_mapping_sync(mapping, full=False, job_id=None)
    coupling = await rt.engine.couplings.get_by_bc_id("CUSTOMER", b)
    if policy == "none":
        assert coupling is not None and coupling.last_sync_result in (None, "succeeded", "failed")
    elif policy == "removeCoupling":
        assert coupling is None and sims.bc_get("customers", b) is not None
    elif policy == "restore":
        assert coupling is not None and coupling.dataverse_id != d and sims.dv_get("accounts", coupling.dataverse_id)
    else:
        assert coupling is None and sims.bc_get("customers", b) is None
    assert (await rt.engine.watermarks.get("CUSTOMER", Side.DATAVERSE)).cursor


async def test_skipped_after_repeated_failure_and_unskipped_by_retry(
    rt: Runtime, world: dict[str, Any], stack: Any
) -> None:
    import requests

    sims = world["sims"]
    name = _name("Skip")
    b = sims.bc_create("customers", displayName=name, phoneNumber="+1 1")
    d = sims.dv_create("accounts", name=name, telephone1="+1 1")
    await CouplingService(rt.engine).couple_existing("CUSTOMER", b, d, sync_after=Direction.TO_DATAVERSE)
    ctl = requests.Session()
    ctl.trust_env = False
    for i in range(2):
        sims.bc_patch("customers", b, phoneNumber=f"+1 {i}0")
        # A permanent refusal (400) of the Dataverse write, twice in a row with the same error.
        assert ctl.post(
            f"{stack.url('dv_sim')}/_sim/faults", json={"status": 400, "count": 1, "route": "$batch"}, timeout=10
        ).status_code in (200, 201, 204)
        assert (await _sync(rt, b, Direction.TO_DATAVERSE))["status"] == "failed"
    ctl.delete(f"{stack.url('dv_sim')}/_sim/faults", timeout=10)
    assert (await rt.engine.couplings.get_by_bc_id("CUSTOMER", b)).skipped
    assert (await _sync(rt, b, Direction.TO_DATAVERSE))["error"]["code"] == "record_skipped"
    errors = [e for e in (await rt.engine.errors.list_page(mapping="CUSTOMER"))[0] if e.bc_id == b]
    job = await JobService(rt.engine).start("CUSTOMER", "retry", None, ids=[errors[0].id])
    msgs = [
        {
            "version": 1,
            "kind": "retry-errors",
            "jobId": job.job_id,
            "mapping": "CUSTOMER",
            "batch": "0",
            "ids": [errors[0].id],
        }
    ]
    await JobService(rt.engine).handle(msgs[0])
    assert not (await rt.engine.couplings.get_by_bc_id("CUSTOMER", b)).skipped
    assert sims.dv_get("accounts", d)["telephone1"] == "+1 10"
