"""The proxy as an aiohttp app: check the token, then forward to Azurite (see the package docstring)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import uuid
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from local.simcore import TokenError, TokenValidator
from shared.config import LOCAL_TENANT_ID

# Hop-by-hop and recomputed headers (RFC 9110 7.6.1) are not forwarded.
_DROP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"})
STORAGE_ERRORS = {
    "InvalidAuthenticationInfo": (401, "Server failed to authenticate the request. {reason}"),
    "AuthorizationPermissionMismatch": (
        403,
        "This request is not authorized to perform this operation using this permission.",
    ),
    "KeyBasedAuthenticationNotPermitted": (403, "Key based authentication is not permitted on this storage account."),
}
PROXY_STATE = web.AppKey("tables_proxy_state", dict)


def _error(code: str, reason: str = "") -> web.Response:
    status, text = STORAGE_ERRORS[code]
    request_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    body = {
        "odata.error": {
            "code": code,
            "message": {"lang": "en-US", "value": f"{text.format(reason=reason)}\nRequestId:{request_id}\nTime:{now}"},
        }
    }
    headers = {"x-ms-error-code": code, "x-ms-request-id": request_id}
    if status == 401:
        headers["WWW-Authenticate"] = (
            f"Bearer authorization_uri=https://login.microsoftonline.com/{LOCAL_TENANT_ID}/oauth2/authorize "
            "resource_id=https://storage.azure.com"
        )
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def create_proxy_app(
    *, backend: str, auth: TokenValidator, backend_ssl: ssl.SSLContext | bool = True
) -> web.Application:
    """Forward to `backend` (`https://127.0.0.1:<azurite port>`) what `auth` accepts."""
    stats: dict[str, Any] = {"forwarded": 0, "refused": Counter()}
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[PROXY_STATE] = stats
    session: dict[str, aiohttp.ClientSession] = {}

    async def startup(_app: web.Application) -> None:
        connector = aiohttp.TCPConnector(ssl=backend_ssl, limit=64)
        session["client"] = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False)

    async def cleanup(_app: web.Application) -> None:
        await session["client"].close()

    async def stats_handler(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "forwarded": stats["forwarded"],
                "refused": dict(stats["refused"]),
                "acceptedApps": dict(auth.accepted),
                "refusedApps": dict(auth.refused_apps),
            }
        )

    async def forward(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() in ("sharedkey", "sharedkeylite") or "sig=" in request.query_string:
            stats["refused"]["KeyBasedAuthenticationNotPermitted"] += 1
            return _error("KeyBasedAuthenticationNotPermitted")
        if scheme.lower() != "bearer" or not token.strip():
            stats["refused"]["InvalidAuthenticationInfo"] += 1
            return _error("InvalidAuthenticationInfo", "A bearer token is required.")
        try:
            await auth.validate_async(token.strip())
        except TokenError as e:
            code = "AuthorizationPermissionMismatch" if e.forbidden else "InvalidAuthenticationInfo"
            stats["refused"][code] += 1
            return _error(code, e.reason)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        body = await request.read()
        async with session["client"].request(
            request.method, backend + request.path_qs, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
        stats["forwarded"] += 1
        return web.Response(status=upstream.status, body=payload, headers=out)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_get("/_proxy/stats", stats_handler)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app
