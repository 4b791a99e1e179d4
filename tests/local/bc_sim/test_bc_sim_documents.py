"""BC simulator: sales orders and invoices with their lines (API v2.0 salesOrder(Line)/salesInvoice(Line))."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.local.bc_sim.conftest import BASE, COMPANY

ROOT = f"{BASE}/companies({COMPANY})"


async def _ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json() if resp.status != 204 else None


async def _setup(bc: TestClient) -> tuple[dict, list[dict]]:
    customer = await _ok(await bc.post(f"{ROOT}/customers", json={"displayName": "Adatum"}), 201)
    items = [
        await _ok(await bc.post(f"{ROOT}/items", json={"displayName": f"Bike {n}", "unitPrice": 100 + n}), 201)
        for n in range(3)
    ]
    return customer, items


async def test_order_with_lines_navigation_totals_and_release(bc: TestClient) -> None:
    customer, items = await _setup(bc)
    order = await _ok(await bc.post(f"{ROOT}/salesOrders", json={"customerNumber": customer["number"]}), 201)
    assert order["number"].startswith("S-ORD") and order["status"] == "Draft"
    assert order["customerId"] == customer["id"] and order["customerName"] == "Adatum"
    lines_url = f"{ROOT}/salesOrders({order['id']})/salesOrderLines"
    line = await _ok(await bc.post(lines_url, json={"itemId": items[0]["id"], "quantity": 3}), 201)
    assert line["lineType"] == "Item" and line["lineObjectNumber"] == items[0]["number"]
    assert line["unitPrice"] == 100 and line["amountExcludingTax"] == 300 and line["unitOfMeasureCode"] == "PCS"
    assert line["documentId"] == order["id"] and line["sequence"] == 10000
    await _ok(
        await bc.post(lines_url, json={"lineObjectNumber": items[1]["number"], "quantity": 1, "unitPrice": 50}), 201
    )
    await _ok(await bc.post(lines_url, json={"lineType": "Comment", "description": "Deliver by noon"}), 201)
    header = await _ok(await bc.get(f"{ROOT}/salesOrders({order['id']})"))
    assert header["totalAmountIncludingTax"] == 350
    assert header["lastModifiedDateTime"] > order["lastModifiedDateTime"]  # a line change stamps its header

    listed = await _ok(await bc.get(lines_url))
    assert sorted(r["sequence"] for r in listed["value"]) == [10000, 20000, 30000]
    # Top level: a documentId (or id) filter is required, as the API pages require it.
    resp = await bc.get(f"{ROOT}/salesOrderLines")
    assert resp.status == 400 and "Document Id" in (await resp.json())["error"]["message"]
    top = await _ok(await bc.get(f"{ROOT}/salesOrderLines", params={"$filter": f"documentId in ({order['id']})"}))
    assert len(top["value"]) == 3

    # An item line needs an existing item; a comment carries no quantity.
    resp = await bc.post(lines_url, json={"lineObjectNumber": "NOPE", "quantity": 1})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "Internal_RecordNotFound"
    resp = await bc.post(lines_url, json={"lineType": "Comment", "quantity": 2})
    assert resp.status == 400

    # status is read-only; release through the bound action, then lines are locked.
    patched = await _ok(
        await bc.patch(f"{ROOT}/salesOrders({order['id']})", json={"status": "Released"}, headers={"If-Match": "*"})
    )
    assert patched["status"] == "Draft"
    await _ok(await bc.post(f"{ROOT}/salesOrders({order['id']})/Microsoft.NAV.release"), 204)
    assert (await _ok(await bc.get(f"{ROOT}/salesOrders({order['id']})")))["status"] == "Released"
    resp = await bc.patch(f"{lines_url}({line['id']})", json={"quantity": 9}, headers={"If-Match": "*"})
    assert resp.status == 400 and "Released" in (await resp.json())["error"]["message"]
    await _ok(await bc.post(f"{ROOT}/salesOrders({order['id']})/Microsoft.NAV.reopen"), 204)
    changed = await _ok(await bc.patch(f"{lines_url}({line['id']})", json={"quantity": 9}, headers={"If-Match": "*"}))
    assert changed["amountExcludingTax"] == 900
    await _ok(await bc.delete(f"{lines_url}({line['id']})"), 204)
    assert (await _ok(await bc.get(f"{ROOT}/salesOrders({order['id']})")))["totalAmountIncludingTax"] == 50
    await _ok(await bc.post(f"{ROOT}/salesOrders({order['id']})/Microsoft.NAV.ship"), 204)
    shipped = await _ok(await bc.get(f"{ROOT}/salesOrders({order['id']})"))
    assert shipped["fullyShipped"] is True and shipped["status"] == "Released"
    rows = (await _ok(await bc.get(lines_url)))["value"]
    assert all(r["shippedQuantity"] == r["quantity"] for r in rows)


async def test_customer_required_and_empty_order_cannot_be_released(bc: TestClient) -> None:
    resp = await bc.post(f"{ROOT}/salesOrders", json={})
    assert resp.status == 400
    customer, _ = await _setup(bc)
    order = await _ok(await bc.post(f"{ROOT}/salesOrders", json={"customerId": customer["id"]}), 201)
    resp = await bc.post(f"{ROOT}/salesOrders({order['id']})/Microsoft.NAV.release")
    assert resp.status == 400 and "nothing to release" in (await resp.json())["error"]["message"]


async def test_posted_invoices_are_read_only_and_link_their_order(bc: TestClient) -> None:
    customer, items = await _setup(bc)
    draft = await _ok(await bc.post(f"{ROOT}/salesInvoices", json={"customerNumber": customer["number"]}), 201)
    inv_lines = f"{ROOT}/salesInvoices({draft['id']})/salesInvoiceLines"
    await _ok(await bc.post(inv_lines, json={"itemId": items[2]["id"], "quantity": 2}), 201)
    await _ok(await bc.post(f"{ROOT}/salesInvoices({draft['id']})/Microsoft.NAV.post"), 204)
    posted = await _ok(await bc.get(f"{ROOT}/salesInvoices({draft['id']})"))
    assert (
        posted["status"] == "Open"
        and posted["number"].startswith("PS-INV")
        and posted["totalAmountIncludingTax"] == 204
    )
    resp = await bc.patch(
        f"{ROOT}/salesInvoices({draft['id']})", json={"externalDocumentNumber": "X"}, headers={"If-Match": "*"}
    )
    assert resp.status == 400 and "posted" in (await resp.json())["error"]["message"]
    assert (await bc.delete(f"{ROOT}/salesInvoices({draft['id']})")).status == 400
    assert (await bc.post(inv_lines, json={"itemId": items[0]["id"], "quantity": 1})).status == 400

    order = await _ok(await bc.post(f"{ROOT}/salesOrders", json={"customerNumber": customer["number"]}), 201)
    await _ok(
        await bc.post(
            f"{ROOT}/salesOrders({order['id']})/salesOrderLines", json={"itemId": items[0]["id"], "quantity": 1}
        ),
        201,
    )
    await _ok(await bc.post(f"{ROOT}/salesOrders({order['id']})/Microsoft.NAV.shipAndInvoice"), 204)
    invoices = await _ok(await bc.get(f"{ROOT}/salesInvoices", params={"$filter": f"orderId eq {order['id']}"}))
    assert len(invoices["value"]) == 1 and invoices["value"][0]["orderNumber"] == order["number"]
    lines = await _ok(
        await bc.get(f"{ROOT}/salesInvoiceLines", params={"$filter": f"documentId eq {invoices['value'][0]['id']}"})
    )
    assert [x["quantity"] for x in lines["value"]] == [1]
    assert (await bc.get(f"{ROOT}/salesOrders({order['id']})")).status == 404  # fully invoiced orders are deleted


async def test_lines_in_a_batch(bc: TestClient) -> None:
    customer, items = await _setup(bc)
    order = await _ok(await bc.post(f"{ROOT}/salesOrders", json={"customerNumber": customer["number"]}), 201)
    requests = [
        {"id": str(n), "method": "POST", "url": f"companies({COMPANY})/salesOrders({order['id']})/salesOrderLines",
         "headers": {"Content-Type": "application/json"}, "body": {"itemId": item["id"], "quantity": n + 1}}
        for n, item in enumerate(items)
    ]  # fmt: skip
    body = await _ok(await bc.post(f"{BASE}/$batch", json={"requests": requests}))
    assert [r["status"] for r in body["responses"]] == [201, 201, 201]
    header = await _ok(await bc.get(f"{ROOT}/salesOrders({order['id']})"))
    assert header["totalAmountIncludingTax"] == 100 * 1 + 101 * 2 + 102 * 3


async def test_seeded_documents_come_with_lines_released_or_posted(bc: TestClient) -> None:
    await _setup(bc)
    resp = await bc.post("/_sim/seed", json={"entity": "salesOrders", "count": 4})
    body = await _ok(resp)
    assert body["created"] == 4
    orders = (await _ok(await bc.get(f"{ROOT}/salesOrders")))["value"]
    assert {o["status"] for o in orders} == {"Released"} and all(o["totalAmountIncludingTax"] > 0 for o in orders)
    lines = await _ok(await bc.get(f"{ROOT}/salesOrderLines", params={"$filter": f"documentId eq {body['ids'][3]}"}))
    assert len(lines["value"]) == 4
    body = await _ok(await bc.post("/_sim/seed", json={"entity": "salesInvoices", "count": 2, "lines": 2}))
    invoices = (await _ok(await bc.get(f"{ROOT}/salesInvoices")))["value"]
    assert len(invoices) == 2 and {i["status"] for i in invoices} == {"Open"}
    assert all(i["number"].startswith("PS-INV") for i in invoices)
