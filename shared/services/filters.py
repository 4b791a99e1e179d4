"""A mapping's table filter (BC) and integration table filter (Dataverse) in scheduled and webhook syncs:
records of a change page outside the filter of their side are left alone (not synchronized, not created),
as BC's job never reads them. The change feeds cannot carry a filter (Dataverse change tracking refuses
``$filter``), so the records that need work are checked with one query per 100 ids: ``(<ids>) and
(<filter>)`` (BC's ``in``, Dataverse's ``Microsoft.Dynamics.CRM.In``), the chunks concurrently (the
connector's concurrency limit bounds them); no filter, no query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.connectors._odata import dataverse_in_filter, in_filter
from shared.domain.model import RemoteRecord, Side
from shared.mappings.config import TableMapping
from shared.services.engine import Engine

CHUNK = 100  # ids per query: with a 2,000-character filter the URL stays under 8 KB


async def within_filter(
    engine: Engine, mapping: TableMapping, side: Side, records: Sequence[RemoteRecord]
) -> list[RemoteRecord]:
    filt = mapping.table_filter if side == Side.BC else mapping.integration_table_filter
    if not filt or not records:
        return list(records)
    if side == Side.BC:
        service, entity, key = engine.bc, mapping.bc_entity, "id"
    else:
        service, entity, key = engine.dv, mapping.dataverse_entity_set, mapping.dataverse_primary_key
    ids = sorted({r.id for r in records})

    async def matching(chunk: list[str]) -> set[str]:
        ids_filter = in_filter(key, chunk) if side == Side.BC else dataverse_in_filter(key, chunk)
        found: set[str] = set()
        async for page in service.list_records(entity, select=[key], filter=f"({ids_filter}) and ({filt})"):
            found.update(r.id for r in page)
        return found

    found = await asyncio.gather(*(matching(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK)))
    keep = set().union(*found)
    return [r for r in records if r.id in keep]
