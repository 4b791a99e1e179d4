"""``GET /api/openapi.json`` is a valid OpenAPI 3.1 document: openapi-spec-validator passes, every ``$ref``
resolves, parameters state their formats, and every operation documents its problem+json errors (the 404
of an unknown route included)."""

from __future__ import annotations

import json
import uuid
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
    import openapi_spec_validator  # a pinned dev requirement: missing, the test fails rather than skips

    doc = document()
    assert doc["openapi"].startswith("3.1")
    openapi_spec_validator.validate(doc)


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


def answer_validator(doc: dict[str, Any], schema: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator({"components": doc["components"], "$ref": f"#/components/schemas/{schema}"})


def test_the_answer_schemas_describe_what_the_handlers_answer() -> None:
    from datetime import UTC, datetime

    from functions._models import coupling_json, error_json, job_json, mapping_json, paged
    from shared.config import Settings
    from shared.domain.model import Coupling, Job, SyncErrorEntry
    from shared.mappings.config import load_mapping_file
    from shared.services.sync_service import RecordResult

    doc = document()
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    bc, dv = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    coupling = Coupling(mapping="CUSTOMER", bc_id=bc, dataverse_id=dv, coupled_at=now, last_sync_result="failed")
    job = Job(job_id=bc, mapping="CUSTOMER", kind="full", direction="bidirectional", status="partial",
              created_at=now, detail="upstream down")  # fmt: skip
    error = SyncErrorEntry(id="e1", mapping="CUSTOMER", direction="toDataverse", code="update_conflict",
                           message="Both sides changed", transient=False, bc_id=bc, first_occurred_at=now)  # fmt: skip
    results = [
        RecordResult(bc, dv, "updated", "toDataverse").as_json(),
        RecordResult(bc, None, "not_coupled", "toDataverse", "not_coupled", "Not coupled.").as_json(),
    ]
    answers = {
        "Coupling": coupling_json(coupling),
        "CouplingPage": paged([coupling_json(coupling)], "/api/mappings/CUSTOMER/couplings?top=1&continuation=x"),
        "Job": job_json(job),
        "JobPage": paged([job_json(job)], None),
        "SyncErrorPage": paged([error_json(error)], None),
        "MappingList": {"value": [mapping_json(m) for m in load_mapping_file(Settings().mappings_file).mappings]},
        "SyncAnswer": {"jobId": bc, "results": results, "counts": job_json(job)["counts"]},
    }
    for schema, answer in answers.items():
        problems = [e.message for e in answer_validator(doc, schema).iter_errors(answer)]
        assert not problems, (schema, problems)
    bad = {**job_json(job), "status": "exploded"}
    assert list(answer_validator(doc, "Job").iter_errors(bad)), "the schema accepts a status outside the contract"


def test_a_job_never_shows_its_bookkeeping() -> None:
    from functions._models import job_json
    from shared.domain.model import Job

    cursors = {"dataverse": "https://org/api/data/v9.2/accounts?$deltatoken=1"}
    running = Job(job_id="j", mapping="CUSTOMER", kind="incremental", direction=None, status="running",
                  expected_batches=3, pending_cursors=cursors)  # fmt: skip
    assert "detail" not in job_json(running) and "deltatoken" not in json.dumps(job_json(running))
    failed = Job(job_id="j", mapping="CUSTOMER", kind="incremental", direction=None, status="failed", detail="boom")
    assert job_json(failed)["detail"] == "boom"
    schema = answer_validator(document(), "Job")
    for job in (running, failed):  # nothing beyond the documented fields (the schema allows no others)
        assert not [e.message for e in schema.iter_errors(job_json(job) | {"jobId": str(uuid.uuid4())})]
    assert list(schema.iter_errors(job_json(failed) | {"jobId": str(uuid.uuid4()), "pendingCursors": {}}))
