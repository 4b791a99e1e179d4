"""Bugs fixed by issue #15, proved through the HTTP API on the local stack."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.conftest import ApiClient
from tests.reliability.harness import SimControl

pytestmark = pytest.mark.stack


def _name(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:10]}"


def _failed_sync(api: ApiClient, ctl: SimControl, sims: Any, mapping: str, entity: str, **fields: Any) -> str:
    """The id of the sync error a sync now leaves while Dataverse keeps answering 503."""
    bc_id = sims.bc_create(entity, displayName=_name("Retry"), **fields)
    created = api.post(f"/api/mappings/{mapping}/couplings", json={"bcId": bc_id, "createNew": True})
    assert created.status_code == 201, created.text
    sims.bc_patch(entity, bc_id, displayName=_name("Changed"))
    ctl.fault("dv_sim", status=503, count=1000)
    try:
        resp = api.post(f"/api/mappings/{mapping}/sync", json={"bcIds": [bc_id], "direction": "toDataverse"})
    finally:
        ctl.clear()
    assert resp.status_code == 200, resp.text
    ids = [e["id"] for e in api.all_pages("/api/errors", mapping=mapping) if e["bcId"] == bc_id]
    assert len(ids) == 1, ids
    return ids[0]


def test_retrying_errors_of_several_mappings_retries_each_in_its_own_mapping(
    stack: Any, api: ApiClient, world: dict[str, Any]
) -> None:
    sims, ctl = world["sims"], SimControl(stack)
    customer = _failed_sync(api, ctl, sims, "CUSTOMER", "customers")
    contact = _failed_sync(api, ctl, sims, "CONTACT", "contacts", type="Person")
    unknown = "bm8tc3VjaC1lcnJvcg"
    resp = api.post("/api/errors/retry", json={"ids": [customer, contact, unknown]})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert len(body["jobIds"]) == 2 and body["jobId"] == body["jobIds"][0], body
    assert resp.headers["Location"] == f"/api/jobs/{body['jobId']}"
    assert body["unknown"] == [unknown], body
    jobs = [api.wait_for_job(j, timeout=120) for j in body["jobIds"]]
    assert {j["mapping"] for j in jobs} == {"CUSTOMER", "CONTACT"}, jobs
    assert all(j["kind"] == "retry" for j in jobs), jobs
    for mapping, eid in (("CUSTOMER", customer), ("CONTACT", contact)):
        still = [e for e in api.all_pages("/api/errors", mapping=mapping) if e["id"] == eid]
        assert not still, f"the {mapping} error was not retried: {still}"


def test_retrying_only_unknown_error_ids_is_error_not_found(api: ApiClient) -> None:
    resp = api.post("/api/errors/retry", json={"ids": ["bm8tc3VjaC1lcnJvcg", "another-unknown"]})
    assert resp.status_code == 404, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["code"] == "error_not_found"


def test_a_lasting_upstream_failure_during_sync_now_is_a_failed_record_that_retry_syncs(
    stack: Any, api: ApiClient, world: dict[str, Any]
) -> None:
    sims, ctl = world["sims"], SimControl(stack)
    bc_id = sims.bc_create("customers", displayName=_name("Upstream"))
    created = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": bc_id, "createNew": True})
    assert created.status_code == 201, created.text
    dv_id = created.json()["dataverseId"]
    new_name = _name("Renamed")
    sims.bc_patch("customers", bc_id, displayName=new_name)
    ctl.fault("dv_sim", status=503, count=1000)
    try:
        resp = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [bc_id], "direction": "toDataverse"})
    finally:
        ctl.clear()
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert result["status"] == "failed", result
    assert result["error"]["code"] == "upstream_unavailable" and result["error"]["transient"] is True, result
    assert resp.json()["counts"]["failed"] == 1
    coupling = api.get(f"/api/mappings/CUSTOMER/couplings/{bc_id}").json()
    assert coupling["lastSyncResult"] == "failed", coupling
    listed = [e for e in api.all_pages("/api/errors", mapping="CUSTOMER") if e["bcId"] == bc_id]
    assert len(listed) == 1 and listed[0]["code"] == "upstream_unavailable" and listed[0]["transient"], listed
    retry = api.post("/api/errors/retry", json={"ids": [listed[0]["id"]]})
    assert retry.status_code == 202, retry.text
    api.wait_for_job(retry.json()["jobId"], timeout=120)
    assert (sims.dv_get("accounts", dv_id) or {}).get("name") == new_name
    assert not [e for e in api.all_pages("/api/errors", mapping="CUSTOMER") if e["bcId"] == bc_id]


def test_a_duplicate_key_refusal_is_a_permanent_duplicate_key_naming_the_key_not_a_conflict(
    api: ApiClient, world: dict[str, Any]
) -> None:
    sims = world["sims"]
    bc_id = sims.bc_create("customers", displayName=_name("Dup"))
    created = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": bc_id, "createNew": True})
    assert created.status_code == 201, created.text
    taken = f"DUP{uuid.uuid4().hex[:8].upper()}"
    sims.dv_create("accounts", name=_name("Holder"), accountnumber=taken)  # another row holds the key
    sims.bc_patch("customers", bc_id, number=taken)
    resp = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [bc_id], "direction": "toDataverse"})
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert result["status"] == "failed", result  # not "conflict", and not re-planned as a stale write
    error = result["error"]
    assert error["code"] == "duplicate_key" and error["transient"] is False, result
    assert f"accountnumber '{taken}'" in error["message"], error
    listed = [e for e in api.all_pages("/api/errors", mapping="CUSTOMER") if e["bcId"] == bc_id]
    assert [(e["code"], e["transient"]) for e in listed] == [("duplicate_key", False)], listed
    assert api.get(f"/api/mappings/CUSTOMER/couplings/{bc_id}").json()["lastSyncResult"] == "failed"


def test_a_create_refused_for_a_duplicate_key_is_409_duplicate_key_naming_the_key(
    api: ApiClient, world: dict[str, Any]
) -> None:
    sims = world["sims"]
    taken = f"DUP{uuid.uuid4().hex[:8].upper()}"
    sims.dv_create("accounts", name=_name("Holder"), accountnumber=taken)
    bc_id = sims.bc_create("customers", displayName=_name("Twin"), number=taken)
    resp = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": bc_id, "createNew": True})
    assert resp.status_code == 409, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = resp.json()
    assert body["code"] == "duplicate_key" and f"accountnumber '{taken}'" in body["detail"], body
    assert api.get(f"/api/mappings/CUSTOMER/couplings/{bc_id}").status_code == 404  # nothing coupled
    listed = [e for e in api.all_pages("/api/errors", mapping="CUSTOMER") if e["bcId"] == bc_id]
    assert [(e["code"], e["transient"]) for e in listed] == [("duplicate_key", False)], listed


def test_unset_webhook_secrets_accept_no_publicly_known_value_and_health_names_them(stack: Any, api: ApiClient) -> None:
    """A host started without the webhook secrets (as a deployment that forgot them) has no default to fall
    back on: the local stack's well-known values are refused and health is degraded naming each setting."""
    saved = dict(stack.extra_env)
    stack.extra_env.update({"BC_WEBHOOK_CLIENT_STATE": "", "DATAVERSE_WEBHOOK_KEY": ""})
    try:
        stack.restart("host", hard=False)  # a deployment started without them: no crash to simulate
        health = api.get("/api/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "degraded", body
        assert body["checks"]["dataverse"] == "DATAVERSE_WEBHOOK_KEY is not set", body
        assert body["checks"]["businessCentral"] == "BC_WEBHOOK_CLIENT_STATE is not set", body
        context = {"MessageName": "Update", "PrimaryEntityName": "account", "PrimaryEntityId": str(uuid.uuid4())}
        known = {"code": "local-dv-webhook-key"}
        dv = api.http.post(stack.host_url + "/api/webhooks/dataverse", params=known, json=context, timeout=30)
        assert dv.status_code == 401 and dv.json()["code"] == "unauthorized", dv.text
        notification = {"value": [{"clientState": "local-bc-client-state", "resource": "companies(x)/customers"}]}
        bc = api.http.post(stack.host_url + "/api/webhooks/businesscentral", json=notification, timeout=30)
        assert bc.status_code == 401 and bc.json()["code"] == "unauthorized", bc.text
    finally:
        stack.extra_env.clear()
        stack.extra_env.update(saved)
        stack.restart("host", hard=False)
    assert api.get("/api/health").json()["checks"]["dataverse"] == "ok"
    # The restarted host takes queued work again before the next test relies on it (a job, waited for).
    job = api.post("/api/mappings/CUSTOMER/jobs", json={"kind": "incremental"})
    assert job.status_code == 202, job.text
    assert api.wait_for_job(job.json()["jobId"], timeout=300)["status"] in ("succeeded", "partial")
