"""local.simcore through HTTP: counting, faults, latency, auth (401), service protection (429)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from local.simcore import ServiceLimits, TokenError, TokenValidator, install_sim_core
from tests.local.dv_sim.tokens import jwks, mint

AUD = "http://sim.test"


def _app(auth: TokenValidator | None = None, limits: ServiceLimits | None = None) -> tuple[web.Application, list]:
    resets: list[bool] = []
    app = web.Application()

    async def fast(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.json_response({"ok": True})

    async def busy(request: web.Request) -> web.Response:
        end = time.thread_time() + 0.2  # 0.2 s of the server's CPU
        while time.thread_time() < end:
            pass
        return web.json_response({"ok": True})

    app.router.add_get("/api/{entity}", fast)
    app.router.add_get("/slow", slow)
    app.router.add_get("/busy", busy)
    install_sim_core(
        app,
        name="test",
        route_key=lambda r: r.match_info.get("entity", r.path.strip("/")),
        error_body=lambda status, reason, message: {"error": {"code": f"{reason}", "message": message}},
        auth=auth,
        limits=limits,
        on_reset_data=lambda: resets.append(True),
        extra_headers={"x-test": "1"},
    )
    return app, resets


@pytest.fixture
async def make_client():
    clients: list[TestClient] = []

    async def make(app: web.Application) -> TestClient:
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_counts_by_route_and_reset(make_client) -> None:
    app, resets = _app()
    client = await make_client(app)
    for entity in ("accounts", "accounts", "contacts"):
        assert (await client.get(f"/api/{entity}")).status == 200
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["requests"] == 3 and stats["byRoute"] == {"accounts": 2, "contacts": 1}
    assert (await client.post("/_sim/reset")).status == 200
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["requests"] == 0 and resets == []
    await client.post("/_sim/reset?data=true")
    assert resets == [True]


async def test_injected_fault_by_route_with_retry_after(make_client) -> None:
    app, _ = _app()
    client = await make_client(app)
    r = await client.post("/_sim/faults", json={"status": 503, "count": 2, "retryAfter": 3, "route": "accounts"})
    assert r.status == 200
    assert (await client.get("/api/contacts")).status == 200
    for _ in range(2):
        r = await client.get("/api/accounts")
        assert r.status == 503 and r.headers["Retry-After"] == "3"
        assert (await r.json())["error"]["code"] == "injected"
    assert (await client.get("/api/accounts")).status == 200
    await client.post("/_sim/faults", json={"status": 429, "count": 1})
    r = await client.get("/api/contacts")
    assert r.status == 429
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["throttled"] == 1 and stats["faultsInjected"] == 3
    await client.post("/_sim/faults", json={"status": 500, "count": 5})
    assert (await client.delete("/_sim/faults")).status == 200
    assert (await client.get("/api/contacts")).status == 200


async def test_bad_fault_request_is_400(make_client) -> None:
    client = await make_client(_app()[0])
    assert (await client.post("/_sim/faults", json={"status": 200})).status == 400
    assert (await client.post("/_sim/faults", json={"status": 500, "count": 0})).status == 400
    assert (await client.post("/_sim/faults", data="nope")).status == 400


async def test_latency_applies_to_every_answer(make_client) -> None:
    client = await make_client(_app()[0])
    await client.post("/_sim/faults", json={"latencyMs": 150})
    started = time.monotonic()
    r = await client.get("/api/accounts")
    assert r.status == 200 and time.monotonic() - started >= 0.14
    await client.delete("/_sim/faults")
    started = time.monotonic()
    await client.get("/api/accounts")
    assert time.monotonic() - started < 0.1


async def test_auth_rejects_missing_bad_expired_and_wrong_audience(make_client) -> None:
    client = await make_client(_app(auth=TokenValidator(audience=AUD, jwks=jwks()))[0])
    assert (await client.get("/api/accounts", headers={"Authorization": f"Bearer {mint(AUD)}"})).status == 200
    cases = {
        "missing": None,
        "expired": mint(AUD, lifetime=-10),
        "audience": mint("http://other"),
        "signature": mint(AUD, wrong_key=True),
        "issuer": mint(AUD, issuer="https://evil.example/"),
        "notyet": mint(AUD, not_before=600),
        "garbage": "abc.def",
    }
    for name, token in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = await client.get("/api/accounts", headers=headers)
        assert r.status == 401, name
        challenge = r.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer authorization_uri="https://127.0.0.1:7443/'), name
        assert 'error="invalid_token"' in challenge, name
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["unauthorized"] == len(cases) and stats["requests"] == len(cases) + 1
    # /_sim/ needs no token.
    assert (await client.get("/_sim/stats")).status == 200


def test_validator_messages() -> None:
    validator = TokenValidator(audience=AUD, jwks=jwks())
    assert validator.validate(mint(AUD))["oid"]
    with pytest.raises(TokenError, match="expired"):
        validator.validate(mint(AUD, lifetime=-5))
    with pytest.raises(TokenError, match="audience"):
        validator.validate(mint(AUD + "/"))
    with pytest.raises(TokenError, match="unknown"):
        validator.validate(mint(AUD, kid="other"))


def test_a_token_is_verified_once_but_its_expiry_and_identity_are_checked_on_every_request(monkeypatch) -> None:
    import local.simcore as simcore

    verified: list[str] = []
    real = simcore.jwt.decode
    monkeypatch.setattr(simcore.jwt, "decode", lambda token, *a, **k: verified.append(token) or real(token, *a, **k))
    validator = TokenValidator(audience=AUD, jwks=jwks())
    token = mint(AUD, lifetime=60)
    for _ in range(3):
        claims = validator.validate(token)
        claims["oid"] = "changed by a caller"  # a caller's copy: the remembered claims stay as verified
    assert verified == [token] and sum(validator.accepted.values()) == 3
    assert validator.validate(token)["oid"] != "changed by a caller"
    # A bad token is never remembered: refused each time, verified each time.
    bad = mint(AUD, wrong_key=True)
    for _ in range(2):
        with pytest.raises(TokenError, match="signature"):
            validator.validate(bad)
    assert verified.count(bad) == 2
    # The identity check runs per request too.
    picky = TokenValidator(audience=AUD, jwks=jwks(), app_ids={"someone-else"})
    for _ in range(2):
        with pytest.raises(TokenError, match="not authorized"):
            picky.validate(token)
    assert sum(picky.refused_apps.values()) == 2
    # Past its expiry a remembered token is refused.
    later = time.time() + 120
    monkeypatch.setattr(simcore.time, "time", lambda: later)
    with pytest.raises(TokenError, match="expired"):
        validator.validate(token)


async def test_jwks_fetched_once_from_url(make_client) -> None:
    hits: list[int] = []

    async def keys(request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response(jwks())

    authority = web.Application()
    authority.router.add_get("/keys", keys)
    auth_client = await make_client(authority)
    url = str(auth_client.make_url("/keys"))
    client = await make_client(_app(auth=TokenValidator(audience=AUD, jwks_url=url))[0])
    for _ in range(3):
        assert (await client.get("/api/x", headers={"Authorization": f"Bearer {mint(AUD)}"})).status == 200
    assert hits == [1]


async def test_request_window_429_with_retry_after_per_user(make_client) -> None:
    limits = ServiceLimits(requests_per_window=5, window_seconds=30, max_concurrent=10)
    client = await make_client(_app(limits=limits)[0])
    alice = {"Authorization": f"Bearer {mint(AUD, oid='a')}"}
    bob = {"Authorization": f"Bearer {mint(AUD, oid='b')}"}
    statuses = [(await client.get("/api/accounts", headers=alice)).status for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    r = await client.get("/api/accounts", headers=alice)
    assert r.status == 429 and 25 <= int(r.headers["Retry-After"]) <= 30
    assert (await r.json())["error"]["code"] == "throttled_requests"
    assert r.headers["x-test"] == "1"
    assert (await client.get("/api/accounts", headers=bob)).status == 200
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["throttled"] == 3 and stats["throttledBy"] == {"throttled_requests": 3}
    # Raising the limit at run time lets alice through again.
    assert (await client.post("/_sim/limits", json={"requestsPerWindow": 100})).status == 200
    assert (await client.get("/api/accounts", headers=alice)).status == 200
    assert (await client.post("/_sim/limits", json={"bogus": 1})).status == 400


async def test_window_frees_after_window_seconds(make_client) -> None:
    limits = ServiceLimits(requests_per_window=2, window_seconds=0.3)
    client = await make_client(_app(limits=limits)[0])
    assert [(await client.get("/api/a")).status for _ in range(3)] == [200, 200, 429]
    await asyncio.sleep(0.35)
    assert (await client.get("/api/a")).status == 200


async def test_concurrency_limit(make_client) -> None:
    limits = ServiceLimits(max_concurrent=3, retry_after_seconds=2)
    client = await make_client(_app(limits=limits)[0])
    responses = await asyncio.gather(*(client.get("/slow") for _ in range(6)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200, 200, 200, 429, 429, 429]
    rejected = [r for r in responses if r.status == 429]
    assert all(r.headers["Retry-After"] == "2" for r in rejected)
    assert (await rejected[0].json())["error"]["code"] == "throttled_concurrency"
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["inFlightMax"] == 3 and stats["inFlight"] == 0


async def test_execution_time_limit(make_client) -> None:
    limits = ServiceLimits(execution_seconds_per_window=0.3, window_seconds=60)
    client = await make_client(_app(limits=limits)[0])
    # Waiting (a slow answer, injected latency) is not execution: only the server's own processing counts.
    assert (await client.get("/slow")).status == 200
    assert (await (await client.get("/_sim/stats")).json())["executionSeconds"] < 0.05
    assert (await client.get("/busy")).status == 200
    assert (await client.get("/busy")).status == 200
    r = await client.get("/busy")
    assert r.status == 429 and (await r.json())["error"]["code"] == "throttled_execution"
    # The stats say which limit answered each 429 and what was charged (a benchmark names the binding limit).
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["throttledBy"] == {"throttled_execution": 1}
    assert 0.4 <= stats["executionSeconds"] < 1 and 0.2 <= stats["executionMaxSeconds"] < 0.5
    assert stats["rowsCharged"] == 0
    await client.post("/_sim/reset")
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["throttledBy"] == {} and stats["executionSeconds"] == 0
