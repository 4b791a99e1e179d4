"""Shared core of the local service simulators (Business Central and Dataverse).

`install_sim_core(app, ...)` adds one middleware and the unauthenticated control routes under `/_sim/`:

- `GET /_sim/stats` -> `{"requests", "byRoute", "throttled", "unauthorized", "faultsInjected", "inFlightMax", ...}`
- `POST /_sim/reset[?data=true]` clears stats, faults, latency and throttling windows (`data=true`: also data)
- `POST /_sim/faults` `{"status", "count", "retryAfter", "route"}` or `{"latencyMs": N}`; `DELETE /_sim/faults`
- `GET|POST /_sim/limits` reads / changes the `ServiceLimits` at run time (benchmarks, tests)

The middleware, for every request outside `/_sim/`, in this order: counts it (total and by route key), answers
an injected fault if one matches, validates the bearer token (401 + `WWW-Authenticate` like Entra-protected
APIs), applies service protection per user (sliding request window, combined execution time, concurrency ->
429 + `Retry-After`), adds the injected latency, then runs the handler.

`error_body(status, reason, message)` renders the service's own error JSON; `reason` is one of the `REASON_*`
constants below so each simulator can choose its service's error code (e.g. Dataverse `0x80072322`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import jwt
import requests
from aiohttp import web

from shared.config import LOCAL_DIR, LOCAL_TENANT_ID

log = logging.getLogger(__name__)

# Reasons passed to `error_body` so each service can choose its own error code.
REASON_UNAUTHORIZED = "unauthorized"
REASON_THROTTLED_REQUESTS = "throttled_requests"  # too many requests in the window
REASON_THROTTLED_EXECUTION = "throttled_execution"  # combined execution time exceeded
SIM_ROWS = web.RequestKey("sim_rows", int)  # rows a bulk operation wrote (set by a handler; charged per row)
REASON_THROTTLED_CONCURRENCY = "throttled_concurrency"  # too many requests in flight
REASON_INJECTED = "injected"  # a fault injected through /_sim/faults

DEFAULT_AUTHORITY = "https://127.0.0.1:7443"
DEFAULT_JWKS_URL = f"{DEFAULT_AUTHORITY}/{LOCAL_TENANT_ID}/discovery/v2.0/keys"

ErrorBody = Callable[[int, str, str], dict[str, Any]]
RouteKey = Callable[[web.Request], str]


# --------------------------------------------------------------------------------------------------- limits
@dataclass
class ServiceLimits:
    """Service protection limits per user. Defaults are Dataverse's documented ones (per 5 minutes)."""

    requests_per_window: int = 6000
    window_seconds: float = 300
    max_concurrent: int = 52
    # Retry-After for concurrency 429s (window 429s say when the window frees instead).
    retry_after_seconds: float = 1.0
    # Combined handler execution time per user per window (Dataverse: 1,200 s / 5 min); None = unlimited.
    execution_seconds_per_window: float | None = None
    # Server cost charged to that budget per row a bulk operation writes (CreateMultiple/UpdateMultiple/
    # UpsertMultiple targets, $batch operations), on top of the handler's own time: the simulator writes a
    # row in microseconds where Dataverse spends milliseconds (plug-ins, auditing, indexes). 0 = handler CPU time only.
    execution_seconds_per_row: float = 0.0

    _CAMEL = {
        "requestsPerWindow": "requests_per_window",
        "windowSeconds": "window_seconds",
        "maxConcurrent": "max_concurrent",
        "retryAfterSeconds": "retry_after_seconds",
        "executionSecondsPerWindow": "execution_seconds_per_window",
        "executionSecondsPerRow": "execution_seconds_per_row",
    }

    def to_json(self) -> dict[str, Any]:
        names = {v: k for k, v in self._CAMEL.items()}
        return {names[k]: v for k, v in asdict(self).items()}

    def update(self, values: Mapping[str, Any]) -> None:
        """Apply camelCase or snake_case keys; raises ValueError on unknown keys or bad values."""
        for key, value in values.items():
            name = self._CAMEL.get(key, key)
            if name not in self._CAMEL.values():
                raise ValueError(f"unknown limit {key!r}")
            if value is None and name == "execution_seconds_per_window":
                setattr(self, name, None)
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"limit {key!r} must be a non-negative number")
            setattr(self, name, int(value) if name in ("requests_per_window", "max_concurrent") else float(value))


