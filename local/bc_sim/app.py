"""aiohttp application of the Business Central API v2.0 simulator."""

from __future__ import annotations

import asyncio
import collections
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from aiohttp import web
from multidict import CIMultiDict

from local.bc_sim import metadata
from local.bc_sim.api import Api, SimRequest, SimResponse, error_response, route_of
from local.bc_sim.entities import SCHEMAS
from local.bc_sim.store import BCError, Store
from local.bc_sim.webhooks import Webhooks, WebhookSettings
from local.simcore import (
    REASON_INJECTED,
    REASON_THROTTLED_CONCURRENCY,
    REASON_THROTTLED_EXECUTION,
    REASON_THROTTLED_REQUESTS,
    REASON_UNAUTHORIZED,
    ServiceLimits,
    TokenValidator,
    install_sim_core,
)
from shared.config import LOCAL_TENANT_ID

BC_AUDIENCE = "https://api.businesscentral.dynamics.com"
MAX_BATCH_REQUESTS = 100
PREFIX_RE = re.compile(r"^/v2\.0/([^/]+)/([^/]+)/api/v2\.0/?(.*)$")

STORE = web.AppKey("bc_store", Store)
WEBHOOKS = web.AppKey("bc_webhooks", Webhooks)


def bc_limits() -> ServiceLimits:
    """BC online's documented limits: 6,000 requests per 5 minutes per user; 5 requests run at once and
    up to 95 more wait in a queue (``max_concurrent`` counts running + queued; beyond it -> 429)."""
    return ServiceLimits(requests_per_window=6000, window_seconds=300, max_concurrent=100, retry_after_seconds=1)


def bc_error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    if reason == REASON_UNAUTHORIZED:
        code = "Authentication_InvalidCredentials"
    elif reason in (REASON_THROTTLED_REQUESTS, REASON_THROTTLED_CONCURRENCY, REASON_THROTTLED_EXECUTION) or (
        status == 429
    ):
        code = "Application_TooManyRequests"
    elif reason == REASON_INJECTED and status == 503:
        code = "ServiceUnavailable"
    elif status >= 500:
        code = "InternalServerError"
    else:
        code = "BadRequest"
    return {"error": {"code": code, "message": message}}


def _route_key(request: web.Request) -> str:
    m = PREFIX_RE.match(request.path)
    return route_of(m.group(3)) if m and m.group(3) else "(other)"


