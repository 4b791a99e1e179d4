"""The recipe for connectors: azure-core AsyncPipelineClient + AsyncBearerTokenCredentialPolicy + local CA."""

from __future__ import annotations

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.core import AsyncPipelineClient
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy
from azure.core.rest import HttpRequest

from local.authority import AuthorityServer
from shared import identity
from shared.identity import AsyncMsalCredential, TokenProvider
from tests.shared.identity.conftest import make_settings

BC = "https://api.businesscentral.dynamics.com/.default"


async def test_pipeline_client_over_https_with_local_ca(authority: AuthorityServer) -> None:
    provider = TokenProvider.from_settings(make_settings(authority))
    policy = AsyncBearerTokenCredentialPolicy(AsyncMsalCredential(provider), BC)
    # connection_verify=<CA path> reaches AioHttpTransport (ssl.create_default_context(cafile=...)).
    async with AsyncPipelineClient(
        authority.url, policies=[policy], connection_verify=str(authority.certs.ca_pem)
    ) as client:
        for _ in range(3):
            response = await client.send_request(HttpRequest("GET", f"{authority.url}/_authority/stats"))
            assert response.status_code == 200
    assert provider.token_requests == 1


async def test_pipeline_client_to_plain_http_simulator_needs_enforce_https_false(authority: AuthorityServer) -> None:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/data/v9.2/accounts", echo)
    provider = TokenProvider.from_settings(make_settings(authority))
    policy = AsyncBearerTokenCredentialPolicy(AsyncMsalCredential(provider), "http://127.0.0.1:7082/.default")
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/api/data/v9.2/accounts"))
        async with AsyncPipelineClient(url, policies=[policy]) as client:
            with pytest.raises(ServiceRequestError, match="non-TLS"):
                await client.send_request(HttpRequest("GET", url))
            response = await client.send_request(HttpRequest("GET", url), enforce_https=False)
            assert response.status_code == 200
    assert seen and seen[0].startswith("Bearer ")
    assert jwt.decode(seen[0][7:], options={"verify_signature": False})["aud"] == "http://127.0.0.1:7082"


def test_get_credential_is_process_wide_and_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    identity.get_credentials.cache_clear()
    monkeypatch.setenv("SYNC_AUTHORITY_HOST", "https://127.0.0.1:1")  # nothing listens: any I/O would fail
    try:
        first = identity.get_credential()
        assert identity.get_credential() is first
        assert first.provider.token_requests == 0
        # Two identities: Azure resources as the managed identity, BC/Dataverse as the app registration.
        assert first.provider.label == "managed identity"
        assert identity.get_app_credential().provider.label == "app registration"
    finally:
        identity.get_credentials.cache_clear()
