"""OpenAPI entries of plans, coupling history and the operator console (#22), merged into the document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def add_plan_paths(paths: dict[str, dict[str, Any]], schemas: dict[str, Any], op: Callable[..., Any]) -> None:
    from functions.http_plans import PlanRequest

    plan = op(
        "Plan: what Synchronize now (ids, ≤100: 200 with results) or a mapping-wide sync ({kind}: 202 plan job) "
        "would do, without writing anything; a bidirectional mapping without direction → 400 direction_required",
        "200",
        body=PlanRequest,
        params=["mapping"],
    )
    plan["responses"]["202"] = {
        "description": "Plan job queued; its items at /api/jobs/{jobId}/plan",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobAccepted"}}},
    }
    plan["responses"]["200"] = {
        "description": "The plan of these records",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlanAnswer"}}},
    }
    paths["/mappings/{mapping}/plan"] = {"post": plan}
    paths["/jobs/{jobId}/plan"] = {
        "get": op("The paged items of a plan job", "200", params=["jobId"], query=["top", "continuation"])
    }
    paths["/mappings/{mapping}/couplings/{bcId}/history"] = {
        "get": op(
            "The history of a coupled (or formerly coupled) BC record, newest first; never coupled → 404 not_found",
            "200",
            params=["mapping", "bcId"],
            query=["top", "continuation"],
        )
    }
    paths["/console"] = {
        "get": op(
            "The operator console (HTML; its calls use the function key entered on the page)", "200", secured=False
        )
    }
    paths["/console/{asset}"] = {
        "get": op("The console's script and style sheet", "200", params=["asset"], secured=False)
    }
    paths["/console"]["get"]["responses"]["200"] = {
        "description": "The console page",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    paths["/console/{asset}"]["get"]["responses"]["200"] = {
        "description": "The asset",
        "content": {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}},
    }
    schemas["PlanRequest"] = PlanRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in (schemas["PlanRequest"].pop("$defs", None) or {}).items():
        schemas.setdefault(name, sub)
    change = {
        "type": "object",
        "properties": {
            "field": {"type": "string"},
            "side": {"enum": ["businessCentral", "dataverse"]},
            "from": {},
            "to": {},
        },
    }
    schemas["PlanItem"] = {
        "type": "object",
        "properties": {
            "bcId": {"type": ["string", "null"]},
            "dataverseId": {"type": ["string", "null"]},
            "action": {"enum": ["create", "update", "none", "conflict", "skip", "not_coupled", "not_found"]},
            "direction": {"type": ["string", "null"]},
            "reason": {"type": ["string", "null"]},
            "changes": {"type": "array", "items": change},
        },
    }
    schemas["PlanAnswer"] = {
        "type": "object",
        "properties": {
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/PlanItem"}},
            "counts": {"type": "object"},
        },
    }
    schemas["HistoryEntry"] = {
        "type": "object",
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "jobId": {"type": ["string", "null"]},
            "trigger": {"enum": ["syncNow", "job", "webhook", "timer", "couple", "uncouple", "retry", "match"]},
            "action": {
                "enum": ["coupled", "created", "updated", "unchanged", "conflict", "failed", "skipped", "uncoupled"]
            },
            "direction": {"type": ["string", "null"]},
            "changes": {"type": "array", "items": change},
            "error": {"type": ["object", "null"]},
        },
    }
