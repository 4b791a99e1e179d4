"""Table Storage through the MSAL credential against Azurite (--oauth basic, HTTPS) and the local authority."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.data.tables import TableServiceClient
from azure.data.tables.aio import TableServiceClient as AsyncTableServiceClient

from local.authority import AuthorityServer
from shared.identity import AsyncMsalCredential, MsalCredential, TokenProvider
from tests.shared.identity.conftest import make_settings


def _table() -> str:
    return "identity" + uuid.uuid4().hex[:12]


async def _write(endpoint: str, credential: object, ca: str, table: str, row: str) -> dict[str, object]:
    # connection_verify=<CA path> is honoured by the aiohttp transport (ssl.create_default_context(cafile=...)),
    # independent of SSL_CERT_FILE/REQUESTS_CA_BUNDLE.
    async with AsyncTableServiceClient(endpoint, credential=credential, connection_verify=ca) as service:  # type: ignore[arg-type]
        client = service.get_table_client(table)
        await service.create_table_if_not_exists(table)
        await client.upsert_entity({"PartitionKey": "p", "RowKey": row, "Value": row})
        return dict(await client.get_entity("p", row))


async def test_table_write_with_msal_credential_and_no_token_request_per_call(
    authority: AuthorityServer, azurite: str
) -> None:
    provider = TokenProvider.from_settings(make_settings(authority))
    credential = AsyncMsalCredential(provider)
    ca = str(authority.certs.ca_pem)
    table = _table()

    entity = await _write(azurite, credential, ca, table, "r1")
    assert entity["Value"] == "r1"
    assert provider.token_requests == 1

    for i in range(5):  # new clients, same credential: still the one token
        await _write(azurite, credential, ca, table, f"r{i + 2}")
    assert provider.token_requests == 1
    assert authority.state.stats()["byAudience"] == {"https://storage.azure.com": 1}


async def test_expired_token_is_refreshed(start_authority: Callable[..., AuthorityServer], azurite: str) -> None:
    authority = start_authority(token_lifetime=2)
    provider = TokenProvider.from_settings(make_settings(authority))
    credential = AsyncMsalCredential(provider)
    ca = str(authority.certs.ca_pem)
    table = _table()

    await _write(azurite, credential, ca, table, "before")
    first = provider.cached("https://storage.azure.com/.default")
    assert first is not None and provider.token_requests == 1
    await asyncio.sleep(2.2)  # past exp: Azurite would refuse the old token
    entity = await _write(azurite, credential, ca, table, "after")
    assert entity["Value"] == "after"
    assert provider.token_requests == 2
    second = provider.cached("https://storage.azure.com/.default")
    assert second is not None and second.token != first.token


async def test_concurrent_callers_share_one_token_request(authority: AuthorityServer) -> None:
    provider = TokenProvider.from_settings(make_settings(authority))
    credential = AsyncMsalCredential(provider)
    tokens = await asyncio.gather(*(credential.get_token("https://storage.azure.com/.default") for _ in range(20)))
    assert len({t.token for t in tokens}) == 1
    assert provider.token_requests == 1
    assert authority.state.issued == 1


class _FixedToken:
    """A credential that hands out one given token, to show that Azurite really checks what it gets."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, 2_000_000_000)

    async def close(self) -> None:
        return None


async def test_azurite_rejects_token_for_another_audience(authority: AuthorityServer, azurite: str) -> None:
    provider = TokenProvider.from_settings(make_settings(authority))
    wrong = provider.get_token("https://servicebus.azure.net/.default").token
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as caught:
        await _write(azurite, _FixedToken(wrong), str(authority.certs.ca_pem), _table(), "x")
    assert caught.value.status_code in (401, 403)


async def test_managed_identity_table_write(
    authority: AuthorityServer, azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{authority.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "local-identity-header")
    provider = TokenProvider.from_settings(
        make_settings(authority, auth_mode="managed_identity", managed_identity_client_id="mi-client-1")
    )
    entity = await _write(azurite, AsyncMsalCredential(provider), str(authority.certs.ca_pem), _table(), "mi")
    assert entity["Value"] == "mi"
    assert authority.state.managed_identity == 1
    assert authority.state.by_client == {"mi-client-1": 1}


def test_sync_table_client_with_msal_credential(authority: AuthorityServer, azurite: str) -> None:
    # The sync client uses RequestsTransport: a per-request verify=<path> wins over REQUESTS_CA_BUNDLE.
    provider = TokenProvider.from_settings(make_settings(authority))
    table = _table()
    with TableServiceClient(
        azurite, credential=MsalCredential(provider), connection_verify=str(authority.certs.ca_pem)
    ) as service:
        service.create_table_if_not_exists(table)
        client = service.get_table_client(table)
        client.upsert_entity({"PartitionKey": "p", "RowKey": "s", "Value": 1})
        assert client.get_entity("p", "s")["Value"] == 1
    assert provider.token_requests == 1
