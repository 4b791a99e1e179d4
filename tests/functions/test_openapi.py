"""``GET /api/openapi.json`` is a valid OpenAPI 3.1 document: openapi-spec-validator passes, every ``$ref``
resolves, parameters state their formats, and every operation documents its problem+json errors (the 404
of an unknown route included)."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from functions.http_openapi import openapi


def document() -> dict[str, Any]:
    req = func.HttpRequest(method="GET", url="/api/openapi.json", headers={}, params={}, route_params={}, body=b"")
    resp = openapi(req)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    return json.loads(resp.get_body())


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref  # the document is self-contained
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (at {part!r})"
        node = node[part]
    return node


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_openapi_spec_validator_passes() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validator.validate(doc)


def test_every_ref_resolves() -> None:
    doc = document()
    found = refs(doc)
    assert len(found) > 50
    for ref in set(found):
        resolve(doc, ref)
    assert resolve(doc, "#/components/responses/NotFound")["content"]["application/problem+json"]


def test_a_broken_ref_is_caught() -> None:
    doc = document()
    with pytest.raises(AssertionError):
        resolve(doc, "#/components/schemas/NoSuchSchema")


def test_every_operation_documents_its_errors_as_problem_json() -> None:
    doc = document()
    for path, method, op in operations(doc):
        responses = op["responses"]
        for status in ("400", "404", "4XX", "5XX"):
            assert status in responses, f"{method.upper()} {path} does not document {status}"
            target = resolve(doc, responses[status]["$ref"]) if "$ref" in responses[status] else responses[status]
            assert "application/problem+json" in target["content"], (path, method, status)
        assert ("401" in responses) == (op.get("security") != []), f"{method.upper()} {path}: 401 iff secured"
    not_found = resolve(doc, "#/components/responses/NotFound")
    assert not_found["content"]["application/problem+json"]["example"] == {
        "type": "urn:bc-dataverse-sync:problem:not_found", "status": 404, "code": "not_found",
    }  # fmt: skip
    assert "not_found" in doc["info"]["description"]


def test_success_answers_have_schemas_and_parameters_their_formats() -> None:
    doc = document()
    for path, method, op in operations(doc):
        for status, answer in op["responses"].items():
            if status.startswith("2") and status != "204":
                assert all("schema" in c for c in answer["content"].values()), (path, method, status)
        for p in op.get("parameters", []):
            schema = p["schema"]
            if p["name"] in ("bcId", "jobId", "dataverseId"):
                assert schema == {"type": "string", "format": "uuid"}, (path, p)
            if p["name"] == "top":
                assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 1, 1000)
            if p["in"] == "path":
                assert p["required"] is True and "{" + p["name"] + "}" in path
