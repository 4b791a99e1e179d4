"""Option mappings (PAYMENT TERMS, SHIPMENT METHOD): read the BC code table and the Dataverse option set,
plan (pure, ``shared.planning.options``), add the missing options through the metadata API
(``InsertOptionValue``), and store the couplings (BC id <-> option value). Used for the mapping's jobs,
its match-based coupling and its scheduled runs alike: an option set has no rows or change feed, so every
run compares the whole (small) code table with the option set."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from shared.domain.model import Coupling, Outcome
from shared.mappings.config import TableMapping
from shared.planning.options import option_target, plan_options
from shared.services.engine import Engine, utcnow
from shared.services.sync_service import RecordResult, SyncOutcome
from shared.telemetry import log_event, record_sync_outcomes

log = logging.getLogger(__name__)


def is_option_mapping(mapping: TableMapping) -> bool:
    return option_target(mapping.dataverse_table) is not None


class OptionSetService:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    async def run(
        self, mapping: TableMapping, bc_ids: Sequence[str] | None = None, job_id: str | None = None
    ) -> SyncOutcome:
        target = option_target(mapping.dataverse_table)
        assert target is not None
        logical, attribute = target
        key = mapping.bc_natural_key or "code"
        select = ["id", key]
        records: dict[str, Any] = {}
        if bc_ids:
            records = dict(await self.e.bc.get_many(mapping.bc_entity, list(bc_ids), select=select))
        else:
            async for page in self.e.bc.list_records(mapping.bc_entity, select=select, filter=mapping.table_filter):
                records.update({r.id: r for r in page})
        codes = {bc_id: str(r.fields.get(key) or "") for bc_id, r in records.items() if r.fields.get(key)}
        dv: Any = self.e.dv
        options = await dv.get_options(logical, attribute)
        existing = await self.e.couplings.get_many_by_bc_ids(mapping.name, list(codes))
        coupled = {bc_id: int(c.dataverse_id) for bc_id, c in existing.items() if c.dataverse_id.lstrip("-").isdigit()}
        outcome = SyncOutcome()
        now = utcnow()
        new: list[Coupling] = []
        replaced: list[str] = []
        for plan in plan_options(codes, options, coupled):
            if plan.action == "unchanged":
                outcome.add(RecordResult(plan.bc_id, str(plan.value), Outcome.UNCHANGED, "toDataverse"))
                continue
            value = plan.value
            status = Outcome.COUPLED
            if value is None:
                value = await dv.insert_option(logical, attribute, plan.code)
                options[value] = plan.code
                status = Outcome.CREATED
            if plan.bc_id in existing:
                replaced.append(plan.bc_id)
            new.append(
                Coupling(
                    mapping=mapping.name,
                    bc_id=plan.bc_id,
                    dataverse_id=str(value),
                    coupled_at=now,
                    last_synced_at=now,
                    last_sync_direction="toDataverse",
                    last_sync_result="succeeded",
                )
            )
            outcome.add(RecordResult(plan.bc_id, str(value), status, "toDataverse"))
        if replaced:
            await self.e.couplings.uncouple_many(mapping.name, replaced)
        if new:
            await self.e.couplings.couple_many(new)
        missing = [i for i in dict.fromkeys(x.lower() for x in bc_ids or ()) if i not in records]
        for bc_id in missing:
            outcome.add(RecordResult(bc_id, None, Outcome.NOT_FOUND, None, "record_not_found", "No such BC record."))
        record_sync_outcomes(mapping.name, "toDataverse", outcome.by_outcome())
        log_event(log, "option mapping synchronized", mapping=mapping.name, job_id=job_id, **outcome.counts)
        return outcome
