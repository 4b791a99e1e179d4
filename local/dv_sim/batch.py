"""OData `$batch` in the multipart/mixed format the Dataverse Web API uses.

Top-level parts are independent requests (`Content-Type: application/http`) or change sets (a nested
`multipart/mixed; boundary=changeset_...`). A change set is atomic: the first failing request rolls back
every write of the change set and is the only answer for it. Without `Prefer: odata.continue-on-error`
processing stops at the first failure, as in Dataverse.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from http import HTTPStatus

from multidict import CIMultiDict, MultiDict

from local.dv_sim.service import API_PREFIX, DataverseService, DvRequest, DvResponse, error_json
from local.dv_sim.store import DvError

MAX_BATCH_REQUESTS = 1000
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)


@dataclass
class _Part:
    headers: CIMultiDict[str]
    content: bytes


@dataclass
class _Item:
    request: DvRequest | None  # None for a part that could not be parsed
    content_id: str | None
    problem: str | None = None


class _ChangeSetFailed(Exception):
    def __init__(self, response: DvResponse, content_id: str | None) -> None:
        super().__init__("change set failed")
        self.response = response
        self.content_id = content_id


def boundary_of(content_type: str) -> str | None:
    match = _BOUNDARY.search(content_type or "")
    return match.group(1) if match else None


def _split_head(raw: bytes) -> tuple[list[str], bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, rest = raw.partition(sep)
        if found:
            return head.decode("utf-8", "replace").splitlines(), rest
    return raw.decode("utf-8", "replace").splitlines(), b""


def _headers(lines: list[str]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    return headers


def parse_multipart(body: bytes, boundary: str) -> list[_Part]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    parts: list[_Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removeprefix(b"\n")
        chunk = chunk.removesuffix(b"\r\n").removesuffix(b"\n")
        head, content = _split_head(chunk)
        parts.append(_Part(_headers(head), content))
    return parts


def _parse_http(part: _Part, base: str) -> _Item:
    content_id = part.headers.get("Content-ID")
    lines, body = _split_head(part.content)
    if not lines:
        return _Item(None, content_id, "empty request part")
    request_line = lines[0].split()
    if len(request_line) < 2:
        return _Item(None, content_id, f"malformed request line '{lines[0]}'")
    headers = _headers(lines[1:])
    content_id = content_id or headers.get("Content-ID")
    method, url = request_line[0].upper(), request_line[1]
    body = body.removesuffix(b"\r\n").removesuffix(b"\n")
    return _Item(_request(method, url, headers, body, base), content_id)


def _request(method: str, url: str, headers: CIMultiDict[str], body: bytes, base: str) -> DvRequest:
    parsed = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parsed.path)
    if API_PREFIX in path:
        path = path.split(API_PREFIX, 1)[1]
    query: MultiDict[str] = MultiDict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    return DvRequest(method, path.lstrip("/"), query, headers, body, base)


def _status_line(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}".rstrip()


def _render_response(response: DvResponse, content_id: str | None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", _status_line(response.status), "OData-Version: 4.0"]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    if response.body is not None:
        lines.append("Content-Type: application/json; odata.metadata=minimal")
        lines += ["", json.dumps(response.body)]
    else:
        lines.append("")
    return "\r\n".join(lines) + "\r\n"


def _resolve_references(request: DvRequest, urls: dict[str, str]) -> None:
    """`$1` in a change set's URL or `@odata.bind` stands for the entity created by Content-ID 1."""
    if request.path.startswith("$"):
        ref, _, rest = request.path[1:].partition("/")
        if ref in urls:
            target = urls[ref].split(API_PREFIX, 1)[1].lstrip("/")
            request.path = f"{target}/{rest}" if rest else target
    if b"$" in request.body:
        try:
            body = json.loads(request.body)
        except ValueError:
            return
        if isinstance(body, dict):
            for key, value in body.items():
                if key.endswith("@odata.bind") and isinstance(value, str) and value.lstrip("$") in urls:
                    body[key] = urls[value.lstrip("$")].split(API_PREFIX, 1)[1]
            request.body = json.dumps(body).encode()


