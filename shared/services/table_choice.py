"""Which mapping a Dataverse row belongs to when several mappings share its table (CUSTOMER and VENDOR both
map ``account``, told apart by ``customertypecode``): the mapping that has the row coupled, else the first
(in dependency order) whose integration table filter takes it, else the first mapping of the table."""

from __future__ import annotations

from shared.domain.model import RemoteRecord, Side
from shared.mappings.config import TableMapping
from shared.services.engine import Engine
from shared.services.filters import within_filter


async def mapping_for_row(engine: Engine, entity: str, row_id: str) -> TableMapping | None:
    candidates = [m for m in await engine.registry.list() if entity in (m.dataverse_table, m.dataverse_entity_set)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    for m in candidates:
        if await engine.couplings.get_by_dataverse_id(m.name, row_id) is not None:
            return m
    probe = RemoteRecord(id=row_id, fields={})
    for m in candidates:
        if await within_filter(engine, m, Side.DATAVERSE, [probe]):
            return m
    return candidates[0]
