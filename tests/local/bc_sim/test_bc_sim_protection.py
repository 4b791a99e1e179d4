"""BC simulator service protection (429 + Retry-After), bearer validation (401) and /_sim/ endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from local.bc_sim import BC_AUDIENCE
from local.simcore import ServiceLimits, TokenValidator
from tests.local.bc_sim.conftest import BASE, COMPANY, CUSTOMERS, MakeClient

RESOURCE = f"/api/v2.0/companies({COMPANY})/customers"

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
JWKS = {"keys": [{**JWK, "kid": "test-kid", "use": "sig", "alg": "RS256"}]}


def token(**overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "aud": BC_AUDIENCE,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-0000000000aa/",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "oid": "user-1",
        "tid": "00000000-0000-0000-0000-0000000000aa",
    }
    claims.update(overrides)
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "test-kid"})


async def test_bearer_tokens_are_validated(make_client: MakeClient) -> None:
    bc = await make_client(auth=TokenValidator(audience=BC_AUDIENCE, jwks=JWKS))
    url = f"{BASE}/companies"
    resp = await bc.get(url, headers={"Authorization": f"Bearer {token()}"})
    assert resp.status == 200
    for header in (
        {},
        {"Authorization": f"Bearer {token(aud='https://other')}"},
        {"Authorization": f"Bearer {token(exp=int(time.time()) - 60)}"},
        {"Authorization": "Bearer not-a-jwt"},
    ):
        resp = await bc.get(url, headers=header)
        assert resp.status == 401, header
        assert "Bearer" in resp.headers["WWW-Authenticate"]
        assert (await resp.json())["error"]["code"] == "Authentication_InvalidCredentials"
    resp = await bc.get("/_sim/stats")  # control endpoints need no token
    assert resp.status == 200 and (await resp.json())["unauthorized"] == 4


async def test_request_budget_answers_429_with_retry_after(make_client: MakeClient) -> None:
    bc = await make_client(limits=ServiceLimits(requests_per_window=5, window_seconds=60, max_concurrent=100))
    statuses = []
    for _ in range(7):
        resp = await bc.get(CUSTOMERS, headers={"Authorization": f"Bearer {token()}"})
        statuses.append(resp.status)
    assert statuses == [200] * 5 + [429] * 2
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "Application_TooManyRequests"
    # another user has its own budget
    resp = await bc.get(CUSTOMERS, headers={"Authorization": f"Bearer {token(oid='user-2')}"})
    assert resp.status == 200
    assert (await (await bc.get("/_sim/stats")).json())["throttled"] == 2


async def test_concurrency_beyond_running_plus_queue_answers_429(make_client: MakeClient) -> None:
    bc = await make_client(limits=ServiceLimits(max_concurrent=3, retry_after_seconds=2), max_running=1)
    await bc.post("/_sim/faults", json={"latencyMs": 300})
    results = await asyncio.gather(*(bc.get(CUSTOMERS) for _ in range(6)))
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 200, 200, 429, 429, 429]
    throttled = next(r for r in results if r.status == 429)
    assert throttled.headers["Retry-After"] == "2"
    assert (await throttled.json())["error"]["code"] == "Application_TooManyRequests"


async def test_requests_beyond_max_running_wait_in_the_queue(make_client: MakeClient) -> None:
    async def slow_receiver(request: web.Request) -> web.Response:
        await asyncio.sleep(0.25)  # a slow handshake keeps the subscription request running
        return web.Response(text=request.query.get("validationToken", ""))

    app = web.Application()
    app.router.add_post("/hook", slow_receiver)
    server = TestServer(app)
    await server.start_server()
    try:
        body = {"notificationUrl": str(server.make_url("/hook")), "resource": RESOURCE}
        for running, minimum, maximum in ((1, 0.75, 5.0), (3, 0.0, 0.7)):
            bc = await make_client(max_running=running)
            started = time.perf_counter()
            results = await asyncio.gather(*(bc.post(f"{BASE}/subscriptions", json=body) for _ in range(3)))
            elapsed = time.perf_counter() - started
            assert [r.status for r in results] == [201] * 3
            assert minimum <= elapsed <= maximum, (running, elapsed)
    finally:
        await server.close()


async def test_sim_endpoints_seed_reset_faults(bc: Any) -> None:
    resp = await bc.post("/_sim/seed", json={"entity": "customers", "count": 1001, "fields": {"city": "Paris"}})
    body = await resp.json()
    assert body["created"] == 1001 and "ids" not in body
    resp = await bc.post("/_sim/seed", json={"entity": "contacts", "count": 2, "prefix": "P"})
    assert len((await resp.json())["ids"]) == 2
    resp = await bc.post("/_sim/seed", json={"entity": "widgets", "count": 2})
    assert resp.status == 400
    resp = await bc.post("/_sim/seed", json={"entity": "customers", "fields": {"nope": 1}})
    assert resp.status == 400

    resp = await bc.get(CUSTOMERS, params={"$filter": "city eq 'Paris'", "$top": "5"})
    assert len((await resp.json())["value"]) == 5

    await bc.post("/_sim/faults", json={"status": 503, "count": 2, "retryAfter": 3, "route": "customers"})
    resp = await bc.get(f"{BASE}/companies")
    assert resp.status == 200
    codes = [(await bc.get(CUSTOMERS)).status for _ in range(3)]
    assert codes == [503, 503, 200]

    stats = await (await bc.get("/_sim/stats")).json()
    assert stats["byRoute"] == {"companies": 1, "customers": 4} and stats["requests"] == 5

    resp = await bc.post("/_sim/reset?data=true")
    assert resp.status == 200
    stats = await (await bc.get("/_sim/stats")).json()
    assert stats["requests"] == 0
    resp = await bc.get(CUSTOMERS)
    assert (await resp.json())["value"] == []
