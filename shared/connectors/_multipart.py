"""OData ``$batch`` in the multipart/mixed format (Dataverse Web API): build a request, parse a response."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

CRLF = "\r\n"


@dataclass(slots=True)
class BatchPart:
    method: str
    url: str  # absolute
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-serialisable or None


@dataclass(slots=True)
class BatchAnswer:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, text, or None


def build_batch(parts: list[BatchPart], *, boundary: str | None = None) -> tuple[str, bytes]:
    """(content type, body) of a batch without change sets: every request has its own outcome."""
    boundary = boundary or f"batch_{uuid.uuid4().hex}"
    lines: list[str] = []
    for n, part in enumerate(parts, start=1):
        lines += [
            f"--{boundary}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {n}",
            "",
            f"{part.method} {part.url} HTTP/1.1",
        ]
        headers = dict(part.headers)
        payload = None
        if part.body is not None:
            headers.setdefault("Content-Type", "application/json")
            payload = json.dumps(part.body, separators=(",", ":"))
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append("")
        lines.append(payload or "")
    lines.append(f"--{boundary}--")
    lines.append("")
    return f"multipart/mixed; boundary={boundary}", CRLF.join(lines).encode("utf-8")


_BOUNDARY_RE = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_STATUS_RE = re.compile(r"^HTTP/\d(?:\.\d)?\s+(\d{3})")


def parse_batch_response(content_type: str, body: bytes | str) -> list[BatchAnswer]:
    """The inner answers in order; change set answers are flattened in place."""
    match = _BOUNDARY_RE.search(content_type or "")
    if not match:
        raise ValueError("multipart response without a boundary")
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return _parse_multipart(match.group(1), text)


def _split_head(block: str) -> tuple[list[str], str]:
    normalised = block.replace("\r\n", "\n")
    head, sep, rest = normalised.partition("\n\n")
    if not sep:
        return head.split("\n"), ""
    return head.split("\n"), rest


def _headers(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _parse_multipart(boundary: str, text: str) -> list[BatchAnswer]:
    answers: list[BatchAnswer] = []
    delimiter = f"--{boundary}"
    for chunk in text.split(delimiter)[1:]:
        if chunk.startswith("--"):
            break  # closing delimiter
        chunk = chunk.lstrip("\r\n")
        mime_lines, rest = _split_head(chunk)
        mime = {k.lower(): v for k, v in _headers(mime_lines).items()}
        ctype = mime.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            inner = _BOUNDARY_RE.search(ctype)
            if inner:
                answers += _parse_multipart(inner.group(1), rest)
            continue
        http_lines, payload = _split_head(rest)
        if not http_lines or not _STATUS_RE.match(http_lines[0].strip()):
            continue
        status = int(_STATUS_RE.match(http_lines[0].strip()).group(1))  # type: ignore[union-attr]
        headers = _headers(http_lines[1:])
        payload = payload.strip()
        parsed: Any = None
        if payload:
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = payload
        answers.append(BatchAnswer(status, headers, parsed))
    return answers