# --------------------------------------------------------------------------------------------------- tokens
class TokenError(Exception):
    """A bearer token was rejected; `reason` is the `error_description` told to the client."""

    def __init__(self, reason: str, *, forbidden: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.forbidden = forbidden  # a valid token of an identity this resource does not accept


MAX_VERIFIED_TOKENS = 1000  # distinct tokens remembered as verified (a few per client per hour)


class TokenValidator:
    """Validates RS256 access tokens of the local authority (or any Entra-shaped issuer).

    Keys come from `jwks` or are fetched lazily from `jwks_url` (trusting `ca_file`), cached, and fetched
    again when a token names an unknown `kid` (key rollover).

    `app_ids`: whose tokens are accepted (the `appid`/`azp` claim). Business Central and Dataverse accept the
    Entra app registration that was consented / has an application user, not any token of the tenant (a
    managed identity's own token is refused with 401); Table Storage and Service Bus stand-ins accept the
    managed identity that holds their data roles. None: any app of the tenant.
    """

    def __init__(
        self,
        *,
        audience: str | list[str],
        jwks: dict[str, Any] | None = None,
        jwks_url: str | None = None,
        ca_file: str | None = None,
        issuer_prefix: str = "https://sts.windows.net/",
        authority: str = DEFAULT_AUTHORITY,
        leeway_seconds: float = 0,
        app_ids: frozenset[str] | set[str] | None = None,
    ) -> None:
        if jwks is None and jwks_url is None:
            raise ValueError("TokenValidator needs jwks or jwks_url")
        self.audience = audience
        self.jwks_url = jwks_url
        self.ca_file = ca_file
        self.issuer_prefix = issuer_prefix
        self.authority = authority.rstrip("/")
        self.leeway_seconds = leeway_seconds
        self.app_ids = frozenset(app_ids) if app_ids is not None else None
        self.accepted: collections.Counter[str] = collections.Counter()  # appid -> tokens accepted
        self.refused_apps: collections.Counter[str] = collections.Counter()  # appid -> refused for who it is
        # "appid:secret" / "appid:assertion" (certificate or federated): tells a tool's secret sign-in apart
        # from the service's federated one for the same app registration.
        self.accepted_credentials: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._session: requests.Session | None = None
        self.jwks_fetches = 0
        self._verified: dict[str, dict[str, Any]] = {}  # token -> claims whose signature etc. held
        if jwks is not None:
            self._load(jwks)

    def _load(self, jwks: Mapping[str, Any]) -> None:
        keys: dict[str, Any] = {}
        for jwk in jwks.get("keys", []):
            try:
                keys[str(jwk.get("kid", ""))] = jwt.PyJWK(dict(jwk), algorithm="RS256").key
            except jwt.PyJWTError as exc:  # skip keys we cannot use, as Entra clients do
                log.warning("ignoring JWKS key %s: %s", jwk.get("kid"), exc)
        self._keys = keys

    def _fetch(self) -> None:
        if self.jwks_url is None:
            return
        with self._lock:
            if self._session is None:
                session = requests.Session()
                session.trust_env = False  # never go through a proxy for the local authority
                session.verify = self.ca_file if self.ca_file else True
                self._session = session
            response = self._session.get(self.jwks_url, timeout=10)
            response.raise_for_status()
            self._load(response.json())
            self.jwks_fetches += 1

    def needs_fetch(self, token: str) -> bool:
        """True when validating `token` would fetch the JWKS (so async callers can do it in a thread)."""
        if self.jwks_url is None:
            return False
        try:
            kid = str(jwt.get_unverified_header(token).get("kid", ""))
        except jwt.PyJWTError:
            return False
        return kid not in self._keys

    def _key_for(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"The token is malformed: {exc}") from exc
        if header.get("alg") != "RS256":
            raise TokenError("The token must be signed with RS256.")
        kid = str(header.get("kid", ""))
        if kid not in self._keys:
            try:
                self._fetch()
            except (requests.RequestException, ValueError) as exc:
                raise TokenError(f"The signing keys could not be retrieved: {exc}") from exc
        key = self._keys.get(kid)
        if key is None and not kid and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise TokenError(f"The signing key {kid!r} is unknown.")
        return key

    def validate(self, token: str) -> dict[str, Any]:
        """Return the token's claims, or raise TokenError with the reason. A token's signature, audience and
        issuer are checked once (the same string verifies the same way; a client sends one token for an
        hour); its expiry and who it belongs to, on every request."""
        claims = self._verified.get(token)
        if claims is not None and time.time() > float(claims["exp"]) + self.leeway_seconds:
            self._verified.pop(token, None)
            raise TokenError("The token is expired.")
        if claims is None:
            claims = self._verify(token)
            if len(self._verified) >= MAX_VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = claims
        app_id = str(claims.get("appid") or claims.get("azp") or "")
        if self.app_ids is not None and app_id not in self.app_ids:
            self.refused_apps[app_id] += 1
            raise TokenError(f"The application '{app_id}' is not authorized for this resource.", forbidden=True)
        self.accepted[app_id] += 1
        method = {"1": "secret", "2": "assertion"}.get(str(claims.get("appidacr", "")), "other")
        self.accepted_credentials[f"{app_id}:{method}"] += 1
        return dict(claims)

    def _verify(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature, lifetime, audience and issuer hold, or TokenError."""
        key = self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("The token is expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("The token is not yet valid.") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError(f"The audience is invalid; expected {self.audience!r}.") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("The token signature is invalid.") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"The token is invalid: {exc}") from exc
        if not str(claims.get("iss", "")).startswith(self.issuer_prefix):
            raise TokenError("The token issuer is not trusted.")
        return claims

    async def validate_async(self, token: str) -> dict[str, Any]:
        """Like `validate`, but a JWKS fetch runs in a thread so the event loop never blocks."""
        if token not in self._verified and self.needs_fetch(token):
            return await asyncio.to_thread(self.validate, token)
        return self.validate(token)


# --------------------------------------------------------------------------------------------------- state
@dataclass
class Fault:
    status: int
    remaining: int
    retry_after: float | None
    route: str | None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "count": self.remaining, "retryAfter": self.retry_after, "route": self.route}


@dataclass
class SimCore:
    """Mutable state of one simulator's middleware (stats, faults, throttling windows)."""

    name: str
    route_key: RouteKey
    error_body: ErrorBody
    auth: TokenValidator | None
    limits: ServiceLimits
    on_reset_data: Callable[[], None]
    extra_headers: dict[str, str] = field(default_factory=dict)
    extra_stats: Callable[[], dict[str, Any]] | None = None
    requests: int = 0
    by_route: collections.Counter[str] = field(default_factory=collections.Counter)
    throttled: int = 0
    throttled_by: collections.Counter[str] = field(default_factory=collections.Counter)  # 429s by reason
    execution_seconds: float = 0.0  # execution time charged (handler CPU time + rows x executionSecondsPerRow)
    execution_max_seconds: float = 0.0  # the largest single charge
    rows_charged: int = 0  # rows bulk operations wrote (what executionSecondsPerRow is charged for)
    unauthorized: int = 0
    faults_injected: int = 0
    in_flight_max: int = 0
    faults: list[Fault] = field(default_factory=list)
    latency_ms: float = 0
    _windows: dict[str, collections.deque[float]] = field(default_factory=dict)
    _executions: dict[str, collections.deque[tuple[float, float]]] = field(default_factory=dict)
    _in_flight: collections.Counter[str] = field(default_factory=collections.Counter)

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "requests": self.requests,
            "byRoute": dict(self.by_route),
            "throttled": self.throttled,
            "throttledBy": dict(self.throttled_by),
            "executionSeconds": round(self.execution_seconds, 6),
            "executionMaxSeconds": round(self.execution_max_seconds, 6),
            "rowsCharged": self.rows_charged,
            "unauthorized": self.unauthorized,
            "faultsInjected": self.faults_injected,
            "inFlight": sum(self._in_flight.values()),
            "inFlightMax": self.in_flight_max,
            "limits": self.limits.to_json(),
            "latencyMs": self.latency_ms,
            "faults": [f.to_json() for f in self.faults],
        }
        if self.auth is not None:  # who the accepted tokens belonged to (tests: which identity called)
            body["acceptedApps"] = dict(self.auth.accepted)
            body["refusedApps"] = dict(self.auth.refused_apps)
            body["acceptedCredentials"] = dict(self.auth.accepted_credentials)
        if self.extra_stats is not None:
            body.update(self.extra_stats())
        return body

    def reset(self) -> None:
        self.requests = self.throttled = self.unauthorized = self.faults_injected = self.in_flight_max = 0
        self.execution_seconds = self.execution_max_seconds = 0.0
        self.rows_charged = 0
        self.throttled_by.clear()
        self.by_route.clear()
        self.faults.clear()
        self.latency_ms = 0
        self._windows.clear()
        self._executions.clear()
        if self.auth is not None:
            self.auth.accepted.clear()
            self.auth.refused_apps.clear()
            self.auth.accepted_credentials.clear()
        # Requests in flight keep their slots; the counter drains as they finish.

    def take_fault(self, route: str) -> Fault | None:
        for fault in self.faults:
            if fault.route is None or fault.route == route:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def window_retry_after(self, user: str, now: float) -> float | None:
        """Seconds until `user` may send again under the request and execution-time windows, or None."""
        limits = self.limits
        window = self._windows.setdefault(user, collections.deque())
        horizon = now - limits.window_seconds
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= limits.requests_per_window:
            index = len(window) - limits.requests_per_window  # the request whose expiry frees a slot
            return max(window[index] + limits.window_seconds - now, 0.001)
        if limits.execution_seconds_per_window is not None:
            runs = self._executions.setdefault(user, collections.deque())
            while runs and runs[0][0] <= horizon:
                runs.popleft()
            if sum(d for _, d in runs) >= limits.execution_seconds_per_window and runs:
                return max(runs[0][0] + limits.window_seconds - now, 0.001)
        return None


SIM_CORE = web.AppKey("sim_core", SimCore)


def _retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def _user_of(claims: Mapping[str, Any] | None) -> str:
    if not claims:
        return "anonymous"
    return str(claims.get("oid") or claims.get("appid") or claims.get("azp") or claims.get("sub") or "anonymous")


def _unverified_claims(request: web.Request) -> dict[str, Any] | None:
    # Without auth, still tell users apart by their token so per-user limits behave as with auth.
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    try:
        claims: dict[str, Any] = jwt.decode(header[7:].strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims


def get_sim_core(app: web.Application) -> SimCore:
    return app[SIM_CORE]


# --------------------------------------------------------------------------------------------------- install
def install_sim_core(
    app: web.Application,
    *,
    name: str,
    route_key: RouteKey,
    error_body: ErrorBody,
    auth: TokenValidator | None,
    limits: ServiceLimits | None,
    on_reset_data: Callable[[], None],
    extra_headers: Mapping[str, str] | None = None,
    extra_stats: Callable[[], dict[str, Any]] | None = None,
) -> SimCore:
    """Install the middleware and `/_sim/` routes on `app` (before it starts). Returns the state object.

    `extra_headers` are added to every answer outside `/_sim/` (e.g. Dataverse's `x-ms-dop-hint`);
    `extra_stats` adds keys to `GET /_sim/stats`.
    """
    core = SimCore(
        name=name,
        route_key=route_key,
        error_body=error_body,
        auth=auth,
        limits=limits if limits is not None else ServiceLimits(),
        on_reset_data=on_reset_data,
        extra_headers=dict(extra_headers or {}),
        extra_stats=extra_stats,
    )
    app[SIM_CORE] = core
    app.middlewares.append(_make_middleware(core))
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_post("/_sim/reset", _reset)
    app.router.add_post("/_sim/faults", _add_fault)
    app.router.add_get("/_sim/faults", _get_faults)
    app.router.add_delete("/_sim/faults", _clear_faults)
    app.router.add_get("/_sim/limits", _get_limits)
    app.router.add_post("/_sim/limits", _set_limits)
    return core


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _make_middleware(core: SimCore) -> Any:
    def error(status: int, reason: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        all_headers = dict(core.extra_headers)
        all_headers.update(headers or {})
        return web.json_response(core.error_body(status, reason, message), status=status, headers=all_headers)

    def throttled(reason: str, message: str, retry_after: float) -> web.Response:
        core.throttled += 1
        core.throttled_by[reason] += 1
        return error(429, reason, message, {"Retry-After": _retry_after_header(retry_after)})

    @web.middleware
    async def sim_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        core.requests += 1
        route = core.route_key(request)
        core.by_route[route] += 1

        fault = core.take_fault(route)
        if fault is not None:
            core.faults_injected += 1
            if core.latency_ms:
                await asyncio.sleep(core.latency_ms / 1000)
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _retry_after_header(fault.retry_after)
            if fault.status == 429:
                core.throttled += 1
            return error(fault.status, REASON_INJECTED, f"Injected fault {fault.status} by the simulator.", headers)

        claims: dict[str, Any] | None
        if core.auth is not None:
            claims, problem = await _authenticate(core.auth, request)
            if problem is not None:
                core.unauthorized += 1
                tenant = str((claims or {}).get("tid") or LOCAL_TENANT_ID)
                challenge = (
                    f'Bearer authorization_uri="{core.auth.authority}/{tenant}/oauth2/authorize", '
                    f'error="invalid_token", error_description="{problem}"'
                )
                return error(401, REASON_UNAUTHORIZED, problem, {"WWW-Authenticate": challenge})
        else:
            claims = _unverified_claims(request)
        user = _user_of(claims)

        now = time.monotonic()
        limits = core.limits
        wait = core.window_retry_after(user, now)
        if wait is not None:
            execution = len(core._windows.get(user, ())) < limits.requests_per_window
            if execution:
                return throttled(
                    REASON_THROTTLED_EXECUTION,
                    f"Combined execution time of incoming requests exceeded limit of "
                    f"{limits.execution_seconds_per_window:g} seconds over time window of "
                    f"{limits.window_seconds:g} seconds.",
                    wait,
                )
            return throttled(
                REASON_THROTTLED_REQUESTS,
                f"Number of requests exceeded the limit of {limits.requests_per_window} over time window of "
                f"{limits.window_seconds:g} seconds.",
                wait,
            )
        if core._in_flight[user] >= limits.max_concurrent:
            return throttled(
                REASON_THROTTLED_CONCURRENCY,
                f"Number of concurrent requests exceeded the limit of {limits.max_concurrent}.",
                limits.retry_after_seconds,
            )
        core._windows.setdefault(user, collections.deque()).append(now)
        core._in_flight[user] += 1
        core.in_flight_max = max(core.in_flight_max, sum(core._in_flight.values()))
        started = time.monotonic()
        # Execution time is the service's own processing time: this process's CPU while the handler runs
        # (all of it, so concurrent requests overcharge rather than undercharge), not the wall time, which a
        # loaded box stretches, nor the injected latency (the network's, not the server's).
        cpu_started = time.thread_time()
        try:
            if core.latency_ms:
                await asyncio.sleep(core.latency_ms / 1000)
            response = await handler(request)
        finally:
            core._in_flight[user] -= 1
            if core._in_flight[user] <= 0:
                del core._in_flight[user]
            rows = request.get(SIM_ROWS, 0)
            cost = time.thread_time() - cpu_started + rows * limits.execution_seconds_per_row
            core.execution_seconds += cost
            core.execution_max_seconds = max(core.execution_max_seconds, cost)
            core.rows_charged += rows
            if limits.execution_seconds_per_window is not None:
                core._executions.setdefault(user, collections.deque()).append((started, cost))
        for key, value in core.extra_headers.items():
            response.headers.setdefault(key, value)
        return response

    return sim_middleware


async def _authenticate(auth: TokenValidator, request: web.Request) -> tuple[dict[str, Any] | None, str | None]:
    header = request.headers.get("Authorization", "")
    if not header:
        return None, "The request is missing a bearer token."
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "The Authorization header must be 'Bearer <token>'."
    try:
        return await auth.validate_async(token.strip()), None
    except TokenError as exc:
        return None, exc.reason


# --------------------------------------------------------------------------------------------------- /_sim/
async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_CORE].stats())


async def _reset(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    core.reset()
    data = request.query.get("data", "").lower() in ("1", "true", "yes")
    if data:
        core.on_reset_data()
    return web.json_response({"reset": True, "data": data})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text='{"error": "body must be JSON"}', content_type="application/json") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
    return body


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _add_fault(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    body = await _json_object(request)
    if "latencyMs" in body:
        latency = body["latencyMs"]
        if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
            return _bad("latencyMs must be a non-negative number")
        core.latency_ms = float(latency)
    if "status" in body:
        status, count = body["status"], body.get("count", 1)
        retry_after, route = body.get("retryAfter"), body.get("route")
        if not isinstance(status, int) or not 400 <= status <= 599:
            return _bad("status must be an HTTP error status (400..599)")
        if not isinstance(count, int) or count < 1:
            return _bad("count must be a positive integer")
        if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
            return _bad("retryAfter must be a non-negative number of seconds")
        if route is not None and not isinstance(route, str):
            return _bad("route must be a string")
        core.faults.append(Fault(status=status, remaining=count, retry_after=retry_after, route=route or None))
    elif "latencyMs" not in body:
        return _bad("give status (+count, retryAfter, route) and/or latencyMs")
    return web.json_response({"faults": [f.to_json() for f in core.faults], "latencyMs": core.latency_ms})


async def _get_faults(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    return web.json_response({"faults": [f.to_json() for f in core.faults], "latencyMs": core.latency_ms})


async def _clear_faults(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    core.faults.clear()
    core.latency_ms = 0
    return web.json_response({"faults": [], "latencyMs": 0})


async def _get_limits(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_CORE].limits.to_json())


async def _set_limits(request: web.Request) -> web.Response:
    core = request.app[SIM_CORE]
    body = await _json_object(request)
    try:
        core.limits.update(body)
    except ValueError as exc:
        return _bad(str(exc))
    core._windows.clear()
    core._executions.clear()
    return web.json_response(core.limits.to_json())


# --------------------------------------------------------------------------------------------------- CLI
def sim_arg_parser(prog: str, *, default_port: int, description: str | None = None) -> argparse.ArgumentParser:
    """The common CLI of the simulators: --host --port --no-auth --jwks-url --ca-file --audience + limits."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--no-auth", action="store_true", help="accept requests without a bearer token")
    parser.add_argument("--jwks-url", default=DEFAULT_JWKS_URL, help="JWKS of the token authority")
    parser.add_argument("--ca-file", default=str(LOCAL_DIR / "ca.pem"), help="CA trusted for the JWKS URL")
    parser.add_argument("--audience", default=None, help="expected token audience")
    parser.add_argument(
        "--app-id",
        action="append",
        default=None,
        help="application (client) id whose tokens are accepted; repeat for several (default: any)",
    )
    parser.add_argument("--requests-per-window", type=int, default=None)
    parser.add_argument("--window-seconds", type=float, default=None)
    parser.add_argument("--max-concurrent", type=int, default=None)
    return parser


def validator_from_args(args: argparse.Namespace, *, default_audience: str) -> TokenValidator | None:
    if args.no_auth:
        return None
    return TokenValidator(
        audience=args.audience or default_audience,
        jwks_url=args.jwks_url,
        ca_file=args.ca_file,
        app_ids=frozenset(args.app_id) if args.app_id else None,
    )


def limits_from_args(args: argparse.Namespace, base: ServiceLimits) -> ServiceLimits:
    if args.requests_per_window is not None:
        base.requests_per_window = args.requests_per_window
    if args.window_seconds is not None:
        base.window_seconds = args.window_seconds
    if args.max_concurrent is not None:
        base.max_concurrent = args.max_concurrent
    return base


def run_app(app: web.Application, host: str, port: int) -> None:
    """Serve `app` until interrupted (the simulators' CLIs), logging one line when listening."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=lambda _: log.info("listening on http://%s:%d", host, port),
    )
