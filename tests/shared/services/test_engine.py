"""The engine's use cases end to end over in-memory fakes of every port (fast; the same flows run
against the simulators and Azurite in tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import Settings
from shared.domain.errors import (
    AlreadyCoupledError,
    CannotAutoCoupleError,
    DirectionNotAllowedError,
    DirectionRequiredError,
    RecordNotFoundError,
)
from shared.domain.model import Direction, Side
from shared.errors import PermanentError
from shared.services import dataverse_context
from shared.services.codec import dataverse_id_for
from shared.services.coupling_service import CouplingService
from shared.services.engine import Engine
from shared.services.jobs import JobService
from shared.services.synchronize_now import sync_from_dataverse, sync_now
from tests.fake_services import FakeRecordService, fake_engine


@pytest.fixture
def engine() -> Engine:
    return fake_engine()


def bc_of(e: Engine) -> FakeRecordService:
    assert isinstance(e.bc, FakeRecordService)
    return e.bc


def dv_of(e: Engine) -> FakeRecordService:
    assert isinstance(e.dv, FakeRecordService)
    return e.dv


def seed_pair(e: Engine, name: str = "Contoso", phone: str = "111") -> tuple[str, str]:
    b = bc_of(e).put("customers", {"displayName": name, "phoneNumber": phone, "number": "C1", "email": ""})
    d = dv_of(e).put("accounts", {"name": name, "telephone1": phone, "emailaddress1": None})
    return b, d


def spy_lookups(e: Engine, method: str) -> list[str]:
    """Records every id the coupling store's bulk lookup ``method`` is asked for (it still answers)."""
    looked_up: list[str] = []
    real = getattr(e.couplings, method)

    async def spy(mapping: str, ids: Any) -> Any:
        looked_up.extend(ids)
        return await real(mapping, ids)

    setattr(e.couplings, method, spy)
    return looked_up


async def couple_synced(e: Engine) -> tuple[str, str]:
    b, d = seed_pair(e)
    await CouplingService(e).couple_existing("CUSTOMER", b, d, sync_after=Direction.TO_DATAVERSE)
    return b, d


async def test_couple_existing_then_sync_to_dataverse_and_echo_suppression(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    assert dv_of(engine).get("accounts", d)["accountnumber"] == "C1"  # syncAfter wrote the BC data
    bc_of(engine).update("customers", b, phoneNumber="222")
    result = await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)
    answer = result.answer()
    assert not result.queued and answer["jobId"] == result.job.job_id and result.job.kind == "syncNow"
    assert answer["results"][0]["status"] == "updated" and answer["counts"]["modified"] == 1
    assert dv_of(engine).get("accounts", d)["telephone1"] == "222"
    writes_before = len(dv_of(engine).writes) + len(bc_of(engine).writes)
    for direction in (Direction.TO_DATAVERSE, Direction.BIDIRECTIONAL, Direction.FROM_DATAVERSE):
        again = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=direction)).answer()
        assert again["results"][0]["status"] == "unchanged", again
    assert len(dv_of(engine).writes) + len(bc_of(engine).writes) == writes_before  # zero writes
    coupling = await engine.couplings.get_by_bc_id("CUSTOMER", b)
    assert coupling is not None and coupling.last_sync_result == "succeeded"


async def test_couple_refuses_taken_records_replaces_on_request_and_replaces_stale_silently(engine: Engine) -> None:
    service = CouplingService(engine)
    b, d = await couple_synced(engine)
    d2 = dv_of(engine).put("accounts", {"name": "Other"})
    with pytest.raises(AlreadyCoupledError):
        await service.couple_existing("CUSTOMER", b, d2, sync_after=None)
    assert (await engine.couplings.get_by_bc_id("CUSTOMER", b)).dataverse_id == d
    await service.couple_existing("CUSTOMER", b, d2, replace=True, sync_after=None)
    assert await engine.couplings.get_by_dataverse_id("CUSTOMER", d) is None
    # the coupled account disappears: a new coupling of the BC record needs no replace
    dv_of(engine).remove("accounts", d2)
    await service.couple_existing("CUSTOMER", b, d, sync_after=None)
    assert (await engine.couplings.get_by_bc_id("CUSTOMER", b)).dataverse_id == d
    with pytest.raises(RecordNotFoundError):
        await service.couple_existing("CUSTOMER", b, "00000000-0000-0000-0000-000000000001", replace=True)


