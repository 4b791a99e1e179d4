"""Shared helpers of the connector tests: in-process simulators on ephemeral ports, a fake credential, and
a proxy that applies a write and then "loses" the answer (a killed request whose work was done)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.core.credentials import AccessToken


class FakeCredential:
    """A tiny AsyncTokenCredential (the simulators run with auth=None here)."""

    def __init__(self, token: str = "fake-token") -> None:
        self.token = token
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *a: object) -> None:
        return None


class Sim:
    """A simulator app served on 127.0.0.1:<ephemeral> with helpers for its /_sim/ control routes."""

    def __init__(self, app: web.Application) -> None:
        self.server = TestServer(app, host="127.0.0.1", port=0)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> Sim:
        await self.server.start_server()
        self.session = aiohttp.ClientSession(trust_env=False)
        return self

    async def close(self) -> None:
        if self.session:
            await self.session.close()
        await self.server.close()

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        assert self.session is not None
        async with self.session.request(method, f"{self.base}{path}", json=body) as r:
            assert r.status < 300, (r.status, await r.text())
            return await r.json() if r.content_type == "application/json" else None

    async def seed(self, entity: str, count: int, **kw: Any) -> dict[str, Any]:
        return await self.control("POST", "/_sim/seed", {"entity": entity, "count": count, **kw})

    async def fault(self, **body: Any) -> None:
        await self.control("POST", "/_sim/faults", body)

    async def stats(self) -> dict[str, Any]:
        return await self.control("GET", "/_sim/stats")

    async def reset_stats(self) -> None:
        await self.control("POST", "/_sim/reset")


class LosingProxy:
    """Forwards every request to ``target``; for the first ``lose`` requests matching ``match`` it forwards
    (so the service applies the write) and then answers 500 instead of the real answer."""

    def __init__(self, target: str, match: Callable[[web.Request], bool], lose: int = 1) -> None:
        self.target = target
        self.match = match
        self.lose = lose
        self.lost = 0
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # method, path + query, headers
        # URLs as long as the simulators accept (Dataverse: 32 KB)
        app = web.Application(client_max_size=64 * 1024 * 1024, handler_args={"max_line_size": 33_000})
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> LosingProxy:
        await self.server.start_server()
        self.session = aiohttp.ClientSession(trust_env=False, auto_decompress=False)
        return self

    async def close(self) -> None:
        if self.session:
            await self.session.close()
        await self.server.close()

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def _handle(self, request: web.Request) -> web.Response:
        assert self.session is not None
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        url = self.target + request.path_qs
        async with self.session.request(request.method, url, data=body, headers=headers) as upstream:
            payload = await upstream.read()
            status = upstream.status
            drop = ("content-length", "transfer-encoding", "connection", "date", "server")
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in drop}
        if self.lost < self.lose and self.match(request):
            self.lost += 1
            return web.json_response({"error": {"code": "InternalServerError", "message": "lost answer"}}, status=500)
        return web.Response(status=status, body=payload, headers=out_headers)
