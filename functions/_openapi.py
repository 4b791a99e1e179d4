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
from functions._response_schemas import response_schemas

_PROBLEM = {
    "description": "Problem details (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_JOB_ACCEPTED = {
    "description": "Job queued; Location: /api/jobs/{jobId}",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobAccepted"}}},
}
_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
# Every operation's error answers: the contract's problem codes (see each summary) and what any route answers.
_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/NotFound"},
    "4XX": {"$ref": "#/components/responses/Problem"},
    "5XX": {"$ref": "#/components/responses/Unavailable"},
}
_GUID = {"type": "string", "format": "uuid"}
_TOKEN = {"type": "string", "minLength": 1, "description": "Opaque continuation token from the last page"}
_PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    "mapping": {"type": "string", "minLength": 1, "description": "Table mapping name, e.g. CUSTOMER"},
    "bcId": _GUID,
    "jobId": _GUID,
    "dataverseId": _GUID,
    "fieldId": {"type": "string", "minLength": 1},
    "asset": {"type": "string", "minLength": 1},
    "top": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "continuation": _TOKEN,
    "includeClosed": {"type": "boolean", "default": False},
    "validationToken": {"type": "string"},
    "code": {"type": "string"},
}


def _parameter(name: str, where: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": _PARAMETER_SCHEMAS.get(name, {"type": "string"}),
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
    answer: str | None = None,
) -> dict[str, Any]:
    success = _JOB_ACCEPTED if accepted else {"description": "No content"} if ok == "204" else _OK
    if answer is not None:  # a named schema of functions._response_schemas
        ref = {"$ref": f"#/components/schemas/{answer}"}
        success = {"description": success["description"], "content": {"application/json": {"schema": ref}}}
    op: dict[str, Any] = {"summary": summary, "responses": {ok: success, **_ERRORS}}
    if not secured:
        del op["responses"]["401"]
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}},
        }
    parameters = [_parameter(p, "path") for p in params or []] + [_parameter(q, "query") for q in query or []]
    if parameters:
        op["parameters"] = parameters
    if not secured:
        op["security"] = []
    return op


def _problem_response(description: str, code: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": {"type": f"urn:bc-dataverse-sync:problem:{code}", "status": 0, "code": code},
            }
        },
    }


def _responses() -> dict[str, Any]:
    out = {
        "BadRequest": _problem_response(
            "Invalid body or parameter (validation_failed, invalid_json, ...)", "validation_failed"
        ),
        "Unauthorized": _problem_response("No or a wrong function key", "unauthorized"),
        "NotFound": _problem_response(
            "The named mapping, record, coupling or job does not exist (mapping_not_found, not_coupled, "
            "job_not_found, ...), or no route matches the path (not_found)",
            "not_found",
        ),
        "Problem": _PROBLEM,
        "Unavailable": _problem_response(
            "The service cannot do its own work (Table Storage or Service Bus unavailable: 503) or failed (500)",
            "unavailable",
        ),
    }
    for name, status in (("BadRequest", 400), ("Unauthorized", 401), ("NotFound", 404), ("Unavailable", 503)):
        out[name]["content"]["application/problem+json"]["example"]["status"] = status
    return out


@functools.cache
def openapi_document() -> dict[str, Any]:
    m = ["mapping"]
    paths: dict[str, dict[str, Any]] = {
        "/health": {"get": _op("Health of the service and its dependencies", "200", secured=False, answer="Health")},
        "/openapi.json": {"get": _op("This document", "200")},
        "/mappings": {"get": _op("List table mappings", "200", answer="MappingList")},
        "/mappings/{mapping}": {
            "get": _op("Get a table mapping", "200", params=m, answer="Mapping"),
            "patch": _op("Change run-time settings", "200", body=MappingPatch, params=m, answer="Mapping"),
        },
        "/mappings/{mapping}/couplings": {
            "post": _op("Set up coupling", "201", body=CoupleRequest, params=m, answer="Coupling"),
            "get": _op(
                "List couplings (or find by dataverseId)",
                "200",
                params=m,
                query=["dataverseId", "top", "continuation"],
                answer="CouplingPage",
            ),
            "delete": _op("Delete all couplings of the mapping (job)", "202", params=m, accepted=True),
        },
        "/mappings/{mapping}/couplings/match": {
            "post": _op("Couple by match fields (job)", "202", body=MatchRequest, params=m, accepted=True)
        },
        "/mappings/{mapping}/couplings/{bcId}": {
            "get": _op("Get the coupling of a BC record", "200", params=[*m, "bcId"], answer="Coupling"),
            "delete": _op("Delete a coupling", "204", params=[*m, "bcId"]),
        },
        "/mappings/{mapping}/uncouple": {
            "post": _op(
                "Delete couplings of many records", "200", body=UncoupleRequest, params=m, answer="UncoupleAnswer"
            )
        },
        "/mappings/{mapping}/sync": {
            "post": _op(
                "Synchronize now (up to the inline limit: 200 with results; more: 202 job)",
                "200",
                body=SyncRequest,
                params=m,
                answer="SyncAnswer",
            )
        },
        "/mappings/{mapping}/jobs": {
            "post": _op("Start a full or incremental sync", "202", body=JobRequest, params=m, accepted=True)
        },
        "/dataverse/sync": {
            "post": _op(
                "Synchronize from Dataverse (simple body or RemoteExecutionContext); 201 when it created the BC record",
                "200",
                answer="DataverseSyncAnswer",
            )
        },
        "/errors": {
            "get": _op(
                "Sync errors, newest first",
                "200",
                query=["mapping", "includeClosed", "top", "continuation"],
                answer="SyncErrorPage",
            )
        },
        "/errors/retry": {
            "post": _op(
                "Retry sync errors (one job per mapping; none matching: 404 error_not_found)",
                "202",
                body=RetryRequest,
                accepted=True,
                answer="RetryAccepted",
            )
        },
        "/jobs": {"get": _op("Jobs, newest first", "200", query=["mapping", "top", "continuation"], answer="JobPage")},
        "/jobs/{jobId}": {"get": _op("One job", "200", params=["jobId"], answer="Job")},
        "/webhooks/businesscentral": {
            "post": _op(
                "BC webhook (validationToken handshake, notifications)",
                "202",
                secured=False,
                query=["validationToken"],
                answer="WebhookAccepted",
            )
        },
        "/webhooks/dataverse": {
            "post": _op(
                "Dataverse service endpoint webhook (?code=<webhook key>)",
                "202",
                secured=False,
                query=["code"],
                answer="WebhookAccepted",
            )
        },
    }
    schemas: dict[str, Any] = {
        model.__name__: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for model in (CoupleRequest, SyncRequest, UncoupleRequest, MatchRequest, MappingPatch, RetryRequest, JobRequest)
    }
    paths["/webhooks/businesscentral"]["post"]["responses"]["200"] = {
        "description": "The subscription handshake: the validationToken echoed",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    paths["/mappings/{mapping}/sync"]["post"]["responses"]["202"] = _JOB_ACCEPTED
    paths["/dataverse/sync"]["post"]["responses"]["201"] = paths["/dataverse/sync"]["post"]["responses"]["200"]
    schemas.update(response_schemas())
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
        "info": {
            "title": "Coupling & sync service for Business Central and Dataverse",
            "version": "1.0.0",
            "description": "Errors are problem details (RFC 9457, application/problem+json) with a `code`. A path "
            "that no route matches answers 404 application/problem+json with code `not_found`.",
        },
        "servers": [{"url": "/api"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _responses(),
            "securitySchemes": {
                "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
        "security": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
    }
