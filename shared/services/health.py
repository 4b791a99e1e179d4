"""Health checks behind `GET /api/health`: cheap, concurrent, each bounded by a timeout.

Answers only "ok" or a short reason per dependency; never secrets, ids, versions or exception text. A reason
about authorization names the identity that was used for that resource, e.g. `"managed identity has no
access"` for tables or `"app registration: no token"` for Dataverse, so an operator knows which role
assignment, federated credential or application user to fix. The credentials are the composition root's
(`shared.bootstrap`), the same objects the service's calls use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.config import Settings, get_settings
from shared.errors import ConfigurationError, SyncError, TransientError, UnauthorizedError

if TYPE_CHECKING:
    from shared.identity import Credentials

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


def no_access(label: str) -> str:
    return f"{label} has no access"


def no_token(label: str) -> str:
    return f"{label}: no token"


def servicebus_host_port(settings: Settings) -> tuple[str, int]:
    if settings.servicebus_namespace:
        host, _, port = settings.servicebus_namespace.partition(":")
        return host, int(port) if port.isdigit() else (5671 if settings.servicebus_tls else 5672)
    fields = dict(
        item.split("=", 1) for item in (settings.servicebus_connection_string or "").split(";") if "=" in item
    )
    host, port = _url_host_port(fields.get("Endpoint", ""))
    if urlsplit(fields.get("Endpoint", "")).port is None:
        port = 5672 if fields.get("UseDevelopmentEmulator", "").lower() == "true" else 5671
    return host, port


async def _credentials(settings: Settings, use_runtime: bool) -> Credentials:
    """The composition root's credentials: the running service's, or (explicit settings: tests, tools) the
    same composition over those settings."""
    if use_runtime:
        from shared.bootstrap import get_runtime

        runtime = await get_runtime()
        if runtime.credentials is not None:
            return runtime.credentials
    from shared.identity import build_credentials

    return build_credentials(settings)


async def check_tables(settings: Settings, credentials: Credentials | None = None) -> str:
    """List at most one table: proves reachability, TLS trust and authorization in one round trip."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
    from azure.data.tables.aio import TableServiceClient

    kwargs: dict[str, Any] = {"retry_total": 0}  # a health check reports, it does not retry
    if settings.authority_ca:
        kwargs["connection_verify"] = settings.authority_ca  # the local CA signs Azurite's certificate
    label = "shared key"
    if settings.tables_connection_string:
        client = TableServiceClient.from_connection_string(settings.tables_connection_string, **kwargs)
    else:
        if credentials is None:
            return "no credential"
        label = credentials.azure_label
        client = TableServiceClient(settings.tables_endpoint, credential=credentials.azure, **kwargs)
    # A client per check (not a singleton): health is rare and the host may call it from different loops.
    try:
        async with client:
            async for _table in client.list_tables(results_per_page=1):
                break
    except (ClientAuthenticationError, UnauthorizedError):
        return no_access(label)
    except (TransientError, ConfigurationError):  # raised by the credential: no token, so no call was made
        return no_token(label)
    except ServiceRequestError:
        return "unreachable"
    except HttpResponseError as exc:
        if exc.status_code in (401, 403):  # 403 AuthorizationPermissionMismatch: a token, but no data role
            return no_access(label)
        return f"error {exc.status_code}" if exc.status_code else "error"
    return OK