async def test_create_new_both_ways_and_direction_rules(engine: Engine) -> None:
    service = CouplingService(engine)
    b = bc_of(engine).put("customers", {"displayName": " Fabrikam ", "number": "C9", "phoneNumber": "9"})
    c = await service.couple_create_new("CUSTOMER", bc_id=b)
    assert c.dataverse_id == dataverse_id_for("CUSTOMER", b)
    assert dv_of(engine).get("accounts", c.dataverse_id)["name"] == "Fabrikam"
    with pytest.raises(AlreadyCoupledError):
        await service.couple_create_new("CUSTOMER", bc_id=b)
    d = dv_of(engine).put("accounts", {"name": "Northwind", "telephone1": "5"})
    c2 = await service.couple_create_new("CUSTOMER", dv_id=d)
    assert bc_of(engine).get("customers", c2.bc_id)["displayName"] == "Northwind"
    p = dv_of(engine).put("products", {"name": "Bike"})
    with pytest.raises(DirectionNotAllowedError):
        await service.couple_create_new("ITEM-PRODUCT", dv_id=p)
    with pytest.raises(DirectionNotAllowedError):
        await sync_now(engine, "ITEM-PRODUCT", bc_ids=[b], direction=Direction.FROM_DATAVERSE)


async def test_direction_prompt_suggests_from_what_changed(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    dv_of(engine).update("accounts", d, telephone1="333")
    with pytest.raises(DirectionRequiredError) as e:
        await sync_now(engine, "CUSTOMER", bc_ids=[b])
    assert e.value.extra["suggested"] == "fromDataverse"
    assert e.value.extra["changes"] == {"businessCentral": False, "dataverse": True, "conflictingFields": []}
    assert sorted(e.value.extra["options"]) == ["bidirectional", "fromDataverse", "toDataverse"]
    assert bc_of(engine).get("customers", b)["phoneNumber"] == "111"  # the prompt writes nothing


async def test_merge_and_conflict_recorded_as_sync_error(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    bc_of(engine).update("customers", b, phoneNumber="222")
    dv_of(engine).update("accounts", d, name="Contoso Ltd")
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.BIDIRECTIONAL)).answer()
    assert ans["results"][0]["status"] == "updated"
    assert bc_of(engine).get("customers", b)["displayName"] == "Contoso Ltd"
    assert dv_of(engine).get("accounts", d)["telephone1"] == "222"
    bc_of(engine).update("customers", b, phoneNumber="444")
    dv_of(engine).update("accounts", d, telephone1="555")
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.BIDIRECTIONAL)).answer()
    assert ans["results"][0]["status"] == "conflict" and ans["counts"]["failed"] == 1
    errors, _ = await engine.errors.list_page(mapping="CUSTOMER")
    assert [x.code for x in errors] == ["update_conflict"] and errors[0].bc_id == b
    # resolving it by choosing a side closes the error
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE, force=True)).answer()
    assert ans["results"][0]["status"] == "updated"
    assert (await engine.errors.list_page(mapping="CUSTOMER"))[0] == []


async def test_one_way_sync_skips_newer_target_unless_forced(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    bc_of(engine).update("customers", b, phoneNumber="222")
    dv_of(engine).update("accounts", d, telephone1="999")
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)).answer()
    assert ans["results"][0]["status"] == "skipped" and ans["results"][0]["error"]["code"] == "target_changed"
    assert dv_of(engine).get("accounts", d)["telephone1"] == "999"
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE, force=True)).answer()
    assert ans["results"][0]["status"] == "updated" and dv_of(engine).get("accounts", d)["telephone1"] == "222"


