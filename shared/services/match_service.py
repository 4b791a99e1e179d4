"""Match-based coupling (BC's "Match-Based Coupling" job): read, decide with the pure rules of
``shared.planning.matching``, write couplings in batches, create or report the unmatched, sync after.

Dataverse is queried once per chunk of records and priority (never once per record).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.domain.model import Coupling, Direction, Outcome, RemoteRecord, SyncErrorEntry
from shared.mappings.config import TableMapping
from shared.planning.matching import (
    MatchCriterion,
    by_priority,
    candidate_filter,
    criteria_of,
    decide_all,
    sync_after_direction,
    unmatched_reason,
)
from shared.services.engine import Engine, utcnow
from shared.services.history import new_entry  # #22
from shared.services.sync_errors import error_id
from shared.services.sync_service import RecordResult, SyncOutcome, SyncService
from shared.telemetry import record_sync_outcomes

# Records per Dataverse query: 50 values of up to 160 characters stay far below Dataverse's 32 KB URL limit,
# and a full match of a code table (currencies, units) costs 0.02 queries per record.
CHUNK = 50


def criteria_from_body(items: Sequence[dict[str, Any]]) -> list[MatchCriterion]:
    """The per-run ``matchFields`` override of a match request."""
    return [
        MatchCriterion(str(i["bc"]), str(i["dataverse"]), int(i.get("priority") or 0), bool(i.get("caseSensitive")))
        for i in items
    ]


class MatchService:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.sync = SyncService(engine)

    async def match(
        self,
        mapping: TableMapping,
        bc_records: Sequence[RemoteRecord],
        *,
        criteria: Sequence[MatchCriterion] | None = None,
        create_new: bool | None = None,
        sync_after: bool | None = None,
        job_id: str | None = None,
    ) -> SyncOutcome:
        outcome = SyncOutcome()
        if not bc_records:
            return outcome
        create_new = mapping.create_new_if_no_match if create_new is None else create_new
        sync_after = mapping.sync_after_coupling if sync_after is None else sync_after
        groups = by_priority(criteria if criteria is not None else criteria_of(mapping))
        already = await self.e.couplings.get_many_by_bc_ids(mapping.name, [r.id for r in bc_records])
        outcome.counts["unchanged"] += len(already)
        todo = [r for r in bc_records if r.id not in already]

        new: list[Coupling] = []
        unmatched: list[tuple[RemoteRecord, str]] = []
        now = utcnow()
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            candidates = [await self._candidates(mapping, group, chunk) for group in groups]
            seen = sorted({dv_id for rows in candidates for dv_id in rows})
            coupled_dv = set(await self.e.couplings.get_many_by_dataverse_ids(mapping.name, seen)) if seen else set()
            coupled_dv |= {c.dataverse_id for c in new}
            decisions = decide_all([(r.id, r.fields) for r in chunk], groups, candidates, coupled_dv)
            for rec, d in zip(chunk, decisions, strict=True):
                if d.outcome == "coupled" and d.dataverse_id:
                    new.append(
                        Coupling(
                            mapping=mapping.name,
                            bc_id=rec.id,
                            dataverse_id=d.dataverse_id,
                            coupled_at=now,
                            history=[new_entry(self.e, Outcome.COUPLED, job_id=job_id, at=now)],  # #22
                        )
                    )
                else:
                    unmatched.append((rec, unmatched_reason(d)))

        stored = await self.e.couplings.couple_many(new) if new else []
        coupled: list[Coupling] = []
        for c, s in zip(new, stored, strict=True):
            if isinstance(s, Exception):  # coupled meanwhile by another request
                outcome.add(RecordResult(c.bc_id, c.dataverse_id, Outcome.FAILED, None, "already_coupled", str(s)))
            else:
                coupled.append(c)
                outcome.add(RecordResult(c.bc_id, c.dataverse_id, Outcome.COUPLED, None))
        if coupled:
            await self.e.errors.close_for_records(mapping.name, [c.bc_id for c in coupled])
        # The match's own results so far (coupled); creates and the syncs after report themselves.
        record_sync_outcomes(mapping.name, Direction.TO_DATAVERSE.value, outcome.by_outcome())

        if unmatched:
            await self._unmatched(mapping, unmatched, create_new, outcome, job_id)
        if sync_after and coupled:
            direction = Direction(sync_after_direction(mapping.direction.value, mapping.conflict_policy))
            synced = await self.sync.sync_couplings(mapping, coupled, direction, job_id=job_id)
            for r in synced.results:
                if r.status != Outcome.UNCHANGED:  # unchanged counts the records that were coupled before the job
                    outcome.add(r)
        return outcome

    async def _candidates(
        self, mapping: TableMapping, group: Sequence[MatchCriterion], chunk: Sequence[RemoteRecord]
    ) -> dict[str, dict[str, Any]]:
        filt = candidate_filter(group, [r.fields for r in chunk])
        if filt is None:
            return {}
        if mapping.integration_table_filter:
            filt = f"({filt}) and ({mapping.integration_table_filter})"
        select = [mapping.dataverse_primary_key, *dict.fromkeys(c.dataverse for c in group)]
        rows: dict[str, dict[str, Any]] = {}
        async for page in self.e.dv.list_records(mapping.dataverse_entity_set, select=select, filter=filt):
            for row in page:
                rows[row.id] = row.fields
        return rows

    async def _unmatched(
        self,
        mapping: TableMapping,
        unmatched: list[tuple[RemoteRecord, str]],
        create_new: bool,
        outcome: SyncOutcome,
        job_id: str | None,
    ) -> None:
        if create_new and mapping.allows(Direction.TO_DATAVERSE):
            from shared.services.coupling_service import CouplingService  # local: it builds on the sync service

            created = await CouplingService(self.e).create_counterparts(
                mapping, Direction.TO_DATAVERSE, [r for r, _ in unmatched], job_id
            )
            outcome.merge(created)
            return
        now = utcnow()
        entries = []
        for rec, reason in unmatched:
            if create_new:
                reason += f" Mapping {mapping.name} synchronizes {mapping.direction.value} only: nothing is created."
            outcome.add(
                RecordResult(rec.id, None, Outcome.FAILED, Direction.TO_DATAVERSE.value, "no_unique_match", reason)
            )
            entries.append(
                SyncErrorEntry(
                    id=error_id(mapping.name, rec.id, None, Direction.TO_DATAVERSE.value),
                    mapping=mapping.name,
                    direction=Direction.TO_DATAVERSE.value,
                    code="no_unique_match",
                    message=reason,
                    transient=False,
                    bc_id=rec.id,
                    first_occurred_at=now,
                    last_occurred_at=now,
                    job_id=job_id,
                )
            )
        await self.e.errors.record_many(entries)
        record_sync_outcomes(mapping.name, Direction.TO_DATAVERSE.value, {Outcome.FAILED: len(entries)})