def _user_of(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        try:
            claims = jwt.decode(header[7:].strip(), options={"verify_signature": False})
            return str(claims.get("oid") or claims.get("appid") or claims.get("sub") or "anonymous")
        except jwt.PyJWTError:
            pass
    return "anonymous"


def create_app(
    *,
    auth: TokenValidator | None = None,
    limits: ServiceLimits | None = None,
    tenant: str | None = LOCAL_TENANT_ID,
    environments: Sequence[str] = ("Production", "Sandbox"),
    max_running: int = 5,
    notify_delay: float = 30.0,
    collection_threshold: int = 1000,
    subscription_lifetime_seconds: float = 3 * 24 * 3600,
    handshake_timeout: float = 10.0,
    webhook_time_scale: float = 1.0,
) -> web.Application:
    """The BC simulator. ``auth=None``: no token needed. ``tenant=None`` accepts any tenant in the URL.
    ``max_running`` requests per user run at once; the rest queue (up to ``limits.max_concurrent`` in all)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    settings = WebhookSettings(
        notify_delay,
        collection_threshold,
        subscription_lifetime_seconds,
        handshake_timeout,
        time_scale=webhook_time_scale,
    )
    store = Store()
    webhooks = Webhooks(store, settings)
    store.listener = webhooks.on_change
    api = Api(store)
    app[STORE] = store
    app[WEBHOOKS] = webhooks
    envs = {e.lower() for e in environments}
    running: dict[str, asyncio.Semaphore] = collections.defaultdict(lambda: asyncio.Semaphore(max_running))

    def reset_data() -> None:
        store.reset()
        webhooks.reset()

    install_sim_core(
        app,
        name="bc",
        route_key=_route_key,
        error_body=bc_error_body,
        auth=auth,
        limits=limits if limits is not None else bc_limits(),
        on_reset_data=reset_data,
        extra_stats=webhooks.stats,
    )

    async def on_startup(_: web.Application) -> None:
        await webhooks.start()

    async def on_cleanup(_: web.Application) -> None:
        await webhooks.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)

    async def entry(request: web.Request) -> web.StreamResponse:
        tenant_seg, env, tail = (
            request.match_info["tenant"],
            request.match_info["environment"],
            request.match_info["tail"],
        )
        parts = [request.match_info[k] for k in ("publisher", "group", "version") if k in request.match_info]
        api_route = "/".join(parts) or "v2.0"
        if api_route != "v2.0" and api_route not in metadata.known_apis():
            return _json(SimResponse(404, _err("BadRequest_NotFound", f"No API is published at 'api/{api_route}'.")))
        if tenant is not None and tenant_seg.lower() != tenant.lower():
            return _json(SimResponse(404, _err("BadRequest_NotFound", f"The tenant '{tenant_seg}' was not found.")))
        if env.lower() not in envs:
            return _json(
                SimResponse(
                    404,
                    _err("BadRequest_NotFound", f"The environment '{env}' does not exist for tenant '{tenant_seg}'."),
                )
            )
        base_url = f"{request.scheme}://{request.host}/v2.0/{tenant_seg}/{env}/api/{api_route}"
        async with running[_user_of(request)]:  # BC runs 5 requests per user at once; others wait here
            body, problem = await _read_body(request)
            if problem is not None:
                return _json(problem)
            if tail == "$metadata":
                if request.method != "GET":
                    return _json(SimResponse(405, _err("BadRequest_MethodNotAllowed", "Use GET for $metadata.")))
                return web.Response(
                    text=metadata.edmx(api_route), content_type="application/xml", headers={"OData-Version": "4.0"}
                )
            if tail == "$batch":
                if request.method != "POST":
                    return _json(SimResponse(405, _err("BadRequest_MethodNotAllowed", "Use POST for $batch.")))
                return _json(_batch(api, request, body, base_url, api_route))
            if api_route == "v2.0" and (tail == "subscriptions" or tail.startswith("subscriptions(")):
                return _json(await _subscriptions(webhooks, request, tail, body))
            req = SimRequest(request.method, tail, request.query, request.headers, body, base_url, api_route)
            return _json(api.handle(req))

    app.router.add_route("*", "/v2.0/{tenant}/{environment}/api/v2.0/{tail:.*}", entry)
    # Custom API pages (an extension's APIPublisher/APIGroup/APIVersion).
    app.router.add_route("*", "/v2.0/{tenant}/{environment}/api/{publisher}/{group}/{version}/{tail:.*}", entry)
    app.router.add_post("/_sim/seed", _seed)
    return app


def _err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _json(resp: SimResponse) -> web.Response:
    headers = dict(resp.headers)
    if resp.body is None:
        headers.pop("Content-Type", None)
        return web.Response(status=resp.status, headers=headers)
    ctype = headers.pop("Content-Type", "application/json")
    return web.Response(
        status=resp.status,
        body=json.dumps(resp.body, separators=(",", ":")).encode(),
        headers={**headers, "Content-Type": ctype},
    )


async def _read_body(request: web.Request) -> tuple[Any, SimResponse | None]:
    if request.method not in ("POST", "PATCH", "PUT") or not request.can_read_body:
        return None, None
    raw = await request.read()
    if not raw.strip():
        return None, None
    try:
        return json.loads(raw), None
    except ValueError:
        return None, SimResponse(400, _err("BadRequest", "The request body is not valid JSON."))


# ---------------------------------------------------------------------------------------------- subscriptions
_SUB_KEY_RE = re.compile(r"^subscriptions\('?([^')]*)'?\)$")


async def _subscriptions(webhooks: Webhooks, request: web.Request, tail: str, body: Any) -> SimResponse:
    try:
        if tail == "subscriptions":
            if request.method == "GET":
                return SimResponse(200, {"value": webhooks.list()})
            if request.method == "POST":
                return SimResponse(201, await webhooks.create(body, _user_of(request)))
            raise BCError(405, "BadRequest_MethodNotAllowed", f"'{request.method}' is not allowed on subscriptions.")
        m = _SUB_KEY_RE.match(tail)
        if not m:
            raise BCError(404, "BadRequest_NotFound", f"No HTTP resource was found that matches the URI '{tail}'.")
        sid = m.group(1)
        if request.method == "GET":
            return SimResponse(200, webhooks.get(sid))
        if request.method == "PATCH":
            return SimResponse(200, await webhooks.renew(sid, body, request.headers.get("If-Match")))
        if request.method == "DELETE":
            webhooks.delete(sid)
            return SimResponse(204)
        raise BCError(405, "BadRequest_MethodNotAllowed", f"'{request.method}' is not allowed on a subscription.")
    except BCError as err:
        return error_response(err)


# ---------------------------------------------------------------------------------------------- $batch
def _batch(api: Api, request: web.Request, body: Any, base_url: str, api_route: str = "v2.0") -> SimResponse:
    """BC's JSON $batch. Default: stop at the first failed request (``Prefer: odata.continue-on-error``
    goes on). ``Isolation: snapshot``: all-or-nothing; every request is answered (Learn "Using OData
    $batch": the sample returns 200, 204 and 400 together) and on any failure every change is rolled back."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        return SimResponse(400, _err("BadRequest", 'The $batch body must be {"requests": [...]}.'))
    items: list[Any] = body["requests"]
    if len(items) > MAX_BATCH_REQUESTS:
        return SimResponse(
            400,
            _err(
                "BadRequest",
                f"The batch contains {len(items)} operations; the maximum is {MAX_BATCH_REQUESTS}.",
            ),
        )
    snapshot = request.headers.get("Isolation", "").strip().lower() == "snapshot"
    continue_on_error = "continue-on-error" in request.headers.get("Prefer", "").lower()
    store = api.store
    responses: list[dict[str, Any]] = []
    status_by_id: dict[str, int] = {}
    if snapshot:
        store.begin()
    failed: dict[str, Any] | None = None
    for index, item in enumerate(items):
        rid = str(item.get("id", index + 1)) if isinstance(item, dict) else str(index + 1)
        resp = _batch_one(api, item, base_url, status_by_id, api_route)
        status_by_id[rid] = resp.status
        entry: dict[str, Any] = {"id": rid, "status": resp.status, "headers": resp.headers}
        if resp.body is not None:
            entry["body"] = resp.body
        responses.append(entry)
        if resp.status >= 400:
            failed = entry
            if not snapshot and not continue_on_error:
                break
    if snapshot:
        if failed is not None:
            store.rollback()
        else:
            store.commit()
    return SimResponse(200, {"responses": responses}, {"OData-Version": "4.0"})


def _batch_one(
    api: Api, item: Any, base_url: str, status_by_id: dict[str, int], api_route: str = "v2.0"
) -> SimResponse:
    if not isinstance(item, dict) or not isinstance(item.get("method"), str) or not isinstance(item.get("url"), str):
        return SimResponse(400, _err("BadRequest", "Each batch request needs id, method and url."))
    for dep in item.get("dependsOn") or []:
        if status_by_id.get(str(dep), 599) >= 400:
            return SimResponse(424, _err("BadRequest", f"The request depends on '{dep}', which failed."))
    url = item["url"]
    path_part, _, query_part = url.partition("?")
    if "://" in path_part:
        path_part = urlsplit(path_part).path
    marker = path_part.find(f"api/{api_route}/")
    if marker >= 0:
        path_part = path_part[marker + len(f"api/{api_route}/") :]
    path_part = path_part.lstrip("/")
    if path_part.startswith(("subscriptions", "$batch")):
        return SimResponse(400, _err("BadRequest", f"'{path_part}' is not supported inside a $batch."))
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in (item.get("headers") or {}).items():
        headers[str(key)] = str(value)
    query = dict(parse_qsl(query_part, keep_blank_values=True))
    req = SimRequest(item["method"].upper(), path_part, query, headers, item.get("body"), base_url, api_route)
    return api.handle(req)


# ---------------------------------------------------------------------------------------------- /_sim/seed
async def _seed(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    entity, count = body.get("entity"), body.get("count", 1)
    prefix, fields = body.get("prefix", "Demo"), body.get("fields") or {}
    company = body.get("company") or next(iter(store.companies))
    if entity not in SCHEMAS:
        return web.json_response({"error": f"entity must be one of {sorted(SCHEMAS)}"}, status=400)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1_000_000:
        return web.json_response({"error": "count must be an integer 0..1000000"}, status=400)
    if not isinstance(prefix, str) or not isinstance(fields, dict) or not isinstance(company, str):
        return web.json_response({"error": "prefix must be a string, fields an object, company a string"}, status=400)
    try:
        ids = store.seed(company, entity, count, prefix, fields)
    except BCError as err:
        return web.json_response(err.body(), status=err.status)
    result: dict[str, Any] = {"created": len(ids), "company": store.company(company)["id"]}
    if len(ids) <= 1000:
        result["ids"] = ids
    return web.json_response(result)