async def test_not_coupled_ids_and_dataverse_ids(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    stranger = "00000000-0000-0000-0000-00000000abcd"
    ans = (await sync_now(engine, "CUSTOMER", dv_ids=[d, stranger], direction=Direction.TO_DATAVERSE)).answer()
    assert [r["status"] for r in ans["results"]] == ["unchanged", "not_coupled"]
    assert ans["results"][0]["bcId"] == b and ans["results"][1]["dataverseId"] == stranger


async def test_sync_from_dataverse_auto_couples_once_and_refuses_when_settings_forbid(engine: Engine) -> None:
    d = dv_of(engine).put("accounts", {"name": "Adatum", "telephone1": "7"})
    body = (await sync_from_dataverse(engine, {"entityName": "account", "id": d})).answer()
    assert body["created"] is True and body["result"]["status"] == "created"
    again = (await sync_from_dataverse(engine, {"entityName": "account", "id": d})).answer()
    assert again["created"] is False and again["bcId"] == body["bcId"]
    assert len(bc_of(engine).rows["customers"]) == 1
    await engine.registry.update("CUSTOMER", sync_only_coupled=True)
    d2 = dv_of(engine).put("accounts", {"name": "Litware"})
    with pytest.raises(CannotAutoCoupleError, match="syncOnlyCoupled"):
        await sync_from_dataverse(engine, {"entityName": "account", "id": d2})
    await engine.registry.update("CUSTOMER", sync_only_coupled=False, direction=Direction.TO_DATAVERSE)
    with pytest.raises(CannotAutoCoupleError, match="toDataverse"):
        await sync_from_dataverse(engine, {"entityName": "account", "id": d2})
    echo = {
        "PrimaryEntityName": "account",
        "PrimaryEntityId": d2,
        "MessageName": "Update",
        "SharedVariables": [{"key": "tag", "value": dataverse_context.ECHO_TAG}],
    }
    assert (await sync_from_dataverse(engine, echo)).answer() == {"ignored": True}


async def test_match_coupling_reports_multi_matches(engine: Engine) -> None:
    b1 = bc_of(engine).put("customers", {"displayName": "One", "number": "C1"})
    b2 = bc_of(engine).put("customers", {"displayName": "Two", "number": "C2"})
    b3 = bc_of(engine).put("customers", {"displayName": "Three", "number": "C3"})
    d1 = dv_of(engine).put("accounts", {"name": "x", "accountnumber": "C1"})
    dv_of(engine).put("accounts", {"name": "Two", "accountnumber": None})
    dv_of(engine).put("accounts", {"name": "Two", "accountnumber": None})
    recs = await engine.bc.get_many("customers", [b1, b2, b3])
    mapping = await engine.registry.get("CUSTOMER")
    outcome = await CouplingService(engine).match_couple(mapping, list(recs.values()))
    by = {r.bc_id: r for r in outcome.results}
    assert by[b1].status == "coupled" and by[b1].dataverse_id == d1
    # BC's rules (contract part 2): several candidates and none alike leave the record unmatched.
    assert by[b2].error_code == "no_unique_match" and "2 candidates" in (by[b2].error_message or "")
    assert by[b3].error_code == "no_unique_match" and "no candidate" in (by[b3].error_message or "")
    assert await engine.couplings.get_by_bc_id("CUSTOMER", b2) is None


async def test_incremental_job_creates_couples_advances_watermarks_and_second_run_writes_nothing(
    engine: Engine,
) -> None:
    for i in range(5):
        bc_of(engine).put("customers", {"displayName": f"B{i}", "number": f"C{i}"})
    for i in range(3):
        dv_of(engine).put("accounts", {"name": f"D{i}"})
    job = await JobService(engine).start("CUSTOMER", "incremental", "bidirectional", full=False)
    [msg] = engine.publisher.take()  # type: ignore[attr-defined]
    await JobService(engine).handle(msg)
    done = await engine.jobs.get(job.job_id)
    assert done.status == "succeeded" and done.counts["inserted"] == 8 and done.counts["coupled"] == 8
    assert (await engine.watermarks.get("CUSTOMER", Side.BC)).cursor is not None
    writes = len(dv_of(engine).writes) + len(bc_of(engine).writes)
    job2 = await JobService(engine).start("CUSTOMER", "incremental", "bidirectional", full=False)
    await JobService(engine).handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    done2 = await engine.jobs.get(job2.job_id)
    assert done2.status == "succeeded" and done2.counts["inserted"] == 0
    assert len(dv_of(engine).writes) + len(bc_of(engine).writes) == writes
    # a redelivered message of a finished job changes nothing
    await JobService(engine).handle({**msg})
    assert (await engine.jobs.get(job.job_id)).counts == done.counts


@pytest.mark.parametrize("policy", ["none", "removeCoupling", "restore", "delete"])
async def test_deletion_policies(engine: Engine, policy: str) -> None:
    mapping = engine.registry.shipped("CUSTOMER")
    engine.registry._by_name["CUSTOMER"] = mapping.model_copy(update={"deletion_policy": policy})
    b, d = await couple_synced(engine)
    await JobService(engine).run_mapping_sync(await engine.registry.get("CUSTOMER"), full=False, job_id=None)
    dv_of(engine).remove("accounts", d)
    outcome = await JobService(engine).run_mapping_sync(await engine.registry.get("CUSTOMER"), full=False, job_id=None)
    coupling = await engine.couplings.get_by_bc_id("CUSTOMER", b)
    if policy == "none":
        assert coupling is not None and outcome.counts["failed"] == 1
        errors, _ = await engine.errors.list_page(mapping="CUSTOMER")
        assert [(e.bc_id, e.code) for e in errors] == [(b, "coupled_record_deleted")]  # listed, not lost
    elif policy == "removeCoupling":
        assert coupling is None and bc_of(engine).get("customers", b) is not None
    elif policy == "restore":
        assert coupling is not None and coupling.dataverse_id != d
        assert dv_of(engine).get("accounts", coupling.dataverse_id)["name"] == "Contoso"
    else:
        assert coupling is None and bc_of(engine).get("customers", b) is None


async def test_repeated_failure_marks_skipped_and_retry_restores(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    dv_of(engine).fail_writes[d] = PermanentError("field too long", status=400)
    for _ in range(2):
        bc_of(engine).update("customers", b, phoneNumber=f"x{_}")
        ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)).answer()
        assert ans["results"][0]["status"] == "failed"
    coupling = await engine.couplings.get_by_bc_id("CUSTOMER", b)
    assert coupling.skipped
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)).answer()
    assert ans["results"][0]["error"]["code"] == "record_skipped"
    del dv_of(engine).fail_writes[d]
    errors, _ = await engine.errors.list_page(mapping="CUSTOMER")
    job = await JobService(engine).start("CUSTOMER", "retry", None, ids=[errors[0].id])
    await JobService(engine).handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    assert (await engine.jobs.get(job.job_id)).counts["modified"] == 1
    coupling = await engine.couplings.get_by_bc_id("CUSTOMER", b)
    assert not coupling.skipped and dv_of(engine).get("accounts", d)["telephone1"] == "x1"
    assert (await engine.errors.list_page(mapping="CUSTOMER"))[0] == []


