"""The shared pipeline against small inline aiohttp servers: retries, Retry-After, caps, idempotency, limiter,
error mapping, counting, token handling, multipart and chunking helpers."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.core.credentials import AccessToken

from shared.connectors._multipart import BatchPart, build_batch, parse_batch_response
from shared.connectors._odata import MAX_URL_BYTES, chunk_ids_by_url, format_timestamp, parse_timestamp
from shared.connectors.http import AdaptiveLimiter, ServiceHttp, quote_fast
from shared.errors import (
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    ThrottledError,
    TransientError,
    UnauthorizedError,
)


class FakeCredential:
    """A tiny AsyncTokenCredential."""

    def __init__(self, token: str = "secret-token-value") -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *a: object) -> None:
        return None


Handler = Callable[[web.Request], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for s in servers:
        await s.close()


def make_http(base: str, **kw: Any) -> ServiceHttp:
    kw.setdefault("retry_backoff_base", 0.01)
    return ServiceHttp(
        service="test", base_url=base, credential=kw.pop("credential", FakeCredential()), scope="api://x/.default",
        max_concurrency=kw.pop("max_concurrency", 4), **kw,
    )  # fmt: skip


async def test_429_retry_after_seconds_then_success_and_token_sent(serve: Any) -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if len(seen) <= 2:
            return web.json_response({"error": {"code": "TooMany", "message": "slow down"}}, status=429,
                                     headers={"Retry-After": "1"})  # fmt: skip
        return web.json_response({"value": [1]})

    base = await serve(handler)
    cred = FakeCredential()
    http = make_http(base, credential=cred)
    started = time.monotonic()
    response = await http.request("GET", f"{base}/things")
    elapsed = time.monotonic() - started
    await http.aclose()
    assert response.json() == {"value": [1]}
    assert 1.9 <= elapsed < 5, elapsed  # honoured Retry-After twice
    assert http.calls.total == 3 and http.calls.retries == 2 and http.calls.throttled == 2
    assert all(h["Authorization"] == "Bearer secret-token-value" for h in seen)
    assert cred.scopes[0] == ("api://x/.default",)


async def test_retry_after_http_date(serve: Any) -> None:
    count = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        if count == 1:
            when = email.utils.formatdate(time.time() + 2, usegmt=True)
            return web.Response(status=503, headers={"Retry-After": when})
        return web.json_response({})

    base = await serve(handler)
    http = make_http(base)
    started = time.monotonic()
    await http.request("POST", f"{base}/x", json={})  # 503 = not processed: even a POST repeats
    await http.aclose()
    assert count == 2
    assert 0.5 <= time.monotonic() - started < 4


async def test_throttle_beyond_total_cap_raises_throttled_with_code(serve: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "TooMany", "message": "wait"}}, status=429,
                                 headers={"Retry-After": "5"})  # fmt: skip

    base = await serve(handler)
    http = make_http(base, retry_total_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(ThrottledError) as info:
        await http.request("GET", f"{base}/x")
    await http.aclose()
    assert time.monotonic() - started < 1.5  # the 5 s wait would cross the 2 s cap: not taken
    assert info.value.retry_after == 5 and info.value.code == "TooMany" and info.value.status == 429
    assert http.calls.total == 1


async def test_500_on_post_is_not_retried_but_get_is(serve: Any) -> None:
    hits: dict[str, int] = {"GET": 0, "POST": 0}

    async def handler(request: web.Request) -> web.Response:
        hits[request.method] += 1
        if hits[request.method] == 1:
            return web.json_response({"error": {"code": "0x80040216", "message": "boom"}}, status=500)
        return web.json_response({"ok": True})

    base = await serve(handler)
    http = make_http(base)
    with pytest.raises(TransientError) as info:
        await http.request("POST", f"{base}/create", json={"a": 1})
    assert info.value.code == "0x80040216" and info.value.message == "boom"
    assert (await http.request("GET", f"{base}/read")).json() == {"ok": True}
    # ...and a POST marked idempotent (client-chosen keys) is retried too
    hits["POST"] = 0
    assert (await http.request("POST", f"{base}/create", json={}, idempotent=True)).json() == {"ok": True}
    await http.aclose()
    assert hits == {"GET": 2, "POST": 2}


async def test_connection_reset_after_send_not_retried_for_post(serve: Any) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        await request.read()
        assert request.transport is not None
        request.transport.close()  # the server got the request, then the connection dies
        await asyncio.sleep(0.05)
        return web.Response()

    base = await serve(handler)
    http = make_http(base, retry_max_attempts=3)
    with pytest.raises(TransientError):
        await http.request("POST", f"{base}/create", json={"a": 1})
    assert hits == 1
    with pytest.raises(TransientError):
        await http.request("GET", f"{base}/read")
    await http.aclose()
    assert http.calls.total == 4 and hits >= 4  # GET retried: 3 attempts (aiohttp may re-send on a stale keep-alive)


async def test_connect_refused_is_retried_even_for_post() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there
    http = make_http(f"http://127.0.0.1:{port}", retry_total_timeout=1.0, retry_max_attempts=3)
    with pytest.raises(TransientError):
        await http.request("POST", f"http://127.0.0.1:{port}/x", json={})
    await http.aclose()
    assert http.calls.total == 3 and http.calls.retries == 2


@pytest.mark.parametrize(
    ("status", "cls"),
    [(404, NotFoundError), (412, PreconditionFailedError), (401, UnauthorizedError), (400, PermanentError)],
)
async def test_error_mapping_carries_code_and_message(serve: Any, status: int, cls: type) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "Some_Code", "message": "the message"}}, status=status)

    base = await serve(handler)
    http = make_http(base)
    with pytest.raises(cls) as info:
        await http.request("GET", f"{base}/x")
    await http.aclose()
    assert info.value.code == "Some_Code" and info.value.message == "the message" and info.value.status == status
    assert http.calls.total == 1  # 4xx never retried


async def test_logs_never_contain_the_token(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "X", "message": "no"}}, status=404)

    base = await serve(handler)
    http = make_http(base)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(NotFoundError):
            await http.request("GET", f"{base}/x?$filter=a eq 1")
    await http.aclose()
    assert "/x" in caplog.text
    assert "secret-token-value" not in caplog.text and "Bearer" not in caplog.text


async def test_limiter_caps_concurrency_and_follows_dop_hint(serve: Any) -> None:
    active = peak = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.json_response({}, headers={"x-ms-dop-hint": "2"})

    base = await serve(handler)
    http = make_http(base, max_concurrency=5, max_concurrency_limit=10, dop_header="x-ms-dop-hint")
    await asyncio.gather(*(http.request("GET", f"{base}/x") for _ in range(5)))
    assert peak <= 5
    assert http.limiter.limit == 2
    peak = 0
    await asyncio.gather(*(http.request("GET", f"{base}/x") for _ in range(8)))
    await http.aclose()
    assert peak == 2
    assert http.calls.by_kind["read"] == 13


async def test_adaptive_limiter_bounds() -> None:
    limiter = AdaptiveLimiter(4, maximum=8)
    await limiter.set_limit(100)
    assert limiter.limit == 8
    await limiter.set_limit(0)
    assert limiter.limit == 1


def test_multipart_roundtrip_and_changeset_flattening() -> None:
    ctype, body = build_batch(
        [
            BatchPart("PATCH", "http://h/api/data/v9.2/accounts(1)?tag=t", {"If-Match": "*"}, {"name": "a"}),
            BatchPart("DELETE", "http://h/api/data/v9.2/accounts(2)"),
        ]
    )
    text = body.decode()
    assert ctype.startswith("multipart/mixed; boundary=batch_")
    assert "PATCH http://h/api/data/v9.2/accounts(1)?tag=t HTTP/1.1\r\n" in text
    assert 'If-Match: *\r\nContent-Type: application/json\r\n\r\n{"name":"a"}' in text
    response = (
        "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n\r\n\r\n"
        "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
        "--changesetresponse_2\r\nContent-Type: application/http\r\nContent-ID: 2\r\n\r\n"
        "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\r\n"
        '{"error":{"code":"0x80060882","message":"etag"}}\r\n'
        "--changesetresponse_2--\r\n"
        "--batchresponse_1--\r\n"
    )
    answers = parse_batch_response("multipart/mixed; boundary=batchresponse_1", response.encode())
    assert [a.status for a in answers] == [204, 412]
    assert answers[1].body["error"]["code"] == "0x80060882"


def test_chunking_keeps_urls_short_and_uses_few_chunks() -> None:
    ids = [f"{i:08x}-0000-0000-0000-000000000000" for i in range(1000)]
    base = "http://127.0.0.1:7081/v2.0/t/Production/api/v2.0/companies(0000)/customers"
    chunks = list(chunk_ids_by_url(ids, field="id", base_len=len(base)))
    assert [i for c in chunks for i in c] == ids
    for c in chunks:
        url = base + "?%24filter=" + quote(f"id in ({','.join(c)})", safe="")
        assert len(url) <= MAX_URL_BYTES
    assert len(chunks) == -(-1000 // (len(chunks[0])))  # all but the last are full
    assert len(chunks[0]) > 150


def test_timestamps() -> None:
    ts = parse_timestamp("2026-01-02T03:04:05.1234567Z")
    assert ts is not None and ts.microsecond == 123456
    assert format_timestamp(ts) == "2026-01-02T03:04:05.123Z"
    assert parse_timestamp("nonsense") is None


def test_bc_409_request_entity_changed_is_a_stale_etag_not_a_conflict() -> None:
    from shared.errors import ConflictError, classify_status

    assert classify_status(409, "Request_EntityChanged") is PreconditionFailedError
    assert classify_status(409, "Internal_EntityWithSameKeyExists") is ConflictError
    assert classify_status(409) is ConflictError
    assert classify_status(412) is PreconditionFailedError


@pytest.mark.parametrize(
    "value",
    [
        "",
        "id in (6f9619ff-8b86-d011-b42d-00cf4fc964ff,7f9619ff-8b86-d011-b42d-00cf4fc964ff)",
        "name eq 'O''Brien & Sons #1 100%'",
        "".join(chr(c) for c in range(128)),
        "café ☕ 😀",
    ],
)
@pytest.mark.parametrize("safe", ["/", "", "$(),'=:", "]^\\-"])
def test_query_values_are_percent_encoded_as_urllib_does(value: str, safe: str) -> None:
    assert quote_fast(value, safe) == quote(value, safe)
