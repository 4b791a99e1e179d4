"""Request models (pydantic, strict, unknown fields refused) and response shapes of the HTTP contract."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import azure.functions as func
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from shared.domain.errors import ValidationFailedError
from shared.domain.model import COUNT_KEYS, Coupling, Direction, Job, SyncErrorEntry
from shared.mappings.config import TableMapping

MAX_IDS = 1000
_GUID = re.compile(r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$")


def _guid(value: str) -> str:
    if not _GUID.match(value):
        raise ValueError("must be a GUID")
    return value.strip("{}").lower()


def _once(values: list[str]) -> list[str]:
    """The same record named twice (ids differing only in case or braces, already normalised) counts once."""
    return list(dict.fromkeys(values))


Guid = Annotated[str, Field(strict=True, max_length=38), AfterValidator(_guid)]
GuidList = Annotated[list[Guid], Field(min_length=1, max_length=MAX_IDS), AfterValidator(_once)]


def guid_param(value: str | None, name: str) -> str:
    """A GUID from a route or query parameter, or 400 ``validation_error``."""
    if value is None or not _GUID.match(value):
        raise ValidationFailedError(f"{name} must be a GUID.")
    return value.strip("{}").lower()


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CoupleRequest(_Request):
    bcId: Guid | None = None
    dataverseId: Guid | None = None
    createNew: StrictBool = False
    replace: StrictBool = False
    syncAfter: Literal["none", "toDataverse", "fromDataverse"] | None = None

    @model_validator(mode="after")
    def _check(self) -> CoupleRequest:
        if self.createNew:
            if (self.bcId is None) == (self.dataverseId is None):
                raise ValueError("createNew needs exactly one of bcId or dataverseId")
        elif self.bcId is None or self.dataverseId is None:
            raise ValueError("bcId and dataverseId are both required (or createNew with one of them)")
        return self


class _IdsRequest(_Request):
    bcIds: GuidList | None = None
    dataverseIds: GuidList | None = None

    @model_validator(mode="after")
    def _one_list(self) -> _IdsRequest:
        if (self.bcIds is None) == (self.dataverseIds is None):
            raise ValueError("give exactly one of bcIds or dataverseIds")
        return self


class SyncRequest(_IdsRequest):
    direction: Direction | None = Field(None, strict=False)
    force: StrictBool = False


class UncoupleRequest(_IdsRequest):
    pass


class MatchRequest(_Request):
    bcIds: GuidList | None = None


class MappingPatch(_Request):
    direction: Direction | None = Field(None, strict=False)
    syncOnlyCoupled: StrictBool | None = None
    state: Literal["running", "paused"] | None = None

    @model_validator(mode="after")
    def _any(self) -> MappingPatch:
        if self.direction is None and self.syncOnlyCoupled is None and self.state is None:
            raise ValueError("give at least one of direction, syncOnlyCoupled, state")
        return self


class RetryRequest(_Request):
    ids: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=200)]],
            Field(min_length=1, max_length=MAX_IDS),
            AfterValidator(_once),
        ]
        | None
    ) = None
    mapping: Annotated[str, Field(max_length=50)] | None = None
    all: StrictBool | None = None

    @model_validator(mode="after")
    def _check(self) -> RetryRequest:
        if self.ids is None and not (self.mapping and self.all):
            raise ValueError('give "ids", or "mapping" with "all": true')
        if self.ids is not None and (self.mapping or self.all):
            raise ValueError('give either "ids" or "mapping" with "all", not both')
        return self


class JobRequest(_Request):
    kind: Literal["full", "incremental"]


# ------------------------------------------------------------------ query parameters
def top_param(req: func.HttpRequest) -> int:
    raw = req.params.get("top", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:  # "²".isdigit() is True
        raise ValidationFailedError("top must be a whole number from 1 to 1000.")
    return int(raw)


def bool_param(req: func.HttpRequest, name: str) -> bool:
    raw = req.params.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise ValidationFailedError(f"{name} must be true or false.")
    return raw == "true"


def continuation_param(req: func.HttpRequest) -> str | None:
    raw = req.params.get("continuation")
    if raw is not None and (len(raw) > 2000 or not re.fullmatch(r"[A-Za-z0-9_\-=.~]+", raw)):
        raise ValidationFailedError("continuation is not a token this service issued.")
    return raw


def next_link(path: str, top: int, continuation: str | None, **params: str | None) -> str | None:
    if not continuation:
        return None
    query = {k: v for k, v in params.items() if v is not None}
    query.update({"top": str(top), "continuation": continuation})
    return f"/api/{path}?{urlencode(query)}"


def paged(items: list[dict[str, Any]], link: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"value": items}
    if link:
        body["nextLink"] = link
    return body


# ------------------------------------------------------------------ response shapes
def _ts(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def coupling_json(c: Coupling) -> dict[str, Any]:
    return {
        "mapping": c.mapping,
        "bcId": c.bc_id,
        "dataverseId": c.dataverse_id,
        "coupledAt": _ts(c.coupled_at),
        "lastSyncedAt": _ts(c.last_synced_at),
        "lastSyncDirection": c.last_sync_direction,
        "lastSyncResult": c.last_sync_result,
        "lastError": c.last_error,
        "skipped": c.skipped,
    }


def job_json(j: Job) -> dict[str, Any]:
    return {
        "jobId": j.job_id,
        "mapping": j.mapping,
        "kind": j.kind,
        "direction": j.direction,
        "status": j.status,
        "createdAt": _ts(j.created_at),
        "startedAt": _ts(j.started_at),
        "finishedAt": _ts(j.finished_at),
        "counts": {k: int(j.counts.get(k, 0)) for k in COUNT_KEYS},
        "batches": {"expected": j.expected_batches, "completed": j.completed_batches},
        **({"detail": j.detail} if j.detail else {}),
    }


def error_json(e: SyncErrorEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "mapping": e.mapping,
        "bcId": e.bc_id,
        "dataverseId": e.dataverse_id,
        "direction": e.direction,
        "code": e.code,
        "message": e.message,
        "transient": e.transient,
        "attempts": e.attempts,
        "firstOccurredAt": _ts(e.first_occurred_at),
        "lastOccurredAt": _ts(e.last_occurred_at),
        "jobId": e.job_id,
        **({"closed": True, "closedAt": _ts(e.closed_at)} if e.closed else {}),
    }


def mapping_json(m: TableMapping) -> dict[str, Any]:
    return {
        "name": m.name,
        "bcEntity": m.bc_entity,
        "dataverseTable": m.dataverse_table,
        "dataverseEntitySet": m.dataverse_entity_set,
        "direction": m.direction.value,
        "syncOnlyCoupled": m.sync_only_coupled,
        "state": m.state,
        "dependsOn": list(m.depends_on),
        "conflictPolicy": m.conflict_policy,
        "deletionPolicy": m.deletion_policy,
        "scheduleMinutes": m.schedule_minutes,
        "fields": [
            {
                "bc": f.bc,
                "dataverse": f.dataverse,
                "direction": f.direction.value,
                **({"constant": f.constant} if f.constant is not None else {}),
                **({"lookup": f.lookup.mapping} if f.lookup else {}),
            }
            for f in m.fields
        ],
    }


def accepted(job_id: str, **extra: Any) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps({"jobId": job_id, "status": "queued", **extra}),
        status_code=202,
        mimetype="application/json",
        headers={"Location": f"/api/jobs/{job_id}"},
    )


def parse_json_object(req: func.HttpRequest) -> dict[str, Any]:
    """A JSON object body (for free-form payloads such as a RemoteExecutionContext), or a 4xx problem."""
    from functions._http import InvalidJsonError, load_json_body

    data = load_json_body(req)
    if not isinstance(data, dict):
        raise InvalidJsonError("The request body must be a JSON object.")
    return data
