"""The local functions host: serves a function app's HTTP, timer and Service Bus triggers like the real host."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import hmac
import importlib.util
import inspect
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.functions.timer import TimerRequest
from croniter import croniter

from local.host.loader import FunctionSpec, TriggerKind, load_functions
from local.host.queues import InMemoryQueueSource, QueueSource, build_service_bus_message

log = logging.getLogger("Host.Function")

DEFAULT_FUNCTION_KEY = "local-dev-key"
PROGRAMMATIC_REASON = "This function was programmatically called via the host APIs."
_SOURCE_RESTART_SECONDS = 2.0


def problem_response(status: int, code: str, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"type": f"urn:bc-dataverse-sync:problem:{code}", "title": title, "status": status, "code": code}
    body["detail"] = detail
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")


@dataclass(frozen=True)
class _Context:
    """Enough of `func.Context` for handlers that ask for a `context` parameter."""

    invocation_id: str
    function_name: str
    function_directory: str = os.getcwd()
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: Any = None


class InvocationFailedError(Exception):
    """The function raised; the original exception is the cause (already logged)."""


def default_queue_source(env: dict[str, str] | None = None, connection_string: str | None = None) -> QueueSource:
    """`SYNC_LOCAL_QUEUE_SOURCE`: `amqp` (default when `local.host.amqp_source` exists) or `memory`."""
    source_env = os.environ if env is None else env
    has_amqp = importlib.util.find_spec("local.host.amqp_source") is not None
    choice = source_env.get("SYNC_LOCAL_QUEUE_SOURCE", "amqp" if has_amqp else "memory").lower()
    if choice == "amqp":
        from local.host.amqp_source import AmqpQueueSource  # type: ignore[import-not-found]

        if connection_string is None:
            from shared.config import get_settings

            settings = get_settings()
            if settings.servicebus_namespace:  # identity-based connection, as the Functions host in Azure
                from shared.identity import get_credential
                from shared.messaging.publisher import client_from_settings

                return AmqpQueueSource(
                    max_concurrent=_host_json_concurrency(),
                    client_factory=lambda: client_from_settings(settings, get_credential()),
                    max_lock_renewal_seconds=_host_json_lock_renewal(),
                )
            connection_string = settings.servicebus_connection_string
        return AmqpQueueSource(
            connection_string,
            max_concurrent=_host_json_concurrency(),
            max_lock_renewal_seconds=_host_json_lock_renewal(),
        )
    if choice != "memory":
        raise ValueError(f"SYNC_LOCAL_QUEUE_SOURCE must be 'amqp' or 'memory', not {choice!r}")
    return InMemoryQueueSource(max_concurrent_calls=_host_json_concurrency())


def _host_json_service_bus() -> dict[str, Any]:
    try:
        with open("host.json", encoding="utf-8") as handle:
            return dict(json.load(handle)["extensions"]["serviceBus"])
    except (OSError, KeyError, ValueError, TypeError):
        return {}


def _host_json_concurrency() -> int:
    try:
        return int(_host_json_service_bus()["maxConcurrentCalls"])
    except (KeyError, ValueError, TypeError):
        return 1


def _host_json_lock_renewal() -> float:
    """host.json `maxAutoLockRenewalDuration` (`hh:mm:ss`, the Functions host's default 5 minutes)."""
    value = str(_host_json_service_bus().get("maxAutoLockRenewalDuration", "00:05:00"))
    try:
        hours, minutes, seconds = (float(part) for part in value.split(":"))
    except ValueError:
        return 300.0
    return hours * 3600 + minutes * 60 + seconds


class LocalHost:
    """Serves `functions` (from `load_functions`). Use `create_app()` for aiohttp, or `from_module()`."""

    def __init__(
        self,
        functions: list[FunctionSpec],
        *,
        function_key: str | None = None,
        queue_source: QueueSource | None = None,
        run_timers: bool = True,
        run_queues: bool = True,
        route_prefix: str = "api",
    ) -> None:
        self.functions = functions
        self.function_key = function_key or os.environ.get("SYNC_FUNCTION_KEY") or DEFAULT_FUNCTION_KEY
        self.queue_source = queue_source
        self.run_timers = run_timers
        self.run_queues = run_queues
        self.route_prefix = route_prefix.strip("/")
        self._by_name = {f.name.lower(): f for f in functions}
        self._http = [f for f in functions if f.kind is TriggerKind.HTTP]
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Finished invocations per function and outcome (`GET /admin/host/invocations`): which instance took
        # how many messages when several hosts share a queue.
        self.invocations: dict[str, dict[str, int]] = {}
        for spec in functions:
            if spec.error:
                log.error("The function '%s' is disabled: %s", spec.name, spec.error)

    @classmethod
    def from_module(cls, module_name: str = "function_app", **kwargs: Any) -> LocalHost:
        return cls(load_functions(module_name), **kwargs)

    # ----- aiohttp application -----
    def create_app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_get("/admin/host/status", self._status)
        app.router.add_get("/admin/host/invocations", self._invocations)
        app.router.add_get("/admin/functions", self._list_functions)
        app.router.add_post("/admin/functions/{name}", self._admin_invoke)
        app.router.add_post("/admin/queues/{queue}/messages", self._admin_send)
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        app.router.add_route("*", prefix + "/{tail:.*}" if prefix else "/{tail:.*}", self._dispatch)
        if prefix:
            app.router.add_route("*", prefix, self._dispatch)
            app.router.add_route("*", "/{tail:.*}", self._no_route)  # outside the prefix: problem+json 404 too
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._stop.clear()
        names = ", ".join(f.name for f in self.functions) or "(none)"
        log.info("Found %d function(s): %s", len(self.functions), names)
        for spec in self.functions:
            if spec.error:
                continue
            if spec.kind is TriggerKind.TIMER and self.run_timers:
                self._spawn(self._timer_loop(spec))
            elif spec.kind is TriggerKind.SERVICE_BUS and self.run_queues:
                self._spawn(self._queue_loop(spec))
        log.info("Host started")

    async def _on_cleanup(self, _app: web.Application) -> None:
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ----- invocation -----
    async def invoke(self, spec: FunctionSpec, payload: Any, *, reason: str) -> Any:
        """Run one invocation with the host's log lines; re-raises the function's exception."""
        invocation_id = str(uuid.uuid4())
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        started = time.perf_counter()
        try:
            result = await self._call(spec, payload, invocation_id)
        except Exception as exc:
            self._count(spec.name, "failed")
            elapsed = round((time.perf_counter() - started) * 1000)
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                spec.name,
                invocation_id,
                elapsed,
                exc_info=True,
            )
            raise InvocationFailedError(invocation_id) from exc
        self._count(spec.name, "succeeded")
        elapsed = round((time.perf_counter() - started) * 1000)
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", spec.name, invocation_id, elapsed)
        return result

    def _count(self, name: str, outcome: str) -> None:
        counts = self.invocations.setdefault(name, {"succeeded": 0, "failed": 0})
        counts[outcome] += 1

    async def _call(self, spec: FunctionSpec, payload: Any, invocation_id: str) -> Any:
        kwargs: dict[str, Any] = {spec.binding_name: payload}
        with contextlib.suppress(TypeError, ValueError):
            if "context" in inspect.signature(spec.handler).parameters and spec.binding_name != "context":
                kwargs["context"] = _Context(invocation_id=invocation_id, function_name=spec.name)
        if inspect.iscoroutinefunction(spec.handler):
            result = await spec.handler(**kwargs)
        else:
            # Sync handlers run in a worker thread, as the Python worker does, so they never block the loop.
            ctx = contextvars.copy_context()
            call: Callable[[], Any] = functools.partial(ctx.run, spec.handler, **kwargs)
            result = await asyncio.get_running_loop().run_in_executor(None, call)
        if inspect.isawaitable(result):
            result = await result
        return result

    # ----- HTTP -----
    def _authorized(self, request: web.Request) -> bool:
        supplied = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return hmac.compare_digest(supplied.encode(), self.function_key.encode())

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("tail", "")
        matches = [(spec, params) for spec in self._http if (params := spec.route.match(path)) is not None]  # type: ignore[union-attr]
        if not matches:
            return problem_response(404, "not_found", "Not found", f"No function is registered for {request.path}.")
        method = request.method.upper()
        allowed = [(s, p) for s, p in matches if not s.methods or method in s.methods]
        if not allowed:
            methods = sorted({m for s, _ in matches for m in s.methods})
            resp = problem_response(
                405, "method_not_allowed", "Method not allowed", f"{method} is not allowed on {request.path}."
            )
            resp.headers["Allow"] = ", ".join(methods)
            return resp
        spec, route_params = min(allowed, key=lambda m: m[0].route.precedence)  # type: ignore[union-attr]
        if spec.auth_level != "anonymous" and not self._authorized(request):
            return problem_response(
                401, "unauthorized", "Unauthorized", "A valid function key is required (x-functions-key or ?code=)."
            )
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        http_request = func.HttpRequest(
            method=method,
            url=str(request.url),
            headers=headers,
            params={k: v for k, v in request.query.items()},
            route_params=route_params,
            body=await request.read(),
        )
        try:
            result = await self.invoke(spec, http_request, reason=PROGRAMMATIC_REASON)
        except InvocationFailedError as exc:
            return self._internal_error(str(exc))
        try:
            return _to_aiohttp(result)
        except Exception:
            log.exception("Function '%s' returned an unsupported value", spec.name)
            return self._internal_error(str(uuid.uuid4()))

    @staticmethod
    async def _no_route(request: web.Request) -> web.Response:
        return problem_response(404, "not_found", "Not found", f"No function is registered for {request.path}.")

    @staticmethod
    def _internal_error(trace_id: str) -> web.Response:
        return problem_response(
            500, "internal_error", "Internal server error", "An internal error occurred.", traceId=trace_id
        )

    # ----- admin API -----
    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response({"state": "Running"})

    async def _invocations(self, request: web.Request) -> web.Response:
        """Local extension: `{"pid", "functions": {name: {"succeeded", "failed"}}}` since this host started."""
        if not self._authorized(request):
            return problem_response(401, "unauthorized", "Unauthorized", "The host key is required.")
        return web.json_response({"pid": os.getpid(), "functions": self.invocations})

    async def _list_functions(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return problem_response(401, "unauthorized", "Unauthorized", "The host key is required.")
        out = []
        for spec in self.functions:
            item: dict[str, Any] = {"name": spec.name, "trigger": spec.kind.value, "disabled": bool(spec.error)}
            if spec.route is not None:
                item |= {"route": spec.route.template, "methods": sorted(spec.methods), "authLevel": spec.auth_level}
            if spec.schedule:
                item["schedule"] = spec.schedule
            if spec.queue_name:
                item["queueName"] = spec.queue_name
            out.append(item)
        return web.json_response({"value": out})

    async def _admin_invoke(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return problem_response(401, "unauthorized", "Unauthorized", "The host key is required.")
        spec = self._by_name.get(request.match_info["name"].lower())
        if spec is None:
            return problem_response(404, "function_not_found", "Function not found", "No such function.")
        if spec.kind not in (TriggerKind.TIMER, TriggerKind.SERVICE_BUS):
            return problem_response(
                400, "not_invocable", "Not invocable", "Only timer and Service Bus functions can be run here."
            )
        raw = await request.read()
        text = ""
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return problem_response(400, "invalid_json", "Invalid JSON", "The body is not valid JSON.")
            value = body.get("input", "") if isinstance(body, dict) else ""
            text = value if isinstance(value, str) else json.dumps(value)
        if spec.kind is TriggerKind.TIMER:
            payload: Any = TimerRequest(past_due=False)
        else:
            payload = build_service_bus_message(text)
        task = self._spawn(self._invoke_quietly(spec, payload, PROGRAMMATIC_REASON))
        # `?wait=true` (local extension): answer once the run has finished, with its outcome.
        if request.query.get("wait", "").lower() == "true":
            ok = await task
            return web.json_response({"status": "Succeeded" if ok else "Failed"}, status=202)
        return web.Response(status=202)

    async def _admin_send(self, request: web.Request) -> web.Response:
        """Local extension: put a message on an in-memory queue (only with the memory queue source)."""
        if not self._authorized(request):
            return problem_response(401, "unauthorized", "Unauthorized", "The host key is required.")
        source = self.queue_source
        if not isinstance(source, InMemoryQueueSource):
            return problem_response(
                404, "not_supported", "Not supported", "Only the in-memory queue source accepts messages here."
            )
        message_id = source.send(request.match_info["queue"], await request.read())
        return web.json_response({"messageId": message_id}, status=201)

    async def _invoke_quietly(self, spec: FunctionSpec, payload: Any, reason: str) -> bool:
        try:
            await self.invoke(spec, payload, reason=reason)
        except InvocationFailedError:
            return False  # already logged; a failing timer never stops the host
        return True

    # ----- timers -----
    async def _timer_loop(self, spec: FunctionSpec) -> None:
        assert spec.schedule is not None
        if spec.run_on_startup:
            await self._invoke_quietly(spec, TimerRequest(past_due=False), "Timer fired at startup")
        base = dt.datetime.now(dt.UTC)
        while not self._stop.is_set():
            due: dt.datetime = croniter(spec.schedule, base, second_at_beginning=True).get_next(dt.datetime)
            now = dt.datetime.now(dt.UTC)
            if due <= now - dt.timedelta(seconds=1):
                # The previous run overran one or more occurrences: run once, past due, then resynchronise.
                await self._invoke_quietly(spec, TimerRequest(past_due=True), f"Timer fired at {now.isoformat()}")
                base = dt.datetime.now(dt.UTC)
                continue
            await asyncio.sleep(max(0.0, (due - now).total_seconds()))
            fired = dt.datetime.now(dt.UTC)
            await self._invoke_quietly(spec, TimerRequest(past_due=False), f"Timer fired at {fired.isoformat()}")
            base = due

    # ----- Service Bus -----
    async def _queue_loop(self, spec: FunctionSpec) -> None:
        assert spec.queue_name is not None
        if self.queue_source is None:
            conn = os.environ.get(spec.connection or "") or None
            self.queue_source = default_queue_source(connection_string=conn)
        source = self.queue_source
        reason = f"New ServiceBus message detected on '{spec.queue_name}'."

        async def handle(message: func.ServiceBusMessage) -> None:
            await self.invoke(spec, message, reason=reason)  # raising abandons the message

        while not self._stop.is_set():
            try:
                await source.run(spec.queue_name, handle, self._stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("The queue listener for '%s' failed; restarting", spec.queue_name)
            if not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), _SOURCE_RESTART_SECONDS)


def _to_aiohttp(result: Any) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str | bytes):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"unsupported return type {type(result).__name__}")
    response = web.Response(status=result.status_code, body=result.get_body())
    names = set()
    for key, value in result.headers.items():
        response.headers.add(key, value)
        names.add(key.lower())
    if "content-type" not in names:
        mimetype = result.mimetype
        charset = f"; charset={result.charset}" if mimetype.startswith("text/") else ""
        response.headers["Content-Type"] = f"{mimetype}{charset}"
    return response
