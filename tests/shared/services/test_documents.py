"""The document sync (a header with its lines as one unit) over the in-memory fakes: created in bulk with
deterministic ids, a line failure after the header completes the same document on retry, an uncoupled product
fails everything before any write, line changes and removals follow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.domain.model import Coupling
from shared.errors import PermanentError
from shared.planning.documents import document_id_for, line_id_for
from shared.services.documents import DocumentSync
from tests.fake_services import fake_engine

ORDERS = "SALESORDER-ORDER"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
USD = "6f1c2d3e-4a5b-4c6d-8e7f-a0b1c2d3e4f5"
GROUP = "7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


async def _world() -> tuple[Any, dict[str, Any]]:
    e = fake_engine()
    bc, dv = e.bc, e.dv
    bc.put("companyInformation", {"currencyCode": "USD"})
    dv.put("transactioncurrencies", {"isocurrencycode": "USD"}, USD)
    unit = bc.put("unitsOfMeasure", {"code": "PCS"})
    dv.put("uomschedules", {"name": "PCS"}, GROUP)
    base = dv.put("uoms", {"isschedulebaseuom": True, "_uomscheduleid_value": GROUP})
    customer = bc.put("customers", {"number": "C1", "displayName": "Adatum"})
    account = dv.put("accounts", {"name": "Adatum"})
    items = [bc.put("items", {"number": f"I{n}", "displayName": f"Item {n}"}) for n in range(3)]
    products = [dv.put("products", {"name": f"Item {n}"}) for n in range(3)]
    pairs = [("UNIT OF MEASURE", unit, GROUP), ("CUSTOMER", customer, account)]
    pairs += [("ITEM-PRODUCT", i, p) for i, p in zip(items[:2], products[:2], strict=True)]  # item 2: not coupled
    for mapping, b, d in pairs:
        await e.couplings.couple(Coupling(mapping, b, d, coupled_at=NOW))
    return e, {"customer": customer, "account": account, "items": items, "products": products, "uom": base}


def _order(e: Any, w: dict[str, Any], items: list[int], status: str = "Released") -> tuple[str, list[str]]:
    order = e.bc.put("salesOrders", {"number": "S-ORD1", "customerId": w["customer"], "currencyCode": "",
                                     "discountAmount": 0, "status": status})  # fmt: skip
    lines = [
        e.bc.put(
            "salesOrderLines",
            {
                "documentId": order,
                "sequence": (n + 1) * 10000,
                "lineType": "Item",
                "itemId": w["items"][i],
                "unitOfMeasureCode": "PCS",
                "quantity": n + 1,
                "unitPrice": 10.0,
                "discountAmount": 0,
                "description": f"Item {i}",
            },
        )
        for n, i in enumerate(items)
    ]
    return order, lines


def _details(e: Any, dv_id: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in e.dv.rows.get("salesorderdetails", {}).items() if v.get("_salesorderid_value") == dv_id}


async def test_released_order_created_with_its_lines_in_bulk_and_unreleased_left_alone() -> None:
    e, w = await _world()
    order, lines = _order(e, w, [0, 1])
    draft, _ = _order(e, w, [0], status="Draft")
    mapping = await e.registry.get(ORDERS)
    outcome = await DocumentSync(e).run_job(mapping, full=True, job_id="j1")
    assert outcome.counts["inserted"] == 1 and outcome.counts["failed"] == 0
    dv_id = document_id_for(ORDERS, order)
    header = e.dv.get("salesorders", dv_id)
    assert (header["name"], header["_customerid_value"], header["_transactioncurrencyid_value"]) == (
        "S-ORD1",
        w["account"],
        USD,
    )
    assert header["_pricelevelid_value"] in e.dv.rows["pricelevels"]
    details = _details(e, dv_id)
    assert set(details) == {line_id_for(ORDERS, x) for x in lines}
    assert sorted((d["_productid_value"], d["quantity"], d["_uomid_value"]) for d in details.values()) == sorted(
        [(w["products"][0], 1, w["uom"]), (w["products"][1], 2, w["uom"])]
    )
    assert (await e.couplings.get_by_bc_id(ORDERS, order)).dataverse_id == dv_id
    assert await e.couplings.get_by_bc_id(ORDERS, draft) is None
    # Bulk writes: the price list once, the headers, then every line in one call.
    assert e.dv.calls["write"] == 3 and [t for t, _ in e.dv.writes].count("salesorderdetails") == 2


async def test_an_uncoupled_product_fails_the_document_before_anything_is_written() -> None:
    e, w = await _world()
    order, _ = _order(e, w, [0, 2])
    mapping = await e.registry.get(ORDERS)
    outcome = await DocumentSync(e).run_job(mapping, full=True, job_id="j1")
    assert [(r.status, r.error_code, r.transient) for r in outcome.results] == [("failed", "parent_not_coupled", True)]
    assert not e.dv.rows.get("salesorders") and not e.dv.rows.get("salesorderdetails")
    errors, _ = await e.errors.list_page(mapping=ORDERS)
    assert [(x.bc_id, x.code) for x in errors] == [(order, "parent_not_coupled")]


async def test_a_failed_line_after_the_header_is_completed_by_the_retry_never_a_second_header() -> None:
    e, w = await _world()
    order, lines = _order(e, w, [0, 1])
    e.dv.fail_writes_once[line_id_for(ORDERS, lines[1])] = PermanentError("refused", status=400)
    mapping = await e.registry.get(ORDERS)
    sync = DocumentSync(e)
    first = await sync.run_job(mapping, full=True, job_id="j1")
    assert first.results[0].status == "failed"
    coupling = await e.couplings.get_by_bc_id(ORDERS, order)
    assert coupling is not None and coupling.last_sync_result == "failed"
    errors, _ = await e.errors.list_page(mapping=ORDERS)
    retried = await sync.retry(mapping, {"ids": [errors[0].id]}, "j2")
    assert [r.status for r in retried.results] == ["updated"]
    assert list(e.dv.rows["salesorders"]) == [coupling.dataverse_id]
    assert set(_details(e, coupling.dataverse_id)) == {line_id_for(ORDERS, x) for x in lines}
    assert not (await e.errors.list_page(mapping=ORDERS))[0]


async def test_changed_line_updated_removed_line_deleted_unchanged_writes_nothing() -> None:
    e, w = await _world()
    order, lines = _order(e, w, [0, 1])
    mapping = await e.registry.get(ORDERS)
    sync = DocumentSync(e)
    await sync.run_job(mapping, full=True, job_id="j1")
    writes = len(e.dv.writes)
    again = await sync.sync_ids(mapping, [order], [], "j2")
    assert [r.status for r in again.results] == ["unchanged"] and len(e.dv.writes) == writes
    e.bc.update("salesOrderLines", lines[0], quantity=7)
    e.bc.remove("salesOrderLines", lines[1])
    done = await sync.sync_ids(mapping, [order], [], "j3")
    assert [r.status for r in done.results] == ["updated"]
    details = _details(e, document_id_for(ORDERS, order))
    assert list(details) == [line_id_for(ORDERS, lines[0])] and details[line_id_for(ORDERS, lines[0])]["quantity"] == 7


async def test_a_large_set_fans_out_through_the_job_and_the_watermark_moves_after_the_last_batch() -> None:
    from shared.config import Settings
    from shared.domain.model import Side
    from shared.services.jobs import JobService

    e, w = await _world()
    e.settings = Settings(SYNC_FANOUT_MIN_RECORDS=2, SYNC_FANOUT_BATCH_SIZE=2)
    orders = [_order(e, w, [0, 1])[0] for _ in range(5)]
    jobs = JobService(e)
    job = await jobs.start(ORDERS, "incremental", "toDataverse", full=False)
    await jobs.handle(e.publisher.take()[0])
    batches = e.publisher.take()
    assert [(m["kind"], len(m["bcIds"])) for m in batches] == [("sync-batch", 2), ("sync-batch", 2), ("sync-batch", 1)]
    assert (await e.watermarks.get(ORDERS, Side.BC)).cursor is None
    for m in [batches[1], batches[0], batches[0], batches[2]]:  # out of order, one redelivered
        await jobs.handle(m)
    done = await e.jobs.get(job.job_id)
    assert done.status == "succeeded" and done.counts["inserted"] == 5, done
    assert (await e.watermarks.get(ORDERS, Side.BC)).cursor is not None
    assert len(e.dv.rows["salesorders"]) == 5 and len(e.dv.rows["salesorderdetails"]) == 10
    assert len(await e.couplings.get_many_by_bc_ids(ORDERS, orders)) == 5


async def test_a_document_failing_repeatedly_is_skipped_until_retried() -> None:
    e, w = await _world()
    order, lines = _order(e, w, [0, 1])
    bad = line_id_for(ORDERS, lines[1])
    e.dv.fail_writes[bad] = PermanentError("refused for good", status=400)
    mapping = await e.registry.get(ORDERS)
    sync = DocumentSync(e)
    await sync.run_job(mapping, full=True, job_id="j1")
    e.bc.update("salesOrders", order, discountAmount=0)  # changed again: the next scheduled run retries it
    await sync.run_job(mapping, full=False, job_id="j2")
    coupling = await e.couplings.get_by_bc_id(ORDERS, order)
    assert coupling.skipped and coupling.consecutive_failures == 2
    e.bc.update("salesOrders", order, discountAmount=0)
    third = await sync.run_job(mapping, full=False, job_id="j3")
    assert third.results == []  # skipped: left out of scheduled syncs
    now = await sync.sync_ids(mapping, [order], [], None)
    assert [(r.status, r.error_code) for r in now.results] == [("skipped", "record_skipped")]
    del e.dv.fail_writes[bad]
    errors, _ = await e.errors.list_page(mapping=ORDERS)
    retried = await sync.retry(mapping, {"ids": [errors[0].id]}, "j4")
    assert [r.status for r in retried.results] == ["updated"]
    assert not (await e.couplings.get_by_bc_id(ORDERS, order)).skipped


async def test_plans_say_what_the_sync_does_and_write_nothing() -> None:
    from shared.services.documents import plan_document_mapping

    e, w = await _world()
    order, _ = _order(e, w, [0, 1])
    blocked, _ = _order(e, w, [2])
    mapping = await e.registry.get(ORDERS)
    items, _ = await plan_document_mapping(e, mapping, full=True)
    by_id = {i["bcId"]: i for i in items}
    assert by_id[order]["action"] == "create" and by_id[blocked]["action"] == "skip"
    assert by_id[blocked]["reason"] == "parent_not_coupled"
    assert {"field": "lines", "side": "dataverse", "from": None, "to": "2 created, 0 updated, 0 deleted"} in by_id[
        order
    ]["changes"]
    assert not e.dv.writes and await e.couplings.get_by_bc_id(ORDERS, order) is None
    done = await DocumentSync(e).run_job(mapping, full=True, job_id="j1")
    assert {r.bc_id: r.status for r in done.results} == {order: "created", blocked: "failed"}


async def test_many_documents_in_several_passes_each_synced_and_planned_once(monkeypatch: Any) -> None:
    import shared.services.documents as documents
    from shared.services.documents import plan_document_mapping

    monkeypatch.setattr(documents, "DOCUMENTS_PER_PASS", 2)
    e, w = await _world()
    orders = [_order(e, w, [0])[0] for _ in range(5)]
    mapping = await e.registry.get(ORDERS)
    items, _ = await plan_document_mapping(e, mapping, full=True)
    assert sorted(i["bcId"] for i in items) == sorted(orders) and {i["action"] for i in items} == {"create"}
    created = await DocumentSync(e).run_job(mapping, full=True, job_id="j1")
    assert sorted(r.bc_id for r in created.results) == sorted(orders)
    for o in orders:
        e.bc.update(
            "salesOrderLines",
            next(k for k, v in e.bc.rows["salesOrderLines"].items() if v["documentId"] == o),
            quantity=3,
        )
    now = await DocumentSync(e).sync_ids(mapping, orders, [], None)
    assert [r.status for r in now.results] == ["updated"] * 5


async def test_a_coupled_order_deleted_in_dataverse_is_made_again_under_its_coupling() -> None:
    e, w = await _world()
    order, _ = _order(e, w, [0, 1])
    mapping = await e.registry.get(ORDERS)
    sync = DocumentSync(e)
    await sync.run_job(mapping, full=True, job_id="j1")
    dv_id = document_id_for(ORDERS, order)
    e.dv.remove("salesorders", dv_id)
    for line_id in list(_details(e, dv_id)):
        e.dv.remove("salesorderdetails", line_id)
    again = await sync.sync_ids(mapping, [order], [], None)
    assert [r.status for r in again.results] == ["created"]
    assert e.dv.get("salesorders", dv_id) is not None and len(_details(e, dv_id)) == 2
    coupling = await e.couplings.get_by_bc_id(ORDERS, order)
    assert coupling.dataverse_id == dv_id and coupling.last_sync_result == "succeeded"