def execute_batch(service: DataverseService, content_type: str, body: bytes, base: str, prefer: str) -> DvResponse:
    """Run a `$batch` request; returns the multipart answer as a DvResponse whose body is text."""
    boundary = boundary_of(content_type)
    if not content_type.lower().startswith("multipart/mixed") or boundary is None:
        raise DvError(400, "0x80048d19", "The $batch request must be multipart/mixed with a boundary.")
    units: list[list[_Item] | _Item] = []
    total = 0
    for part in parse_multipart(body, boundary):
        part_type = part.headers.get("Content-Type", "")
        inner = boundary_of(part_type) if part_type.lower().startswith("multipart/mixed") else None
        if inner is not None:
            items = [_parse_http(p, base) for p in parse_multipart(part.content, inner)]
            units.append(items)
            total += len(items)
        else:
            units.append(_parse_http(part, base))
            total += 1
    if total > MAX_BATCH_REQUESTS:
        raise DvError(
            400, "0x8005f103", f"The number of requests in a batch ({total}) exceeds the limit of {MAX_BATCH_REQUESTS}."
        )
    continue_on_error = "odata.continue-on-error" in prefer.lower()
    out_boundary = f"batchresponse_{uuid.uuid4()}"
    chunks: list[str] = []
    stopped = False
    for unit in units:
        failed = False
        if isinstance(unit, list):
            text, failed = _run_change_set(service, unit)
            chunks.append(text)
        else:
            response = _run_item(service, unit)
            failed = response.status >= 400
            chunks.append(_render_response(response, unit.content_id))
        if failed and not continue_on_error:
            stopped = True
            break
    text = "".join(f"--{out_boundary}\r\n{chunk}" for chunk in chunks) + f"--{out_boundary}--\r\n"
    headers = {"Content-Type": f"multipart/mixed; boundary={out_boundary}", "OData-Version": "4.0"}
    if continue_on_error:
        headers["Preference-Applied"] = "odata.continue-on-error"
    # Learn "Execute batch operations": without continue-on-error the batch stops at the first failure and
    # the batch itself answers 400, its body holding the responses up to that one.
    return DvResponse(400 if stopped else 200, text, headers)


def _run_item(service: DataverseService, item: _Item) -> DvResponse:
    if item.request is None:
        return DvResponse(400, error_json("0x80048d19", f"Malformed batch part: {item.problem}"))
    if item.request.path.strip("/").startswith("$batch"):
        return DvResponse(400, error_json("0x80048d19", "A $batch request cannot be nested."))
    if item.request.method != "GET" and not item.request.path.rstrip("/").endswith("Multiple"):
        service.bulk_rows += 1  # a write in a batch: one row (a *Multiple part counts its targets itself)
    return service.execute(item.request)


def _run_change_set(service: DataverseService, items: list[_Item]) -> tuple[str, bool]:
    urls: dict[str, str] = {}
    responses: list[tuple[DvResponse, str | None]] = []
    try:
        with service.store.atomic():
            for item in items:
                if item.request is not None:
                    _resolve_references(item.request, urls)
                response = _run_item(service, item)
                if response.status >= 400:
                    raise _ChangeSetFailed(response, item.content_id)
                if item.content_id is not None and "OData-EntityId" in response.headers:
                    urls[item.content_id] = response.headers["OData-EntityId"]
                responses.append((response, item.content_id))
    except _ChangeSetFailed as failure:
        return _render_response(failure.response, failure.content_id), True
    inner = f"changesetresponse_{uuid.uuid4()}"
    body = "".join(f"--{inner}\r\n{_render_response(r, cid)}" for r, cid in responses) + f"--{inner}--\r\n"
    return f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n{body}", False
