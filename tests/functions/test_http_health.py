"""GET /api/health: the blueprint through the local host, and the checks against closed/open ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import azure.functions as func
import pytest
from aiohttp.test_utils import TestClient, TestServer

from functions.http_health import bp
from local.host import LocalHost, functions_of
from shared.config import Settings
from shared.services import health


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def settings(**kw: str) -> Settings:
    return Settings.model_validate(
        {"TABLES_CONNECTION_STRING": f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
         f"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
         f"TableEndpoint=http://127.0.0.1:{closed_port()}/devstoreaccount1;", **kw}
    )  # fmt: skip


async def test_checks_report_unreachable_dependencies_as_degraded() -> None:
    port = closed_port()
    s = settings(
        BC_BASE_URL=f"http://127.0.0.1:{port}",
        DATAVERSE_URL=f"http://127.0.0.1:{port}",
        SERVICEBUS_CONNECTION_STRING=f"Endpoint=sb://127.0.0.1:{port};SharedAccessKey=x;UseDevelopmentEmulator=true",
    )
    report = await health.check_health(s, limit_seconds=3)
    assert report["status"] == "degraded"
    assert set(report["checks"]) == {"tables", "serviceBus", "businessCentral", "dataverse"}
    assert report["checks"]["businessCentral"] == "unreachable"
    assert report["checks"]["tables"] == "unreachable"
    assert "AccountKey" not in str(report)


async def test_reachable_port_is_not_enough_for_business_central_and_dataverse(listener: int) -> None:
    s = settings(
        BC_BASE_URL=f"http://127.0.0.1:{listener}",
        DATAVERSE_URL=f"http://127.0.0.1:{listener}/",
        SERVICEBUS_CONNECTION_STRING=f"Endpoint=sb://127.0.0.1:{listener};UseDevelopmentEmulator=true",
    )
    report = await health.check_health(s, limit_seconds=1)
    assert report["checks"]["serviceBus"] == "ok"
    # Something listens, but it is no BC/Dataverse: the authenticated call fails, so not "ok".
    assert report["checks"]["businessCentral"] != "ok" and report["checks"]["dataverse"] != "ok"
    assert report["status"] == "degraded"


def test_servicebus_endpoint_parsing() -> None:
    emulator = Settings.model_validate({"SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://h;UseDevelopmentEmulator=true"})
    assert health.servicebus_host_port(emulator) == ("h", 5672)
    azure = Settings.model_validate(
        {
            "SERVICEBUS_CONNECTION_STRING": None,
            "ServiceBusConnection__fullyQualifiedNamespace": "ns.servicebus.windows.net",
        }
    )
    assert health.servicebus_host_port(azure) == ("ns.servicebus.windows.net", 5671)


async def test_slow_check_times_out_without_failing_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hang(_s: Settings, *_args: object) -> str:
        await asyncio.sleep(10)
        return "ok"

    monkeypatch.setattr(health, "check_tables", hang)
    report = await health.check_health(settings(), limit_seconds=0.2)
    assert report["checks"]["tables"] == "timeout" and report["status"] == "degraded"


async def test_health_endpoint_is_anonymous_get_through_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake(settings: Settings | None = None, **_: object) -> dict[str, object]:
        return {"status": "ok", "checks": dict.fromkeys(("tables", "serviceBus", "businessCentral", "dataverse"), "ok")}

    monkeypatch.setattr("functions.http_health.check_health", fake)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(bp)
    host = LocalHost(functions_of(app), function_key="k", run_timers=False)
    async with TestClient(TestServer(host.create_app(), host="127.0.0.1", port=0)) as client:
        resp = await client.get("/api/health")  # no key
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["status"] == "ok"
        assert (await client.post("/api/health")).status == 405
