"""A mapping's table filter (BC) and integration table filter (Dataverse) in scheduled and webhook syncs:
records of a change page outside the filter of their side are left alone (not synchronized, not created),
as BC's job never reads them. The change feeds cannot carry a filter (Dataverse change tracking refuses
``$filter``), so the records that need work are checked with one query per 50 ids: ``(id in (...)) and
(<filter>)``; no filter, no query."""

from __future__ import annotations

from collections.abc import Sequence

from shared.domain.model import RemoteRecord, Side
from shared.mappings.config import TableMapping
from shared.services.engine import Engine

CHUNK = 50


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
    keep: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        query = f"({key} in ({','.join(chunk)})) and ({filt})"
        async for page in service.list_records(entity, select=[key], filter=query):
            keep.update(r.id for r in page)
    return [r for r in records if r.id in keep]
