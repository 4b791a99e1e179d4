"""The lean entity-group-transaction serializer (shared/stores/table_batch.py): its body against the documented
format and the SDK's own sub-requests, its response parsing, the same outcomes as the SDK on Azurite (successes
and failures), the SDK fallback, and one TLS context per process for Table clients."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from azure.core import MatchConditions
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables._table_batch import TableBatchOperations
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.stores import table_batch
from shared.stores.table_batch import Unsupported, build_body, parse_response, sub_request
from shared.stores.tables import OneContextTransport, build_service_client, ssl_context

BASE = "https://myaccount.table.core.windows.net"
ETAG = "W/\"datetime'2013-08-30T18%3A11%3A44.2263306Z'\""


def _ops() -> list[tuple[Any, ...]]:
    return [
        (
            "create",
            {
                "PartitionKey": "Channel_19",
                "RowKey": "1",
                "Rating": 9,
                "Text": "x",
                "At": datetime(2024, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC),
                "Ok": True,
                "Score": 1.0,
            },
        ),
        ("update", {"PartitionKey": "Channel_19", "RowKey": "2", "Text": "m"}, {"mode": UpdateMode.MERGE}),
        (
            "update",
            {"PartitionKey": "Channel_19", "RowKey": "3", "Text": "r"},
            {"mode": UpdateMode.REPLACE, "etag": ETAG, "match_condition": MatchConditions.IfNotModified},
        ),
        ("upsert", {"PartitionKey": "Channel_19", "RowKey": "4", "Text": "u"}, {"mode": UpdateMode.MERGE}),
        ("upsert", {"PartitionKey": "Channel_19", "RowKey": "5", "Text": "u"}, {"mode": UpdateMode.REPLACE}),
        ("delete", {"PartitionKey": "Channel_19", "RowKey": "bc:it's 6"}, {}),
    ]


def _parts(body: bytes, changeset: str) -> list[tuple[list[str], list[str], str]]:
    """(MIME headers, HTTP request line + headers, body) of each change-set part."""
    text = body.decode()
    out = []
    for chunk in text.split(f"--{changeset}")[1:-1]:
        mime, http = chunk.strip("\r\n").split("\r\n\r\n", 1)
        head, _, payload = http.partition("\r\n\r\n")
        out.append((mime.split("\r\n"), head.split("\r\n"), payload.rstrip("\r\n")))
    return out


# ----------------------------------------------------------------------------- request body
def test_body_has_the_documented_batch_layout() -> None:
    """Learn, "Performing entity group transactions": a batch boundary holding ONE change set whose parts are
    ``application/http`` with binary transfer encoding, CRLF line ends, closing delimiters at the end."""
    body = build_body(_ops(), base=BASE, table="Blogs", batch="batch_a1", changeset="changeset_8a")
    text = body.decode()
    assert text.startswith("--batch_a1\r\nContent-Type: multipart/mixed; boundary=changeset_8a\r\n\r\n")
    assert text.endswith("--changeset_8a--\r\n--batch_a1--\r\n")
    assert "\n" not in text.replace("\r\n", "")  # every line ends in CRLF
    parts = _parts(body, "changeset_8a")
    assert len(parts) == 6
    for n, (mime, _head, _payload) in enumerate(parts):
        assert mime == ["Content-Type: application/http", "Content-Transfer-Encoding: binary", f"Content-ID: {n}"]
    lines = [head[0] for _m, head, _p in parts]
    assert lines == [
        f"POST {BASE}/Blogs HTTP/1.1",
        f"MERGE {BASE}/Blogs(PartitionKey='Channel_19',RowKey='2') HTTP/1.1",
        f"PUT {BASE}/Blogs(PartitionKey='Channel_19',RowKey='3') HTTP/1.1",
        f"MERGE {BASE}/Blogs(PartitionKey='Channel_19',RowKey='4') HTTP/1.1",
        f"PUT {BASE}/Blogs(PartitionKey='Channel_19',RowKey='5') HTTP/1.1",
        f"DELETE {BASE}/Blogs(PartitionKey='Channel_19',RowKey='bc%3Ait%27%27s%206') HTTP/1.1",
    ]
    heads = [dict(h.split(": ", 1) for h in head[1:]) for _m, head, _p in parts]
    assert all(h["Accept"] == "application/json;odata=minimalmetadata" for h in heads)
    assert all(h["DataServiceVersion"] == "3.0;" for h in heads)
    assert heads[0]["Prefer"] == "return-no-content" and "If-Match" not in heads[0]
    assert [h.get("If-Match") for h in heads] == [None, "*", ETAG, None, None, "*"]  # upsert: insert-or-*
    assert [h.get("Content-Type") for h in heads] == ["application/json"] * 5 + [None]
    created = json.loads(parts[0][2])
    assert created == {
        "PartitionKey": "Channel_19", "RowKey": "1", "Rating": 9, "Text": "x",
        "At": "2024-01-02T03:04:05.600000Z", "At@odata.type": "Edm.DateTime", "Ok": True,
        "Score": 1.0, "Score@odata.type": "Edm.Double",
    }  # fmt: skip
    assert parts[5][2] == ""  # a delete has no body


def test_sub_requests_address_and_encode_what_the_sdk_does() -> None:
    """Same URLs, If-Match values and entity JSON (bar the SDK's redundant Edm.String annotations) as the
    SDK's own TableBatchOperations; the merge verb is the documented MERGE where the SDK sends PATCH."""
    sdk = TableBatchOperations(
        config=type("C", (), {"version": "2019-02-02"})(), endpoint=BASE, table_name="Blogs", is_cosmos_endpoint=False
    )
    for op in _ops():
        sdk.add_operation(op)
    body = build_body(_ops(), base=BASE, table="Blogs", batch="b", changeset="c")
    for req, (_mime, head, payload) in zip(sdk.requests, _parts(body, "c"), strict=True):
        method, url, _ = head[0].split(" ")
        assert url == req.url
        assert method == {"PATCH": "MERGE"}.get(req.method, req.method)
        mine = dict(h.split(": ", 1) for h in head[1:])
        assert mine.get("If-Match") == req.headers.get("If-Match")
        if req.content:
            theirs = {k: v for k, v in json.loads(req.content).items() if v != "Edm.String"}
            assert json.loads(payload) == theirs


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC), "2024-01-02T03:04:05.600000Z"),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05.000000Z"),  # microseconds always
        (datetime(2024, 1, 2, 0, 30, 0, 7, tzinfo=timezone(timedelta(hours=2))), "2024-01-01T22:30:00.000007Z"),
        (datetime(2024, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-3))), "2025-01-01T02:00:00.000000Z"),
        (datetime(999, 5, 6, 7, 8, 9, tzinfo=UTC), datetime(999, 5, 6, 7, 8, 9).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        # the year crosses below 1000 in UTC
        (
            datetime(1000, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            datetime(999, 12, 31, 23, 30).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        ),
    ],
)
def test_datetimes_are_written_as_strftime_writes_them_in_utc(value: datetime, text: str) -> None:
    assert table_batch.edm_datetime(value) == text == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    naive = datetime(2024, 1, 2, 3, 4, 5)  # local time, as astimezone reads it
    assert table_batch.edm_datetime(naive) == naive.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(
    "entity",
    [
        {"PartitionKey": "p", "RowKey": "r", "Big": 2**40},  # Int64 needs a typed EntityProperty
        {"PartitionKey": "p", "RowKey": "r", "G": uuid.uuid4()},
        {"PartitionKey": "p", "RowKey": "r", "B": b"bytes"},
        {"PartitionKey": "p", "RowKey": "r", "T": ("1", "Edm.Int64")},
        {"PartitionKey": "p", "RowKey": "r", "F": float("nan")},
    ],
)
def test_values_it_does_not_serialize_are_left_to_the_sdk(entity: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        sub_request(0, ("create", entity), BASE, "T")


def test_an_if_not_modified_without_etag_is_left_to_the_sdk() -> None:
    with pytest.raises(Unsupported):
        sub_request(
            0,
            ("delete", {"PartitionKey": "p", "RowKey": "r"}, {"match_condition": MatchConditions.IfNotModified}),
            BASE,
            "T",
        )


# ----------------------------------------------------------------------------- response
DOC_RESPONSE = (
    "--batchresponse_4c63\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_b47f\r\n\r\n"
    "--changesetresponse_b47f\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    "HTTP/1.1 201 Created\r\nDataServiceVersion: 3.0;\r\n"
    "Content-Type: application/json;odata=minimalmetadata;streaming=true;charset=utf-8\r\n"
    f"ETag: {ETAG}\r\n\r\n"
    '{"odata.metadata":"x","PartitionKey":"Channel_19","RowKey":"1"}\r\n'
    "--changesetresponse_b47f\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    "HTTP/1.1 204 No Content\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n"
    "Preference-Applied: return-no-content\r\nDataServiceVersion: 3.0;\r\n"
    "ETag: W/\"datetime'2013-08-30T18%3A11%3A44.3'\"\r\n\r\n\r\n"
    "--changesetresponse_b47f--\r\n"
    "--batchresponse_4c63--\r\n"
).encode()

DOC_ERROR = (
    b"--batchresponse_e6\r\nContent-Type: multipart/mixed; boundary=changesetresponse_9b\r\n\r\n"
    b"--changesetresponse_9b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 409 Conflict\r\nContent-ID: 2\r\nContent-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n"
    b"\r\n"
    b'{"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US",'
    b'"value":"2:The specified entity already exists.\\nRequestId:1"}}}\r\n'
    b"--changesetresponse_9b--\r\n--batchresponse_e6--\r\n"
)


def test_parses_the_documented_success_response() -> None:
    parts = parse_response(DOC_RESPONSE, "multipart/mixed; boundary=batchresponse_4c63")
    assert [p.status for p in parts] == [201, 204]
    assert parts[0].headers["etag"] == ETAG
    assert parts[1].headers["etag"].endswith("44.3'\"")
    assert json.loads(parts[0].body)["RowKey"] == "1" and parts[1].body == b""


def test_a_bare_lf_framed_answer_parses_like_a_crlf_one() -> None:
    lf = DOC_RESPONSE.replace(b"\r\n", b"\n")
    parts = parse_response(lf, "multipart/mixed; boundary=batchresponse_4c63")
    assert [(p.status, p.etag) for p in parts] == [(201, ETAG), (204, "W/\"datetime'2013-08-30T18%3A11%3A44.3'\"")]
    assert json.loads(parts[0].body)["RowKey"] == "1"


def test_an_etag_header_in_another_spelling_is_still_found() -> None:
    lower = DOC_RESPONSE.replace(b"ETag:", b"etag:")
    parts = parse_response(lower, "multipart/mixed; boundary=batchresponse_4c63")
    assert parts[0].etag == ETAG and parts[0].headers["etag"] == ETAG


def test_a_failed_operation_becomes_the_sdk_error_with_its_index() -> None:
    (part,) = parse_response(DOC_ERROR, "multipart/mixed; boundary=batchresponse_e6")
    error = table_batch.part_error(part)
    assert isinstance(error, TableTransactionError)
    assert (error.index, error.status_code, error.error_code) == (2, 409, "EntityAlreadyExists")


# ----------------------------------------------------------------------------- Azurite: same outcomes as the SDK
@pytest.fixture
async def table(azurite_connection_string: str) -> AsyncIterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite_connection_string)
    client = await service.create_table(f"b{uuid.uuid4().hex[:12]}")
    yield client
    await service.delete_table(client.table_name)
    await client.close()
    await service.close()


