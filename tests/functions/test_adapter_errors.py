"""Dependency failures that survive the retries become 503/502 problems, never a 500 with a trace."""

from __future__ import annotations

import json

import azure.functions as func

from functions._http import handle_errors
from shared.errors import ConfigurationError, PermanentError, ThrottledError


def _req() -> func.HttpRequest:
    return func.HttpRequest("GET", "http://x/api/y", body=b"")


async def test_transient_dependency_failure_is_503_with_retry_after() -> None:
    @handle_errors
    async def handler(req: func.HttpRequest) -> func.HttpResponse:
        raise ThrottledError("busy", retry_after=7, status=429, service="dataverse")

    resp = await handler(_req())
    body = json.loads(resp.get_body())
    assert resp.status_code == 503 and body["code"] == "upstream_unavailable" and resp.headers["Retry-After"] == "7"


async def test_permanent_dependency_failure_is_502_and_configuration_is_503_without_detail() -> None:
    @handle_errors
    async def refused(req: func.HttpRequest) -> func.HttpResponse:
        raise PermanentError("bad", code="0x80040217", status=400, service="dataverse")

    @handle_errors
    async def misconfigured(req: func.HttpRequest) -> func.HttpResponse:
        raise ConfigurationError("SYNC_CLIENT_SECRET is wrong: s3cr3t")

    r1, r2 = await refused(_req()), await misconfigured(_req())
    assert r1.status_code == 502 and json.loads(r1.get_body())["code"] == "upstream_error"
    assert r2.status_code == 503 and b"s3cr3t" not in r2.get_body()
