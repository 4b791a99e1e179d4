"""The HTTP API over real HTTP on the local stack (host + simulators + Azurite + authority + AMQP peer).

Seeds data only through the simulators' real API shapes; checks every contract error code, auth,
bad input leaving state unchanged, the webhook handshake and the Dataverse auto-couple rule."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.stack

PROBLEM = "application/problem+json"


def guid() -> str:
    return str(uuid.uuid4())


def assert_problem(resp: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:400]}"
    assert resp.headers["Content-Type"].split(";")[0] == PROBLEM, resp.headers
    body = resp.json()
    assert body["status"] == status and isinstance(body["code"], str)
    assert "Traceback" not in resp.text
    if code:
        assert body["code"] == code, body
    return body


def couple_pair(api: Any, sims: Any, **extra: Any) -> tuple[str, str]:
    name = f"Acc {uuid.uuid4().hex[:10]}"
    b = sims.bc_create("customers", displayName=name, phoneNumber="+45 1")
    d = sims.dv_create("accounts", name=name, telephone1="+45 1")
    resp = api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "dataverseId": d, **extra})
    assert resp.status_code == 201, resp.text
    return b, d


def test_every_protected_route_needs_the_key(stack: Any, api: Any) -> None:
    import function_app  # noqa: F401 -- the routes come from the registered app (a new route can't forget auth)
    from functions._openapi import openapi_document

    anon = requests.Session()
    anon.trust_env = False
    for path, ops in openapi_document()["paths"].items():
        for method, op in ops.items():
            if op.get("security") == []:
                continue
            url = (
                stack.host_url
                + "/api"
                + path.replace("{mapping}", "CUSTOMER").replace("{bcId}", guid()).replace("{jobId}", guid())
            )
            resp = anon.request(method.upper(), url, json={})
            assert_problem(resp, 401)
            resp = anon.request(method.upper(), url, json={}, headers={"x-functions-key": "wrong"})
            assert_problem(resp, 401)


def test_error_codes_of_the_contract(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    assert_problem(api.get("/api/mappings/NOPE"), 404, "mapping_not_found")
    assert_problem(api.get(f"/api/mappings/CUSTOMER/couplings/{guid()}"), 404, "not_coupled")
    assert_problem(
        api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": guid(), "dataverseId": guid()}),
        404,
        "record_not_found",
    )
    b, _d = couple_pair(api, sims)
    d2 = sims.dv_create("accounts", name="other")
    assert_problem(
        api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "dataverseId": d2}), 409, "already_coupled"
    )
    prompt = assert_problem(api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b]}), 400, "direction_required")
    assert prompt["suggested"] in ("toDataverse", "fromDataverse", "bidirectional") and "changes" in prompt
    i = sims.bc_create("items", displayName="Bike", unitPrice=10)
    assert_problem(
        api.post("/api/mappings/ITEM-PRODUCT/sync", json={"bcIds": [i], "direction": "fromDataverse"}),
        422,
        "direction_not_allowed",
    )
    assert_problem(
        api.post("/api/mappings/ITEM-PRODUCT/couplings", json={"dataverseId": d2, "createNew": True}),
        422,
        "direction_not_allowed",
    )
    assert_problem(api.delete(f"/api/mappings/CUSTOMER/couplings/{guid()}"), 404, "not_coupled")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/mappings/CUSTOMER/couplings", b"{not json"),
        ("POST", "/api/mappings/CUSTOMER/couplings", {"bcId": 5, "dataverseId": "x"}),
        ("POST", "/api/mappings/CUSTOMER/couplings", {"bcId": "not-a-guid", "dataverseId": str(uuid.uuid4())}),
        ("POST", "/api/mappings/CUSTOMER/couplings", {"bcId": str(uuid.uuid4()), "colour": "red"}),
        (
            "POST",
            "/api/mappings/CUSTOMER/sync",
            {"bcIds": [str(uuid.uuid4()) for _ in range(1001)], "direction": "toDataverse"},
        ),
        ("POST", "/api/mappings/CUSTOMER/sync", {"bcIds": [], "direction": "toDataverse"}),
        ("POST", "/api/mappings/CUSTOMER/sync", {"bcIds": ["' or 1 eq 1"], "direction": "toDataverse"}),
        ("POST", "/api/mappings/CUSTOMER/sync", {"bcIds": [str(uuid.uuid4())], "direction": "sideways"}),
        ("POST", "/api/mappings/CUSTOMER/uncouple", {"bcIds": "nope"}),
        ("PATCH", "/api/mappings/CUSTOMER", {"direction": "up"}),
        ("PATCH", "/api/mappings/CUSTOMER", {"syncOnlyCoupled": "yes"}),
        ("POST", "/api/mappings/CUSTOMER/jobs", {"kind": "everything"}),
        ("POST", "/api/errors/retry", {}),
        ("GET", "/api/mappings/CUSTOMER/couplings/abc", None),
        ("GET", "/api/jobs?top=0", None),
        ("GET", "/api/jobs/not-a-guid", None),
        ("POST", "/api/dataverse/sync", {"entityName": "account", "id": "x"}),
        ("POST", "/api/dataverse/sync", {"PrimaryEntityName": "account"}),
        ("POST", "/api/dataverse/sync", [1, 2]),
        ("POST", "/api/mappings/NOPE/sync", {"bcIds": [str(uuid.uuid4())], "direction": "toDataverse"}),
        ("POST", "/api/mappings/CUSTOMER/sync", b'{"bcIds": ["' + b"a" * 2_000_000 + b'"]}'),
        ("POST", "/api/dataverse/sync", b'{"entityName": "' + b"a" * 2_000_000 + b'"}'),
    ],
)
def test_bad_input_is_a_4xx_problem_and_writes_nothing(api: Any, stack: Any, method: str, path: str, body: Any) -> None:
    before = api.snapshot()
    data = body if isinstance(body, bytes) else json.dumps(body) if body is not None else None
    resp = api.request(method, path, data=data, headers={"Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    assert_problem(resp, resp.status_code)
    assert api.snapshot() == before


def test_bc_webhook_handshake_and_client_state(api: Any, stack: Any) -> None:
    anon = requests.Session()
    anon.trust_env = False
    r = anon.post(stack.host_url + "/api/webhooks/businesscentral", params={"validationToken": "tok-1"})
    assert r.status_code == 200 and r.text == "tok-1" and r.headers["Content-Type"].startswith("text/plain")
    forged = {
        "value": [
            {
                "subscriptionId": "x",
                "clientState": "forged",
                "resource": "api/v2.0/companies(1)/customers",
                "changeType": "collection",
            }
        ]
    }
    assert_problem(anon.post(stack.host_url + "/api/webhooks/businesscentral", json=forged), 401)
    assert_problem(anon.post(stack.host_url + "/api/webhooks/dataverse", params={"code": "wrong"}, json={}), 401)


def _context(account_id: str, name: str) -> dict[str, Any]:
    from pathlib import Path

    example = Path(__file__).resolve().parents[3] / "shared" / "contract" / "examples"
    ctx = json.loads((example / "dataverse-remote-execution-context.json").read_text())
    old = ctx["PrimaryEntityId"]
    text = json.dumps(ctx).replace(old, account_id).replace("Fabrikam Ltd.", name)
    return json.loads(text)


def test_remote_execution_context_auto_couples_then_refuses_with_sync_only_coupled(
    api: Any, world: dict[str, Any]
) -> None:
    sims = world["sims"]
    name = f"Ctx {uuid.uuid4().hex[:10]}"
    d = sims.dv_create("accounts", name=name, telephone1="+46 8 555 0100")
    resp = api.post("/api/dataverse/sync", json=_context(d, name))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["created"] is True and body["dataverseId"] == d
    assert [c["id"] for c in sims.bc_find("customers", "displayName", name)] == [body["bcId"]]
    try:
        assert api.patch("/api/mappings/CUSTOMER", json={"syncOnlyCoupled": True}).status_code == 200
        d2 = sims.dv_create("accounts", name=name + " two")
        assert_problem(api.post("/api/dataverse/sync", json=_context(d2, name + " two")), 409, "not_coupled")
        assert sims.bc_find("customers", "displayName", name + " two") == []
    finally:
        api.patch("/api/mappings/CUSTOMER", json={"syncOnlyCoupled": False})


def test_full_job_runs_through_service_bus_and_ends_with_exact_counts(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    tag = uuid.uuid4().hex[:8]
    for i in range(3):
        sims.bc_create("items", displayName=f"Item {tag} {i}", number=f"I{tag}{i}", unitPrice=i)
    resp = api.post("/api/mappings/ITEM-PRODUCT/couplings/match", json={})
    assert resp.status_code == 202 and resp.headers["Location"].endswith(resp.json()["jobId"])
    job = api.wait_for_job(resp.json()["jobId"])
    assert job["status"] in ("succeeded", "partial") and job["kind"] == "matchCouple"


def test_sync_now_to_dataverse_then_unchanged(api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    b, d = couple_pair(api, sims, syncAfter="toDataverse")
    sims.bc_patch("customers", b, phoneNumber="+45 99")
    r = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse"})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "updated", r.text
    assert sims.dv_get("accounts", d)["telephone1"] == "+45 99"
    r = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "bidirectional"})
    assert r.json()["results"][0]["status"] == "unchanged"
    jobs = api.get("/api/jobs", params={"mapping": "CUSTOMER", "top": 1}).json()
    assert jobs["value"][0]["counts"]["unchanged"] == 1 and "nextLink" in jobs


def test_health_is_ok_with_real_authenticated_checks(stack: Any) -> None:
    anon = requests.Session()
    anon.trust_env = False
    body = anon.get(stack.host_url + "/api/health", timeout=30).json()
    assert body == {
        "status": "ok",
        "checks": dict.fromkeys(["tables", "serviceBus", "businessCentral", "dataverse"], "ok"),
    }