async def test_child_with_uncoupled_parent_fails_retryably_then_succeeds(engine: Engine) -> None:
    cust = bc_of(engine).put("customers", {"displayName": "Parent", "number": "C77"})
    contact = bc_of(engine).put("contacts", {"displayName": "Kid", "companyNumber": "C77", "type": "Person"})
    dv_contact = dv_of(engine).put("contacts", {"lastname": "Kid"})
    await CouplingService(engine).couple_existing("CONTACT", contact, dv_contact, sync_after=None)
    ans = (await sync_now(engine, "CONTACT", bc_ids=[contact], direction=Direction.TO_DATAVERSE)).answer()
    assert ans["results"][0]["error"]["code"] == "parent_not_coupled"
    parent = await CouplingService(engine).couple_create_new("CUSTOMER", bc_id=cust)
    ans = (await sync_now(engine, "CONTACT", bc_ids=[contact], direction=Direction.TO_DATAVERSE)).answer()
    assert ans["results"][0]["status"] == "updated"
    assert dv_of(engine).get("contacts", dv_contact)["_parentcustomerid_value"] == parent.dataverse_id
    # and back: the account parent becomes the BC company number
    ans = (await sync_now(engine, "CONTACT", bc_ids=[contact], direction=Direction.FROM_DATAVERSE)).answer()
    assert ans["results"][0]["status"] == "unchanged"


async def test_more_than_inline_limit_becomes_a_job_with_exact_counts(engine: Engine) -> None:
    ids = []
    for i in range(250):
        b = bc_of(engine).put("customers", {"displayName": f"N{i}", "number": f"N{i}"})
        ids.append(b)
    mapping = await engine.registry.get("CUSTOMER")
    await CouplingService(engine).create_counterparts(
        mapping, Direction.TO_DATAVERSE, list((await engine.bc.get_many("customers", ids)).values())
    )
    for b in ids[:10]:
        bc_of(engine).update("customers", b, phoneNumber="1")
    result = await sync_now(engine, "CUSTOMER", bc_ids=ids, direction=Direction.TO_DATAVERSE)
    job = result.job
    assert result.queued and result.answer() == {"jobId": job.job_id, "status": "queued"}
    msgs = engine.publisher.take()  # type: ignore[attr-defined]
    assert [len(m["bcIds"]) for m in msgs] == [100, 100, 50]
    for m in msgs + msgs[:1]:  # one duplicate delivery
        await JobService(engine).handle(m)
    done = await engine.jobs.get(job.job_id)
    assert done.status == "succeeded"
    assert done.counts["modified"] == 10 and done.counts["unchanged"] == 240


