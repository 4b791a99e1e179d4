"""Health checks behind `GET /api/health`: cheap, concurrent, each bounded by a timeout.

Answers only "ok" or a short reason per dependency; never secrets, ids, versions or exception text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from shared.config import Settings, get_settings
from shared.errors import ConfigurationError, SyncError, TransientError, UnauthorizedError

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
OK = "ok"


async def tcp_reachable(host: str, port: int, limit_seconds: float = CHECK_TIMEOUT_SECONDS) -> str:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit_seconds)
    except TimeoutError:
        return "timeout"
    except OSError:
        return "unreachable"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return OK


def _url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme in ("https", "amqps", "sb") else 80
    return parts.hostname or "", parts.port or default


def servicebus_host_port(settings: Settings) -> tuple[str, int]:
    if settings.servicebus_namespace:
        return settings.servicebus_namespace, 5671
    fields = dict(
        item.split("=", 1) for item in (settings.servicebus_connection_string or "").split(";") if "=" in item
    )
    host, port = _url_host_port(fields.get("Endpoint", ""))
    if urlsplit(fields.get("Endpoint", "")).port is None:
        port = 5672 if fields.get("UseDevelopmentEmulator", "").lower() == "true" else 5671
    return host, port


async def check_tables(settings: Settings) -> str:
    """List at most one table: proves reachability, TLS trust and authorization in one round trip."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
    from azure.data.tables.aio import TableServiceClient

    kwargs: dict[str, Any] = {"retry_total": 0}  # a health check reports, it does not retry
    if settings.authority_ca:
        kwargs["connection_verify"] = settings.authority_ca  # the local CA signs Azurite's certificate
    if settings.tables_connection_string:
        client = TableServiceClient.from_connection_string(settings.tables_connection_string, **kwargs)
    else:
        try:
            from shared.identity import get_credential
        except ImportError:
            return "no credential"
        client = TableServiceClient(settings.tables_endpoint, credential=get_credential(), **kwargs)
    # A client per check (not a singleton): health is rare and the host may call it from different loops.
    try:
        async with client:
            async for _table in client.list_tables(results_per_page=1):
                break
    except (ClientAuthenticationError, UnauthorizedError):
        return "unauthorized"
    except (TransientError, ConfigurationError):  # raised by the credential: no token, so no call was made
        return "no token"
    except ServiceRequestError:
        return "unreachable"
    except HttpResponseError as exc:
        return f"error {exc.status_code}" if exc.status_code else "error"
    return OK


async def check_service(settings: Settings, name: str, *, use_runtime: bool, limit_seconds: float) -> str:
    """Reachable (TCP, fast), then one authenticated call through the service's own client: token,
    audience and routing all proven."""
    host, port = _url_host_port(settings.bc_base_url if name == "businessCentral" else settings.dataverse_url)
    reachable = await tcp_reachable(host, port, limit_seconds)
    if reachable != OK:
        return reachable
    from shared.bootstrap import get_runtime
    from shared.connectors.business_central import BusinessCentralClient
    from shared.connectors.dataverse import DataverseClient
    from shared.identity import AsyncMsalCredential, TokenProvider

    if use_runtime:
        runtime = await get_runtime()
        client, owned = (runtime.bc if name == "businessCentral" else runtime.dv), False
    else:  # explicit settings (tests, tools): a short-lived client of those settings
        credential = AsyncMsalCredential(TokenProvider.from_settings(settings))
        cls = BusinessCentralClient if name == "businessCentral" else DataverseClient
        client, owned = cls(settings, credential, retry_total_timeout=limit_seconds), True
    try:
        await client.ping()
    except UnauthorizedError:
        return "unauthorized"
    except TransientError:
        return "unavailable"
    except ConfigurationError:
        return "misconfigured"
    except SyncError:
        return "error"
    finally:
        if owned:
            await client.aclose()
    return OK


async def _bounded(name: str, check: Callable[[], Awaitable[str]], limit_seconds: float) -> str:
    try:
        return await asyncio.wait_for(check(), limit_seconds)
    except TimeoutError:
        return "timeout"
    except Exception:  # a broken check reports "error", never a 500 and never the exception text
        log.warning("Health check '%s' failed", name, exc_info=log.isEnabledFor(logging.DEBUG))
        return "error"


async def check_health(
    settings: Settings | None = None, *, limit_seconds: float = CHECK_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """`{"status": "ok"|"degraded", "checks": {"tables", "serviceBus", "businessCentral", "dataverse"}}`."""
    use_runtime = settings is None
    s = settings or get_settings()
    sb_host, sb_port = servicebus_host_port(s)
    checks: dict[str, Callable[[], Awaitable[str]]] = {
        "tables": lambda: check_tables(s),
        "serviceBus": lambda: tcp_reachable(sb_host, sb_port, limit_seconds),
        "businessCentral": lambda: check_service(
            s, "businessCentral", use_runtime=use_runtime, limit_seconds=limit_seconds
        ),
        "dataverse": lambda: check_service(s, "dataverse", use_runtime=use_runtime, limit_seconds=limit_seconds),
    }
    results = await asyncio.gather(*(_bounded(name, check, limit_seconds) for name, check in checks.items()))
    outcome = dict(zip(checks, results, strict=True))
    return {"status": OK if all(v == OK for v in outcome.values()) else "degraded", "checks": outcome}
