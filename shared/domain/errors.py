"""Domain errors: each carries the contract's stable ``code`` and the HTTP status the API maps it to."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    code: str = "bad_request"
    status: int = 400
    title: str = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra  # extra problem members (e.g. options/suggested/changes)


class ValidationFailedError(ServiceError):
    code, status, title = "validation_error", 400, "The request is not valid"


class MappingNotFoundError(ServiceError):
    code, status, title = "mapping_not_found", 404, "Unknown table mapping"


class RecordNotFoundError(ServiceError):
    code, status, title = "record_not_found", 404, "Record not found"


class NotCoupledError(ServiceError):
    code, status, title = "not_coupled", 404, "The record is not coupled"


class AlreadyCoupledError(ServiceError):
    code, status, title = "already_coupled", 409, "Already coupled"


class DuplicateKeyError(ServiceError):
    """The other side refused a create because a record with the same key values exists (the detail names
    the key); a permanent refusal of its own, never a concurrency conflict."""

    code, status, title = "duplicate_key", 409, "A record with the same key exists"


class DirectionNotAllowedError(ServiceError):
    code, status, title = "direction_not_allowed", 422, "Direction not allowed by the mapping"


class DirectionRequiredError(ServiceError):
    code, status, title = "direction_required", 400, "Choose a synchronization direction"


class JobNotFoundError(ServiceError):
    code, status, title = "job_not_found", 404, "Job not found"


class CannotAutoCoupleError(NotCoupledError):
    """Sync from Dataverse of an uncoupled row whose mapping forbids coupling it automatically."""

    status = 409


class InvalidContinuationError(ValidationFailedError, ValueError):
    """A paging token that this service did not issue (or that was tampered with)."""

    code = "invalid_continuation"


class ErrorNotFoundError(ServiceError):
    code, status, title = "error_not_found", 404, "No such sync error"