async def test_large_change_set_fans_out_and_watermark_moves_after_the_last_batch(engine: Engine) -> None:
    engine.settings = Settings(SYNC_FANOUT_MIN_RECORDS=5, SYNC_FANOUT_BATCH_SIZE=4)
    for i in range(10):
        bc_of(engine).put("customers", {"displayName": f"F{i}", "number": f"F{i}"})
    job = await JobService(engine).start("CUSTOMER", "incremental", "bidirectional", full=False)
    await JobService(engine).handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    batches = engine.publisher.take()  # type: ignore[attr-defined]
    assert [len(m["bcIds"]) for m in batches] == [4, 4, 2]
    assert len({m["messageId"] for m in batches}) == 3
    assert (await engine.watermarks.get("CUSTOMER", Side.BC)).cursor is None  # not before every batch is done
    running = await engine.jobs.get(job.job_id)
    assert running.expected_batches == 4 and running.pending_cursors.get("bc") and running.detail is None
    for m in [batches[2], batches[0], batches[0], batches[1]]:  # out of order, one duplicate
        assert (await engine.jobs.get(job.job_id)).status == "running"
        await JobService(engine).handle(m)
    done = await engine.jobs.get(job.job_id)
    assert done.status == "succeeded" and done.counts["inserted"] == 10 and done.counts["coupled"] == 10
    assert (await engine.watermarks.get("CUSTOMER", Side.BC)).cursor == running.pending_cursors["bc"]
    assert done.pending_cursors == {}  # the bookkeeping ends with the job
    assert len(dv_of(engine).rows["accounts"]) == 10


async def test_new_records_fan_out_in_batches_of_their_own_created_without_a_second_lookup(engine: Engine) -> None:
    b, _ = await couple_synced(engine)
    await incremental_job(engine)
    engine.settings = Settings(SYNC_FANOUT_MIN_RECORDS=3, SYNC_FANOUT_BATCH_SIZE=3)
    bc_of(engine).update("customers", b, phoneNumber="555")  # a changed coupled record...
    new = [bc_of(engine).put("customers", {"displayName": f"N{i}", "number": f"N{i}"}) for i in range(5)]
    job = await JobService(engine).start("CUSTOMER", "incremental", "bidirectional", full=False)
    await JobService(engine).handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    batches = engine.publisher.take()  # type: ignore[attr-defined]
    assert [(m["bcIds"], m["uncoupled"]) for m in batches] == [([b], False), (new[:3], True), (new[3:], True)]
    # A webhook couples one of the new records before its batch runs: created once, with the same fixed key.
    recs = await engine.bc.get_many("customers", [new[0]])
    await JobService(engine).process_changes(
        await engine.registry.get("CUSTOMER"), Side.BC, list(recs.values()), [], None
    )
    looked_up = spy_lookups(engine, "get_many_by_bc_ids")
    for m in batches:
        await JobService(engine).handle(m)
    done = await engine.jobs.get(job.job_id)
    assert done.status == "succeeded" and done.counts["modified"] == 1 and done.counts["inserted"] == 4
    assert done.counts["failed"] == 0
    assert not set(new[1:]) & set(looked_up)  # the new records' couplings were not looked up before the create
    assert len(dv_of(engine).rows["accounts"]) == 1 + 5  # no duplicate row
    for i in new:
        assert (await engine.couplings.get_by_bc_id("CUSTOMER", i)) is not None


def test_a_page_fans_out_only_above_the_minimum_and_into_two_batches_or_more() -> None:
    s = Settings(SYNC_FANOUT_MIN_RECORDS=1000, SYNC_FANOUT_BATCH_SIZE=2000)
    assert [s.fans_out(n) for n in (1000, 1001, 2000, 2001, 5000)] == [False, False, False, True, True]
    s = Settings(SYNC_FANOUT_MIN_RECORDS=1000, SYNC_FANOUT_BATCH_SIZE=500)
    assert [s.fans_out(n) for n in (1000, 1001)] == [False, True]


async def test_a_page_of_one_batch_is_processed_inline_not_sent_and_re_read(engine: Engine) -> None:
    engine.settings = Settings(SYNC_FANOUT_MIN_RECORDS=5, SYNC_FANOUT_BATCH_SIZE=10)
    for i in range(8):
        bc_of(engine).put("customers", {"displayName": f"G{i}", "number": f"G{i}"})
    job = await JobService(engine).start("CUSTOMER", "incremental", "bidirectional", full=False)
    await JobService(engine).handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    assert engine.publisher.take() == []  # type: ignore[attr-defined]
    done = await engine.jobs.get(job.job_id)
    assert done.status == "succeeded" and done.counts["inserted"] == 8 and done.counts["coupled"] == 8


