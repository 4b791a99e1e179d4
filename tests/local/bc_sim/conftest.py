"""Fixtures of the BC simulator tests: an in-process simulator on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from local.bc_sim import create_app
from shared.config import LOCAL_TENANT_ID

BASE = f"/v2.0/{LOCAL_TENANT_ID}/Production/api/v2.0"
COMPANY = "7c1a1f0a-2f3b-4a51-9a6e-0c0de0000001"
CUSTOMERS = f"{BASE}/companies({COMPANY})/customers"

MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(**kwargs: Any) -> TestClient:
        client = TestClient(TestServer(create_app(**kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def bc(make_client: MakeClient) -> TestClient:
    return await make_client()


def relative(client: TestClient, url: str) -> str:
    """An absolute nextLink of the test server as a path the TestClient accepts."""
    root = str(client.make_url("/")).rstrip("/")
    assert url.startswith(root), url
    return url[len(root) :]
