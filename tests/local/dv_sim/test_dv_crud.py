"""Dataverse simulator through HTTP: reads, paging, queries, writes, ETags, upsert, alternate keys."""

from __future__ import annotations

import time
import urllib.parse
import uuid

from aiohttp.test_utils import TestClient

from tests.local.dv_sim.conftest import API


async def seed(dv: TestClient, entity: str, count: int, **kw: object) -> list[str]:
    r = await dv.post("/_sim/seed", json={"entity": entity, "count": count, **kw})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["created"] == count
    return body.get("ids", [])


def rel(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_paging_walks_every_row_once(dv: TestClient) -> None:
    started = time.monotonic()
    await seed(dv, "accounts", 12_345)
    seeded = time.monotonic() - started
    assert seeded < 5
    seen: list[str] = []
    url = f"{API}/accounts?$select=accountid,name"
    pages = 0
    while url:
        r = await dv.get(url, headers={"Prefer": "odata.maxpagesize=5000"})
        assert r.status == 200
        assert r.headers["Preference-Applied"] == "odata.maxpagesize=5000"
        assert r.headers["x-ms-dop-hint"] == "4"
        body = await r.json()
        seen += [row["accountid"] for row in body["value"]]
        assert set(body["value"][0]) == {"@odata.etag", "accountid", "name"}
        pages += 1
        url = rel(body["@odata.nextLink"]) if "@odata.nextLink" in body else ""
    assert pages == 3
    assert len(seen) == 12_345 == len(set(seen))


async def test_paging_with_filter_and_version_order(dv: TestClient) -> None:
    await seed(dv, "products", 50)
    seen: list[int] = []
    url = f"{API}/products?$filter=price gt 20&$orderby=modifiedon asc"
    while url:
        r = await dv.get(url, headers={"Prefer": "odata.maxpagesize=7"})
        body = await r.json()
        assert r.status == 200, body
        seen += [row["versionnumber"] for row in body["value"]]
        assert all(row["price"] > 20 for row in body["value"])
        url = rel(body["@odata.nextLink"]) if "@odata.nextLink" in body else ""
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 42  # price 10 + n*1.25 > 20 for n in 9..50


async def test_filter_select_orderby_top_count(dv: TestClient) -> None:
    await seed(dv, "accounts", 30)
    r = await dv.get(
        f"{API}/accounts",
        params={
            "$filter": "startswith(name,'Demo Account 1') and address1_city eq 'Seattle'",
            "$select": "name",
            "$orderby": "name desc",
            "$count": "true",
        },
    )
    body = await r.json()
    names = [row["name"] for row in body["value"]]
    assert body["@odata.count"] == 11  # 1, 10..19
    assert names == sorted(names, reverse=True) and names[0] == "Demo Account 19"
    r = await dv.get(f"{API}/accounts", params={"$top": "3", "$orderby": "accountnumber"})
    body = await r.json()
    assert [row["accountnumber"] for row in body["value"]] == ["DEM0000001", "DEM0000002", "DEM0000003"]
    assert "@odata.nextLink" not in body
    r = await dv.get(f"{API}/accounts", params={"$filter": "nosuchfield eq 1"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "0x80060888"
    r = await dv.get(f"{API}/accounts", params={"$select": "bogus"})
    assert r.status == 400


async def test_create_read_update_delete_with_etags(dv: TestClient) -> None:
    r = await dv.post(f"{API}/accounts", json={"name": "Contoso", "accountnumber": "C10000"})
    assert r.status == 204
    entity_url = r.headers["OData-EntityId"]
    row_id = entity_url.rsplit("(", 1)[1].rstrip(")")
    uuid.UUID(row_id)
    r = await dv.get(f"{API}/accounts({row_id})")
    row = await r.json()
    assert row["name"] == "Contoso" and row["@odata.etag"] == f'W/"{row["versionnumber"]}"'
    assert row["modifiedon"].endswith("Z") and len(row["modifiedon"]) == 20  # whole seconds, as Dataverse
    etag = row["@odata.etag"]
    r = await dv.patch(f"{API}/accounts({row_id})", json={"telephone1": "1"}, headers={"If-Match": etag})
    assert r.status == 204
    r = await dv.patch(f"{API}/accounts({row_id})", json={"telephone1": "2"}, headers={"If-Match": etag})
    assert r.status == 412 and (await r.json())["error"]["code"] == "0x80060882"
    r = await dv.get(f"{API}/accounts(accountnumber='C10000')")
    fresh = await r.json()
    assert fresh["telephone1"] == "1" and fresh["versionnumber"] > row["versionnumber"]
    assert r.status == 200 and fresh["modifiedon"] >= row["modifiedon"]
    r = await dv.delete(f"{API}/accounts({row_id})", headers={"If-Match": etag})
    assert r.status == 412
    assert (await dv.delete(f"{API}/accounts({row_id})")).status == 204
    r = await dv.delete(f"{API}/accounts({row_id})")
    assert r.status == 404 and (await r.json())["error"]["code"] == "0x80040217"
    r = await dv.get(f"{API}/accounts({row_id})")
    assert r.status == 404


async def test_create_with_representation_and_client_id(dv: TestClient) -> None:
    row_id = str(uuid.uuid4())
    r = await dv.post(
        f"{API}/accounts?$select=name",
        json={"accountid": row_id, "name": "A"},
        headers={"Prefer": "return=representation"},
    )
    assert r.status == 201 and r.headers["Preference-Applied"] == "return=representation"
    body = await r.json()
    assert body["accountid"] == row_id and body["name"] == "A" and "telephone1" not in body
    r = await dv.post(f"{API}/accounts", json={"accountid": row_id, "name": "B"})
    assert r.status == 412 and (await r.json())["error"]["code"] == "0x80040237"
    r = await dv.post(f"{API}/accounts", json={"name": "x" * 161})
    assert r.status == 400 and (await r.json())["error"]["code"] == "0x80044331"
    r = await dv.post(f"{API}/accounts", json={"nope": 1})
    assert r.status == 400
    r = await dv.post(f"{API}/accounts", data=b"{not json")
    assert r.status == 400
    r = await dv.post(f"{API}/systemusers", json={"fullname": "x"})
    assert r.status == 403


async def test_upsert_semantics(dv: TestClient) -> None:
    new_id = str(uuid.uuid4())
    r = await dv.patch(f"{API}/accounts({new_id})", json={"name": "U"}, headers={"If-Match": "*"})
    assert r.status == 404  # update only
    r = await dv.patch(f"{API}/accounts({new_id})", json={"name": "U"}, headers={"If-None-Match": "*"})
    assert r.status == 204  # create only
    r = await dv.patch(f"{API}/accounts({new_id})", json={"name": "U2"}, headers={"If-None-Match": "*"})
    assert r.status == 412
    r = await dv.patch(f"{API}/accounts({new_id})", json={"name": "U3"}, headers={"If-Match": "*"})
    assert r.status == 204
    # No header = upsert, here by alternate key: creates, then updates the same row.
    r = await dv.patch(f"{API}/accounts(accountnumber='K-1')", json={"name": "K"})
    assert r.status == 204
    created = r.headers["OData-EntityId"]
    r = await dv.patch(
        f"{API}/accounts(accountnumber='K-1')", json={"name": "K2"}, headers={"Prefer": "return=representation"}
    )
    body = await r.json()
    assert r.status == 200 and body["name"] == "K2" and created.endswith(f"({body['accountid']})")
    assert body["accountnumber"] == "K-1"
    r = await dv.get(f"{API}/accounts", params={"$filter": "accountnumber eq 'K-1'"})
    assert len((await r.json())["value"]) == 1
    # A duplicate alternate key is refused.
    r = await dv.post(f"{API}/accounts", json={"name": "dup", "accountnumber": "k-1"})
    assert r.status == 412
    r = await dv.get(f"{API}/accounts(name='x')")
    assert r.status == 400


async def test_contact_parent_lookup(dv: TestClient) -> None:
    [account_id] = await seed(dv, "accounts", 1)
    r = await dv.post(
        f"{API}/contacts",
        json={
            "firstname": "Ada",
            "lastname": "Lovelace",
            "parentcustomerid_account@odata.bind": f"/accounts({account_id})",
        },
        headers={"Prefer": "return=representation"},
    )
    body = await r.json()
    assert r.status == 201, body
    assert body["_parentcustomerid_value"] == account_id and body["fullname"] == "Ada Lovelace"
    r = await dv.get(f"{API}/contacts", params={"$filter": f"_parentcustomerid_value eq {account_id}"})
    assert len((await r.json())["value"]) == 1
    missing = uuid.uuid4()
    r = await dv.post(
        f"{API}/contacts", json={"lastname": "X", "parentcustomerid_account@odata.bind": f"/accounts({missing})"}
    )
    assert r.status == 400 and str(missing) in (await r.json())["error"]["message"]
    r = await dv.post(f"{API}/contacts", json={"lastname": "X", "parentcustomerid_account@odata.bind": "/contacts(1)"})
    assert r.status == 400
    r = await dv.post(f"{API}/contacts", json={"lastname": "X", "_parentcustomerid_value": account_id})
    assert r.status == 400


async def test_whoami_systemusers_and_unknown_set(dv: TestClient) -> None:
    who = await (await dv.get(f"{API}/WhoAmI")).json()
    users = await (await dv.get(f"{API}/systemusers")).json()
    assert [u["systemuserid"] for u in users["value"]] == [who["UserId"]]
    r = await dv.get(f"{API}/nothings")
    assert r.status == 404 and (await r.json())["error"]["code"] == "0x8006088a"


async def test_reset_data_and_stats(dv: TestClient) -> None:
    await seed(dv, "accounts", 5)
    await dv.get(f"{API}/accounts")
    stats = await (await dv.get("/_sim/stats")).json()
    assert stats["byRoute"] == {"accounts": 1} and stats["rows"]["accounts"] == 5
    await dv.post("/_sim/reset?data=true")
    stats = await (await dv.get("/_sim/stats")).json()
    assert stats["requests"] == 0 and stats["rows"]["accounts"] == 0 and stats["rows"]["systemusers"] == 1


async def test_seed_100k_is_fast(dv: TestClient) -> None:
    started = time.monotonic()
    r = await dv.post("/_sim/seed", json={"entity": "contacts", "count": 100_000, "prefix": "Bench"})
    elapsed = time.monotonic() - started
    body = await r.json()
    assert body == {"created": 100_000} and elapsed < 10
    # A page from the middle of a big table is cheap (no scan from the start).
    r = await dv.get(f"{API}/contacts?$select=lastname", headers={"Prefer": "odata.maxpagesize=5000"})
    link = rel((await r.json())["@odata.nextLink"])
    started = time.monotonic()
    r = await dv.get(link, headers={"Prefer": "odata.maxpagesize=5000"})
    assert r.status == 200 and len((await r.json())["value"]) == 5000
    assert time.monotonic() - started < 1.0


async def test_in_query_function_is_accepted_and_the_in_operator_refused(dv: TestClient) -> None:
    ids = await seed(dv, "accounts", 3)
    fn = f"Microsoft.Dynamics.CRM.In(PropertyName='accountid',PropertyValues=['{ids[0]}','{ids[2].upper()}'])"
    r = await dv.get(f"{API}/accounts", params={"$filter": fn, "$select": "accountid"})
    assert r.status == 200
    assert sorted(row["accountid"] for row in (await r.json())["value"]) == sorted([ids[0], ids[2]])
    not_in = fn.replace(".In(", ".NotIn(")
    r = await dv.get(f"{API}/accounts", params={"$filter": not_in, "$select": "accountid"})
    assert [row["accountid"] for row in (await r.json())["value"]] == [ids[1]]
    # OData 4.01's `in` is not documented for the Web API: refused like any syntax error
    r = await dv.get(f"{API}/accounts", params={"$filter": f"accountid in ({ids[0]})"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "0x80060888"


async def test_a_key_in_filter_narrowed_by_and_answers_as_a_scan_would_with_paging(dv: TestClient) -> None:
    ids = await seed(dv, "accounts", 30)
    for row_id in ids[::3]:
        r = await dv.patch(f"{API}/accounts({row_id})", json={"address1_city": "Kept"})
        assert r.status == 204
    chosen = ids[:20]
    fn = "Microsoft.Dynamics.CRM.In(PropertyName='accountid',PropertyValues=[" + ",".join(f"'{i}'" for i in chosen)
    wanted = sorted(i for i in chosen if i in ids[::3])
    for filt in (f"({fn}])) and (address1_city eq 'Kept')", f"{fn}]) and address1_city eq 'kept'"):
        got: list[str] = []
        link = f"{API}/accounts?" + urllib.parse.urlencode({"$filter": filt, "$select": "accountid"})
        while link:
            r = await dv.get(link, headers={"Prefer": "odata.maxpagesize=3"})
            assert r.status == 200, await r.text()
            body = await r.json()
            got += [row["accountid"] for row in body["value"]]
            link = rel(body["@odata.nextLink"]) if "@odata.nextLink" in body else ""
        assert sorted(got) == wanted and len(got) == len(set(got))
    # An `or` after the ids widens the match: every row of the city, not only the listed ones.
    r = await dv.get(f"{API}/accounts", params={"$filter": f"{fn}]) and name eq 'none' or address1_city eq 'Kept'"})
    assert sorted(row["accountid"] for row in (await r.json())["value"]) == sorted(ids[::3])


async def test_unknown_or_unsimulated_query_options_are_refused_not_ignored(dv: TestClient) -> None:
    ids = await seed(dv, "accounts", 2)
    for params in ({"$apply": "aggregate($count as n)"}, {"$expand": "primarycontactid"}, {"fetchXml": "<fetch/>"},
                   {"$foo": "1"}, {"$search": "x"}):  # fmt: skip
        r = await dv.get(f"{API}/accounts", params=params)
        assert r.status == 400, params
        assert (await r.json())["error"]["code"] == "0x80060888"
    r = await dv.get(f"{API}/accounts({ids[0]})", params={"$filter": "name eq 'x'"})
    assert r.status == 400
    r = await dv.get(f"{API}/accounts", params={"$select": "name", "$count": "true"})
    assert r.status == 200 and (await r.json())["@odata.count"] == 2


async def test_count_path_answers_plain_text(dv: TestClient) -> None:
    await seed(dv, "accounts", 3)
    r = await dv.get(f"{API}/accounts/$count")
    assert r.status == 200 and r.content_type == "text/plain" and await r.text() == "3"
    r = await dv.get(f"{API}/accounts/$count", params={"$filter": "name eq 'nobody'"})
    assert await r.text() == "0"


async def test_upsert_multiple_by_alternate_key_in_odata_id(dv: TestClient) -> None:
    target = {"@odata.type": "Microsoft.Dynamics.CRM.account", "@odata.id": "accounts(accountnumber='UP-1')"}
    body = {"Targets": [{**target, "name": "First"}]}
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json=body)
    assert r.status == 200, await r.text()
    first = (await r.json())["Results"]
    body = {"Targets": [{**target, "name": "Second"}]}
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json=body)
    second = (await r.json())["Results"]
    assert first[0]["RecordCreated"] is True and second[0]["RecordCreated"] is False
    r = await dv.get(f"{API}/accounts", params={"$filter": "accountnumber eq 'UP-1'", "$select": "name"})
    assert [row["name"] for row in (await r.json())["value"]] == ["Second"]  # one row, updated: no duplicate


async def test_a_datetime_compared_with_a_string_literal_is_refused(dv: TestClient) -> None:
    await seed(dv, "accounts", 1)
    r = await dv.get(f"{API}/accounts", params={"$filter": "modifiedon gt '2026-01-01T00:00:00Z'"})
    assert r.status == 400 and "incompatible types" in (await r.json())["error"]["message"]
    r = await dv.get(f"{API}/accounts", params={"$filter": "modifiedon gt 2026-01-01T00:00:00Z"})
    assert r.status == 200 and len((await r.json())["value"]) == 1
