"""The local host over real HTTP (ephemeral port): routing, constraints, auth, 404/405, 500, async handlers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from local.host import InMemoryQueueSource, LocalHost, load_functions

KEY = "test-key"
APP = "tests.local.host.sample_app"


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "0 0 0 1 1 *")
    monkeypatch.setenv("SAMPLE_QUEUE", "sample-q")
    host = LocalHost(load_functions(APP), function_key=KEY, queue_source=InMemoryQueueSource(), run_timers=False)
    async with TestClient(TestServer(host.create_app(), host="127.0.0.1", port=0)) as c:
        yield c


def auth() -> dict[str, str]:
    return {"x-functions-key": KEY}


async def test_route_param_with_guid_constraint_and_real_http_request(client: TestClient) -> None:
    gid = str(uuid.uuid4())
    resp = await client.get(f"/api/items/{gid}?a=1&b=two", headers=auth())
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = await resp.json()
    assert body["method"] == "GET"
    assert body["route"] == {"id": gid}
    assert body["params"] == {"a": "1", "b": "two"}
    assert body["thread"] != "MainThread"  # sync handlers run off the event loop


async def test_guid_constraint_rejects_non_guid_and_literal_route_wins(client: TestClient) -> None:
    assert (await client.get("/api/items/not-a-guid", headers=auth())).status == 404
    resp = await client.get("/api/items/special", headers=auth())
    assert resp.status == 200
    assert await resp.text() == "special"


async def test_alpha_constraint_optional_param_and_catch_all(client: TestClient) -> None:
    body = await (await client.get("/api/names/Alice")).json()
    assert body["route"] == {"name": "Alice"}
    body = await (await client.get("/api/names/Alice/42")).json()
    assert body["route"] == {"name": "Alice", "n": "42"}
    assert (await client.get("/api/names/Al1ce")).status == 404
    assert (await client.get("/api/names/Alice/x")).status == 404
    body = await (await client.get("/api/files/a/b/c.txt")).json()
    assert body["route"] == {"rest": "a/b/c.txt"}


async def test_put_body_reaches_handler(client: TestClient) -> None:
    gid = str(uuid.uuid4())
    resp = await client.put(f"/api/items/{gid}", data=b'{"x": 1}', headers=auth())
    assert (await resp.json())["body"] == '{"x": 1}'


@pytest.mark.parametrize(
    ("headers", "query"),
    [({}, ""), ({"x-functions-key": "wrong"}, ""), ({}, "?code=wrong")],
)
async def test_function_level_requires_the_key(client: TestClient, headers: dict[str, str], query: str) -> None:
    resp = await client.get(f"/api/items/{uuid.uuid4()}{query}", headers=headers)
    assert resp.status == 401
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert (await resp.json())["code"] == "unauthorized"


async def test_code_query_parameter_and_admin_level(client: TestClient) -> None:
    assert (await client.get(f"/api/items/{uuid.uuid4()}?code={KEY}")).status == 200
    assert (await client.get("/api/admin-only")).status == 401
    assert (await client.get("/api/admin-only", headers=auth())).status == 200


async def test_method_not_allowed_and_unknown_route(client: TestClient) -> None:
    resp = await client.delete(f"/api/items/{uuid.uuid4()}", headers=auth())
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "PUT"}
    assert (await resp.json())["code"] == "method_not_allowed"
    resp = await client.get("/api/does-not-exist", headers=auth())
    assert resp.status == 404
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    for method, path in (("GET", "/elsewhere"), ("POST", "/"), ("PUT", "/admin/nope/x")):
        resp = await client.request(method, path)
        assert resp.status == 404, path
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert (await resp.json())["code"] == "not_found"


async def test_async_handler_status_headers_and_location(client: TestClient) -> None:
    resp = await client.post("/api/created", json={"a": 1})
    assert resp.status == 201
    assert resp.headers["Location"] == "/api/created/1"
    assert resp.headers["X-Extra"] == "yes"
    assert await resp.json() == {"async": True, "body": {"a": 1}}


async def test_text_response_gets_charset(client: TestClient) -> None:
    resp = await client.get("/api/text")
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await resp.text() == "héllo"


@pytest.mark.parametrize("route", ["/api/boom", "/api/aboom"])
async def test_handler_exception_is_500_problem_without_trace(
    client: TestClient, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        resp = await client.get(route)
    assert resp.status == 500
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    text = await resp.text()
    assert "secret-internal-detail" not in text and "Traceback" not in text
    body = await resp.json()
    assert body["code"] == "internal_error" and body["status"] == 500
    assert body["detail"] == "An internal error occurred."
    assert body["traceId"]
    # The console gets the host-shaped lines and the stack trace.
    assert any("Executing 'Functions." in r.getMessage() for r in caplog.records)
    failed = [r for r in caplog.records if "(Failed, Id=" in r.getMessage()]
    assert failed and failed[0].exc_info is not None


async def test_host_status_is_anonymous(client: TestClient) -> None:
    resp = await client.get("/admin/host/status")
    assert resp.status == 200
    assert await resp.json() == {"state": "Running"}
