from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from local.dv_sim import create_app

API = "/api/data/v9.2"
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_dv() -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(**kwargs: object) -> TestClient:
        app: web.Application = create_app(**kwargs)  # type: ignore[arg-type]
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def dv(make_dv: MakeClient) -> TestClient:
    return await make_dv()
