"""The HTTP plumbing shared by the Business Central and Dataverse clients.

One azure-core async pipeline per client (built once per process), with these policies, outermost first:

``_OptionsPolicy`` (moves our per-call options into the context so they survive retries) ->
``HeadersPolicy`` -> ``SyncRetryPolicy`` (THE retry site) -> ``AsyncBearerTokenCredentialPolicy`` ->
``PacingPolicy`` (the service's request window, paced on our side; a 429's ``Retry-After`` holds every request
of the client, not only the refused one) -> ``ConcurrencyPolicy`` (per-service limiter; a retry's sleep never
holds a slot) -> ``DependencyTracingPolicy``
(one OpenTelemetry span per attempt: Application Insights dependencies, 429 + Retry-After) -> ``_CountingPolicy``
(one count per HTTP request actually sent, so ``calls`` matches what the service saw) -> ``_SafeLoggingPolicy``
(method, URL, status, time; never headers, never tokens) -> ``AioHttpTransport`` (``trust_env=False``).

Failures become ``shared.errors`` classes through ``error_from_response`` (the single mapping, via
``classify_status``), keeping the service's ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

import aiohttp
from azure.core import AsyncPipelineClient
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ServiceRequestTimeoutError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    AsyncHTTPPolicy,
    AsyncRetryPolicy,
    HeadersPolicy,
    SansIOHTTPPolicy,
)
from azure.core.pipeline.policies._utils import get_retry_after
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest

from shared.connectors.tracing import DependencyTracingPolicy
from shared.errors import SyncError, ThrottledError, TransientError, classify_status
from shared.telemetry import record_throttled
from shared.urlquote import quote_fast

log = logging.getLogger("shared.connectors")

# Methods whose repetition cannot change the outcome (PATCH/POST are decided per call by the client).
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Statuses the services answer BEFORE doing any work: retrying is always safe, even for a create.
_NOT_PROCESSED_STATUSES = frozenset({429, 503})
# Statuses after which the request may or may not have been applied: only idempotent calls repeat.
_AMBIGUOUS_STATUSES = frozenset({408, 500, 502, 504})


# ----------------------------------------------------------------------------- call counter
@dataclass(slots=True)
class CallCounter:
    """HTTP requests sent (every attempt counts, as the service counts them) and records moved."""

    total: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    throttled: int = 0
    records_read: int = 0
    records_written: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "byKind": dict(self.by_kind),
            "retries": self.retries,
            "throttled": self.throttled,
            "recordsRead": self.records_read,
            "recordsWritten": self.records_written,
        }

    def reset(self) -> None:
        self.total = self.retries = self.throttled = self.records_read = self.records_written = 0
        self.by_kind.clear()


# ----------------------------------------------------------------------------- concurrency
class AdaptiveLimiter:
    """A semaphore whose limit can change while in use (Dataverse's ``x-ms-dop-hint``)."""

    def __init__(self, limit: int, *, maximum: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._maximum = maximum or limit
        self._active = 0
        self._cond: asyncio.Condition | None = None

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def active(self) -> int:
        return self._active

    def _condition(self) -> asyncio.Condition:
        # Created lazily so the limiter binds to the loop that uses it, not the one that built it.
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def set_limit(self, limit: int) -> None:
        limit = max(1, min(limit, self._maximum))
        if limit == self._limit:
            return
        cond = self._condition()
        async with cond:
            self._limit = limit
            cond.notify_all()

    async def __aenter__(self) -> AdaptiveLimiter:
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self._active < self._limit)
            self._active += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        cond = self._condition()
        async with cond:
            self._active -= 1
            cond.notify()


class ConcurrencyPolicy(AsyncHTTPPolicy):  # type: ignore[type-arg]
    """Holds a limiter slot for one attempt; with ``dop_header`` follows the service's hint."""

    def __init__(self, limiter: AdaptiveLimiter, *, dop_header: str | None = None) -> None:
        super().__init__()
        self.limiter = limiter
        self._dop_header = dop_header

    async def send(self, request: PipelineRequest) -> PipelineResponse:  # type: ignore[type-arg]
        async with self.limiter:
            response = await self.next.send(request)
        if self._dop_header:
            hint = response.http_response.headers.get(self._dop_header)
            if hint and hint.strip().isdigit():
                await self.limiter.set_limit(int(hint))
        return response


# ----------------------------------------------------------------------------- pacing
def pacing_wait(
    finished: Sequence[float], in_flight: int, now: float, *, limit: int, seconds: float, hold_until: float = 0.0
) -> float | None:
    """How long one more request must wait to fit a sliding window of ``limit`` requests per ``seconds``.

    ``finished``: when the answers of the window's requests arrived, oldest first (older than ``now - seconds``
    already dropped); ``in_flight``: requests sent and not answered yet (they hold a slot). A service stamps a
    request when it arrives, before its answer reaches us, so a slot counted from our answer's time never frees
    early, whatever the latency. ``hold_until``: a 429's ``Retry-After`` (nothing is sent before it).
    Returns 0 (send now), the seconds until a slot frees, or None when every slot is held by a request in
    flight (wait for one to answer)."""
    if now < hold_until:
        return hold_until - now
    over = len(finished) + in_flight - limit  # slots to free before one more fits
    if over < 0:
        return 0.0
    if over >= len(finished):
        return None
    return max(finished[over] + seconds - now, 0.0)


class RequestWindow:
    """Our side of a service's per-user request window (BC and Dataverse: 6,000 per 5 minutes, sliding): a
    request waits for its slot here instead of being sent, refused with a 429, and sent again after a
    ``Retry-After`` rounded up to whole seconds. Several instances share the service's window, not this one:
    their 429s still hold (``hold``) every request of this client."""

    def __init__(self, limit: int, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or seconds <= 0:
            raise ValueError("a request window needs limit >= 1 and seconds > 0")
        self.limit = limit
        self.seconds = seconds
        self._clock = clock
        self._finished: collections.deque[float] = collections.deque()
        self._in_flight = 0
        self._hold_until = 0.0
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:  # bound to the loop that uses it
            self._cond = asyncio.Condition()
        return self._cond

    def _wait(self) -> float | None:
        now = self._clock()
        while self._finished and self._finished[0] <= now - self.seconds:
            self._finished.popleft()
        return pacing_wait(
            self._finished, self._in_flight, now, limit=self.limit, seconds=self.seconds, hold_until=self._hold_until
        )

    def hold(self, seconds: float) -> None:
        """Nothing is sent for ``seconds`` (a 429's ``Retry-After``)."""
        self._hold_until = max(self._hold_until, self._clock() + seconds)

    async def acquire(self, *, max_wait: float | None = None) -> float | None:
        """Waits for a slot of the window (and the end of a hold); the request then counts as in flight and
        None is returned. A slot further away than ``max_wait`` seconds is not waited for: the seconds it is
        away are returned and nothing is taken (the caller is throttled, as by a 429 that far)."""
        cond = self._condition()
        async with cond:
            while (wait := self._wait()) != 0:
                if wait is not None and max_wait is not None and wait > max_wait:
                    return wait
                try:
                    await asyncio.wait_for(cond.wait(), wait)
                except TimeoutError:
                    pass
            self._in_flight += 1
        return None

    async def release(self, *, counted: bool) -> None:
        """The request answered; ``counted``: it took a slot of the service's window (not refused with 429)."""
        cond = self._condition()
        async with cond:
            self._in_flight -= 1
            if counted:
                self._finished.append(self._clock())
            cond.notify_all()


class PacingPolicy(AsyncHTTPPolicy):  # type: ignore[type-arg]
    """Every attempt takes a slot of the client's ``RequestWindow``; a 429 with ``Retry-After`` holds the window.
    A slot further away than ``max_wait`` (the retry policy's whole budget) raises ``ThrottledError`` at once,
    as the service's 429 would after the same wait: the message is retried later instead of holding a worker."""

    def __init__(self, window: RequestWindow, *, service: str, max_wait: float) -> None:
        super().__init__()
        self.window = window
        self.service = service
        self.max_wait = max_wait

    async def send(self, request: PipelineRequest) -> PipelineResponse:  # type: ignore[type-arg]
        if (away := await self.window.acquire(max_wait=self.max_wait)) is not None:
            raise ThrottledError(
                f"{self.service}: the client's request window is full for {away:.0f} s",
                retry_after=away,
                code="ClientRequestWindowFull",
                status=429,
                service=self.service,
            )
        refused = False
        try:
            response = await self.next.send(request)
            refused = response.http_response.status_code == 429
        finally:
            # A request that failed in transport may have reached the service: it keeps its slot.
            await self.window.release(counted=not refused)
        if refused and (retry_after := get_retry_after(response)):
            self.window.hold(retry_after)
        return response


# ----------------------------------------------------------------------------- options, counting, logging
class _OptionsPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Our per-call keywords travel as pipeline options; move them to the context (kept across retries,
    and never handed to aiohttp)."""

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        options = request.context.options
        request.context["sync_kind"] = options.pop("call_kind", "other")
        request.context["sync_idempotent"] = options.pop("idempotent", None)


class _CountingPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def __init__(self, counter: CallCounter) -> None:
        self.counter = counter

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        self.counter.total += 1
        self.counter.by_kind[request.context.get("sync_kind", "other")] += 1


class _SafeLoggingPolicy(AsyncHTTPPolicy):  # type: ignore[type-arg]
    """Logs method, URL path + query, status and duration. Headers (Authorization) and bodies never."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    async def send(self, request: PipelineRequest) -> PipelineResponse:  # type: ignore[type-arg]
        http = request.http_request
        parts = urlsplit(http.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(target) > 300:
            target = target[:300] + "…"
        started = time.monotonic()
        try:
            response = await self.next.send(request)
        except AzureError as e:
            log.warning("%s %s %s failed after %.0f ms: %s", self.service, http.method, target,
                        (time.monotonic() - started) * 1000, type(e).__name__)  # fmt: skip
            raise
        status = response.http_response.status_code
        level = logging.DEBUG if status < 400 else logging.INFO
        log.log(level, "%s %s %s -> %s (%.0f ms)", self.service, http.method, target, status,
                (time.monotonic() - started) * 1000)  # fmt: skip
        return response


# ----------------------------------------------------------------------------- retry
def _is_connect_failure(err: AzureError) -> bool:
    """True when the request surely never reached the server (safe to repeat anything).

    azure-core maps *every* aiohttp ``ClientError`` (including a reset after the body was sent) to
    ``ServiceRequestError``, so we look at the underlying aiohttp error instead."""
    if isinstance(err, ServiceRequestTimeoutError):  # the connect timeout (sock_connect)
        return True
    inner = getattr(err, "inner_exception", None) or err.__cause__
    return isinstance(inner, aiohttp.ClientConnectorError)


class SyncRetryPolicy(AsyncRetryPolicy):  # type: ignore[type-arg]
    """The one retry policy of the connectors.

    - 429 / 503 (the service did no work): retried for every method, waiting ``Retry-After`` (seconds or
      HTTP date; ``x-ms-retry-after-ms`` too) or the backoff when absent.
    - 408/500/502/504, read timeouts, connection resets: retried only when the call is idempotent
      (GET/PUT/DELETE, or a POST/PATCH the client marked ``idempotent=True``, e.g. a create with a
      client-chosen key); otherwise the last answer / error goes to the caller (ambiguous outcome).
    - connect failures (nothing was sent): retried for every method.
    - exponential backoff with full jitter; the whole call (attempts + waits) is capped at
      ``total_timeout`` seconds, below the function timeout. A wait that would cross the cap is not
      taken: the caller gets the 429/5xx and raises ``ThrottledError``/``TransientError``.
    """

    def __init__(
        self,
        *,
        total_timeout: float = 30.0,
        max_attempts: int = 10,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        sleep: Any = None,
        service: str = "unknown",
    ) -> None:
        super().__init__(retry_total=max_attempts - 1, retry_backoff_factor=backoff_base, retry_backoff_max=backoff_max)
        self.total_timeout = total_timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max_s = backoff_max
        self._sleep = sleep or asyncio.sleep
        self.counter: CallCounter | None = None
        self.service = service

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base * (2**attempt)))  # full jitter

    def _idempotent(self, request: PipelineRequest) -> bool:  # type: ignore[type-arg]
        flag = request.context.get("sync_idempotent")
        if flag is not None:
            return bool(flag)
        return request.http_request.method.upper() in _IDEMPOTENT_METHODS

    async def send(self, request: PipelineRequest) -> PipelineResponse:  # type: ignore[override,type-arg]
        deadline = time.monotonic() + self.total_timeout
        idempotent = self._idempotent(request)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.next.send(request)
            except AzureError as err:
                if isinstance(err, SyncError):
                    raise
                retryable = _is_connect_failure(err) or idempotent
                delay = self._backoff(attempt)
                if not retryable or attempt >= self.max_attempts or time.monotonic() + delay > deadline:
                    raise
                log.info("retrying %s %s after %s in %.2fs (attempt %d)", request.http_request.method,
                         urlsplit(request.http_request.url).path, type(err).__name__, delay, attempt)  # fmt: skip
                await self._count_retry(delay)
                continue
            status = response.http_response.status_code
            if status == 429:
                record_throttled(self.service)
                if self.counter is not None:
                    self.counter.throttled += 1
            if status in _NOT_PROCESSED_STATUSES:
                retry_after = get_retry_after(response)
                delay = retry_after if retry_after is not None else self._backoff(attempt)
            elif status in _AMBIGUOUS_STATUSES and idempotent:
                delay = self._backoff(attempt)
            else:
                return response
            if attempt >= self.max_attempts or time.monotonic() + delay > deadline:
                return response  # the caller maps it to ThrottledError / TransientError
            log.info("retrying %s %s after HTTP %s in %.2fs (attempt %d)", request.http_request.method,
                     urlsplit(request.http_request.url).path, status, delay, attempt)  # fmt: skip
            await self._count_retry(delay)

    async def _count_retry(self, delay: float) -> None:
        if self.counter is not None:
            self.counter.retries += 1
        await self._sleep(delay)


# ----------------------------------------------------------------------------- errors
def error_from_response(response: AsyncHttpResponse, service: str) -> SyncError:
    """The ``shared.errors`` exception for a failed answer, carrying the service's code and message.

    BC answers ``{"error": {"code": "BadRequest_NotFound", "message": ...}}``, Dataverse
    ``{"error": {"code": "0x80040217", "message": ...}}``."""
    status = response.status_code
    code, message = _error_body(response)
    message = message or f"{service} answered HTTP {status}"
    cls = classify_status(status, code)
    if cls is ThrottledError:
        seconds = _retry_after_seconds(response.headers)
        return ThrottledError(message, retry_after=seconds, code=code, status=status, service=service)
    return cls(message, code=code, status=status, service=service)


def error_from_payload(status: int, body: Any, service: str, headers: Mapping[str, str] | None = None) -> SyncError:
    """The same mapping for an inner response of a ``$batch``."""
    code, message = _error_fields(body)
    message = message or f"{service} answered HTTP {status}"
    cls = classify_status(status, code)
    if cls is ThrottledError:
        return ThrottledError(
            message, retry_after=_retry_after_seconds(headers or {}), code=code, status=status, service=service
        )
    return cls(message, code=code, status=status, service=service)


def transport_error(err: AzureError, service: str, *, what: str) -> TransientError:
    """Connection errors and timeouts after the retries: transient, outcome unknown for writes."""
    return TransientError(f"{what}: {type(err).__name__}: {err.message}", code=type(err).__name__, service=service)


def _error_body(response: AsyncHttpResponse) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except Exception:
        text = (response.text() or "").strip()
        return None, text[:500] or None
    return _error_fields(body)


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            return (str(code) if code is not None else None), err.get("message")
        if isinstance(err, str):
            return None, err
    return None, None


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    lower = {k.lower(): v for k, v in headers.items()}
    from azure.core.pipeline.policies._utils import parse_retry_after

    value = lower.get("retry-after")
    if value:
        try:
            return parse_retry_after(value)
        except (ValueError, TypeError):
            return None
    return None


# ----------------------------------------------------------------------------- the client core
def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("127.0.0.1", "localhost", "::1")


class ServiceHttp:
    """One service's pipeline. ``request`` sends, retries, counts and raises typed errors."""

    def __init__(
        self,
        *,
        service: str,
        base_url: str,
        credential: AsyncTokenCredential | None,
        scope: str,
        max_concurrency: int,
        max_concurrency_limit: int | None = None,
        dop_header: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_total_timeout: float = 30.0,
        retry_max_attempts: int = 10,
        retry_backoff_base: float = 0.5,
        requests_per_window: int | None = None,
        window_seconds: float = 300.0,
        connection_timeout: float = 10.0,
        read_timeout: float = 120.0,
        transport: Any = None,
    ) -> None:
        self.service = service
        self.calls = CallCounter()
        self.limiter = AdaptiveLimiter(max_concurrency, maximum=max_concurrency_limit or max_concurrency)
        # The service's documented request window per user, paced here (None: only 429s pace the client).
        self.window = RequestWindow(requests_per_window, window_seconds) if requests_per_window else None
        self.retry = SyncRetryPolicy(
            total_timeout=retry_total_timeout,
            max_attempts=retry_max_attempts,
            backoff_base=retry_backoff_base,
            service=service,
        )
        self.retry.counter = self.calls
        # Plain HTTP is only acceptable for the local simulators (bearer tokens must not leave over http).
        self._enforce_https = not _is_loopback(base_url)
        base_headers = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
        base_headers.update(headers or {})
        policies: list[Any] = [_OptionsPolicy(), HeadersPolicy(base_headers), self.retry]
        if credential is not None:
            policies.append(AsyncBearerTokenCredentialPolicy(credential, scope))
        if self.window is not None:
            policies.append(PacingPolicy(self.window, service=service, max_wait=retry_total_timeout))
        policies += [
            ConcurrencyPolicy(self.limiter, dop_header=dop_header),
            DependencyTracingPolicy(service),  # one dependency span per attempt (429s included)
            _CountingPolicy(self.calls),
            _SafeLoggingPolicy(service),
        ]
        self._transport = transport or AioHttpTransport(
            use_env_settings=False, connection_timeout=connection_timeout, read_timeout=read_timeout
        )
        self._client: AsyncPipelineClient = AsyncPipelineClient(  # type: ignore[type-arg]
            base_url, policies=policies, transport=self._transport
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        kind: str = "read",
        idempotent: bool | None = None,
        expect: Iterable[int] | None = None,
        what: str | None = None,
    ) -> AsyncHttpResponse:
        """Sends one call. Statuses outside ``expect`` (default: < 300) raise the mapped ``SyncError``;
        transport failures that outlived the retries raise ``TransientError``."""
        if params:
            # azure-core does not percent-encode params: a value with ', &, # or % would break (or inject into)
            # a $filter. Encode every value here, once.
            url += ("&" if "?" in url else "?") + urlencode(dict(params), quote_via=quote_fast, safe="$(),'=:")
        request = HttpRequest(method, url, headers=dict(headers or {}), json=json, content=content)
        options: dict[str, Any] = {"call_kind": kind, "idempotent": idempotent}
        if not self._enforce_https:
            options["enforce_https"] = False
        try:
            response = await self._client.send_request(request, **options)
        except SyncError:
            raise
        except AzureError as e:
            raise transport_error(e, self.service, what=what or f"{method} {urlsplit(url).path}") from e
        status = response.status_code
        ok = (status in expect) if expect is not None else status < 300
        if not ok:
            raise error_from_response(response, self.service)
        return response


class ServiceClient:
    """What the BC and Dataverse clients share around their ``ServiceHttp``: call counts and the lifecycle."""

    _http: ServiceHttp

    @property
    def calls(self) -> CallCounter:
        return self._http.calls

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