async def _rows(table: TableClient, pk: str = "p") -> dict[str, dict[str, Any]]:
    return {e["RowKey"]: dict(e) async for e in table.query_entities(f"PartitionKey eq '{pk}'")}


async def _run(table: TableClient, lean: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], dict[str, Any]]:
    monkeypatch.setattr(table_batch, "ENABLED", lean)
    pk = f"P{lean}"
    seed = [("create", {"PartitionKey": pk, "RowKey": rk, "Keep": 1}) for rk in ("2", "3", "bc:it's 6")]
    await table.submit_transaction(seed)
    etag = (await table.get_entity(pk, "3")).metadata["etag"]
    ops = [(kind, {**entity, "PartitionKey": pk}, *rest) for kind, entity, *rest in _ops()]
    ops[2] = (ops[2][0], ops[2][1], {**ops[2][2], "etag": etag})
    out = await table_batch.submit_transaction(table, ops)
    rows = {rk: {k: v for k, v in row.items() if k != "PartitionKey"} for rk, row in (await _rows(table, pk)).items()}
    return out, rows


async def test_on_azurite_the_lean_path_writes_what_the_sdk_writes(
    table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lean_out, lean_rows = await _run(table, True, monkeypatch)
    sdk_out, sdk_rows = await _run(table, False, monkeypatch)
    assert lean_rows == sdk_rows
    assert lean_rows["2"] == {"RowKey": "2", "Keep": 1, "Text": "m"}  # merged
    assert lean_rows["3"] == {"RowKey": "3", "Text": "r"}  # replaced
    assert "bc:it's 6" not in lean_rows and lean_rows["1"]["At"] == datetime(2024, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    assert isinstance(lean_rows["1"]["Score"], float)
    assert len(lean_out) == len(sdk_out) == 6
    assert [bool(o.get("etag")) for o in lean_out] == [bool(o.get("etag")) for o in sdk_out]
    assert lean_out[0]["etag"] == (await table.get_entity("PTrue", "1")).metadata["etag"]


@pytest.mark.parametrize("failure", ["exists", "modified", "missing"])
async def test_on_azurite_failures_match_the_sdk(
    table: TableClient, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    await table.create_entity({"PartitionKey": "p", "RowKey": "there"})
    etag = (await table.get_entity("p", "there")).metadata["etag"]
    await table.update_entity({"PartitionKey": "p", "RowKey": "there", "X": 1})  # the etag is stale now
    bad = {
        "exists": ("create", {"PartitionKey": "p", "RowKey": "there"}),
        "modified": (
            "update",
            {"PartitionKey": "p", "RowKey": "there"},
            {"etag": etag, "match_condition": MatchConditions.IfNotModified},
        ),
        "missing": ("delete", {"PartitionKey": "p", "RowKey": "gone"}, {}),
    }[failure]
    seen = []
    for lean in (True, False):
        monkeypatch.setattr(table_batch, "ENABLED", lean)
        with pytest.raises(TableTransactionError) as info:
            await table_batch.submit_transaction(table, [("create", {"PartitionKey": "p", "RowKey": "new"}), bad])
        e = info.value
        seen.append((type(e), e.index, str(e.error_code), e.status_code, e.message.split("\n")[0]))
    assert seen[0] == seen[1]
    assert seen[0][1] == 1
    assert "new" not in await _rows(table)  # the whole transaction was rejected


async def test_on_azurite_unsupported_values_go_through_the_sdk(table: TableClient) -> None:
    guid = uuid.uuid4()
    ops = [
        ("create", {"PartitionKey": "p", "RowKey": "a", "G": guid}),
        ("create", {"PartitionKey": "p", "RowKey": "b"}),
    ]
    out = await table_batch.submit_transaction(table, ops)
    assert len(out) == 2 and (await table.get_entity("p", "a"))["G"] == guid


def test_the_lean_body_costs_a_fraction_of_the_sdk_build() -> None:
    """CPU of building one 100-operation transaction body: the SDK's per-operation requests + ``email``
    multipart serialization against the lean writer (a ratio, not an absolute time)."""
    from azure.core.rest import HttpRequest

    row = {"BcId": str(uuid.uuid4()), "CoupledAt": datetime.now(UTC), "Sync": "{}" * 40, "BcValues": "x" * 300}
    ops = [("create", {"PartitionKey": "CUSTOMER", "RowKey": f"bc:{uuid.uuid4()}", **row}) for _ in range(100)]

    def sdk() -> None:
        batch = TableBatchOperations(
            config=type("C", (), {"version": "2019-02-02"})(), endpoint=BASE, table_name="T", is_cosmos_endpoint=False
        )
        for op in ops:
            batch.add_operation(op)
        changeset = HttpRequest("POST", "")
        changeset.set_multipart_mixed(*batch.requests, boundary="changeset_x")
        request = HttpRequest("POST", f"{BASE}/$batch")
        request.set_multipart_mixed(changeset, enforce_https=False, boundary="batch_x")
        request._prepare_multipart_body()  # type: ignore[attr-defined]  # what the transport does before sending

    def lean() -> None:
        build_body(ops, base=BASE, table="T", batch="batch_x", changeset="changeset_x")

    def cpu(fn: Any) -> float:
        t0 = time.process_time()
        for _ in range(5):
            fn()
        return time.process_time() - t0

    assert cpu(lean) * 5 < cpu(sdk)


# ----------------------------------------------------------------------------- one TLS context per process
def test_table_clients_with_a_ca_path_share_one_tls_context(tmp_path: Any) -> None:
    from local.certs import ensure_local_certs

    certs = ensure_local_certs(tmp_path)
    service = build_service_client(
        connection_string=f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={'A' * 88};"
        "TableEndpoint=https://127.0.0.1:1/a;",
        ca_file=str(certs.ca_pem),
    )
    transport = service._client._client._pipeline._transport
    assert isinstance(transport, OneContextTransport)
    first = transport._build_ssl_config(None, str(certs.ca_pem))
    assert isinstance(first, ssl.SSLContext) and first is transport._build_ssl_config(None, str(certs.ca_pem))
    assert first is ssl_context(str(certs.ca_pem))
    assert transport._build_ssl_config(None, True) is True  # the system trust store stays aiohttp's default


async def test_https_requests_through_the_transport_load_the_ca_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from local.authority.server import server_ssl_context
    from local.certs import ensure_local_certs

    certs = ensure_local_certs(tmp_path)
    app = web.Application()
    app.router.add_get("/a/Tables", lambda r: web.json_response({"value": []}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(certs))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    made: list[int] = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(1) or real(*a, **k))
    service = build_service_client(
        connection_string=f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={'A' * 88};"
        f"TableEndpoint=https://127.0.0.1:{port}/a;",
        ca_file=str(certs.ca_pem),
    )
    try:
        for _ in range(4):
            async for _t in service.list_tables():
                pass
    finally:
        await service.close()
        await runner.cleanup()
    assert len(made) == 1  # a fresh CA path: its context is built once, for four requests


def test_the_transport_reads_no_netrc_or_proxy_per_request_unless_a_proxy_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cs = f"DefaultEndpointsProtocol=http;AccountName=a;AccountKey={'A' * 88};TableEndpoint=http://127.0.0.1:1/a;"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport = build_service_client(connection_string=cs)._client._client._pipeline._transport
    assert isinstance(transport, OneContextTransport) and transport._use_env_settings is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert build_service_client(connection_string=cs)._client._client._pipeline._transport._use_env_settings is True
