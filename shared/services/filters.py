"""A mapping's table filter (BC) and integration table filter (Dataverse) in scheduled and webhook syncs:
records of a change page outside the filter of their side are left alone (not synchronized, not created),
as BC's job never reads them. The change feeds cannot carry a filter (Dataverse change tracking refuses
``$filter``), so the records that need work are checked with queries ``(<ids>) and (<filter>)`` (BC's
``in``, Dataverse's ``Microsoft.Dynamics.CRM.In``), as many ids per query as keep the URL under the clients'
budget (``chunk_ids_by_url``: ~160 GUIDs; every query counts against the services' request windows), the
chunks concurrently (the connector's concurrency limit bounds them); no filter, no query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import quote

from shared.connectors._odata import chunk_ids_by_url, dataverse_in_filter, in_filter
from shared.domain.model import RemoteRecord, Side
from shared.mappings.config import TableMapping
from shared.services.engine import Engine

# The URL around the ids: the entity's path (BC: below companies(<id>)), $select and the rest of the filter.
_PATH_ALLOWANCE = 80


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

    rest = len(quote(f"() and ({filt})", safe="")) + len(f"&%24select={key}%2Cmodifiedon")
    base_len = len(getattr(service, "api_root", "")) + len(entity) + _PATH_ALLOWANCE + rest
    chunks = chunk_ids_by_url(ids, field=key, base_len=base_len, dataverse=side != Side.BC)
    found = await asyncio.gather(*(matching(chunk) for chunk in chunks))
    keep = set().union(*found)
    return [r for r in records if r.id in keep]
