"""functions/_http.py: problem responses, JSON bodies, ServiceError mapping, no traces on 500."""

from __future__ import annotations

import json
import logging

import azure.functions as func
import pydantic
import pytest

from functions._http import InvalidJsonError, handle_errors, json_response, parse_json_body, problem
from shared.domain.errors import AlreadyCoupledError, DirectionRequiredError, ValidationFailedError


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    count: int = pydantic.Field(ge=1)


def request(body: bytes) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://127.0.0.1/api/x", body=body)


def test_problem_is_rfc9457() -> None:
    resp = problem(409, "already_coupled", "Already coupled", "It is.", options=["a"])
    assert resp.status_code == 409
    assert resp.mimetype == "application/problem+json"
    body = json.loads(resp.get_body())
    assert body == {
        "type": body["type"],
        "title": "Already coupled",
        "status": 409,
        "detail": "It is.",
        "code": "already_coupled",
        "options": ["a"],
    }
    assert body["type"].endswith("already_coupled")


def test_json_response() -> None:
    resp = json_response({"a": 1}, status=201, headers={"Location": "/api/x/1"})
    assert resp.status_code == 201 and resp.mimetype == "application/json"
    assert resp.headers["Location"] == "/api/x/1"
    assert json.loads(resp.get_body()) == {"a": 1}


def test_parse_json_body_ok() -> None:
    assert parse_json_body(request(b'{"name": "a", "count": 2}'), Body) == Body(name="a", count=2)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"   "])
def test_parse_json_body_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJsonError) as info:
        parse_json_body(request(raw), Body)
    assert info.value.code == "invalid_json" and info.value.status == 400


def test_parse_json_body_validation_error_does_not_echo_input() -> None:
    huge = "x" * 100_000
    with pytest.raises(ValidationFailedError) as info:
        parse_json_body(request(json.dumps({"name": 5, "count": 0, "extra": huge}).encode()), Body)
    err = info.value
    assert err.code == "validation_error" and err.status == 400
    fields = {e["field"] for e in err.extra["errors"]}
    assert fields == {"name", "count", "extra"}
    assert huge not in json.dumps(err.extra) and huge not in err.detail


def test_handle_errors_refuses_a_plain_function() -> None:
    def handler(req: func.HttpRequest) -> func.HttpResponse:
        return json_response({})

    with pytest.raises(TypeError, match="async"):
        handle_errors(handler)


async def test_handle_errors_maps_service_errors_with_their_extras() -> None:
    @handle_errors
    async def handler(req: func.HttpRequest) -> func.HttpResponse:
        raise DirectionRequiredError("Choose", options=["toDataverse"], suggested="toDataverse")

    resp = await handler(request(b""))
    body = json.loads(resp.get_body())
    assert resp.status_code == 400 and body["code"] == "direction_required"
    assert body["options"] == ["toDataverse"] and body["suggested"] == "toDataverse"


async def test_handle_errors_maps_service_errors_async_and_keeps_name() -> None:
    @handle_errors
    async def my_handler(req: func.HttpRequest) -> func.HttpResponse:
        raise AlreadyCoupledError("taken")

    assert my_handler.__name__ == "my_handler"
    resp = await my_handler(request(b""))
    assert resp.status_code == 409 and json.loads(resp.get_body())["code"] == "already_coupled"


async def test_handle_errors_unexpected_is_500_without_trace(caplog: pytest.LogCaptureFixture) -> None:
    @handle_errors
    async def handler(req: func.HttpRequest) -> func.HttpResponse:
        raise KeyError("very-secret-value")

    with caplog.at_level(logging.ERROR):
        resp = await handler(request(b""))
    text = resp.get_body().decode()
    assert resp.status_code == 500 and resp.mimetype == "application/problem+json"
    assert "very-secret-value" not in text and "Traceback" not in text
    body = json.loads(text)
    assert body["code"] == "internal_error" and body["traceId"]
    assert any(body["traceId"] in r.getMessage() and r.exc_info for r in caplog.records)
