"""The items of a mapping-wide plan job, kept beside the job in the jobs table: partition ``plan:<jobId>``,
rows ``i:<first item index>`` holding up to ``ROW_ITEMS`` items as JSON (one transaction per 100 rows)."""

from __future__ import annotations

import json
from typing import Any

from azure.data.tables.aio import TableClient

from shared.stores.tables import (
    Entity,
    Op,
    decode_token,
    encode_token,
    escape_key,
    query_all,
    quote,
    submit_tolerant,
)

ROW_ITEMS = 50
MAX_ROW_CHARS = 30_000  # a string property holds ≤64 KiB (UTF-16)


def _pk(job_id: str) -> str:
    return escape_key(f"plan:{job_id}")


def rows_of(job_id: str, items: list[dict[str, Any]]) -> list[Entity]:
    """Rows of ≤ROW_ITEMS items, fewer when their JSON would not fit one property."""
    rows: list[Entity] = []
    start = 0
    while start < len(items):
        n = min(ROW_ITEMS, len(items) - start)
        text = json.dumps(items[start : start + n], separators=(",", ":"), default=str)
        while len(text) > MAX_ROW_CHARS and n > 1:
            n = max(1, n // 2)
            text = json.dumps(items[start : start + n], separators=(",", ":"), default=str)
        rows.append({"PartitionKey": _pk(job_id), "RowKey": f"i:{start:09d}", "Items": text, "Count": n})
        start += n
    return rows


async def put_items(table: TableClient, job_id: str, items: list[dict[str, Any]]) -> None:
    ops: list[Op] = [("upsert", row) for row in rows_of(job_id, items)]
    if ops:
        await submit_tolerant(table, ops, drop=lambda i, kind: [])


async def page_items(
    table: TableClient, job_id: str, *, top: int, continuation: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    offset = int(decode_token(continuation)) if continuation else 0
    first_row = max(0, offset - ROW_ITEMS)  # the row holding ``offset`` starts at most ROW_ITEMS before it
    query = f"PartitionKey eq {quote(_pk(job_id))} and RowKey ge {quote(f'i:{first_row:09d}')}"
    out: list[dict[str, Any]] = []
    more = False
    async for page in query_all(table, query):
        for row in page:
            start = int(row["RowKey"][2:])
            for n, it in enumerate(json.loads(row["Items"])):
                if start + n < offset:
                    continue
                if len(out) == top:
                    more = True
                    break
                out.append(it)
            if more:
                break
        if more:
            break
    return out, (encode_token(offset + len(out)) if more else None)
