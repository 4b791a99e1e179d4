"""Issue #21: documents (SALESORDER-ORDER, POSTEDSALESINV-INV) through the HTTP API on the local stack.

A header travels with its lines as one unit: released BC orders arrive as one Dataverse order with its details;
line changes and removals follow; unreleased orders stay in BC; posted invoices arrive once, linked to their
order; a line whose product is not coupled fails the whole document until ITEM-PRODUCT has synced it.
Every test makes its own customer, items and orders, so it only meets its own records in the shared stack."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.test_default_mappings import couple_new, coupled_to, m, new_currency, run_job

pytestmark = pytest.mark.stack

ORDERS = "SALESORDER-ORDER"
INVOICES = "POSTEDSALESINV-INV"


def _setup(api: Any, world: dict[str, Any], n_items: int = 3, *, currency: bool = True) -> dict[str, Any]:
    """A coupled customer (in a coupled currency) and ``n_items`` coupled items in the standard unit PCS."""
    sims = world["sims"]
    run_job(api, "UNIT OF MEASURE", {}, "couplings/match")  # PCS & co. coupled (idempotent)
    out: dict[str, Any] = {"tag": uuid.uuid4().hex[:6]}
    iso = ""
    if currency:
        iso, _, out["currency"] = new_currency(api, world)
    customer = sims.bc_create("customers", displayName=f"Doc customer {out['tag']}", currencyCode=iso)
    out["customer"], out["account"] = customer, couple_new(api, "CUSTOMER", customer)
    out["items"], out["products"] = [], []
    for n in range(n_items):
        item = sims.bc_create("items", displayName=f"Doc item {out['tag']} {n}", unitPrice=10 + n)
        out["items"].append(item)
        out["products"].append(couple_new(api, "ITEM-PRODUCT", item))
    return out


def _order(world: dict[str, Any], customer: str, lines: list[dict[str, Any]], *, release: bool = True) -> str:
    sims = world["sims"]
    order = sims.bc_create("salesOrders", customerId=customer)
    for line in lines:
        r = sims._bc("POST", f"{sims._bc_url('salesOrders', order)}/salesOrderLines", json=line)
        assert r.status_code == 201, r.text
    if release:
        _action(world, "salesOrders", order, "release")
    return order


def _action(world: dict[str, Any], entity: str, rid: str, action: str) -> None:
    sims = world["sims"]
    r = sims._bc("POST", f"{sims._bc_url(entity, rid)}/Microsoft.NAV.{action}")
    assert r.status_code == 204, r.text


def _bc_lines(world: dict[str, Any], order: str) -> list[dict[str, Any]]:
    sims = world["sims"]
    r = sims._bc("GET", f"{sims._bc_url('salesOrders', order)}/salesOrderLines")
    assert r.status_code == 200, r.text
    return sorted(r.json()["value"], key=lambda x: x["sequence"])


def _details(world: dict[str, Any], entity_set: str, parent: str, dv_id: str) -> list[dict[str, Any]]:
    sims = world["sims"]
    r = sims._dv("GET", f"{sims.dv_api}/{entity_set}", params={"$filter": f"_{parent}_value eq {dv_id}"})
    assert r.status_code == 200, r.text
    return sorted(r.json()["value"], key=lambda x: x["sequencenumber"] or 0)


def test_released_order_arrives_with_its_lines_and_line_changes_follow(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    s = _setup(api, world)
    lines = [
        {"itemId": s["items"][0], "quantity": 2},
        {"itemId": s["items"][1], "quantity": 5, "unitPrice": 7.5},
        {"itemId": s["items"][2], "quantity": 1},
        {"lineType": "Comment", "description": "Deliver to the back door"},
    ]
    order = _order(world, s["customer"], lines)
    draft = _order(world, s["customer"], [{"itemId": s["items"][0], "quantity": 1}], release=False)
    job = run_job(api, ORDERS, {"kind": "incremental"})
    assert job["status"] == "succeeded", job
    dv_id = coupled_to(api, ORDERS, order)
    assert dv_id is not None and coupled_to(api, ORDERS, draft) is None  # only released orders are sent
    header = sims.dv_get("salesorders", dv_id)
    number = sims.bc_get("salesOrders", order)["number"]
    assert (header["name"], header["_customerid_value"], header["_transactioncurrencyid_value"]) == (
        number,
        s["account"],
        s["currency"],
    )
    assert header["_pricelevelid_value"] and sims.dv_count("salesorders", f"name eq '{number}'") == 1
    details = _details(world, "salesorderdetails", "salesorderid", dv_id)
    assert [(d["_productid_value"], d["quantity"], d["priceperunit"]) for d in details[:3]] == [
        (s["products"][0], 2, 10),
        (s["products"][1], 5, 7.5),
        (s["products"][2], 1, 12),
    ]
    assert (details[3]["isproductoverridden"], details[3]["productdescription"]) == (True, "Deliver to the back door")
    assert all(d["_uomid_value"] for d in details[:3]) and header["totalamount"] == 20 + 37.5 + 12

    # A line changed and a line removed in BC (reopen, edit, release again): Synchronize now follows.
    bc_lines = _bc_lines(world, order)
    _action(world, "salesOrders", order, "reopen")
    sims.bc_patch(f"salesOrders({order})/salesOrderLines", bc_lines[0]["id"], quantity=4)
    r = sims._bc("DELETE", f"{sims._bc_url('salesOrders', order)}/salesOrderLines({bc_lines[1]['id']})")
    assert r.status_code == 204, r.text
    _action(world, "salesOrders", order, "release")
    plan = api.post(f"/api/mappings/{ORDERS}/plan", json={"bcIds": [order]})
    assert plan.status_code == 200, plan.text
    item = plan.json()["results"][0]
    assert item["action"] == "update" and {"field": "lines", "side": "dataverse", "from": None,
                                          "to": "0 created, 1 updated, 1 deleted"} in item["changes"], item  # fmt: skip
    resp = api.post(f"/api/mappings/{ORDERS}/sync", json={"bcIds": [order]})
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "updated", resp.text
    details = _details(world, "salesorderdetails", "salesorderid", dv_id)
    assert [(d["_productid_value"], d["quantity"]) for d in details if not d["isproductoverridden"]] == [
        (s["products"][0], 4),
        (s["products"][2], 1),
    ]
    assert len(details) == 3 and sims.dv_get("salesorders", dv_id)["totalamount"] == 40 + 12
    history = api.get(f"/api/mappings/{ORDERS}/couplings/{order}/history").json()["value"]
    assert [h["action"] for h in history][:2] == ["updated", "created"], history
    assert {"field": "lines", "side": "dataverse", "from": None, "to": "0 created, 1 updated, 1 deleted"} in history[0][
        "changes"
    ]
    # Nothing changed since: a second job writes nothing, and there is still one order.
    again = run_job(api, ORDERS, {"kind": "incremental"})
    assert again["counts"]["inserted"] == 0 and again["counts"]["modified"] == 0, again
    assert sims.dv_count("salesorders", f"name eq '{number}'") == 1
    # Shipped in full in BC: the Sales order is fulfilled (and then locked: later syncs leave it alone).
    _action(world, "salesOrders", order, "ship")
    run_job(api, ORDERS, {"kind": "incremental"})
    header = sims.dv_get("salesorders", dv_id)
    assert (header["statecode"], header["statuscode"]) == (3, 100001)


def test_uncoupled_product_fails_the_document_then_heals(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    s = _setup(api, world, 1, currency=False)
    loose = sims.bc_create("items", displayName=f"Loose item {s['tag']}", unitPrice=3)
    order = _order(world, s["customer"], [{"itemId": s["items"][0], "quantity": 1}, {"itemId": loose, "quantity": 2}])
    number = sims.bc_get("salesOrders", order)["number"]
    resp = api.post(f"/api/mappings/{ORDERS}/jobs", json={"kind": "incremental"})
    job = api.wait_for_job(resp.json()["jobId"])
    assert job["status"] == "partial" and job["counts"]["failed"] >= 1, job
    assert coupled_to(api, ORDERS, order) is None and sims.dv_count("salesorders", f"name eq '{number}'") == 0
    errors = [e for e in api.all_pages("/api/errors", mapping=ORDERS) if e.get("bcId") == order]
    assert [(e["code"], e["transient"]) for e in errors] == [("parent_not_coupled", True)], errors
    # ITEM-PRODUCT syncs the item (a full run creates the uncoupled product); the retry completes the document.
    full = run_job(api, "ITEM-PRODUCT", {"kind": "full"})
    assert full["status"] in ("succeeded", "partial") and coupled_to(api, "ITEM-PRODUCT", loose), full
    job = api.wait_for_job(api.post("/api/errors/retry", json={"ids": [errors[0]["id"]]}).json()["jobId"])
    assert job["status"] == "succeeded" and job["counts"]["inserted"] == 1, job
    dv_id = coupled_to(api, ORDERS, order)
    details = _details(world, "salesorderdetails", "salesorderid", dv_id)
    assert [d["_productid_value"] for d in details] == [s["products"][0], coupled_to(api, "ITEM-PRODUCT", loose)]
    assert not [e for e in api.all_pages("/api/errors", mapping=ORDERS) if e.get("bcId") == order]


def test_lines_refused_after_the_header_was_written_complete_the_same_order(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    s = _setup(api, world, 2, currency=False)
    sims.dv_patch("products", s["products"][1], statecode=1)  # retired in Sales: Dataverse refuses its lines
    order = _order(
        world, s["customer"], [{"itemId": s["items"][0], "quantity": 1}, {"itemId": s["items"][1], "quantity": 1}]
    )
    number = sims.bc_get("salesOrders", order)["number"]
    job = run_job(api, ORDERS, {"kind": "incremental"})
    assert job["counts"]["failed"] >= 1, job
    dv_id = coupled_to(api, ORDERS, order)
    assert dv_id is not None  # the header exists and is coupled, so the next attempt completes it
    sims.dv_patch("products", s["products"][1], statecode=0)
    errors = [e for e in api.all_pages("/api/errors", mapping=ORDERS) if e.get("bcId") == order]
    assert errors and errors[0]["dataverseId"] == dv_id, errors
    job = api.wait_for_job(api.post("/api/errors/retry", json={"ids": [errors[0]["id"]]}).json()["jobId"])
    assert job["status"] == "succeeded", job
    assert sims.dv_count("salesorders", f"name eq '{number}'") == 1
    details = _details(world, "salesorderdetails", "salesorderid", dv_id)
    assert sorted(d["_productid_value"] for d in details) == sorted(s["products"])


def test_posted_invoice_arrives_once_linked_to_its_order(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    s = _setup(api, world, 2)
    order = _order(
        world, s["customer"], [{"itemId": s["items"][0], "quantity": 3}, {"itemId": s["items"][1], "quantity": 1}]
    )
    assert run_job(api, ORDERS, {"kind": "incremental"})["status"] == "succeeded"
    dv_order = coupled_to(api, ORDERS, order)
    draft = sims.bc_create("salesInvoices", customerId=s["customer"])
    r = sims._bc(
        "POST",
        f"{sims._bc_url('salesInvoices', draft)}/salesInvoiceLines",
        json={"itemId": s["items"][0], "quantity": 1},
    )
    assert r.status_code == 201, r.text
    number = sims.bc_get("salesOrders", order)["number"]
    _action(world, "salesOrders", order, "shipAndInvoice")
    posted = sims.bc_find("salesInvoices", "orderNumber", number)
    assert len(posted) == 1, posted
    job = run_job(api, INVOICES, {"kind": "incremental"})
    assert job["status"] == "succeeded", job
    assert coupled_to(api, INVOICES, draft) is None  # a draft invoice is not sent
    inv_id = coupled_to(api, INVOICES, posted[0]["id"])
    invoice = sims.dv_get("invoices", inv_id)
    assert (invoice["name"], invoice["_salesorderid_value"], invoice["_customerid_value"]) == (
        posted[0]["number"],
        dv_order,
        s["account"],
    )
    details = _details(world, "invoicedetails", "invoiceid", inv_id)
    assert [(d["_productid_value"], d["quantity"]) for d in details] == [(s["products"][0], 3), (s["products"][1], 1)]
    assert sims.dv_get("salesorders", dv_order)["statecode"] == 4  # the order is invoiced in Sales too
    # Once: a full run and Synchronize now leave it alone.
    again = run_job(api, INVOICES, {"kind": "full"})
    assert again["counts"]["inserted"] == 0 and again["counts"]["modified"] == 0, again
    resp = api.post(f"/api/mappings/{m(INVOICES)}/sync", json={"bcIds": [posted[0]["id"]]})
    assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "unchanged", resp.text
    assert sims.dv_count("invoices", f"name eq '{posted[0]['number']}'") == 1


def test_documents_are_in_the_shipped_set(api: Any) -> None:
    body = api.get(f"/api/mappings/{ORDERS}").json()
    assert (body["bcEntity"], body["dataverseTable"], body["direction"], body["syncOnlyCoupled"]) == (
        "salesOrders",
        "salesorder",
        "toDataverse",
        True,
    )
    assert set(body["dependsOn"]) == {"CUSTOMER", "ITEM-PRODUCT", "CURRENCY"}
    assert body["lines"]["bcEntity"] == "salesOrderLines" and body["lines"]["dataverseTable"] == "salesorderdetail"
    assert {f["dataverse"] for f in body["lines"]["fields"]} >= {"productid", "uomid", "quantity", "priceperunit"}
    inv = api.get(f"/api/mappings/{INVOICES}").json()
    assert (inv["bcEntity"], inv["dataverseTable"], inv["direction"]) == ("salesInvoices", "invoice", "toDataverse")
    assert inv["createOnce"] is True and inv["lines"]["dataverseParent"] == "invoiceid"
    resp = api.patch(f"/api/mappings/{INVOICES}", json={"direction": "bidirectional"})
    assert resp.status_code == 422 and resp.json()["code"] == "direction_not_allowed", resp.text


def _dv_post(world: dict[str, Any], entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
    sims = world["sims"]
    r = sims._dv("POST", f"{sims.dv_api}/{entity_set}", json=body, headers={"Prefer": "return=representation"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _coupled_dv(api: Any, mapping: str, dv_id: str) -> str | None:
    found = api.get(f"/api/mappings/{m(mapping)}/couplings", params={"dataverseId": dv_id}).json()["value"]
    return found[0]["bcId"] if found else None


def test_bidirectional_a_submitted_sales_order_creates_one_bc_order(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    s = _setup(api, world, 2, currency=False)
    resp = api.patch(f"/api/mappings/{ORDERS}", json={"direction": "bidirectional"})
    assert resp.status_code == 200 and resp.json()["direction"] == "bidirectional", resp.text
    try:
        usd = "6f1c2d3e-4a5b-4c6d-8e7f-a0b1c2d3e4f5"  # the Dataverse simulator's base currency: BC's local one
        price = _dv_post(
            world,
            "pricelevels",
            {"name": f"Sales {s['tag']}", "transactioncurrencyid@odata.bind": f"/transactioncurrencies({usd})"},
        )
        number = f"ORD-{s['tag']}"
        order = _dv_post(
            world,
            "salesorders",
            {
                "name": f"From Sales {s['tag']}",
                "ordernumber": number,
                "customerid_account@odata.bind": f"/accounts({s['account']})",
                "pricelevelid@odata.bind": f"/pricelevels({price['pricelevelid']})",
                "transactioncurrencyid@odata.bind": f"/transactioncurrencies({usd})",
            },
        )
        dv_id = order["salesorderid"]
        for n, (product, qty) in enumerate(zip(s["products"], (2, 7), strict=True)):
            unit = sims.dv_get("products", product)["_defaultuomid_value"]
            _dv_post(
                world,
                "salesorderdetails",
                {
                    "salesorderid@odata.bind": f"/salesorders({dv_id})",
                    "productid@odata.bind": f"/products({product})",
                    "uomid@odata.bind": f"/uoms({unit})",
                    "quantity": qty,
                    "priceperunit": 20 + n,
                    "ispriceoverridden": True,
                    "lineitemnumber": n + 1,
                },
            )
        run_job(api, ORDERS, {"kind": "incremental"})
        assert _coupled_dv(api, ORDERS, dv_id) is None  # active, not submitted: BC takes nothing yet
        sims.dv_patch("salesorders", dv_id, statecode=1)
        for _ in range(2):  # the job again (a repeated delivery) creates nothing more
            job = run_job(api, ORDERS, {"kind": "incremental"})
            assert job["status"] == "succeeded", job
        bc_id = _coupled_dv(api, ORDERS, dv_id)
        assert bc_id is not None
        created = sims.bc_find("salesOrders", "externalDocumentNumber", number)
        assert [o["id"] for o in created] == [bc_id] and created[0]["customerId"] == s["customer"]
        assert [(x["itemId"], x["quantity"], x["unitPrice"]) for x in _bc_lines(world, bc_id)] == [
            (s["items"][0], 2, 20),
            (s["items"][1], 7, 21),
        ]
        # The coupling lost (a worker killed between the create and the coupling): a full run adopts the same order.
        assert api.delete(f"/api/mappings/{ORDERS}/couplings/{bc_id}").status_code == 204
        job = run_job(api, ORDERS, {"kind": "full"})
        assert job["status"] in ("succeeded", "partial"), job
        assert _coupled_dv(api, ORDERS, dv_id) == bc_id
        assert len(sims.bc_find("salesOrders", "externalDocumentNumber", number)) == 1
        assert len(_bc_lines(world, bc_id)) == 2
        # A change in Sales to the submitted order: BC takes it while its order is open...
        first = _details(world, "salesorderdetails", "salesorderid", dv_id)
        first = sorted(first, key=lambda d: d["lineitemnumber"])
        sims.dv_patch("salesorderdetails", first[0]["salesorderdetailid"], quantity=9)
        r = sims._dv("DELETE", f"{sims.dv_api}/salesorderdetails({first[1]['salesorderdetailid']})")
        assert r.status_code == 204, r.text
        job = run_job(api, ORDERS, {"kind": "incremental"})
        assert job["status"] == "succeeded" and job["counts"]["modified"] >= 1, job
        assert [(x["itemId"], x["quantity"]) for x in _bc_lines(world, bc_id)] == [(s["items"][0], 9)]
        # ...and refuses it once the BC order is released: a sync error says why.
        _action(world, "salesOrders", bc_id, "release")
        sims.dv_patch("salesorderdetails", first[0]["salesorderdetailid"], quantity=11)
        job = run_job(api, ORDERS, {"kind": "incremental"})
        assert job["counts"]["failed"] >= 1, job
        errors = [e for e in api.all_pages("/api/errors", mapping=ORDERS) if e.get("dataverseId") == dv_id]
        assert [e["code"] for e in errors] == ["bc_order_released"], errors
        assert [x["quantity"] for x in _bc_lines(world, bc_id)] == [9]
    finally:
        api.patch(f"/api/mappings/{ORDERS}", json={"direction": "toDataverse"})


def test_couple_with_create_new_creates_the_order_with_its_lines(api: Any, world: dict[str, Any]) -> None:
    s = _setup(api, world, 2, currency=False)
    order = _order(
        world, s["customer"], [{"itemId": s["items"][0], "quantity": 1}, {"itemId": s["items"][1], "quantity": 2}]
    )
    dv_id = couple_new(api, ORDERS, order)
    details = _details(world, "salesorderdetails", "salesorderid", dv_id)
    assert [(d["_productid_value"], d["quantity"]) for d in details] == [(s["products"][0], 1), (s["products"][1], 2)]
    resp = api.post(f"/api/mappings/{ORDERS}/couplings", json={"bcId": order, "createNew": True})
    assert resp.status_code == 409, resp.text  # already coupled: no second order


def test_a_worker_killed_mid_job_creates_no_second_order_and_loses_no_line(
    stack: Any, api: Any, world: dict[str, Any]
) -> None:
    """2,400 released orders (2 lines each) fan out to workers (a page of two batches or more); the host is
    killed (SIGKILL) while batches run.
    Redelivered batches complete the same documents: one Dataverse order per BC order, every line once."""
    import time

    import requests

    sims = world["sims"]
    s = _setup(api, world, 2, currency=False)
    run_job(api, ORDERS, {"kind": "incremental"})  # earlier tests' orders out of the way
    number = sims.bc_get("customers", s["customer"])["number"]
    n = 2400
    orders: list[str] = []
    for _ in range(3):  # the seed answers the ids of up to 1,000 records per call
        r = requests.post(
            f"{stack.url('bc_sim')}/_sim/seed",
            json={"entity": "salesOrders", "count": n // 3, "fields": {"customerNumber": number, "lines": 2,
                                                                       "itemIds": s["items"]}},
            timeout=120,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        orders += r.json()["ids"]
    job_id = api.post(f"/api/mappings/{ORDERS}/jobs", json={"kind": "incremental"}).json()["jobId"]
    deadline = time.monotonic() + 180
    while api.get(f"/api/jobs/{job_id}").json().get("batches", {}).get("completed", 0) < 1:
        assert time.monotonic() < deadline, api.get(f"/api/jobs/{job_id}").json()
        time.sleep(0.05)
    stack.restart("host")  # the in-flight batches' locks expire and Service Bus redelivers them
    job = api.wait_for_job(job_id, timeout=300)
    assert job["status"] == "succeeded" and job["counts"]["failed"] == 0, job
    account_filter = f"_customerid_value eq {s['account']}"
    assert sims.dv_count("salesorders", account_filter) == n  # one order each, none twice
    coupled = {o: coupled_to(api, ORDERS, o) for o in orders[:: n // 15]}
    assert all(coupled.values()), coupled
    for dv_id in coupled.values():
        assert len(_details(world, "salesorderdetails", "salesorderid", dv_id)) == 2  # every line, once
    couplings = [c for c in api.all_pages(f"/api/mappings/{m(ORDERS)}/couplings") if c["bcId"] in set(orders)]
    assert len(couplings) == n and len({c["dataverseId"] for c in couplings}) == n


def test_a_worker_killed_while_submitted_sales_orders_sync_creates_no_second_bc_order(
    stack: Any, api: Any, world: dict[str, Any]
) -> None:
    """Bidirectional: 150 orders submitted in Sales (2 lines each) sync to BC; the host is killed (SIGKILL)
    after some BC orders exist. The job message is redelivered and the job completes the same documents:
    one BC order per Sales order, every line once, each coupled once."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import requests

    sims = world["sims"]
    s = _setup(api, world, 2, currency=False)
    n = 150
    number = sims.bc_get("customers", s["customer"])["number"]
    assert api.patch(f"/api/mappings/{ORDERS}", json={"direction": "bidirectional"}).status_code == 200
    try:
        run_job(api, ORDERS, {"kind": "incremental"})  # earlier tests' orders out of the way
        usd = "6f1c2d3e-4a5b-4c6d-8e7f-a0b1c2d3e4f5"  # the simulator's base currency: BC's local one
        price = _dv_post(
            world,
            "pricelevels",
            {"name": f"Kill {s['tag']}", "transactioncurrencyid@odata.bind": f"/transactioncurrencies({usd})"},
        )
        units = [sims.dv_get("products", p)["_defaultuomid_value"] for p in s["products"]]

        def submitted_order(k: int) -> str:
            order = _dv_post(
                world,
                "salesorders",
                {
                    "name": f"Kill {s['tag']} {k}",
                    "ordernumber": f"K-{s['tag']}-{k}",
                    "customerid_account@odata.bind": f"/accounts({s['account']})",
                    "pricelevelid@odata.bind": f"/pricelevels({price['pricelevelid']})",
                    "transactioncurrencyid@odata.bind": f"/transactioncurrencies({usd})",
                },
            )["salesorderid"]
            for line, (product, unit) in enumerate(zip(s["products"], units, strict=True)):
                _dv_post(
                    world,
                    "salesorderdetails",
                    {
                        "salesorderid@odata.bind": f"/salesorders({order})",
                        "productid@odata.bind": f"/products({product})",
                        "uomid@odata.bind": f"/uoms({unit})",
                        "quantity": line + 1,
                        "priceperunit": 10,
                        "ispriceoverridden": True,
                        "lineitemnumber": line + 1,
                    },
                )
            sims.dv_patch("salesorders", order, statecode=1)
            return order

        with ThreadPoolExecutor(8) as pool:
            orders = list(pool.map(submitted_order, range(n)))
        bc_faults = f"{stack.url('bc_sim')}/_sim/faults"
        requests.post(bc_faults, json={"latencyMs": 200}, timeout=10).raise_for_status()  # a job long enough to kill
        try:
            job_id = api.post(f"/api/mappings/{ORDERS}/jobs", json={"kind": "incremental"}).json()["jobId"]
            deadline = time.monotonic() + 180
            while not (done := sims.bc_find("salesOrders", "customerNumber", number)):
                assert time.monotonic() < deadline, api.get(f"/api/jobs/{job_id}").json()
                time.sleep(0.05)
            running = api.get(f"/api/jobs/{job_id}").json()
            assert running["status"] in ("queued", "running"), ("finished before the kill", len(done), running)
            stack.restart("host")  # the job message's lock expires and Service Bus redelivers it
        finally:
            requests.delete(bc_faults, timeout=10)
        job = api.wait_for_job(job_id, timeout=300)
        assert job["status"] == "succeeded" and job["counts"]["failed"] == 0, job
        bc_orders = sims.bc_find("salesOrders", "customerNumber", number)
        assert len(bc_orders) == n, len(bc_orders)  # one BC order per Sales order, none twice
        numbers = sorted(o["externalDocumentNumber"] for o in bc_orders)
        assert numbers == sorted(f"K-{s['tag']}-{k}" for k in range(n))
        for o in bc_orders[:: n // 10]:
            assert [x["quantity"] for x in _bc_lines(world, o["id"])] == [1, 2]  # every line, once
        couplings = [c for c in api.all_pages(f"/api/mappings/{m(ORDERS)}/couplings") if c["dataverseId"] in orders]
        assert len(couplings) == n and len({c["bcId"] for c in couplings}) == n
    finally:
        api.patch(f"/api/mappings/{ORDERS}", json={"direction": "toDataverse"})
