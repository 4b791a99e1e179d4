"""Plans and coupling history over real HTTP on the local stack (#22)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.stack


def _world(api: Any, sims: Any, plan_jobs: set[str]) -> dict[str, Any]:
    snap = api.snapshot()
    snap["jobs"] = [j for j in snap["jobs"] if j[0] not in plan_jobs]
    snap["bc"] = {e: sims.bc_all(e) for e in ("customers", "contacts", "items")}
    snap["dv"] = {e: sims.dv_all(e) for e in ("accounts", "contacts", "products")}
    snap["subscriptions"] = sims._bc("GET", f"{sims.bc_api}/subscriptions").json()
    return snap


def test_plans_write_nothing_and_the_sync_after_does_what_they_said(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    name = f"Plan {uuid.uuid4().hex[:8]}"
    b = sims.bc_create("customers", displayName=name, phoneNumber="+1 1")
    d = sims.dv_create("accounts", name=name, telephone1="+1 1")
    assert api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "dataverseId": d}).status_code == 201
    sims.bc_patch("customers", b, phoneNumber="+1 2")
    sims.bc_create("customers", displayName=name + " new", phoneNumber="+1 3")  # uncoupled: a full sync creates it

    prompt = api.post("/api/mappings/CUSTOMER/plan", json={"bcIds": [b]})
    assert prompt.status_code == 400 and prompt.json()["code"] == "direction_required"
    assert prompt.json()["suggested"] == "toDataverse"
    before = _world(api, sims, set())
    inline = api.post("/api/mappings/CUSTOMER/plan", json={"bcIds": [b], "direction": "toDataverse"})
    assert inline.status_code == 200, inline.text
    item = inline.json()["results"][0]
    assert item["action"] == "update" and {"field": "telephone1", "side": "dataverse", "from": "+1 1",
                                           "to": "+1 2"} in item["changes"]  # fmt: skip
    job = api.post("/api/mappings/CUSTOMER/plan", json={"kind": "full"})
    assert job.status_code == 202 and job.headers["Location"] == f"/api/jobs/{job.json()['jobId']}"
    done = api.wait_for_job(job.json()["jobId"])
    assert done["kind"] == "plan" and done["status"] == "succeeded" and done["counts"]["inserted"] >= 1
    items = api.all_pages(f"/api/jobs/{done['jobId']}/plan")
    assert any(i["action"] == "create" for i in items)
    assert [i["action"] for i in items if i["bcId"] == b] == ["update"]
    assert _world(api, sims, {done["jobId"]}) == before  # nothing written anywhere

    synced = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse"}).json()
    assert synced["results"][0]["status"] == "updated"
    planned = next(c["to"] for c in item["changes"] if c["field"] == "telephone1")
    assert sims.dv_get("accounts", d)["telephone1"] == planned  # the sync did what the plan said


def test_history_over_http(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    name = f"Hist {uuid.uuid4().hex[:8]}"
    b = sims.bc_create("customers", displayName=name, phoneNumber="+2 1")
    d = sims.dv_create("accounts", name=name, telephone1="+2 1")
    never = str(uuid.uuid4())
    missing = api.get(f"/api/mappings/CUSTOMER/couplings/{never}/history")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "dataverseId": d}).status_code == 201
    sims.bc_patch("customers", b, phoneNumber="+2 2")
    api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse"})
    assert api.delete(f"/api/mappings/CUSTOMER/couplings/{b}").status_code == 204
    page = api.get(f"/api/mappings/CUSTOMER/couplings/{b}/history", params={"top": 2}).json()
    assert [(e["trigger"], e["action"]) for e in page["value"]] == [("uncouple", "uncoupled"), ("syncNow", "updated")]
    assert "nextLink" in page  # the coupling's own entries follow on the next page
    rest = api.get(page["nextLink"]).json()["value"]
    assert rest and rest[-1]["action"] == "coupled"