async def test_sync_logs_carry_custom_dimensions(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    b, d = await couple_synced(engine)
    bc_of(engine).update("customers", b, phoneNumber="1")
    dv_of(engine).update("accounts", d, telephone1="2")
    with caplog.at_level(logging.INFO, logger="shared.services.sync_service"):
        ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.BIDIRECTIONAL)).answer()
    summary = [r for r in caplog.records if r.getMessage().startswith("synchronized")]
    assert summary and summary[-1].mapping == "CUSTOMER" and summary[-1].job_id == ans["jobId"]
    assert summary[-1].direction == "bidirectional" and summary[-1].outcome == "partial"
    conflict = [r for r in caplog.records if getattr(r, "outcome", None) == "conflict"]
    assert conflict and b in conflict[0].record_ids and conflict[0].code == "update_conflict"


async def test_changes_already_seen_are_skipped_without_reads_or_table_writes(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    mapping = await engine.registry.get("CUSTOMER")
    jobs = JobService(engine)
    await jobs.run_mapping_sync(mapping, full=True, job_id=None)  # sees both records once
    record = (await engine.bc.get_many("customers", [b]))[b]
    reads = dict(bc_of(engine).calls), dict(dv_of(engine).calls)
    saved = []
    original = engine.couplings.save_sync_state

    async def spy(couplings: list) -> None:
        saved.extend(couplings)
        await original(couplings)

    engine.couplings.save_sync_state = spy  # type: ignore[method-assign]
    # The BC feed's overlap window hands the same record over again: no re-read, no table write.
    outcome = await jobs.process_changes(mapping, Side.BC, [record], [], None)
    assert outcome.counts["unchanged"] == 1 and saved == []
    assert (dict(bc_of(engine).calls), dict(dv_of(engine).calls)) == reads
    bc_of(engine).update("customers", b, phoneNumber="777")  # a real change is newer: synced
    newer = (await engine.bc.get_many("customers", [b]))[b]
    outcome = await jobs.process_changes(mapping, Side.BC, [newer], [], None)
    assert outcome.counts["modified"] == 1 and dv_of(engine).get("accounts", d)["telephone1"] == "777"


async def incremental_job(engine: Engine) -> dict[str, int]:
    jobs = JobService(engine)
    job = await jobs.start("CUSTOMER", "incremental", "bidirectional", full=False)
    await jobs.handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    done = await engine.jobs.get(job.job_id)
    return dict(done.counts)


async def test_an_incremental_job_drops_our_echo_and_takes_an_edit_stamped_in_the_second_of_our_write(
    engine: Engine,
) -> None:
    b, d = await couple_synced(engine)
    await incremental_job(engine)
    bc_of(engine).update("customers", b, phoneNumber="222")
    await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)  # our write
    ours = (await engine.couplings.get_by_bc_id("CUSTOMER", b)).dv_modified_on
    assert ours is not None and dv_of(engine).meta["accounts"][d][1] == ours
    bc_writes = len(bc_of(engine).writes)
    assert (await incremental_job(engine))["modified"] == 0  # both feeds hand our write back: echoes
    assert len(bc_of(engine).writes) == bc_writes
    dv_of(engine).update("accounts", d, telephone1="999")  # a person's edit...
    etag, _ = dv_of(engine).meta["accounts"][d]
    dv_of(engine).meta["accounts"][d] = (etag, ours)  # ...stamped in the whole second of our write
    assert (await incremental_job(engine))["modified"] == 1
    assert bc_of(engine).get("customers", b)["phoneNumber"] == "999"


async def test_echoes_in_a_large_share_of_the_couplings_need_no_coupling_lookup(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.planning import decisions

    monkeypatch.setattr(decisions, "MARKS_MIN_ROWS", 1)  # the page here holds every coupling there is: one
    b, d = await couple_synced(engine)
    await incremental_job(engine)
    bc_of(engine).update("customers", b, phoneNumber="222")
    await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)  # our write, echoed
    looked_up = spy_lookups(engine, "get_many_by_dataverse_ids")
    counts = await incremental_job(engine)
    assert counts["modified"] == 0 and counts["unchanged"] >= 1
    assert d not in looked_up  # the synced marks dropped our echo before any lookup
    dv_of(engine).update("accounts", d, telephone1="999")  # a person's edit is looked up and synced
    assert (await incremental_job(engine))["modified"] == 1
    assert d in looked_up and bc_of(engine).get("customers", b)["phoneNumber"] == "999"


