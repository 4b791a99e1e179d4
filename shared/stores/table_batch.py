"""A lean serializer and parser for Table Storage entity group transactions (``POST /$batch``).

azure-data-tables builds every sub-operation of a transaction as its own ``HttpRequest``, serializes the
nested multipart body through the ``email`` package, deep-copies the whole batch request in the generated
client's ``send_request`` and parses the response through ``email`` again; on a full sync that was most of
the engine's CPU (#23). This module writes the body as the documented text (Learn: "Performing entity group
transactions") in one pass and reads the response's parts with plain byte searches. It sends the request
through the table client's own pipeline, so authentication, ``x-ms-date``/version headers, the retry policy
and the operation counter (``OpCounter``) apply exactly as before.

Anything it does not serialize itself (a Cosmos endpoint, typed ``EntityProperty`` tuples, UUID/bytes/Enum
values, ints beyond 32 bits, an unknown operation) goes through the SDK's ``submit_transaction`` instead
(:class:`Unsupported`), so the SDK stays the fallback and its validation errors stay the same.

The one function the stores call is :func:`submit_transaction`; it returns the SDK's shape (one
``{"etag": ...}`` per operation) and raises the SDK's ``TableTransactionError`` (``.index``, ``.error_code``,
``.status_code``) when an operation fails.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote as _url_quote

from azure.core import MatchConditions
from azure.core.rest import HttpRequest
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.stores._json import compact

try:  # the SDK's error decoding for a non-202 answer (the same exception types as its own path)
    from azure.data.tables._error import RequestTooLargeError, _decode_error
except ImportError:  # pragma: no cover - a future SDK moved it: the fallback below keeps working
    RequestTooLargeError = TableTransactionError  # type: ignore[misc,assignment]
    _decode_error = None  # type: ignore[assignment]

ENABLED = True  # False: every transaction through the SDK (the benchmark's before/after switch)
CRLF = "\r\n"
_INT32 = 2**31
_ACCEPT = "application/json;odata=minimalmetadata"
_BOUNDARY = re.compile(rb"boundary=([^\s;\"]+)")
_BLANK = re.compile(rb"\r?\n\r?\n")
_INDEX = re.compile(r"^(\d+):")


class Unsupported(Exception):
    """The lean path does not serialize this transaction; the SDK does it."""


# ----------------------------------------------------------------------------- request body
def _value(name: str, value: Any, out: dict[str, Any]) -> None:
    kind = type(value)
    if kind is str:
        out[name] = value
    elif kind is bool:
        out[name] = value
    elif kind is int:
        if not -_INT32 <= value < _INT32:
            raise Unsupported(f"{name}: int beyond Int32")
        out[name] = value
    elif kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise Unsupported(f"{name}: non-finite float")
        out[name] = value
        out[name + "@odata.type"] = "Edm.Double"
    elif isinstance(value, datetime):
        service = getattr(value, "tables_service_value", None)  # the SDK's round-trip datetime
        out[name] = service or edm_datetime(value)
        out[name + "@odata.type"] = "Edm.DateTime"
    elif value is not None:  # None: the property is left out (as the SDK does)
        raise Unsupported(f"{name}: {kind.__name__}")


def edm_datetime(value: datetime) -> str:
    """``value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` at a third of its cost for an aware value
    (``isoformat`` writes the same digits); a naive one, or a year below 1000 (``%Y`` does not pad it), is
    formatted by ``strftime`` itself."""
    offset = value.utcoffset()
    if offset is None:  # naive: astimezone reads it as local time
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if offset:
        value = value.astimezone(UTC)
    if value.year < 1000:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def entity_json(entity: Any) -> str:
    """The JSON body of one entity, with the ``@odata.type`` annotations Table Storage needs (DateTime,
    Double); strings, booleans and 32-bit ints need none."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str or kind is bool:  # most properties: no annotation, no check (``_value``'s first cases)
            out[name] = value
        else:
            _value(name, value, out)
    return compact(out)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.~:-]*")  # what quote(safe="") keeps, and ':' (quoted below)


def _key(value: str) -> str:
    if _PLAIN_KEY.fullmatch(value):  # the common key ("bc:<guid>"): quoting changes only the colons
        return value.replace(":", "%3A")
    return _quoted_key(value)


@functools.lru_cache(maxsize=1024)  # partition keys ("CUSTOMER%|3"): few, each quoted once
def _quoted_key(value: str) -> str:
    return _url_quote(value.replace("'", "''"), safe="")


def _if_match(entity: Any, kw: dict[str, Any]) -> str:
    condition = kw.get("match_condition")
    etag = kw.get("etag")
    if condition == MatchConditions.IfNotModified:
        etag = etag or (getattr(entity, "metadata", None) or {}).get("etag")
        if not etag:
            raise Unsupported("IfNotModified without an etag")  # the SDK raises its ValueError
        return str(etag)
    if condition not in (None, MatchConditions.Unconditionally) or etag:
        raise Unsupported(f"match condition {condition}")
    return "*"


def sub_request(index: int, op: Sequence[Any], base: str, table: str) -> str:
    """One operation of the change set as its ``application/http`` MIME part."""
    kind, entity = op[0], op[1]
    if not isinstance(kind, str) or "PartitionKey" not in entity or "RowKey" not in entity:
        raise Unsupported("operation shape")
    kind = kind.lower()
    headers = [f"Accept: {_ACCEPT}", "DataServiceVersion: 3.0;"]
    body = ""
    if kind == "create":  # posted to the table: no entity address
        return (
            f"Content-Type: application/http{CRLF}Content-Transfer-Encoding: binary{CRLF}Content-ID: {index}{CRLF}"
            f"{CRLF}POST {base}/{table} HTTP/1.1{CRLF}Content-Type: application/json{CRLF}Accept: {_ACCEPT}{CRLF}"
            f"DataServiceVersion: 3.0;{CRLF}Prefer: return-no-content{CRLF}{CRLF}{entity_json(entity)}{CRLF}"
        )
    kw: dict[str, Any] = dict(op[2]) if len(op) > 2 and op[2] else {}
    address = f"{base}/{table}(PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}')"
    if kind in ("update", "upsert"):
        mode = kw.get("mode", UpdateMode.MERGE)
        if mode not in (UpdateMode.MERGE, UpdateMode.REPLACE):
            raise Unsupported(f"mode {mode}")
        line = f"{'MERGE' if mode == UpdateMode.MERGE else 'PUT'} {address} HTTP/1.1"
        if kind == "update":  # upsert = insert-or-merge / insert-or-replace: no If-Match
            headers.append(f"If-Match: {_if_match(entity, kw)}")
        body = entity_json(entity)
    elif kind == "delete":
        line = f"DELETE {address} HTTP/1.1"
        headers.append(f"If-Match: {_if_match(entity, kw)}")
    else:
        raise Unsupported(f"operation {kind}")
    if body:
        headers.insert(0, "Content-Type: application/json")
    return (
        f"Content-Type: application/http{CRLF}Content-Transfer-Encoding: binary{CRLF}Content-ID: {index}{CRLF}{CRLF}"
        f"{line}{CRLF}{CRLF.join(headers)}{CRLF}{CRLF}{body}{CRLF}"
    )


def build_body(ops: Sequence[Sequence[Any]], *, base: str, table: str, batch: str, changeset: str) -> bytes:
    """The whole ``multipart/mixed`` body: one batch holding one change set with every operation, in order."""
    parts = [f"--{changeset}{CRLF}{sub_request(i, op, base, table)}" for i, op in enumerate(ops)]
    return (
        f"--{batch}{CRLF}Content-Type: multipart/mixed; boundary={changeset}{CRLF}{CRLF}"
        + "".join(parts)
        + f"--{changeset}--{CRLF}--{batch}--{CRLF}"
    ).encode()


# ----------------------------------------------------------------------------- response
class Part:
    """One sub-response: status, headers (lower-case names; parsed when first asked for) and body."""

    __slots__ = ("_headers", "_lines", "body", "reason", "status")

    def __init__(self, status: int, reason: str, lines: list[str], body: bytes) -> None:
        self.status, self.reason, self._lines, self.body = status, reason, lines, body
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {}
            for line in self._lines:
                name, _, value = line.partition(":")
                self._headers[name.strip().lower()] = value.strip()
        return self._headers

    @property
    def etag(self) -> str | None:
        """The ETag header: a success part needs only it (up to 100 parts a transaction, ~8 headers each)."""
        for line in self._lines:
            if line[:5] == "ETag:":  # the services' spelling; any other goes through the parsed headers
                return line[5:].strip()
        return self.headers.get("etag")


def _split_head(block: bytes) -> tuple[bytes, bytes]:
    # The services frame with CRLF: a plain search (~5x cheaper than the regex), unless a bare-LF blank line
    # comes first (then the regex's earliest match is it).
    at = block.find(b"\r\n\r\n")
    if at >= 0 and block.find(b"\n\n", 0, at + 2) < 0 and block.find(b"\n\r\n", 0, at + 2) < 0:
        return block[:at], block[at + 4 :]
    m = _BLANK.search(block)
    return (block, b"") if m is None else (block[: m.start()], block[m.end() :])


def parse_response(body: bytes, content_type: str) -> list[Part]:
    """The sub-responses of a ``$batch`` answer (``multipart/mixed`` batch holding a change set, or, for a
    batch-level failure, the parts directly)."""
    outer = _BOUNDARY.search(content_type.encode())
    inner = _BOUNDARY.search(body)
    boundary = (inner or outer).group(1) if (inner or outer) else None
    if boundary is None:
        raise ValueError("not a multipart batch response")
    parts: list[Part] = []
    append = parts.append
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk[:2] == b"--":
            break
        head, payload = _split_head(_split_head(chunk.lstrip(b"\r\n"))[1])  # past the part's MIME headers
        lines = head.decode("latin-1").splitlines()
        if not lines or lines[0][:5] != "HTTP/":
            continue
        status_line = lines[0].split(" ", 2)
        del lines[0]
        append(Part(int(status_line[1]), status_line[2] if len(status_line) > 2 else "", lines,
                    payload.rstrip(b"\r\n")))  # fmt: skip
    return parts


def part_error(part: Part) -> TableTransactionError:
    """The failed operation's answer as the SDK's ``TableTransactionError`` (message ``"<index>:<text>"``)."""
    code = part.headers.get("x-ms-error-code")
    message = part.reason
    try:
        err = json.loads(part.body or b"{}").get("odata.error") or {}
        code = err.get("code") or code
        message = (err.get("message") or {}).get("value") or message
    except (ValueError, AttributeError):
        pass
    cls = RequestTooLargeError if part.status == 413 else TableTransactionError
    error = cls(message=f"{message}\nErrorCode:{code}")
    if not _INDEX.match(message or ""):
        error.index = 0
    error.status_code = part.status
    error.reason = part.reason
    error.error_code = code
    error.additional_info = {}
    return error


# ----------------------------------------------------------------------------- send
async def submit_transaction(table: TableClient, ops: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """One entity group transaction through the lean path (see the module docstring), else the SDK's."""
    pipeline = getattr(getattr(table, "_client", None), "_client", None)
    if not ENABLED or pipeline is None or getattr(table, "_cosmos_endpoint", False) or _decode_error is None:
        return list(await table.submit_transaction(list(ops)))  # type: ignore[arg-type]
    base = f"{table.scheme}://{table._primary_hostname}"
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    try:
        content = build_body(ops, base=base, table=table.table_name, batch=batch, changeset=changeset)
    except Unsupported:
        return list(await table.submit_transaction(list(ops)))  # type: ignore[arg-type]
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch}",
            "Accept": "application/json",
        },
        content=content,
    )
    response = await pipeline.send_request(request, stream=True)  # stream: no generic body decoding
    await response.read()
    if response.status_code == 413:
        raise _decode_error(response, error_message="The transaction request was too large",
                            error_type=RequestTooLargeError)  # fmt: skip
    if response.status_code != 202:
        raise _decode_error(response)
    parts = parse_response(response.content, response.headers.get("Content-Type", ""))
    for part in parts:
        if not 200 <= part.status < 300:
            raise part_error(part)
    if len(parts) != len(ops):
        raise TableTransactionError(message=f"0:{len(parts)} answers to {len(ops)} operations")
    return [{"etag": etag} if (etag := p.etag) is not None else {} for p in parts]
