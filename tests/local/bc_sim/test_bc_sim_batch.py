"""BC simulator $batch (JSON batch format): per-request outcomes, Isolation: snapshot, limits."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.local.bc_sim.conftest import BASE, COMPANY, CUSTOMERS

BATCH = f"{BASE}/$batch"
REL = f"companies({COMPANY})/customers"


async def count_customers(bc: TestClient) -> int:
    resp = await bc.get(CUSTOMERS)
    return len((await resp.json())["value"])


async def test_batch_reports_each_request_and_stops_at_first_failure(bc: TestClient) -> None:
    body = {
        "requests": [
            {
                "id": "a",
                "method": "POST",
                "url": REL,
                "headers": {"Content-Type": "application/json"},
                "body": {"displayName": "A"},
            },
            {"id": "b", "method": "GET", "url": f"{REL}?$filter=displayName eq 'A'"},
            {
                "id": "c",
                "method": "PATCH",
                "url": f"{REL}(00000000-0000-0000-0000-000000000001)",
                "headers": {"If-Match": "*"},
                "body": {"city": "X"},
            },
            {"id": "d", "method": "POST", "url": REL, "body": {"displayName": "D"}},
        ]
    }
    resp = await bc.post(BATCH, json=body)
    assert resp.status == 200
    out = (await resp.json())["responses"]
    assert [(r["id"], r["status"]) for r in out] == [("a", 201), ("b", 200), ("c", 404)]
    assert out[0]["body"]["displayName"] == "A"
    assert [r["displayName"] for r in out[1]["body"]["value"]] == ["A"]
    assert out[2]["body"]["error"]["code"] == "BadRequest_NotFound"
    assert await count_customers(bc) == 1  # without isolation the first create stays

    resp = await bc.post(BATCH, json=body, headers={"Prefer": "odata.continue-on-error"})
    out = (await resp.json())["responses"]
    assert [r["status"] for r in out] == [201, 200, 404, 201]
    assert await count_customers(bc) == 3


async def test_batch_absolute_urls_and_depends_on(bc: TestClient) -> None:
    absolute = str(bc.make_url(CUSTOMERS))
    body = {
        "requests": [
            {"id": "1", "method": "POST", "url": absolute, "body": {"number": "C00010", "displayName": "A"}},
            {"id": "2", "method": "POST", "url": absolute, "body": {"number": "C00010", "displayName": "dup"}},
            {"id": "3", "method": "POST", "url": REL, "body": {"displayName": "C"}, "dependsOn": ["2"]},
        ]
    }
    resp = await bc.post(BATCH, json=body, headers={"Prefer": "odata.continue-on-error"})
    out = (await resp.json())["responses"]
    assert [r["status"] for r in out] == [201, 400, 424]


async def test_snapshot_batch_rolls_back_everything(bc: TestClient) -> None:
    resp = await bc.post(CUSTOMERS, json={"displayName": "Keep"})
    keep = await resp.json()
    body = {
        "requests": [
            {"id": "1", "method": "POST", "url": REL, "body": {"displayName": "New"}},
            {
                "id": "2",
                "method": "PATCH",
                "url": f"{REL}({keep['id']})",
                "headers": {"If-Match": "*"},
                "body": {"city": "Rome"},
            },
            {
                "id": "3",
                "method": "DELETE",
                "url": f"{REL}({keep['id']})",
                "headers": {"If-Match": keep["@odata.etag"]},
            },
        ]
    }
    resp = await bc.post(BATCH, json=body, headers={"Isolation": "snapshot"})
    assert resp.status == 200
    out = (await resp.json())["responses"]
    # every request answered, the stale delete as BC's 409 Request_EntityChanged; everything rolled back
    assert [(r["id"], r["status"]) for r in out] == [("1", 201), ("2", 200), ("3", 409)]
    assert out[2]["body"]["error"]["code"] == "Request_EntityChanged"
    resp = await bc.get(CUSTOMERS)
    rows = (await resp.json())["value"]
    assert [(r["displayName"], r["city"], r["@odata.etag"]) for r in rows] == [("Keep", "", keep["@odata.etag"])]
    # the number series was rolled back too
    resp = await bc.post(CUSTOMERS, json={"displayName": "Next"})
    assert (await resp.json())["number"] == "C00020"

    ok = {"requests": body["requests"][:2]}
    resp = await bc.post(BATCH, json=ok, headers={"Isolation": "snapshot"})
    out = (await resp.json())["responses"]
    assert [r["status"] for r in out] == [201, 200]
    assert await count_customers(bc) == 3


async def test_batch_limits_and_counts_once(bc: TestClient) -> None:
    too_many = {"requests": [{"id": str(i), "method": "GET", "url": REL} for i in range(101)]}
    resp = await bc.post(BATCH, json=too_many)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "BadRequest"
    await bc.post("/_sim/reset")
    hundred = {
        "requests": [{"id": str(i), "method": "POST", "url": REL, "body": {"displayName": f"N{i}"}} for i in range(100)]
    }
    resp = await bc.post(BATCH, json=hundred)
    assert [r["status"] for r in (await resp.json())["responses"]] == [201] * 100
    stats = await (await bc.get("/_sim/stats")).json()
    assert stats["requests"] == 1 and stats["byRoute"] == {"$batch": 1}
    resp = await bc.post(BATCH, data=b"not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
