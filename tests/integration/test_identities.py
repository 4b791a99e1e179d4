"""Who each call belongs to, on the local stack: Table Storage and Service Bus see only the managed identity,
Business Central and Dataverse only the app registration (signed in through its federated credential), and
each resource refuses the other identity, as Azure does."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.data.tables.aio import TableServiceClient
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusAuthenticationError, ServiceBusError

from local.authority import local_client_settings
from local.stack import Stack, StackError
from shared.config import LOCAL_CLIENT_ID, LOCAL_MANAGED_IDENTITY_CLIENT_ID, Settings, settings_from_env
from shared.identity import AsyncMsalCredential, TokenProvider
from shared.messaging.publisher import client_from_settings

pytestmark = pytest.mark.stack
MI = LOCAL_MANAGED_IDENTITY_CLIENT_ID


def _json(url: str) -> dict[str, Any]:
    session = requests.Session()
    session.trust_env = False
    ca = str(Stack().ca_file)
    return session.get(url, timeout=30, verify=ca).json()  # type: ignore[no-any-return]


def _who(stack: Stack) -> dict[str, dict[str, Any]]:
    return {
        "tables": _json(f"{stack.url('azurite')}/_proxy/stats"),
        "serviceBus": _json(f"http://127.0.0.1:{stack.ports['amqp_control']}/auth"),
        "businessCentral": _json(f"{stack.url('bc_sim')}/_sim/stats"),
        "dataverse": _json(f"{stack.url('dv_sim')}/_sim/stats"),
        "authority": _json(f"{stack.url('authority')}/_authority/stats"),
    }


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _settings(stack: Stack) -> Settings:
    return settings_from_env(stack.child_env())


def test_service_calls_carry_the_identity_each_resource_accepts(stack: Stack, api: Any, world: dict[str, Any]) -> None:
    sims = world["sims"]
    tag = uuid.uuid4().hex[:8]
    item = sims.bc_create("items", displayName=f"Ident {tag}", number=f"ID{tag}", unitPrice=1)
    before = _who(stack)

    # A job through Service Bus (publish + trigger), table writes, BC and Dataverse reads and writes.
    resp = api.post("/api/mappings/ITEM-PRODUCT/couplings/match", json={"bcIds": [item]})
    assert resp.status_code == 202, resp.text
    job = api.wait_for_job(resp.json()["jobId"])
    assert job["status"] in ("succeeded", "partial"), job
    anon = requests.Session()
    anon.trust_env = False  # never through a proxy from the environment
    health = anon.get(stack.host_url + "/api/health", timeout=30).json()
    assert health["status"] == "ok", health
    after = _who(stack)

    tables = _delta(after["tables"]["acceptedApps"], before["tables"]["acceptedApps"])
    assert tables and set(tables) == {MI}, tables
    assert after["tables"]["refused"] == before["tables"]["refused"]  # the service never sent another identity
    bus = _delta(after["serviceBus"]["acceptedApps"], before["serviceBus"]["acceptedApps"])
    assert bus and set(bus) == {MI}, bus
    assert after["serviceBus"]["refusedTokens"] == before["serviceBus"]["refusedTokens"]
    for name in ("businessCentral", "dataverse"):
        used = _delta(after[name]["acceptedCredentials"], before[name]["acceptedCredentials"])
        # The service signs in as the app registration with an assertion (the federated credential); the test
        # tools' own calls (seeding, above) use the contract's local secret of the same app.
        assert used.get(f"{LOCAL_CLIENT_ID}:assertion", 0) > 0, (name, used)
        assert not any(key.startswith(MI) for key in after[name]["acceptedCredentials"]), after[name]
    # The app token came through the federated exchange: the managed identity's api://AzureADTokenExchange token.
    assert after["authority"]["federatedExchanges"] >= 1
    assert after["authority"]["byAudience"].get("api://AzureADTokenExchange", 0) >= 1


def test_bc_and_dataverse_refuse_the_managed_identity(stack: Stack) -> None:
    settings = _settings(stack)
    mi = TokenProvider.for_managed_identity(settings)
    session = requests.Session()
    session.trust_env = False
    for url, audience in (
        (f"{settings.bc_api_root}/companies", settings.bc_audience),
        (f"{settings.dataverse_api_root}/accounts?$top=1", settings.dataverse_audience),
    ):
        token = mi.get_token(f"{audience}/.default").token
        assert jwt.decode(token, options={"verify_signature": False})["appid"] == MI
        resp = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert resp.status_code == 401, (url, resp.status_code, resp.text[:300])
        assert "not authorized" in resp.headers.get("WWW-Authenticate", ""), resp.headers


async def test_table_storage_refuses_the_app_registration(stack: Stack) -> None:
    settings = _settings(stack)
    app = AsyncMsalCredential(TokenProvider(local_client_settings(settings)))
    async with TableServiceClient(
        settings.tables_endpoint, credential=app, connection_verify=settings.authority_ca, retry_total=0
    ) as client:
        with pytest.raises(HttpResponseError) as caught:
            async for _table in client.list_tables(results_per_page=1):
                break
    assert caught.value.status_code == 403
    assert caught.value.error_code == "AuthorizationPermissionMismatch"


async def test_service_bus_refuses_the_app_registration_and_sas(stack: Stack) -> None:
    settings = _settings(stack)
    app = AsyncMsalCredential(TokenProvider(local_client_settings(settings)))
    async with client_from_settings(settings, app, retry_total=0) as client:
        with pytest.raises(ServiceBusAuthenticationError):
            async with client.get_queue_sender(settings.servicebus_queue) as sender:
                await sender.send_messages([])
    # Local (SAS) authentication is off, as `disableLocalAuth: true` in the Bicep.
    assert settings.servicebus_connection_string
    async with ServiceBusClient.from_connection_string(settings.servicebus_connection_string, retry_total=0) as sas:
        with pytest.raises(ServiceBusError):
            async with sas.get_queue_receiver(settings.servicebus_queue) as receiver:
                await receiver.peek_messages(max_message_count=1)


def test_a_stack_calling_storage_with_the_app_credential_fails_health_naming_the_resource() -> None:
    """The mistake this work fixes: Azure resources called with the app registration's tokens (which hold no
    Azure roles). Storage and Service Bus refuse; health says which identity failed for which resource."""
    wrong = Stack.on_free_ports(
        env={"SYNC_SCHEDULED_SYNC": "false", "SYNC_AZURE_IDENTITY": "app_registration"}, readiness_timeout=60
    )
    try:
        wrong.start()
    except StackError as exc:
        pytest.fail(f"stack did not start: {exc}")
    try:
        session = requests.Session()
        session.trust_env = False
        report = session.get(wrong.host_url + "/api/health", timeout=60).json()
    finally:
        wrong.stop()
    assert report["status"] == "degraded"
    assert report["checks"]["tables"] == "app registration has no access", report
    assert report["checks"]["serviceBus"] == "app registration has no access", report
    assert report["checks"]["businessCentral"] == "ok" and report["checks"]["dataverse"] == "ok", report
    assert "local-dev-secret" not in str(report) and LOCAL_CLIENT_ID not in str(report)


def test_health_names_the_managed_identity_when_it_has_no_access(stack: Stack) -> None:
    """The other direction: BC/Dataverse in order, but the managed identity is not the one the resources
    accept (here: an identity the proxy and peer do not know)."""
    from shared.services.health import check_health

    settings = _settings(stack).model_copy(
        update={"managed_identity_client_id": "11111111-0000-0000-0000-00000000dead"}
    )
    report = asyncio.run(check_health(settings, limit_seconds=10))
    # The authority serves only identities assigned to "the app": no token at all for this one.
    assert report["checks"]["tables"] == "managed identity: no token", report
    assert report["checks"]["serviceBus"] in ("managed identity: no token", "managed identity has no access"), report
    # The app registration's federated sign-in needs the managed identity's token too.
    assert report["checks"]["businessCentral"].startswith("app registration"), report