async def test_the_bc_passs_own_dataverse_writes_need_no_lookup_in_the_dataverse_pass(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    await incremental_job(engine)
    bc_of(engine).update("customers", b, phoneNumber="333")
    looked_up = spy_lookups(engine, "get_many_by_dataverse_ids")
    counts = await incremental_job(engine)  # the BC pass writes the row; the Dataverse feed hands it back
    assert counts["modified"] == 1 and counts["unchanged"] == 1 and counts.get("failed", 0) == 0, counts
    assert dv_of(engine).get("accounts", d)["telephone1"] == "333"
    assert d not in looked_up  # dropped by the mark of the snapshot the BC pass left
    assert (await incremental_job(engine))["modified"] == 0


async def test_a_full_job_looks_up_only_the_records_its_synced_marks_know(engine: Engine) -> None:
    b, _ = await couple_synced(engine)
    bc_of(engine).update("customers", b, phoneNumber="444")  # coupled and changed: looked up, synced
    new = [bc_of(engine).put("customers", {"displayName": f"M{i}", "number": f"M{i}"}) for i in range(3)]
    looked_up = spy_lookups(engine, "get_many_by_bc_ids")
    jobs = JobService(engine)
    job = await jobs.start("CUSTOMER", "full", "bidirectional", full=True)
    await jobs.handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    done = await engine.jobs.get(job.job_id)
    assert done.counts["inserted"] == 3 and done.counts["modified"] == 1, done.counts
    assert b in looked_up and not set(new) & set(looked_up)  # no coupling in the marks: created, not looked up
    for i in new:
        assert (await engine.couplings.get_by_bc_id("CUSTOMER", i)) is not None


async def test_a_pair_changed_on_both_sides_is_synced_once_per_incremental_job(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    await incremental_job(engine)
    bc_of(engine).update("customers", b, phoneNumber="222")
    dv_of(engine).update("accounts", d, telephone1="333")  # both feeds hand the pair over
    counts = await incremental_job(engine)
    assert counts["failed"] == 1, counts  # one conflict, not one per feed
    coupling = await engine.couplings.get_by_bc_id("CUSTOMER", b)
    assert coupling.consecutive_failures == 1 and not coupling.skipped  # skipped only after a second run
    [error] = (await engine.errors.list_page(mapping="CUSTOMER"))[0]
    assert error.code == "update_conflict" and error.attempts == 1


async def test_a_dataverse_edit_after_the_bc_pass_read_the_row_is_synced_in_the_same_job(engine: Engine) -> None:
    b, d = await couple_synced(engine)
    await incremental_job(engine)
    bc_of(engine).update("customers", b, phoneNumber="222")
    dv_of(engine).update("accounts", d, telephone1="333")
    read = engine.dv.get_many

    async def read_then_a_person_edits(*args: Any, **kw: Any) -> Any:
        out = await read(*args, **kw)
        if dv_of(engine).get("accounts", d)["telephone1"] == "333":
            dv_of(engine).update("accounts", d, telephone1="222")  # resolves the conflict, after the read
        return out

    engine.dv.get_many = read_then_a_person_edits  # type: ignore[method-assign]
    counts = await incremental_job(engine)
    assert counts["failed"] == 1  # the BC pass saw the conflict; the Dataverse pass the newer version
    coupling = await engine.couplings.get_by_bc_id("CUSTOMER", b)
    assert coupling.last_sync_result == "succeeded" and "222" in coupling.dv_values.values(), coupling
    assert (await engine.errors.list_page(mapping="CUSTOMER"))[0] == []  # the conflict's error closed


async def test_number_assigned_by_bc_on_create_reaches_dataverse_at_once(engine: Engine) -> None:
    bc_of(engine).numbering["customers"] = "C"
    d = dv_of(engine).put("accounts", {"name": "Numbered", "accountnumber": None})
    created = await sync_from_dataverse(engine, {"entityName": "account", "id": d})
    body = created.answer()
    assert created.created
    number = bc_of(engine).get("customers", body["bcId"])["number"]
    assert number and dv_of(engine).get("accounts", d)["accountnumber"] == number
    writes = len(dv_of(engine).writes)
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[body["bcId"]], direction=Direction.TO_DATAVERSE)).answer()
    assert ans["results"][0]["status"] == "unchanged" and len(dv_of(engine).writes) == writes


