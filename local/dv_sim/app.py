"""aiohttp application of the Dataverse simulator: routes, sim core, `/_sim/seed` and sim-only controls."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from local.dv_sim.batch import execute_batch
from local.dv_sim.service import API_PREFIX, DataverseService, DvRequest, DvResponse, error_json, route_key_of
from local.dv_sim.store import DvError, Store
from local.simcore import (
    REASON_INJECTED,
    REASON_THROTTLED_CONCURRENCY,
    REASON_THROTTLED_EXECUTION,
    REASON_THROTTLED_REQUESTS,
    REASON_UNAUTHORIZED,
    SIM_ROWS,
    ServiceLimits,
    TokenValidator,
    install_sim_core,
)

DV_AUDIENCE = "http://127.0.0.1:7082"
SERVICE = web.AppKey("dv_service", DataverseService)
HEADERS = web.AppKey("dv_headers", dict)
MAX_SEED = 1_000_000

_THROTTLE_CODES = {
    REASON_THROTTLED_REQUESTS: "0x80072322",
    REASON_THROTTLED_EXECUTION: "0x80072321",
    REASON_THROTTLED_CONCURRENCY: "0x80072326",
}


def dataverse_limits() -> ServiceLimits:
    """Dataverse's documented per-user limits: 6,000 requests and 1,200 s execution per 5 min, 52 concurrent."""
    return ServiceLimits(
        requests_per_window=6000, window_seconds=300, max_concurrent=52, execution_seconds_per_window=1200
    )


def _error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    if reason in _THROTTLE_CODES:
        return error_json(_THROTTLE_CODES[reason], message)
    if reason == REASON_UNAUTHORIZED:
        return error_json("0x80072560", message)
    if reason == REASON_INJECTED and status == 429:
        return error_json("0x80072322", "Number of requests exceeded the limit (injected by the simulator).")
    return error_json("0x80040216", message)


def _route_key(request: web.Request) -> str:
    path = request.path
    if path.startswith(API_PREFIX):
        return route_key_of(path[len(API_PREFIX) :].lstrip("/"))
    return "other"


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _to_web(response: DvResponse) -> web.Response:
    headers = {"OData-Version": "4.0", **response.headers}
    if response.body is None:
        return web.Response(status=response.status, headers=headers)
    if isinstance(response.body, str):
        return web.Response(status=response.status, body=response.body.encode(), headers=headers)
    headers.setdefault("Content-Type", "application/json; odata.metadata=minimal")
    return web.Response(status=response.status, body=json.dumps(response.body).encode(), headers=headers)


async def _api(request: web.Request) -> web.Response:
    body = await request.read()
    service = request.app[SERVICE]
    rows = service.bulk_rows
    try:
        return await _api_call(request, service, body)
    finally:
        request[SIM_ROWS] = service.bulk_rows - rows  # the server cost per row (ServiceLimits) of this request


async def _api_call(request: web.Request, service: Any, body: bytes) -> web.Response:
    path = request.match_info["path"]
    if path.strip("/") == "$batch":
        if request.method != "POST":
            return _to_web(DvResponse(405, error_json("0x80060888", "$batch requires POST.")))
        try:
            answer = execute_batch(
                service,
                request.headers.get("Content-Type", ""),
                body,
                _base(request),
                request.headers.get("Prefer", ""),
            )
        except DvError as exc:
            answer = DvResponse(exc.status, error_json(exc.code, exc.message))
        return _to_web(answer)
    dv_request = DvRequest(
        method=request.method,
        path=path,
        query=MultiDict(request.query),
        headers=CIMultiDict(request.headers),
        body=body,
        base=_base(request),
    )
    return _to_web(service.execute(dv_request))


