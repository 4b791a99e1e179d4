"""HTTP helpers every blueprint uses: JSON and RFC 9457 problem responses, body parsing, error mapping."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import azure.functions as func
import pydantic

from shared.domain.errors import ServiceError, ValidationFailedError
from shared.errors import ConfigurationError, SyncError

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
_MAX_REPORTED_ERRORS = 10
_MAX_MESSAGE_CHARS = 200


# 1,000 GUIDs in a JSON array are ~40 KB; anything far above that is not a request of this API.
MAX_BODY_BYTES = 1_000_000


class PayloadTooLargeError(ServiceError):
    code, status, title = "payload_too_large", 413, "Request body too large"


class InvalidJsonError(ServiceError):
    code, status, title = "invalid_json", 400, "The body is not valid JSON"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> func.HttpResponse:
    """An RFC 9457 problem response carrying the contract's stable `code`."""
    body: dict[str, Any] = {
        "type": f"urn:bc-dataverse-sync:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/problem+json")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, headers=headers, mimetype="application/json"
    )


def error_response(error: ServiceError) -> func.HttpResponse:
    return problem(error.status, error.code, error.title, error.detail, **error.extra)


def _summarise(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic errors without the offending input (which may be huge or sensitive)."""
    out = []
    for err in errors[:_MAX_REPORTED_ERRORS]:
        location = ".".join(str(part) for part in err.get("loc", ())) or "(body)"
        out.append({"field": location, "message": str(err.get("msg", "invalid"))[:_MAX_MESSAGE_CHARS]})
    return out


def load_json_body(req: func.HttpRequest) -> Any:
    """The parsed JSON body (None when empty); too large -> 413, not JSON (or absurdly nested) -> 400."""
    raw = req.get_body()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidJsonError("The request body is not valid JSON.") from None


def parse_json_body(req: func.HttpRequest, model: type[ModelT]) -> ModelT:
    """The body validated as `model`; raises `InvalidJsonError` / `ValidationFailedError` (both 400)."""
    data = load_json_body(req)
    if data is None:
        raise InvalidJsonError("A JSON request body is required.")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = _summarise(exc.errors(include_input=False, include_url=False))
        first = errors[0] if errors else {"field": "(body)", "message": "invalid"}
        raise ValidationFailedError(f"{first['field']}: {first['message']}", errors=errors) from None


def adapter_error_response(error: SyncError | ConfigurationError) -> func.HttpResponse:
    """A dependency failed after the retries: 503 (retry later) or 502, never a stack trace or a secret."""
    if isinstance(error, ConfigurationError):
        log.error("Configuration error: %s", error)
        return problem(
            503, "service_misconfigured", "Service misconfigured", "The service is not configured correctly."
        )
    service = error.service or "a dependency"
    if error.transient:
        log.warning("Dependency %s unavailable: %s", service, error)
        retry = getattr(error, "retry_after", None)
        resp = problem(503, "upstream_unavailable", "Dependency unavailable", f"{service} is unavailable; retry later.")
        resp.headers["Retry-After"] = str(int(retry or 5))
        return resp
    log.warning("Dependency %s refused: %s", service, error)
    return problem(
        502, "upstream_error", "Dependency error", f"{service} refused the request ({error.code or error.status})."
    )


def _internal_error() -> func.HttpResponse:
    trace_id = uuid.uuid4().hex
    log.exception("Unhandled error (traceId=%s)", trace_id)
    return problem(500, "internal_error", "Internal server error", "An internal error occurred.", traceId=trace_id)


Handler = Callable[..., Any]


def handle_errors(handler: Handler) -> Handler:
    """Map `ServiceError` to its problem response and anything else to a 500 problem (logged, no trace).

    Put it below the trigger decorator: `@bp.route(...)` then `@handle_errors`. Handlers are async: a plain
    function is refused when decorated.
    """
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"{handler.__qualname__} is no coroutine function: HTTP handlers are async")

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            return await handler(*args, **kwargs)
        except ServiceError as exc:
            return error_response(exc)
        except (SyncError, ConfigurationError) as exc:
            return adapter_error_response(exc)
        except Exception:
            return _internal_error()

    return wrapper
