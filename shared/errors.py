"""The one error taxonomy of the engine's adapters (connectors, stores, messaging).

Adapters translate every failure into one of these (``raise ... from e``), keeping the service's own
error code and message. Callers decide by kind only:

- ``TransientError`` (and ``ThrottledError``): retry later; the Service Bus worker re-raises it so the
  message is redelivered.
- ``PermanentError`` and its subclasses: retrying the same request will fail the same way; record it
  as a sync error and move on.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of all adapter errors. ``code`` is the remote service's error code when it gave one."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        service: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.service = service

    def __str__(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"(code {self.code})")
        if self.status:
            parts.append(f"[HTTP {self.status}]")
        return " ".join(parts)


class TransientError(SyncError):
    """5xx, timeouts, connection resets: the same request may succeed later."""

    transient = True


class ThrottledError(TransientError):
    """429 / service protection; ``retry_after`` seconds as the service asked."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class PermanentError(SyncError):
    """4xx other than 408/429: the request itself is wrong for the current state."""


class NotFoundError(PermanentError):
    """404: the record (or route) does not exist."""


class PreconditionFailedError(PermanentError):
    """412 (Dataverse) or 409 Request_EntityChanged (BC): the If-Match ETag is stale; the record changed."""


class ConflictError(PermanentError):
    """409: the entity already exists / concurrent write won (tables, Dataverse duplicate key)."""


class UnauthorizedError(PermanentError):
    """401/403: token missing, expired, wrong audience or lacking permission."""


class ConfigurationError(Exception):
    """A setting is missing or wrong. The message names the setting and never contains a secret."""


# BC answers a stale If-Match with 409 Request_EntityChanged (an ODataConflictException); it means
# exactly what Dataverse's 412 means, so it is classified as a stale ETag, not a conflict.
STALE_ETAG_CODES = frozenset({"Request_EntityChanged"})


def classify_status(status: int, code: str | None = None) -> type[SyncError]:
    """The error class for an HTTP status and the service's error code (the single mapping used by every
    HTTP adapter)."""
    if status == 429:
        return ThrottledError
    if status in (408,) or status >= 500:
        return TransientError
    if status in (401, 403):
        return UnauthorizedError
    if status == 404:
        return NotFoundError
    if status == 409:
        return PreconditionFailedError if code in STALE_ETAG_CODES else ConflictError
    if status == 412:
        return PreconditionFailedError
    return PermanentError
