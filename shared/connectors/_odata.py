"""OData helpers common to both clients: row -> RemoteRecord, id chunking by URL length, datetimes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from shared.domain.model import RemoteRecord

# Most front ends (and IIS/http.sys behind Dataverse and BC) allow URLs of 8-16 KB; stay well below.
MAX_URL_BYTES = 7800
# Dataverse documents the URL length it accepts: 32 KB, 32,768 characters (Learn "Compose HTTP requests and
# handle errors", Maximum URL length). Stay below it: 4x fewer id queries than the generic budget.
DATAVERSE_MAX_URL_BYTES = 30_000


def parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    if value[-1] == "Z":  # the services' form: Python 3.11 reads it as is (a 7th fraction digit is cut)
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.11 fromisoformat takes at most 6 fraction digits; OData may send 7.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` (a valid OData datetime literal and a sortable cursor)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def strip_annotations(row: dict[str, Any]) -> dict[str, Any]:
    # Most names hold no '@' at all: one containment test each (per field of every row of every page).
    return {k: v for k, v in row.items() if "@" not in k or (k[0] != "@" and "@odata." not in k)}


def to_record(row: dict[str, Any], *, id_field: str, modified_field: str) -> RemoteRecord:
    raw_id = row.get(id_field)
    return RemoteRecord(
        id=str(raw_id).lower() if raw_id is not None else "",
        fields=strip_annotations(row),
        etag=row.get("@odata.etag"),
        modified_on=parse_timestamp(row.get(modified_field)),
    )


def with_required(select: Sequence[str] | None, *required: str) -> list[str] | None:
    """``$select`` plus the fields the client itself needs (id, modified timestamp)."""
    if not select:
        return None
    out = list(dict.fromkeys(select))
    for name in required:
        if name not in out:
            out.append(name)
    return out


def chunk_ids_by_url(
    ids: Iterable[str], *, field: str, base_len: int, budget: int | None = None, dataverse: bool = False
) -> Iterator[list[str]]:
    """Greedy chunks of ids such that ``<base>?$filter=<in filter of the ids>`` stays under ``budget`` bytes
    once percent-encoded (default: Dataverse's documented limit, else what every front end accepts): the
    fewest GET calls."""
    if budget is None:
        budget = DATAVERSE_MAX_URL_BYTES if dataverse else MAX_URL_BYTES
    render = dataverse_in_filter if dataverse else in_filter
    overhead = base_len + len("?%24filter=") + len(quote(render(field, []), safe=""))
    quote_cost = len(quote("''", safe="")) if dataverse else 0
    comma = len(quote(",", safe=""))
    chunk: list[str] = []
    size = overhead
    for raw in ids:
        cost = len(quote(raw, safe="")) + quote_cost + (comma if chunk else 0)
        if chunk and size + cost > budget:
            yield chunk
            chunk, size = [], overhead
            cost -= comma
        chunk.append(raw)
        size += cost
    if chunk:
        yield chunk


def in_filter(field: str, ids: Sequence[str]) -> str:
    """BC's list filter: the ``in`` operator (Learn "Using filter expressions in OData URIs")."""
    return f"{field} in ({','.join(ids)})"


def dataverse_in_filter(field: str, values: Sequence[str]) -> str:
    """Dataverse documents no ``in`` operator, only the ``Microsoft.Dynamics.CRM.In`` query function
    (Learn "Filter rows", query functions), whose PropertyValues are string literals."""
    listed = ",".join(quote_literal(v) for v in values)
    return f"Microsoft.Dynamics.CRM.In(PropertyName='{field}',PropertyValues=[{listed}])"


def quote_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def normalise_guid(value: str) -> str:
    return value.strip().strip("{}").lower()


async def gather_by_chunks(
    ids: Sequence[str],
    fetch: Callable[[list[str]], Awaitable[list[RemoteRecord]]],
    *,
    field: str,
    base_len: int,
    dataverse: bool = False,
) -> dict[str, RemoteRecord]:
    """``get_many`` of both clients: ids split so every URL stays short, chunks fetched concurrently."""
    chunks = list(chunk_ids_by_url(ids, field=field, base_len=base_len, dataverse=dataverse))
    found: dict[str, RemoteRecord] = {}
    for records in await asyncio.gather(*(fetch(c) for c in chunks)):
        for rec in records:
            found[rec.id] = rec
    return found
