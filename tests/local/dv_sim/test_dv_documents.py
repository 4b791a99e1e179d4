"""Dataverse simulator: sales orders, invoices, their details and price lists (required attributes, write-in
products, computed amounts, state and status codes, details locked once the document is not active)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from local.dv_sim.default_set import BASE_CURRENCY_ID, DEFAULT_UNIT_GROUP_ID
from tests.local.dv_sim.conftest import API

RETURN = {"Prefer": "return=representation"}


async def _ok(resp: Any, status: int = 201) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json() if resp.status != 204 else None


async def _setup(dv: TestClient) -> dict[str, str]:
    account = await _ok(await dv.post(f"{API}/accounts", json={"name": "Adatum"}, headers=RETURN))
    units = await _ok(await dv.get(f"{API}/uoms?$filter=_uomscheduleid_value eq {DEFAULT_UNIT_GROUP_ID}"), 200)
    uom = units["value"][0]["uomid"]
    product = await _ok(
        await dv.post(
            f"{API}/products",
            json={
                "name": "Bike",
                "productnumber": "1000",
                "price": 120,
                "quantitydecimal": 2,
                "defaultuomscheduleid@odata.bind": f"/uomschedules({DEFAULT_UNIT_GROUP_ID})",
                "defaultuomid@odata.bind": f"/uoms({uom})",
            },
            headers=RETURN,
        )
    )
    price = await _ok(
        await dv.post(
            f"{API}/pricelevels",
            json={"name": "BC", "transactioncurrencyid@odata.bind": f"/transactioncurrencies({BASE_CURRENCY_ID})"},
            headers=RETURN,
        )
    )
    assert price["statecode"] == 0 and price["statuscode"] == 100001
    return {
        "account": account["accountid"],
        "product": product["productid"],
        "uom": uom,
        "price": price["pricelevelid"],
    }


def _header(ids: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "S-ORD101001",
        "customerid_account@odata.bind": f"/accounts({ids['account']})",
        "pricelevelid@odata.bind": f"/pricelevels({ids['price']})",
        "transactioncurrencyid@odata.bind": f"/transactioncurrencies({BASE_CURRENCY_ID})",
        **extra,
    }


async def test_order_requires_customer_price_list_and_currency(dv: TestClient) -> None:
    ids = await _setup(dv)
    for missing in ("customerid_account@odata.bind", "pricelevelid@odata.bind", "transactioncurrencyid@odata.bind"):
        body = _header(ids)
        del body[missing]
        resp = await dv.post(f"{API}/salesorders", json=body)
        assert resp.status == 400, missing
        assert "required" in (await resp.json())["error"]["message"]
    order = await _ok(await dv.post(f"{API}/salesorders", json=_header(ids), headers=RETURN))
    assert order["statecode"] == 0 and order["statuscode"] == 1 and order["ordernumber"]


async def test_details_products_write_ins_amounts_and_locking(dv: TestClient) -> None:
    ids = await _setup(dv)
    order = await _ok(await dv.post(f"{API}/salesorders", json=_header(ids), headers=RETURN))
    bind = f"/salesorders({order['salesorderid']})"
    line = await _ok(
        await dv.post(
            f"{API}/salesorderdetails",
            json={
                "salesorderid@odata.bind": bind,
                "productid@odata.bind": f"/products({ids['product']})",
                "uomid@odata.bind": f"/uoms({ids['uom']})",
                "quantity": 3,
                "priceperunit": 100,
                "ispriceoverridden": True,
            },
            headers=RETURN,
        )
    )
    assert line["baseamount"] == 300 and line["extendedamount"] == 300
    listed = await _ok(
        await dv.post(
            f"{API}/salesorderdetails",
            json={"salesorderid@odata.bind": bind, "productid@odata.bind": f"/products({ids['product']})",
                  "uomid@odata.bind": f"/uoms({ids['uom']})", "quantity": 1},
            headers=RETURN,
        )
    )  # fmt: skip
    assert listed["priceperunit"] == 120  # not overridden: the product's list price
    write_in = {
        "salesorderid@odata.bind": bind,
        "isproductoverridden": True,
        "productdescription": "Freight",
        "quantity": 1,
    }
    await _ok(await dv.post(f"{API}/salesorderdetails", json={**write_in, "priceperunit": 5}), 204)
    # A product needs its unit; a write-in needs its description; a detail needs its order.
    no_unit = {"salesorderid@odata.bind": bind, "quantity": 1, "productid@odata.bind": f"/products({ids['product']})"}
    resp = await dv.post(f"{API}/salesorderdetails", json=no_unit)
    assert resp.status == 400
    resp = await dv.post(f"{API}/salesorderdetails", json={**write_in, "productdescription": None})
    assert resp.status == 400
    resp = await dv.post(
        f"{API}/salesorderdetails", json={"isproductoverridden": True, "productdescription": "x", "quantity": 1}
    )
    assert resp.status == 400

    header = await _ok(await dv.get(f"{API}/salesorders({order['salesorderid']})"), 200)
    assert header["totalamount"] == 425
    await _ok(await dv.delete(f"{API}/salesorderdetails({line['salesorderdetailid']})"), 204)
    header = await _ok(await dv.get(f"{API}/salesorders({order['salesorderid']})"), 200)
    assert header["totalamount"] == 125

    # Submitted: still open; fulfilled: the details are locked; invalid state/status pairs are refused.
    resp = await dv.patch(f"{API}/salesorders({order['salesorderid']})", json={"statecode": 1, "statuscode": 1})
    assert resp.status == 400
    await _ok(await dv.patch(f"{API}/salesorders({order['salesorderid']})", json={"statecode": 1}), 204)
    header = await _ok(await dv.get(f"{API}/salesorders({order['salesorderid']})"), 200)
    assert (header["statecode"], header["statuscode"]) == (1, 3)
    await _ok(await dv.post(f"{API}/salesorderdetails", json={**write_in, "priceperunit": 5}), 204)
    await _ok(await dv.patch(f"{API}/salesorders({order['salesorderid']})", json={"statecode": 3}), 204)
    header = await _ok(await dv.get(f"{API}/salesorders({order['salesorderid']})"), 200)
    assert (header["statecode"], header["statuscode"]) == (3, 100001)
    resp = await dv.post(f"{API}/salesorderdetails", json={**write_in, "priceperunit": 5})
    assert resp.status == 400 and "closed" in (await resp.json())["error"]["message"]
    assert (await dv.patch(f"{API}/salesorders({order['salesorderid']})", json={"statecode": 9})).status == 400


async def test_invoice_with_details_linked_to_order_and_bulk_create(dv: TestClient) -> None:
    ids = await _setup(dv)
    order = await _ok(await dv.post(f"{API}/salesorders", json=_header(ids), headers=RETURN))
    invoice = await _ok(
        await dv.post(
            f"{API}/invoices",
            json={
                **_header(ids, name="PS-INV103001"),
                "salesorderid@odata.bind": f"/salesorders({order['salesorderid']})",
            },
            headers=RETURN,
        )
    )
    assert invoice["_salesorderid_value"] == order["salesorderid"] and invoice["statecode"] == 0
    inv_bind = f"/invoices({invoice['invoiceid']})"
    targets = [
        {"@odata.type": "Microsoft.Dynamics.CRM.invoicedetail", "invoiceid@odata.bind": inv_bind,
         "isproductoverridden": True, "productdescription": f"Line {n}", "quantity": n, "priceperunit": 10}
        for n in (1, 2, 3)
    ]  # fmt: skip
    await _ok(
        await dv.post(f"{API}/invoicedetails/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets}), 200
    )
    header = await _ok(await dv.get(f"{API}/invoices({invoice['invoiceid']})"), 200)
    assert header["totalamount"] == 60
    await _ok(await dv.patch(f"{API}/invoices({invoice['invoiceid']})", json={"statecode": 2}), 204)
    header = await _ok(await dv.get(f"{API}/invoices({invoice['invoiceid']})"), 200)
    assert (header["statecode"], header["statuscode"]) == (2, 100001)
