"""BC simulator through HTTP: entity CRUD, ETags, filters, paging."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from tests.local.bc_sim.conftest import BASE, COMPANY, CUSTOMERS, relative


async def seed(bc: TestClient, entity: str, count: int, **extra: object) -> dict:
    resp = await bc.post("/_sim/seed", json={"entity": entity, "count": count, **extra})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def walk(bc: TestClient, url: str, params: dict[str, str], page: int) -> tuple[list[dict], list[int]]:
    rows: list[dict] = []
    sizes: list[int] = []
    resp = await bc.get(url, params=params, headers={"Prefer": f"odata.maxpagesize={page}"})
    while True:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        rows.extend(body["value"])
        sizes.append(len(body["value"]))
        if "@odata.nextLink" not in body:
            return rows, sizes
        resp = await bc.get(relative(bc, body["@odata.nextLink"]), headers={"Prefer": f"odata.maxpagesize={page}"})


async def test_companies_and_unknown_environment(bc: TestClient) -> None:
    resp = await bc.get(f"{BASE}/companies")
    body = await resp.json()
    assert resp.status == 200 and body["value"][0]["id"] == COMPANY and len(body["value"]) == 2
    resp = await bc.get(BASE.replace("Production", "Nope") + "/companies")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "BadRequest_NotFound"
    resp = await bc.get(BASE.replace("0000000000aa", "0000000000bb") + "/companies")
    assert resp.status == 404


async def test_crud_etags_and_preconditions(bc: TestClient) -> None:
    resp = await bc.post(CUSTOMERS, json={"displayName": "Adatum", "city": "Atlanta", "email": "a@example.com"})
    assert resp.status == 201
    created = await resp.json()
    assert created["number"] == "C00010" and created["type"] == "Company" and created["blocked"] == "_x0020_"
    assert resp.headers["ETag"] == created["@odata.etag"]
    url = f"{CUSTOMERS}({created['id']})"

    resp = await bc.patch(url, json={"city": "Boston"})
    assert resp.status == 400  # BC's error table: a PATCH without If-Match cannot validate the token
    assert (await resp.json())["error"]["code"] == "BadRequest_InvalidToken"

    resp = await bc.patch(url, json={"city": "Boston"}, headers={"If-Match": created["@odata.etag"]})
    assert resp.status == 200
    updated = await resp.json()
    assert updated["city"] == "Boston" and updated["@odata.etag"] != created["@odata.etag"]
    assert updated["lastModifiedDateTime"] > created["lastModifiedDateTime"]

    resp = await bc.patch(url, json={"city": "Chicago"}, headers={"If-Match": created["@odata.etag"]})
    assert resp.status == 409  # ODataConflictException
    assert (await resp.json())["error"]["code"] == "Request_EntityChanged"

    resp = await bc.patch(url, json={"city": "Chicago"}, headers={"If-Match": "*"})
    assert resp.status == 200 and (await resp.json())["city"] == "Chicago"

    resp = await bc.patch(url, json={"nope": 1}, headers={"If-Match": "*"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "BadRequest"
    resp = await bc.patch(url, json={"displayName": "x" * 101}, headers={"If-Match": "*"})
    assert resp.status == 400

    resp = await bc.post(CUSTOMERS, json={"number": "C00010", "displayName": "Dup"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "Internal_EntityWithSameKeyExists"

    resp = await bc.delete(url, headers={"If-Match": updated["@odata.etag"]})
    assert resp.status == 409
    resp = await bc.delete(url)
    assert resp.status == 204
    resp = await bc.get(url)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "BadRequest_NotFound"


async def test_contacts_and_items_fields(bc: TestClient) -> None:
    base = f"{BASE}/companies({COMPANY})"
    resp = await bc.post(f"{base}/contacts", json={"displayName": "Fabrikam", "type": "Company"})
    company = await resp.json()
    assert resp.status == 201 and company["number"] == "CT000010"
    resp = await bc.post(
        f"{base}/contacts", json={"displayName": "Jane", "type": "Person", "companyNumber": company["number"]}
    )
    person = await resp.json()
    assert resp.status == 201 and person["companyName"] == "Fabrikam" and person["number"] == "CT000020"
    resp = await bc.post(f"{base}/contacts", json={"displayName": "Ghost", "type": "Person", "companyNumber": "X"})
    assert resp.status == 400
    resp = await bc.post(f"{base}/items", json={"displayName": "Bike", "unitPrice": 12.5})
    item = await resp.json()
    assert resp.status == 201 and item["number"] == "1000" and item["type"] == "Inventory"
    assert item["baseUnitOfMeasureCode"] == "PCS" and item["unitPrice"] == 12.5
    resp = await bc.post(f"{base}/items", json={"unitPrice": "cheap"})
    assert resp.status == 400


async def test_filters_select_and_errors(bc: TestClient) -> None:
    ids = (await seed(bc, "customers", 30, prefix="Filter"))["ids"]
    resp = await bc.get(CUSTOMERS, params={"$filter": f"id eq {ids[3].upper()}", "$select": "id,number"})
    body = await resp.json()
    assert [r["id"] for r in body["value"]] == [ids[3]]
    assert set(body["value"][0]) == {"@odata.etag", "id", "number"}

    resp = await bc.get(CUSTOMERS, params={"$filter": "number in ('C00010','C00300','C09999')"})
    assert [r["number"] for r in (await resp.json())["value"]] == ["C00010", "C00300"]

    resp = await bc.get(CUSTOMERS, params={"$filter": "startswith(number,'C0002') or contains(number,'C00110')"})
    assert [r["number"] for r in (await resp.json())["value"]] == ["C00020", "C00110"]

    for text, expected in (
        ("number le 'C00030'", ["C00010", "C00020", "C00030"]),
        ("number eq 'C00020'", ["C00020"]),
        ("number gt 'C00280' and number lt 'C00300'", ["C00290"]),
    ):
        for order in ("number", "number desc"):
            resp = await bc.get(CUSTOMERS, params={"$filter": text, "$orderby": order})
            got = [r["number"] for r in (await resp.json())["value"]]
            assert got == (expected if order == "number" else expected[::-1]), (text, order)

    resp = await bc.get(CUSTOMERS, params={"$top": "3", "$skip": "2", "$orderby": "number desc"})
    assert [r["number"] for r in (await resp.json())["value"]] == ["C00280", "C00270", "C00260"]

    for bad in ("number eq 'x", "' or 1 eq 1", "nope eq 1", "number eq 5"):
        resp = await bc.get(CUSTOMERS, params={"$filter": bad})
        assert resp.status == 400, bad
        assert set((await resp.json())["error"]) == {"code", "message"}
    resp = await bc.get(CUSTOMERS, params={"$skiptoken": "garbage!"})
    assert resp.status == 400


async def test_paging_walks_every_row_once_with_watermark(bc: TestClient) -> None:
    await seed(bc, "customers", 12_345)
    resp = await bc.get(
        CUSTOMERS, params={"$orderby": "lastModifiedDateTime", "$top": "100", "$select": "id,lastModifiedDateTime"}
    )
    first = (await resp.json())["value"]
    watermark = first[-1]["lastModifiedDateTime"]
    params = {
        "$filter": f"lastModifiedDateTime gt {watermark}",
        "$orderby": "lastModifiedDateTime",
    }
    started = time.perf_counter()
    rows, sizes = await walk(bc, CUSTOMERS, params, 5000)
    elapsed = time.perf_counter() - started
    ids = [r["id"] for r in rows]
    assert sizes == [5000, 5000, 2245]
    assert len(ids) == len(set(ids)) == 12_245
    assert not {r["id"] for r in first} & set(ids)
    stamps = [r["lastModifiedDateTime"] for r in rows]
    assert stamps == sorted(stamps) and stamps[0] > watermark
    assert elapsed < 10

    # default order (number), descending index order and a non-indexed order each visit every row once
    for extra in ({}, {"$orderby": "lastModifiedDateTime desc"}, {"$orderby": "displayName desc,email"}):
        rows, sizes = await walk(bc, CUSTOMERS, {"$select": "id", **extra}, 5000)
        assert len({r["id"] for r in rows}) == len(rows) == 12_345, extra

    # $top spans pages; maxpagesize is capped at 20,000
    rows, sizes = await walk(bc, CUSTOMERS, {"$top": "7000"}, 5000)
    assert sizes == [5000, 2000]
    resp = await bc.get(CUSTOMERS, headers={"Prefer": "odata.maxpagesize=50000"})
    assert resp.headers["Preference-Applied"] == "odata.maxpagesize=20000"
    assert len((await resp.json())["value"]) == 12_345


async def test_updates_move_past_the_watermark(bc: TestClient) -> None:
    ids = (await seed(bc, "customers", 50))["ids"]
    resp = await bc.get(CUSTOMERS, params={"$orderby": "lastModifiedDateTime desc", "$top": "1"})
    watermark = (await resp.json())["value"][0]["lastModifiedDateTime"]
    for rid in (ids[10], ids[3]):
        resp = await bc.patch(f"{CUSTOMERS}({rid})", json={"city": "Oslo"}, headers={"If-Match": "*"})
        assert resp.status == 200
    resp = await bc.get(
        CUSTOMERS, params={"$filter": f"lastModifiedDateTime gt {watermark}", "$orderby": "lastModifiedDateTime"}
    )
    assert [r["id"] for r in (await resp.json())["value"]] == [ids[10], ids[3]]


async def test_display_name_required_on_create(bc: TestClient) -> None:
    for body in ({}, {"displayName": "   "}):
        resp = await bc.post(CUSTOMERS, json=body)
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["code"] == "Application_DialogException" and "displayName" in err["message"]
    resp = await bc.get(CUSTOMERS)
    assert (await resp.json())["value"] == []


async def test_or_across_different_fields_is_refused(bc: TestClient) -> None:
    await bc.post(CUSTOMERS, json={"displayName": "A", "city": "Rome"})
    resp = await bc.get(CUSTOMERS, params={"$filter": "city eq 'Rome' or displayName eq 'B'"})
    assert resp.status == 400
    assert "different fields" in (await resp.json())["error"]["message"]
    resp = await bc.get(CUSTOMERS, params={"$filter": "city eq 'Rome' or city eq 'Oslo'"})
    assert resp.status == 200 and len((await resp.json())["value"]) == 1