async def test_two_workers_creating_the_same_row_at_once_make_one_bc_record(engine: Engine) -> None:
    import asyncio

    bc_of(engine).numbering["customers"] = "C"
    d = dv_of(engine).put("accounts", {"name": "Raced"})
    mapping = await engine.registry.get("CUSTOMER")
    row = (await engine.dv.get_many("accounts", [d]))[d]
    svc = CouplingService(engine)
    first, second = await asyncio.gather(
        svc.create_counterparts(mapping, Direction.FROM_DATAVERSE, [row]),
        svc.create_counterparts(mapping, Direction.FROM_DATAVERSE, [row]),
    )
    statuses = sorted(r.status for r in first.results + second.results)
    assert statuses == ["created", "unchanged"], (first.results, second.results)
    assert len(bc_of(engine).rows["customers"]) == 1
    assert (await engine.couplings.get_by_dataverse_id("CUSTOMER", d)) is not None
    # an attempt that died after the BC create but before coupling is adopted, not duplicated
    d2 = dv_of(engine).put("accounts", {"name": "Orphan"})
    from shared.services.codec import bc_number_for

    bc_of(engine).put("customers", {"displayName": "Orphan", "number": bc_number_for(d2)})
    row2 = (await engine.dv.get_many("accounts", [d2]))[d2]
    outcome = await svc.create_counterparts(mapping, Direction.FROM_DATAVERSE, [row2])
    assert [r.status for r in outcome.results] == ["created"] and len(bc_of(engine).rows["customers"]) == 2


async def test_a_write_refused_as_stale_is_re_read_and_re_planned_once(engine: Engine) -> None:
    from shared.errors import PreconditionFailedError

    b, d = await couple_synced(engine)
    bc_of(engine).update("customers", b, phoneNumber="222")
    dv_of(engine).fail_writes_once[d] = PreconditionFailedError("changed meanwhile", status=412)
    ans = (await sync_now(engine, "CUSTOMER", bc_ids=[b], direction=Direction.TO_DATAVERSE)).answer()
    assert ans["results"][0]["status"] == "updated" and ans["counts"]["failed"] == 0
    assert dv_of(engine).get("accounts", d)["telephone1"] == "222"
    assert (await engine.errors.list_page(mapping="CUSTOMER"))[0] == []
    coupling = await engine.couplings.get_by_bc_id("CUSTOMER", b)
    assert coupling.consecutive_failures == 0 and coupling.last_sync_result == "succeeded"


async def test_a_create_failing_in_a_job_is_listed_and_retry_all_creates_it(engine: Engine) -> None:
    from shared.errors import TransientError

    b = bc_of(engine).put("customers", {"displayName": "Lost", "number": "C5"})
    dv_of(engine).fail_writes[dataverse_id_for("CUSTOMER", b)] = TransientError("500", status=500)
    mapping = await engine.registry.get("CUSTOMER")
    outcome = await JobService(engine).run_mapping_sync(mapping, full=False, job_id="j1")
    assert outcome.counts["failed"] == 1
    errors, _ = await engine.errors.list_page(mapping="CUSTOMER")
    assert [(e.bc_id, e.dataverse_id, e.code, e.transient, e.job_id) for e in errors] == [
        (b, None, "create_failed", True, "j1")
    ]
    dv_of(engine).fail_writes.clear()
    job = await JobService(engine).start("CUSTOMER", "retry", None, all=True)
    await JobService(engine).handle(engine.publisher.take()[0])  # type: ignore[attr-defined]
    assert (await engine.jobs.get(job.job_id)).counts["inserted"] == 1
    assert await engine.couplings.get_by_bc_id("CUSTOMER", b) is not None
    assert (await engine.errors.list_page(mapping="CUSTOMER"))[0] == []


async def test_an_inline_job_goes_through_the_lifecycle_of_a_queued_one(engine: Engine) -> None:
    from shared.domain.model import Job
    from shared.services.engine import utcnow
    from shared.services.sync_service import SyncOutcome

    jobs = JobService(engine)
    answer = SyncOutcome()
    answer.counts["modified"] = 2

    async def run() -> SyncOutcome:
        return answer

    async def boom() -> SyncOutcome:
        raise ValueError("the planner broke")

    def job(job_id: str) -> Job:
        return Job(job_id=job_id, mapping="CUSTOMER", kind="syncNow", direction="toDataverse", created_at=utcnow())

    assert await jobs.run_inline(job("j-inline"), run) is answer
    done = await engine.jobs.get("j-inline")
    assert done.status == "succeeded" and done.counts["modified"] == 2 and done.finished_at is not None
    assert done.expected_batches == done.completed_batches == 1
    with pytest.raises(ValueError):
        await jobs.run_inline(job("j-fails"), boom)
    failed = await engine.jobs.get("j-fails")
    assert failed.status == "failed" and failed.detail == "the planner broke"  # not left running
