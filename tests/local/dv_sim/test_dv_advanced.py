"""Dataverse simulator through HTTP: $batch change sets, bulk actions, change tracking, protection, auth."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import uuid

from aiohttp.test_utils import TestClient

from local.dv_sim import DV_AUDIENCE
from local.simcore import ServiceLimits, TokenValidator
from tests.local.dv_sim.conftest import API, MakeClient
from tests.local.dv_sim.test_dv_crud import rel, seed
from tests.local.dv_sim.tokens import jwks, mint

ACCOUNT = "Microsoft.Dynamics.CRM.account"


def _http(method: str, url: str, body: dict | None = None, content_id: str | None = None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines += ["Content-Type: application/json", "", json.dumps(body)]
    else:
        lines += [""]
    return "\r\n".join(lines) + "\r\n"


def _batch(parts: list[str | list[str]], boundary: str = "batch_1") -> tuple[str, str]:
    chunks = []
    for n, part in enumerate(parts):
        if isinstance(part, list):
            cs = f"changeset_{n}"
            inner = "".join(f"--{cs}\r\n{p}" for p in part) + f"--{cs}--\r\n"
            chunks.append(f"Content-Type: multipart/mixed; boundary={cs}\r\n\r\n{inner}")
        else:
            chunks.append(part)
    body = "".join(f"--{boundary}\r\n{c}" for c in chunks) + f"--{boundary}--\r\n"
    return body, f"multipart/mixed; boundary={boundary}"


def _statuses(text: str) -> list[int]:
    return [int(s) for s in re.findall(r"^HTTP/1\.1 (\d{3})", text, re.M)]


async def _count(dv: TestClient, entity: str) -> int:
    return (await (await dv.get("/_sim/stats")).json())["rows"][entity]


async def test_batch_change_set_is_atomic(dv: TestClient) -> None:
    good = [
        _http("POST", f"{API}/accounts", {"name": "one", "accountnumber": "B1"}, "1"),
        _http("POST", "contacts", {"lastname": "c", "parentcustomerid_account@odata.bind": "$1"}, "2"),
    ]
    body, ctype = _batch([good, _http("GET", f"{API}/accounts?$select=name")])
    r = await dv.post(f"{API}/$batch", data=body, headers={"Content-Type": ctype})
    text = await r.text()
    assert r.status == 200 and r.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert _statuses(text) == [204, 204, 200]
    assert "Content-ID: 1" in text and "Content-ID: 2" in text
    contacts = await (await dv.get(f"{API}/contacts")).json()
    assert contacts["value"][0]["_parentcustomerid_value"] is not None

    bad = [
        _http("POST", f"{API}/accounts", {"name": "two", "accountnumber": "B2"}, "1"),
        _http("PATCH", f"{API}/accounts(accountnumber='B1')", {"name": "renamed"}, "2"),
        _http("POST", f"{API}/accounts", {"name": "dup", "accountnumber": "B1"}, "3"),
    ]
    body, ctype = _batch([bad, _http("GET", f"{API}/accounts")])
    r = await dv.post(f"{API}/$batch", data=body, headers={"Content-Type": ctype})
    text = await r.text()
    assert _statuses(text) == [412]  # only the failing request answers; processing stops
    assert "Content-ID: 3" in text
    assert await _count(dv, "accounts") == 1
    row = await (await dv.get(f"{API}/accounts(accountnumber='B1')")).json()
    assert row["name"] == "one"  # the update inside the failed change set was rolled back
    stats = await (await dv.get("/_sim/stats")).json()
    assert stats["byRoute"]["$batch"] == 2 and "accounts" in stats["byRoute"]


async def test_batch_independent_requests_and_continue_on_error(dv: TestClient) -> None:
    parts = [
        _http("POST", f"{API}/accounts", {"name": "a"}),
        _http("GET", f"{API}/accounts({uuid.uuid4()})"),
        _http("POST", f"{API}/accounts", {"name": "b"}),
    ]
    body, ctype = _batch(parts)
    r = await dv.post(f"{API}/$batch", data=body, headers={"Content-Type": ctype})
    assert _statuses(await r.text()) == [204, 404]
    r = await dv.post(f"{API}/$batch", data=body, headers={"Content-Type": ctype, "Prefer": "odata.continue-on-error"})
    assert _statuses(await r.text()) == [204, 404, 204]
    assert await _count(dv, "accounts") == 3
    too_many, ctype = _batch([_http("GET", f"{API}/WhoAmI")] * 1001)
    r = await dv.post(f"{API}/$batch", data=too_many, headers={"Content-Type": ctype})
    assert r.status == 400
    r = await dv.post(f"{API}/$batch", data="x", headers={"Content-Type": "application/json"})
    assert r.status == 400


async def test_create_multiple_all_or_nothing(dv: TestClient) -> None:
    targets = [{"@odata.type": ACCOUNT, "name": f"n{i}", "accountnumber": f"M{i}"} for i in range(5)]
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets})
    body = await r.json()
    assert r.status == 200 and len(body["Ids"]) == 5
    bad = [{"@odata.type": ACCOUNT, "name": f"x{i}"} for i in range(4)]
    bad[2]["name"] = "y" * 500
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": bad})
    error = (await r.json())["error"]
    assert r.status == 400 and "Targets[2]" in error["message"] and error["code"] == "0x80044331"
    assert await _count(dv, "accounts") == 5
    r = await dv.post(
        f"{API}/accounts/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [{"@odata.type": ACCOUNT, "name": "z"}] * 1001},
    )
    assert r.status == 400
    stats = await (await dv.get("/_sim/stats")).json()
    assert stats["byRoute"]["CreateMultiple"] == 3


async def test_update_and_upsert_multiple(dv: TestClient) -> None:
    ids = await seed(dv, "accounts", 3)
    updates = [{"@odata.type": ACCOUNT, "accountid": i, "name": "upd"} for i in ids]
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": updates})
    assert r.status == 204
    names = {row["name"] for row in (await (await dv.get(f"{API}/accounts")).json())["value"]}
    assert names == {"upd"}
    missing = str(uuid.uuid4())
    bad = [*updates[:2], {"@odata.type": ACCOUNT, "accountid": missing, "name": "nope"}]
    bad[0] = {**bad[0], "name": "never"}
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": bad})
    message = (await r.json())["error"]["message"]
    assert r.status == 400 and "Targets[2]" in message and missing in message
    row = await (await dv.get(f"{API}/accounts({ids[0]})")).json()
    assert row["name"] == "upd"
    upserts = [
        {"@odata.type": ACCOUNT, "accountid": ids[0], "name": "again"},
        {"@odata.type": ACCOUNT, "accountnumber": "NEW1", "name": "fresh"},
        {"@odata.type": ACCOUNT, "accountnumber": "DEM0000002", "name": "by key"},
    ]
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": upserts})
    results = (await r.json())["Results"]
    assert [x["RecordCreated"] for x in results] == [False, True, False]
    assert results[2]["Target"]["accountid"] == ids[1]
    r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": [{"name": "n"}]})
    assert r.status == 400  # @odata.type is required


async def test_bulk_unsupported_table_and_config(dv: TestClient) -> None:
    r = await dv.post(f"{API}/systemusers/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": []})
    assert r.status == 404 and (await r.json())["error"]["code"] == "0x8006088a"
    await dv.post("/_sim/config", json={"bulkUnsupported": ["contacts"], "dopHint": 8})
    r = await dv.post(
        f"{API}/contacts/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "x"}]},
    )
    assert r.status == 404 and r.headers["x-ms-dop-hint"] == "8"


async def test_change_tracking_updates_and_deletions(dv: TestClient) -> None:
    ids = await seed(dv, "accounts", 12)
    url = f"{API}/accounts?$select=name"
    rows: list[dict] = []
    while True:
        r = await dv.get(url, headers={"Prefer": "odata.track-changes, odata.maxpagesize=5"})
        body = await r.json()
        assert "odata.track-changes" in r.headers["Preference-Applied"]
        rows += body["value"]
        if "@odata.nextLink" in body:
            assert "@odata.deltaLink" not in body
            url = rel(body["@odata.nextLink"])
            continue
        delta_link = body["@odata.deltaLink"]
        break
    assert len(rows) == 12 and "$deltatoken=" in delta_link
    # Nothing changed yet.
    empty = await (await dv.get(rel(delta_link))).json()
    assert empty["value"] == [] and empty["@odata.deltaLink"] == delta_link

    await dv.patch(f"{API}/accounts({ids[3]})", json={"name": "changed"})
    await dv.delete(f"{API}/accounts({ids[5]})")
    r = await dv.post(f"{API}/accounts", json={"name": "new"})
    new_id = r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    await seed(dv, "contacts", 2)  # other tables' changes do not show
    delta = await (await dv.get(rel(delta_link))).json()
    changed = {row["accountid"]: row["name"] for row in delta["value"] if "name" in row}
    deleted = [row for row in delta["value"] if row.get("reason") == "deleted"]
    assert changed == {ids[3]: "changed", new_id: "new"}
    assert [d["id"] for d in deleted] == [ids[5]]
    assert deleted[0]["@odata.context"].endswith("$metadata#accounts/$deletedEntity")
    # The next delta link starts after those changes.
    again = await (await dv.get(rel(delta["@odata.deltaLink"]))).json()
    assert again["value"] == []

    await dv.post("/_sim/deltatokens/expire")
    r = await dv.get(rel(delta["@odata.deltaLink"]))
    assert r.status == 400 and (await r.json())["error"]["code"] == "0x80044352"
    r = await dv.get(f"{API}/accounts?$deltatoken=abc")
    assert r.status == 400


async def test_delta_pages(dv: TestClient) -> None:
    r = await dv.get(f"{API}/accounts", headers={"Prefer": "odata.track-changes"})
    delta_link = (await r.json())["@odata.deltaLink"]
    await seed(dv, "accounts", 11)
    url, seen = rel(delta_link), []
    while url:
        body = await (await dv.get(url, headers={"Prefer": "odata.maxpagesize=4"})).json()
        seen += [row["accountid"] for row in body["value"]]
        url = rel(body["@odata.nextLink"]) if "@odata.nextLink" in body else ""
    assert len(seen) == len(set(seen)) == 11


async def test_throttling_429_with_retry_after_and_code(make_dv: MakeClient) -> None:
    dv = await make_dv(limits=ServiceLimits(requests_per_window=20, window_seconds=60, max_concurrent=52))
    statuses = [(await dv.get(f"{API}/WhoAmI")).status for _ in range(25)]
    assert statuses.count(200) == 20 and statuses.count(429) == 5
    r = await dv.get(f"{API}/accounts")
    body = await r.json()
    assert r.status == 429 and body["error"]["code"] == "0x80072322"
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.headers["x-ms-dop-hint"] == "4"
    stats = await (await dv.get("/_sim/stats")).json()
    assert stats["throttled"] == 6 and stats["requests"] == 26


async def test_concurrency_limit_under_load(make_dv: MakeClient) -> None:
    dv = await make_dv(limits=ServiceLimits(max_concurrent=4, retry_after_seconds=1))
    await dv.post("/_sim/faults", json={"latencyMs": 100})
    responses = await asyncio.gather(*(dv.get(f"{API}/WhoAmI") for _ in range(10)))
    statuses = [r.status for r in responses]
    assert statuses.count(200) == 4 and statuses.count(429) == 6
    throttled = next(r for r in responses if r.status == 429)
    assert (await throttled.json())["error"]["code"] == "0x80072326" and throttled.headers["Retry-After"] == "1"


async def test_injected_faults_per_route(dv: TestClient) -> None:
    await dv.post("/_sim/faults", json={"status": 429, "count": 1, "retryAfter": 7, "route": "CreateMultiple"})
    await dv.post("/_sim/faults", json={"status": 503, "count": 1, "route": "accounts"})
    r = await dv.post(
        f"{API}/accounts/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [{"@odata.type": ACCOUNT, "name": "x"}]},
    )
    assert r.status == 429 and r.headers["Retry-After"] == "7"
    assert (await r.json())["error"]["code"] == "0x80072322"
    assert (await dv.get(f"{API}/contacts")).status == 200
    r = await dv.get(f"{API}/accounts")
    assert r.status == 503 and "error" in await r.json()
    assert (await dv.get(f"{API}/accounts")).status == 200


async def test_auth_required_with_validator(make_dv: MakeClient) -> None:
    dv = await make_dv(auth=TokenValidator(audience=DV_AUDIENCE, jwks=jwks()))
    r = await dv.get(f"{API}/WhoAmI")
    assert r.status == 401 and "authorization_uri=" in r.headers["WWW-Authenticate"]
    for token in (mint(DV_AUDIENCE, lifetime=-1), mint("https://api.businesscentral.dynamics.com"), "x.y.z"):
        r = await dv.get(f"{API}/WhoAmI", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 401
    r = await dv.get(f"{API}/WhoAmI", headers={"Authorization": f"Bearer {mint(DV_AUDIENCE)}"})
    assert r.status == 200
    assert (await dv.post("/_sim/seed", json={"entity": "accounts", "count": 2})).status == 200
    # nextLinks keep working with the same token (they are plain URLs).
    r = await dv.get(
        f"{API}/accounts",
        headers={"Authorization": f"Bearer {mint(DV_AUDIENCE)}", "Prefer": "odata.maxpagesize=1"},
    )
    link = (await r.json())["@odata.nextLink"]
    assert urllib.parse.urlsplit(link).path == f"{API}/accounts"


async def test_execution_time_budget_charges_a_server_cost_per_bulk_row(make_dv: MakeClient) -> None:
    """#23: Dataverse's 1,200 s of execution per 5 min per user, scaled: 10 s per minute, 0.1 s per row a bulk
    operation writes. 50 + 60 rows spend 11 s, so the next request is refused as execution-time throttling."""
    dv = await make_dv(limits=ServiceLimits(execution_seconds_per_window=10, window_seconds=60))
    assert (await dv.post("/_sim/limits", json={"executionSecondsPerRow": 0.1})).status == 200
    for _ in range(20):  # reads and single writes cost their (tiny) handler time only
        assert (await dv.get(f"{API}/WhoAmI")).status == 200
    assert (await dv.post(f"{API}/accounts", json={"name": "one"})).status == 204
    for n in (50, 60):
        targets = [{"@odata.type": ACCOUNT, "name": f"bulk {n} {i}"} for i in range(n)]
        r = await dv.post(f"{API}/accounts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets})
        assert r.status == 200, await r.text()
    r = await dv.get(f"{API}/WhoAmI")
    assert r.status == 429 and (await r.json())["error"]["code"] == "0x80072321"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    limits = await (await dv.get("/_sim/limits")).json()
    assert limits["executionSecondsPerRow"] == 0.1 and limits["executionSecondsPerWindow"] == 10


async def test_batch_writes_are_charged_per_operation(make_dv: MakeClient) -> None:
    dv = await make_dv(limits=ServiceLimits(execution_seconds_per_window=1, window_seconds=60,
                                            execution_seconds_per_row=0.3))  # fmt: skip
    boundary, changeset = "batch_x", "changeset_y"
    parts = "".join(
        f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {i}\r\n\r\nPOST {API}/accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        f'{{"name": "b{i}"}}\r\n'
        for i in range(4)
    )
    body = (f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n{parts}"
            f"--{changeset}--\r\n--{boundary}--\r\n")  # fmt: skip
    r = await dv.post(f"{API}/$batch", data=body, headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
    assert r.status == 200, await r.text()
    r = await dv.get(f"{API}/WhoAmI")  # 4 rows x 0.3 s = 1.2 s > 1 s
    assert r.status == 429 and (await r.json())["error"]["code"] == "0x80072321"
