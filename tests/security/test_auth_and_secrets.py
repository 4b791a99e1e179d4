"""Who gets in: every protected route (read from the registered app) refuses a missing or wrong key;
webhook secrets are compared in constant time; OData values are escaped; no secret reaches a log."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from shared.services import webhook_intake
from tests.reliability.harness import PROBLEM, TALLY, World, consistency, count_5xx, tag

G = "6f1d2c3b-4a59-4e7f-8a1b-2c3d4e5f6a7b"
# The only anonymous routes, by design (contract): a new anonymous route must be added here on purpose.
# not openapi (#16); the console page and its assets carry no data: every call they make needs the key (#22)
ANONYMOUS = {"health", "webhook_businesscentral", "webhook_dataverse", "console", "console_asset"}


def http_functions() -> list[tuple[str, str, list[str], Any]]:
    import function_app

    app = importlib.reload(function_app).app  # get_functions() may run once per app instance
    out = []
    for f in app.get_functions():
        trigger = f.get_trigger()
        if trigger.get_binding_name() != "httpTrigger":
            continue
        methods = [str(getattr(m, "value", m)) for m in (trigger.methods or ["GET"])]
        out.append((f.get_function_name(), trigger.route, methods, trigger.auth_level))
    return out


def concrete(route: str) -> str:
    return "/api/" + re.sub(
        r"\{(\w+)(:[^}]*)?\}", lambda m: "CUSTOMER" if m.group(1) == "mapping" else G, route
    ).lstrip("/")


def test_only_the_documented_routes_are_anonymous() -> None:
    functions = http_functions()
    assert len(functions) >= 20
    anonymous = {name for name, _r, _m, level in functions if level == func.AuthLevel.ANONYMOUS}
    assert anonymous == ANONYMOUS


@pytest.mark.stack
def test_no_key_or_a_wrong_key_is_401_on_every_protected_route(world: World) -> None:
    anon = requests.Session()
    anon.trust_env = False
    key = world.stack.function_key
    tried = 0
    for name, route, methods, level in http_functions():
        if level == func.AuthLevel.ANONYMOUS:
            continue
        url = world.stack.host_url + concrete(route)
        for method in methods:
            for headers, params in (
                ({}, {}),
                ({"x-functions-key": "wrong"}, {}),
                ({"x-functions-key": key.upper() if key != key.upper() else key.lower()}, {}),
                ({"Authorization": f"Bearer {key}"}, {}),
                ({}, {"code": "wrong"}),
                ({}, {"code": ""}),
            ):
                resp = count_5xx(anon.request(method, url, json={}, headers=headers, params=params, timeout=30))
                tried += 1
                assert resp.status_code == 401, (name, method, headers, params, resp.status_code, resp.text[:200])
                assert resp.headers["Content-Type"].split(";")[0] == PROBLEM
                assert resp.json()["code"] == "unauthorized"
            # ...and the right key gets past the door (so the 401s above prove something); reads only, as
            # `{}` on DELETE couplings or POST match would start real jobs.
            if method == "GET":
                ok = anon.get(url, headers={"x-functions-key": key}, timeout=30)
                # (a never-coupled record's history is the contract's own 404 not_found, #22)
                routed = ok.json().get("code") != "not_found" or name == "history"
                assert ok.status_code != 401 and routed, (name, ok.text[:200])
    for path in ("/admin/functions", "/admin/functions/sync_worker", "/admin/functions/scheduled_sync"):
        method = "GET" if path == "/admin/functions" else "POST"
        assert anon.request(method, world.stack.host_url + path, json={}, timeout=30).status_code == 401
    protected = [f for f in http_functions() if f[3] != func.AuthLevel.ANONYMOUS]
    assert len(protected) >= 17 and tried == 6 * sum(len(f[2]) for f in protected)
    TALLY.notes.append(f"auth: {tried} keyless/wrong-key requests on protected routes -> all 401")


# ----------------------------------------------------------------------------- constant-time secrets
def test_check_secret_uses_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = webhook_intake.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhook_intake.hmac, "compare_digest", spy)
    assert webhook_intake.check_secret("s3cret", "s3cret") is True
    assert webhook_intake.check_secret("s3cres", "s3cret") is False
    assert webhook_intake.check_secret("s3", "s3cret") is False  # a prefix is not enough
    assert webhook_intake.check_secret("", "s3cret") is False
    assert webhook_intake.check_secret(None, "s3cret") is False
    assert webhook_intake.check_secret("sécret", "sécret") is True
    assert len(calls) == 5, "every non-None comparison goes through hmac.compare_digest"
    source = inspect.getsource(webhook_intake.check_secret)
    assert "==" not in source and "compare_digest" in source


def test_webhook_handlers_compare_through_check_secret() -> None:
    import functions.http_webhooks as hooks

    # Both webhook kinds are authenticated in webhook_intake, through check_secret; no handler compares a secret.
    handlers = inspect.getsource(hooks)
    assert "authenticate_dataverse(" in handlers and "compare_digest" not in handlers
    assert not re.search(r"(webhook_key|client_state)\s*[!=]=", handlers), "a secret compared with =="
    for check in (webhook_intake.authenticate_bc, webhook_intake.authenticate_dataverse):
        source = inspect.getsource(check)
        assert "check_secret(" in source and not re.search(r"(webhook_key|client_state)\s*[!=]=", source)
    assert "authenticate_bc(" in inspect.getsource(webhook_intake.bc_notification)


# ----------------------------------------------------------------------------- OData escaping
@pytest.mark.stack
@pytest.mark.parametrize(
    "name",
    [
        "O'Brien ' or name ne '",
        "x') or (name ne 'y",
        "%27 or 1 eq 1",
        "a''b & $top=1 #e ?f",
        "ünï'cødé $filter=1",
    ],
)
def test_match_values_with_quotes_are_escaped(world: World, name: str) -> None:
    """Match-couple filters Dataverse by name: an injected filter would either be refused by the simulator
    (job fails) or match the decoys (several candidates: left uncoupled). Escaped, it couples the one row."""
    name = f"{name} {tag()}"
    b = world.sims.bc_create("customers", displayName=name)
    d = world.sims.dv_create("accounts", name=name)
    for _ in range(2):
        world.sims.dv_create("accounts", name=f"decoy {tag()}")
    resp = count_5xx(world.api.post("/api/mappings/CUSTOMER/couplings/match", json={"bcIds": [b]}))
    assert resp.status_code == 202, resp.text
    job = world.api.wait_for_job(resp.json()["jobId"])
    TALLY.cases += 1
    assert job["status"] == "succeeded" and job["counts"]["coupled"] == 1, job
    assert world.api.get(f"/api/mappings/CUSTOMER/couplings/{b}").json()["dataverseId"] == d
    consistency(world, names=[name])


# ----------------------------------------------------------------------------- secrets in logs
@pytest.mark.stack
def test_no_secret_or_token_in_any_log(world: World) -> None:
    """Runs flows that touch every secret (function key, webhook key and client state, client secret,
    bearer tokens), then greps every log file this stack wrote."""
    env = world.stack.child_env()
    b = world.sims.bc_create("customers", displayName=f"L {tag()}")
    assert world.api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": b, "createNew": True}).status_code == 201
    d = world.api.get(f"/api/mappings/CUSTOMER/couplings/{b}").json()["dataverseId"]
    world.api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [b], "direction": "toDataverse", "force": True})
    ctx = {"MessageName": "Update", "PrimaryEntityName": "account", "PrimaryEntityId": d, "InputParameters": []}
    hook = world.api.http.post(
        world.stack.host_url + "/api/webhooks/dataverse",
        params={"code": env.get("DATAVERSE_WEBHOOK_KEY", "local-dv-webhook-key")},
        json=ctx,
        timeout=30,
    )
    assert hook.status_code == 202, hook.text
    world.api.http.post(
        world.stack.host_url + "/api/webhooks/businesscentral",
        json={"value": [{"clientState": "forged-" + env.get("BC_WEBHOOK_CLIENT_STATE", "local-bc-client-state")}]},
        timeout=30,
    )
    world.api.get("/api/mappings", params={"code": world.stack.function_key})
    secrets = {
        "function key": world.stack.function_key,
        "client secret": env.get("SYNC_CLIENT_SECRET", "local-dev-secret"),
        "dataverse webhook key": env.get("DATAVERSE_WEBHOOK_KEY", "local-dv-webhook-key"),
        "bc client state": env.get("BC_WEBHOOK_CLIENT_STATE", "local-bc-client-state"),
        "bearer token": world.sims.bc_token(),
    }
    logs = sorted(Path(world.stack.log_dir).glob("*.log"))
    assert any(p.name == "host.log" for p in logs), logs
    found = []
    for path in logs:
        text = path.read_text(errors="replace")
        for label, secret in secrets.items():
            if secret and secret in text:
                found.append(f"{path.name}: {label}")
        if re.search(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ", text):
            found.append(f"{path.name}: a JWT (eyJ...)")
    TALLY.notes.append(f"logs: {len(logs)} files grepped for {len(secrets)} secrets + JWTs -> {len(found)} found")
    assert not found, found
