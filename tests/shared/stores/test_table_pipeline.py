"""The Table clients' pipeline: consecutive SansIO policies fused into one step keep azure-core's semantics
(hook order, nesting on exceptions, the same policy objects), and a table client runs through it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.policies import AsyncHTTPPolicy, SansIOHTTPPolicy
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest

from shared.stores.tables import (
    FusedSansIOPolicies,
    escape_key,
    fused_policies,
    key_rows,
    point_rows,
    query_url,
    submit,
    table_client,
)
from shared.urlquote import quote_fast


class Rec(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def __init__(self, name: str, log: list[str], *, fail: str = "", awaitable: bool = False) -> None:
        self.name, self.log, self.fail, self.awaitable = name, log, fail, awaitable

    def _hook(self, what: str) -> Any:
        self.log.append(f"{self.name}.{what}")
        if self.fail == what:
            raise RuntimeError(f"{self.name} {what}")
        if self.awaitable:

            async def done() -> None:
                self.log.append(f"{self.name}.{what}:awaited")

            return done()
        return None

    def on_request(self, request: Any) -> Any:
        return self._hook("request")

    def on_response(self, request: Any, response: Any) -> Any:
        return self._hook("response")

    def on_exception(self, request: Any) -> Any:
        return self._hook("exception")


class Outer(AsyncHTTPPolicy):  # type: ignore[type-arg]
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def send(self, request: Any) -> Any:
        self.log.append("outer")
        return await self.next.send(request)


class Transport(AsyncHttpTransport):  # type: ignore[type-arg]
    def __init__(self, log: list[str], *, fail: bool = False) -> None:
        self.log, self.fail = log, fail

    async def send(self, request: Any, **kwargs: Any) -> Any:
        self.log.append("send")
        if self.fail:
            raise ConnectionError("down")
        return "response"

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __aexit__(self, *args: Any) -> None: ...


def _policies(log: list[str], fail: dict[str, str] | None = None) -> list[Any]:
    fail = fail or {}
    return [Rec("a", log, fail=fail.get("a", "")), Rec("b", log, fail=fail.get("b", ""), awaitable=True),
            Outer(log), Rec("c", log, fail=fail.get("c", ""))]  # fmt: skip


async def _run(fused: bool, fail: dict[str, str] | None = None, *, transport_fails: bool = False) -> list[str]:
    log: list[str] = []
    policies = _policies(log, fail)
    if fused:
        policies = fused_policies(policies)
    pipeline = AsyncPipeline(Transport(log, fail=transport_fails), policies=policies)  # type: ignore[arg-type]
    try:
        await pipeline.run(HttpRequest("GET", "https://x/t()"))
    except (RuntimeError, ConnectionError) as e:
        log.append(f"raised {type(e).__name__}")
    return log


def test_consecutive_sansio_policies_become_one_step_of_the_same_objects() -> None:
    policies = _policies([])
    fused = fused_policies(policies)
    assert [type(p) for p in fused] == [FusedSansIOPolicies, Outer, FusedSansIOPolicies]
    assert fused[0].policies == policies[:2] and fused[1] is policies[2] and fused[2].policies == [policies[3]]


@pytest.mark.parametrize(
    ("fail", "transport_fails"),
    [({}, False), ({}, True), ({"b": "request"}, False), ({"c": "request"}, False), ({"b": "response"}, False),
     ({"a": "response"}, False), ({"c": "response"}, False)],
)  # fmt: skip
async def test_fused_hooks_run_as_azure_core_runs_them(fail: dict[str, str], transport_fails: bool) -> None:
    expected = await _run(False, fail, transport_fails=transport_fails)
    got = await _run(True, fail, transport_fails=transport_fails)
    assert got == expected and len(got) > 2


async def test_fused_success_order() -> None:
    got = await _run(True)
    assert got == ["a.request", "b.request", "b.request:awaited", "outer", "c.request", "send", "c.response",
                   "b.response", "b.response:awaited", "a.response"]  # fmt: skip


async def test_table_client_keeps_the_service_policies_and_transport() -> None:
    from azure.data.tables.aio import TableServiceClient

    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        "TableEndpoint=http://127.0.0.1:1/devstoreaccount1;"
    )
    service = TableServiceClient.from_connection_string(conn)
    table = table_client(service, "Things")
    pipeline = table._client._client._pipeline
    steps = pipeline._impl_policies
    inner = [p for s in steps for p in (s.policies if isinstance(s, FusedSansIOPolicies) else [s])]
    assert inner == [p for p in service._policies if p]  # same objects, same order
    assert pipeline._transport._transport is service._client._client._pipeline._transport
    assert table.table_name == "Things" and table.url == service.get_table_client("Things").url
    await service.close()


@pytest.mark.parametrize(
    "params",
    [None, {}, {"$top": "1000"},
     {"$top": "5", "$filter": "PartitionKey eq 'a%2Fb' and RowKey ge 'x''y'", "$select": "A,B",
      "NextPartitionKey": "1!8!YQ--", "NextRowKey": "1!12!ü/€"}],
)  # fmt: skip
def test_query_url_is_the_url_azure_core_builds_from_quoted_params(params: dict[str, str] | None) -> None:
    url = "https://127.0.0.1:10002/devstoreaccount1/Things()"
    quoted = {k: quote_fast(v, safe="") for k, v in (params or {}).items()}
    assert query_url(url, params) == HttpRequest("GET", url, params=quoted or None).url


async def test_lean_reads_on_azurite_carry_auth_date_and_a_request_id_each(azurite_connection_string: str) -> None:
    from azure.data.tables.aio import TableServiceClient

    seen: list[dict[str, str]] = []
    service = TableServiceClient.from_connection_string(
        azurite_connection_string, raw_request_hook=lambda r: seen.append(dict(r.http_request.headers))
    )
    name = f"p{uuid.uuid4().hex[:10]}"
    await service.create_table(name)
    table = table_client(service, name)
    esc = escape_key("b/c")  # '%2F' must reach the service escaped, in a path and in a $filter
    try:
        await submit(table, [("upsert", {"PartitionKey": "p", "RowKey": k, "A": k}) for k in ("a", esc, "d")])
        seen.clear()
        found = await point_rows(table, "p", ["a", esc, "zz"])
        rows = await key_rows(table, "p", [esc, "d"])
        assert sorted(found) == ["a", esc] and found[esc]["A"] == esc and sorted(rows) == [esc, "d"]
        ids = [h["x-ms-client-request-id"] for h in seen]
        assert len(ids) == 4 and len(set(ids)) == 4 and all(str(uuid.UUID(i)) == i for i in ids)
        assert all(h["Authorization"].startswith("SharedKey ") and h["x-ms-date"] for h in seen)  # policies ran
        await service.delete_table(name)
    finally:
        await table.close()
        await service.close()
