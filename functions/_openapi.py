"""The OpenAPI 3.1 description of the HTTP contract (request schemas come from the pydantic models)."""

from __future__ import annotations

import functools
from typing import Any

from functions._mapping_openapi import add_mapping_paths
from functions._models import (
    CoupleRequest,
    JobRequest,
    MappingPatch,
    MatchRequest,
    RetryRequest,
    SyncRequest,
    UncoupleRequest,
)
from functions._plans_openapi import add_plan_paths

_PROBLEM = {
    "description": "Problem details (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_JOB_ACCEPTED = {
    "description": "Job queued; Location: /api/jobs/{jobId}",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobAccepted"}}},
}


def _op(
    summary: str,
    ok: str,
    *,
    body: type | None = None,
    secured: bool = True,
    params: list[str] | None = None,
    query: list[str] | None = None,
    accepted: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {ok: _JOB_ACCEPTED if accepted else {"description": "OK"}, "4XX": _PROBLEM},
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}},
        }
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params or []]
    parameters += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in query or []]
    if parameters:
        op["parameters"] = parameters
    if not secured:
        op["security"] = []
    return op


@functools.cache
def openapi_document() -> dict[str, Any]:
    m = ["mapping"]
    paths: dict[str, dict[str, Any]] = {
        "/health": {"get": _op("Health of the service and its dependencies", "200", secured=False)},
        "/openapi.json": {"get": _op("This document", "200")},
        "/mappings": {"get": _op("List table mappings", "200")},
        "/mappings/{mapping}": {
            "get": _op("Get a table mapping", "200", params=m),
            "patch": _op("Change run-time settings", "200", body=MappingPatch, params=m),
        },
        "/mappings/{mapping}/couplings": {
            "post": _op("Set up coupling", "201", body=CoupleRequest, params=m),
            "get": _op(
                "List couplings (or find by dataverseId)", "200", params=m, query=["dataverseId", "top", "continuation"]
            ),
            "delete": _op("Delete all couplings of the mapping (job)", "202", params=m, accepted=True),
        },
        "/mappings/{mapping}/couplings/match": {
            "post": _op("Couple by match fields (job)", "202", body=MatchRequest, params=m, accepted=True)
        },
        "/mappings/{mapping}/couplings/{bcId}": {
            "get": _op("Get the coupling of a BC record", "200", params=[*m, "bcId"]),
            "delete": _op("Delete a coupling", "204", params=[*m, "bcId"]),
        },
        "/mappings/{mapping}/uncouple": {
            "post": _op("Delete couplings of many records", "200", body=UncoupleRequest, params=m)
        },
        "/mappings/{mapping}/sync": {"post": _op("Synchronize now", "200", body=SyncRequest, params=m)},
        "/mappings/{mapping}/jobs": {
            "post": _op("Start a full or incremental sync", "202", body=JobRequest, params=m, accepted=True)
        },
        "/dataverse/sync": {"post": _op("Synchronize from Dataverse (simple body or RemoteExecutionContext)", "200")},
        "/errors": {
            "get": _op("Sync errors, newest first", "200", query=["mapping", "includeClosed", "top", "continuation"])
        },
        "/errors/retry": {"post": _op("Retry sync errors (job)", "202", body=RetryRequest, accepted=True)},
        "/jobs": {"get": _op("Jobs, newest first", "200", query=["mapping", "top", "continuation"])},
        "/jobs/{jobId}": {"get": _op("One job", "200", params=["jobId"])},
        "/webhooks/businesscentral": {
            "post": _op(
                "BC webhook (validationToken handshake, notifications)", "202", secured=False, query=["validationToken"]
            )
        },
        "/webhooks/dataverse": {
            "post": _op(
                "Dataverse service endpoint webhook (?code=<webhook key>)", "202", secured=False, query=["code"]
            )
        },
    }
    schemas: dict[str, Any] = {
        model.__name__: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for model in (CoupleRequest, SyncRequest, UncoupleRequest, MatchRequest, MappingPatch, RetryRequest, JobRequest)
    }
    add_mapping_paths(paths, schemas, _op)
    add_plan_paths(paths, schemas, _op)  # #22
    schemas["Problem"] = {
        "type": "object",
        "required": ["code", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
        },
    }
    schemas["JobAccepted"] = {
        "type": "object",
        "properties": {"jobId": {"type": "string"}, "status": {"const": "queued"}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Coupling & sync service for Business Central and Dataverse", "version": "1.0.0"},
        "servers": [{"url": "/api"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
        "security": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
    }
