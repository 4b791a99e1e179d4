"""JSON schemas of the success answers (the contract's resources), for the OpenAPI document. The shapes are
the ones ``functions._models`` builds (``coupling_json``, ``job_json``, ``error_json``, ``mapping_json``) and
the record result of ``RecordResult.as_json``; the enums come from the domain vocabulary."""

from __future__ import annotations

from typing import Any

from shared.domain.model import COUNT_KEYS, Direction, Outcome

_TS = {"type": ["string", "null"], "format": "date-time"}
_ID = {"type": ["string", "null"], "format": "uuid"}
_DIRECTION = {"enum": [*(d.value for d in Direction), None]}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["value"],
        "properties": {
            "value": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "nextLink": {"type": "string", "description": "The next page (same query, continuation token)"},
        },
    }


def response_schemas() -> dict[str, Any]:
    counts = {
        "type": "object",
        "properties": {k: {"type": "integer", "minimum": 0} for k in COUNT_KEYS},
    }
    record_result = {
        "type": "object",
        "required": ["bcId", "dataverseId", "status", "direction", "error"],
        "properties": {
            "bcId": _ID,
            "dataverseId": _ID,
            "status": {"enum": [o.value for o in Outcome]},
            "direction": _DIRECTION,
            "error": {
                "type": ["object", "null"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "transient": {"type": "boolean"},
                },
            },
        },
    }
    return {
        "Counts": counts,
        "RecordResult": record_result,
        "Coupling": {
            "type": "object",
            "required": ["mapping", "bcId", "dataverseId", "skipped"],
            "properties": {
                "mapping": {"type": "string"},
                "bcId": {"type": "string", "format": "uuid"},
                "dataverseId": {"type": "string"},
                "coupledAt": _TS,
                "lastSyncedAt": _TS,
                "lastSyncDirection": _DIRECTION,
                "lastSyncResult": {"enum": ["succeeded", "failed", "skipped", None]},
                "lastError": {"type": ["string", "null"]},
                "skipped": {"type": "boolean"},
            },
        },
        "CouplingPage": _page("Coupling"),
        "Job": {
            "type": "object",
            "additionalProperties": False,  # the contract's fields and these documented extras, never bookkeeping
            "required": ["jobId", "mapping", "kind", "status", "counts"],
            "properties": {
                "jobId": {"type": "string", "format": "uuid"},
                "mapping": {"type": "string"},
                "kind": {"type": "string"},
                "direction": _DIRECTION,
                "status": {"enum": ["queued", "running", "succeeded", "partial", "failed"]},
                "createdAt": _TS,
                "startedAt": _TS,
                "finishedAt": _TS,
                "counts": {"$ref": "#/components/schemas/Counts"},
                "batches": {
                    "type": "object",
                    "properties": {"expected": {"type": ["integer", "null"]}, "completed": {"type": "integer"}},
                },
                "detail": {"type": "string", "description": "Why a failed job failed"},
            },
        },
        "JobPage": _page("Job"),
        "SyncError": {
            "type": "object",
            "required": ["id", "mapping", "code", "message", "transient"],
            "properties": {
                "id": {"type": "string"},
                "mapping": {"type": "string"},
                "bcId": _ID,
                "dataverseId": _ID,
                "direction": {"type": "string"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "transient": {"type": "boolean"},
                "attempts": {"type": "integer", "minimum": 1},
                "firstOccurredAt": _TS,
                "lastOccurredAt": _TS,
                "jobId": {"type": ["string", "null"]},
                "closed": {"type": "boolean"},
                "closedAt": _TS,
            },
        },
        "SyncErrorPage": _page("SyncError"),
        "Mapping": {
            "type": "object",
            "required": ["name", "bcEntity", "dataverseTable", "direction", "state", "fields"],
            "properties": {
                "name": {"type": "string"},
                "bcEntity": {"type": "string"},
                "dataverseTable": {"type": "string"},
                "dataverseEntitySet": {"type": "string"},
                "direction": _DIRECTION,
                "syncOnlyCoupled": {"type": "boolean"},
                "state": {"enum": ["running", "paused"]},
                "dependsOn": {"type": "array", "items": {"type": "string"}},
                "fields": {"type": "array", "items": {"type": "object"}},
            },
        },
        "MappingList": _page("Mapping"),
        "SyncAnswer": {
            "type": "object",
            "required": ["jobId", "results", "counts"],
            "properties": {
                "jobId": {"type": "string", "format": "uuid"},
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/RecordResult"}},
                "counts": {"$ref": "#/components/schemas/Counts"},
            },
        },
        "DataverseSyncAnswer": {
            "type": "object",
            "properties": {
                "mapping": {"type": "string"},
                "bcId": {"type": "string", "format": "uuid"},
                "dataverseId": {"type": "string", "format": "uuid"},
                "created": {"type": "boolean"},
                "result": {"$ref": "#/components/schemas/RecordResult"},
                "ignored": {"const": True, "description": "An echo of this service's own write"},
            },
        },
        "UncoupleAnswer": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "bcId": _ID,
                            "dataverseId": _ID,
                            "status": {"enum": ["uncoupled", "not_coupled"]},
                        },
                    },
                }
            },
        },
        "RetryAccepted": {
            "type": "object",
            "required": ["jobId", "status"],
            "properties": {
                "jobId": {"type": "string", "format": "uuid"},
                "status": {"const": "queued"},
                "jobIds": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "unknown": {"type": "array", "items": {"type": "string"}},
            },
        },
        "WebhookAccepted": {
            "type": "object",
            "required": ["queued"],
            "properties": {"queued": {"type": "integer", "minimum": 0}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {"status": {"enum": ["ok", "degraded"]}, "checks": {"type": "object"}},
        },
    }