async def _seed(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response(error_json("0x80048d19", "body must be JSON"), status=400)
    entity, count = body.get("entity"), body.get("count", 1)
    prefix, fields = body.get("prefix", "Demo"), body.get("fields") or {}
    if not isinstance(entity, str) or not isinstance(count, int) or not 1 <= count <= MAX_SEED:
        return web.json_response(error_json("0x80048d19", f"give entity and count (1..{MAX_SEED})"), status=400)
    if not isinstance(prefix, str) or not isinstance(fields, dict):
        return web.json_response(error_json("0x80048d19", "prefix must be a string, fields an object"), status=400)
    try:
        ids = service.seed(entity, count, prefix, fields)
    except DvError as exc:
        return web.json_response(error_json(exc.code, exc.message), status=exc.status)
    answer: dict[str, Any] = {"created": len(ids)}
    if len(ids) <= 1000:
        answer["ids"] = ids
    return web.json_response(answer)


async def _expire_deltatokens(request: web.Request) -> web.Response:
    store = request.app[SERVICE].store
    store.min_delta_version = store.version + 1
    return web.json_response({"minDeltaToken": store.min_delta_version})


async def _config(request: web.Request) -> web.Response:
    """GET/POST `{"bulkUnsupported": [...], "untracked": [...], "dopHint": n}`: simulator switches for client
    fallback tests (`untracked`: entity sets without change tracking enabled)."""
    service = request.app[SERVICE]
    core_headers = request.app[HEADERS]
    if request.method == "POST":
        body = await request.json()
        if "bulkUnsupported" in body:
            service.bulk_unsupported = {str(t) for t in body["bulkUnsupported"]}
        if "untracked" in body:
            service.untracked = {str(t) for t in body["untracked"]}
        if "dopHint" in body:
            core_headers["x-ms-dop-hint"] = str(int(body["dopHint"]))
    return web.json_response(
        {
            "bulkUnsupported": sorted(service.bulk_unsupported),
            "untracked": sorted(service.untracked),
            "dopHint": int(core_headers["x-ms-dop-hint"]),
        }
    )


# Learn "Compose HTTP requests and handle errors", Maximum URL length: "The maximum length of URL accepted is
# 32 KB (32768 characters)" ($batch bodies may carry URLs up to 64 KB).
MAX_URL_CHARS = 32_768


@web.middleware
async def _url_length(request: web.Request, handler: Any) -> web.StreamResponse:
    if len(str(request.url)) > MAX_URL_CHARS:
        message = f"The URL is longer than the {MAX_URL_CHARS} characters Dataverse accepts."
        return web.json_response(_error_body(414, "url_too_long", message), status=414)
    return await handler(request)


def create_app(
    *,
    auth: TokenValidator | None = None,
    limits: ServiceLimits | None = None,
    dop_hint: int = 4,
    bulk_unsupported: Iterable[str] = ("systemusers",),
    untracked: Iterable[str] = (),
) -> web.Application:
    """The Dataverse Web API simulator. `auth=None`: no token required. `limits`: default Dataverse's."""
    # aiohttp refuses request lines over 8,190 bytes; Dataverse accepts URLs up to MAX_URL_CHARS.
    app = web.Application(
        client_max_size=256 * 1024 * 1024,
        handler_args={"max_line_size": MAX_URL_CHARS + 64},
        middlewares=[_url_length],
    )
    store = Store()
    service = DataverseService(store, bulk_unsupported=bulk_unsupported, untracked=untracked)
    app[SERVICE] = service
    core = install_sim_core(
        app,
        name="dataverse",
        route_key=_route_key,
        error_body=_error_body,
        auth=auth,
        limits=limits if limits is not None else dataverse_limits(),
        on_reset_data=store.clear,
        extra_headers={"x-ms-dop-hint": str(dop_hint)},
        extra_stats=lambda: {"rows": {name: len(t.rows) for name, t in store.tables.items()}, "version": store.version},
    )
    app[HEADERS] = core.extra_headers  # the same dict the middleware reads
    app.router.add_post("/_sim/seed", _seed)
    app.router.add_post("/_sim/deltatokens/expire", _expire_deltatokens)
    app.router.add_get("/_sim/config", _config)
    app.router.add_post("/_sim/config", _config)
    app.router.add_route("*", API_PREFIX + "/{path:.*}", _api)
    return app