async def check_servicebus(settings: Settings, credentials: Credentials | None, limit_seconds: float) -> str:
    """TCP first; with an identity-based connection, one authenticated peek (a CBS put-token and a link to the
    queue), so a missing role shows here and not only when work is sent."""
    host, port = servicebus_host_port(settings)
    reachable = await tcp_reachable(host, port, limit_seconds)
    if reachable != OK or not settings.servicebus_namespace or credentials is None:
        return reachable
    from azure.servicebus.exceptions import (
        ServiceBusAuthenticationError,
        ServiceBusAuthorizationError,
        ServiceBusError,
    )

    from shared.messaging.publisher import client_from_settings

    label = credentials.azure_label
    try:
        async with client_from_settings(settings, credentials.azure, retry_total=0) as client:
            async with client.get_queue_receiver(settings.servicebus_queue) as receiver:
                await receiver.peek_messages(max_message_count=1)
    except (TransientError, ConfigurationError):
        return no_token(label)
    except ServiceBusError as exc:
        # The SDK wraps a credential's failure ("Unexpected error occurred"): no token, so nothing was sent.
        if _caused_by(exc, (TransientError, ConfigurationError)):
            return no_token(label)
        if isinstance(exc, (ServiceBusAuthenticationError, ServiceBusAuthorizationError)):
            return no_access(label)
        return "error"
    return OK


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the chain is short; bounded against cycles
        if seen is None:
            return False
        if isinstance(seen, types):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def check_service(
    settings: Settings,
    name: str,
    *,
    use_runtime: bool,
    limit_seconds: float,
    credentials: Credentials | None = None,
) -> str:
    """Reachable (TCP, fast), then one authenticated call through the service's own client: token,
    audience and routing all proven."""
    host, port = _url_host_port(settings.bc_base_url if name == "businessCentral" else settings.dataverse_url)
    reachable = await tcp_reachable(host, port, limit_seconds)
    if reachable != OK:
        return reachable
    from shared.bootstrap import get_runtime
    from shared.connectors.business_central import BusinessCentralClient
    from shared.connectors.dataverse import DataverseClient

    if use_runtime:
        runtime = await get_runtime()
        client, owned = (runtime.bc if name == "businessCentral" else runtime.dv), False
        label = runtime.credentials.apps_label if runtime.credentials else "app registration"
    else:  # explicit settings (tests, tools): a short-lived client of those settings
        credentials = credentials or await _credentials(settings, use_runtime=False)
        cls = BusinessCentralClient if name == "businessCentral" else DataverseClient
        client, owned = cls(settings, credentials.apps, retry_total_timeout=limit_seconds), True
        label = credentials.apps_label
    try:
        await client.ping()
    except UnauthorizedError:
        return no_access(label)
    except TransientError:
        return "unavailable"
    except ConfigurationError:
        return no_token(label)
    except SyncError:
        return "error"
    finally:
        if owned:
            await client.aclose()
    return OK


async def _app_check(
    settings: Settings, name: str, use_runtime: bool, limit_seconds: float, credentials: Credentials | None
) -> str:
    if credentials is None:
        return "app registration: misconfigured"
    return await check_service(
        settings, name, use_runtime=use_runtime, limit_seconds=limit_seconds, credentials=credentials
    )


async def _bounded(name: str, check: Callable[[], Awaitable[str]], limit_seconds: float) -> str:
    try:
        return await asyncio.wait_for(check(), limit_seconds)
    except TimeoutError:
        return "timeout"
    except Exception:  # a broken check reports "error", never a 500 and never the exception text
        log.warning("Health check '%s' failed", name, exc_info=log.isEnabledFor(logging.DEBUG))
        return "error"


def missing_secrets(s: Settings) -> dict[str, str]:
    """The health check that names each unset secret setting (webhooks of that side are refused meanwhile)."""
    missing = {}
    if not s.bc_webhook_client_state:
        missing["businessCentral"] = "BC_WEBHOOK_CLIENT_STATE"
    if not s.dataverse_webhook_key:
        missing["dataverse"] = "DATAVERSE_WEBHOOK_KEY"
    return missing


async def check_health(
    settings: Settings | None = None, *, limit_seconds: float = CHECK_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """`{"status": "ok"|"degraded", "checks": {"tables", "serviceBus", "businessCentral", "dataverse"}}`."""
    use_runtime = settings is None
    s = settings or get_settings()
    try:
        credentials: Credentials | None = await _credentials(s, use_runtime)
    except ConfigurationError:  # e.g. SYNC_AUTH_MODE=managed_identity: reported per check, not a 500
        credentials = None
    checks: dict[str, Callable[[], Awaitable[str]]] = {
        "tables": lambda: check_tables(s, credentials),
        "serviceBus": lambda: check_servicebus(s, credentials, limit_seconds),
        "businessCentral": lambda: _app_check(s, "businessCentral", use_runtime, limit_seconds, credentials),
        "dataverse": lambda: _app_check(s, "dataverse", use_runtime, limit_seconds, credentials),
    }
    results = await asyncio.gather(*(_bounded(name, check, limit_seconds) for name, check in checks.items()))
    outcome = dict(zip(checks, results, strict=True))
    for name, setting in missing_secrets(s).items():
        if outcome[name] == OK:
            outcome[name] = f"{setting} is not set"
    answer: dict[str, Any] = {"status": OK if all(v == OK for v in outcome.values()) else "degraded", "checks": outcome}
    notes = await _notes() if use_runtime else []
    if notes:
        answer["notes"] = notes
    return answer


async def _notes() -> list[str]:
    """What this process learned that an operator should know; it changes no status."""
    from shared.bootstrap import get_runtime

    runtime = await get_runtime()
    return [
        f"dataverse: change tracking is not enabled for {entity}; its changes are read by modifiedon "
        "and deletions there are not seen by scheduled syncs"
        for entity in sorted(getattr(runtime.dv, "untracked", ()))
    ]
