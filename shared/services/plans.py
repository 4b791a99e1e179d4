"""Plans: what a sync would do, without doing it (``POST /api/mappings/{m}/plan``, jobs of kind ``plan``).

The plan is made by the very functions the sync uses (``SyncService`` reads both sides, the pure planner
decides, the change-feed step of ``JobService`` picks the work), and then nothing is written: no record,
coupling, error, history entry, watermark or subscription. Only the plan job itself and its items are stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.domain.errors import JobNotFoundError, ValidationFailedError
from shared.domain.model import Coupling, Direction, Job, RemoteRecord, Side
from shared.mappings.config import TableMapping
from shared.planning.plan_view import counts_of, item, item_of_create, item_of_plan
from shared.planning.planner import may_create, plan_create
from shared.services.engine import Engine, empty_counts
from shared.services.sync_service import SyncService, resolve_direction

INLINE_LIMIT = 100
ITEMS_PER_ROW = 50  # plan items stored per table row (one row stays far below the 64 KiB property limit)


class PlanService:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.sync = SyncService(engine)

    # ------------------------------------------------------------------ ids inline
    async def plan_ids(
        self,
        mapping_name: str,
        *,
        bc_ids: Sequence[str] = (),
        dv_ids: Sequence[str] = (),
        direction: Direction | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        mapping = await self.e.registry.get(mapping_name)
        keys = list(dict.fromkeys(i.lower() for i in (bc_ids or dv_ids)))
        if len(keys) > INLINE_LIMIT:
            raise ValidationFailedError(
                f'A plan names at most {INLINE_LIMIT} records; plan the whole mapping with {{"kind": "full"}}.'
            )
        if bc_ids:
            found = await self.e.couplings.get_many_by_bc_ids(mapping.name, keys)
        else:
            found = await self.e.couplings.get_many_by_dataverse_ids(mapping.name, keys)
        chosen = resolve_direction(mapping, direction)
        if chosen is None:  # the same prompt Synchronize now answers
            raise await self.sync.direction_prompt(mapping, list(found.values()))
        couplings = [found[k] for k in keys if k in found]
        planned = {(it["bcId"] if bc_ids else it["dataverseId"]): it for it in
                   await self.plan_couplings(mapping, couplings, chosen, force=force)}  # fmt: skip
        results = []
        for k in keys:
            c = found.get(k)
            ref = (c.bc_id if bc_ids else c.dataverse_id) if c else None
            if ref is None or ref not in planned:
                results.append(item("not_coupled", k if bc_ids else None, None if bc_ids else k, chosen, "not_coupled"))
            else:
                results.append(planned[ref])
        return {"results": results, "counts": counts_of(results, empty_counts())}

    async def plan_couplings(
        self,
        mapping: TableMapping,
        couplings: Sequence[Coupling],
        direction: Direction,
        *,
        force: bool = False,
        known: dict[str, RemoteRecord] | None = None,
        honour_skipped: bool = True,
    ) -> list[dict[str, Any]]:
        """Plan items of coupled pairs, decided exactly as ``SyncService.sync_couplings`` decides them."""
        if not couplings:
            return []
        if mapping.lines is not None:  # #21: documents plan a header with its lines as one unit
            from shared.services.documents import plan_document_couplings

            return await plan_document_couplings(self.e, mapping, couplings, direction)
        d = await self.sync.decide(
            mapping, couplings, direction, force=force, honour_skipped=honour_skipped, known=known
        )
        # Records held back by the sync's dependency rule (a parent not coupled yet) would fail, unwritten.
        return [
            item_of_plan(mapping.fields, plan, pair, "parent_not_coupled" if plan.bc_id in d.blocked else None)
            for plan, pair in zip(d.plans, d.pairs, strict=True)
        ]

    # ------------------------------------------------------------------ mapping-wide (a job)
    async def start_job(self, mapping_name: str, kind: str) -> Job:
        from shared.services.jobs import JobService

        mapping = await self.e.registry.get(mapping_name)
        return await JobService(self.e).start(mapping.name, "plan", mapping.direction.value, full=kind == "full")

    async def plan_mapping(self, mapping: TableMapping, *, full: bool) -> tuple[list[dict[str, Any]], int]:
        """The items a mapping-wide sync would produce from the same change pages, and how many coupled
        records it would find unchanged without reading their other side."""
        from shared.services.jobs import JobService

        if mapping.lines is not None:  # #21: documents
            from shared.services.documents import plan_document_mapping

            return await plan_document_mapping(self.e, mapping, full=full)
        jobs = JobService(self.e)
        items: list[dict[str, Any]] = []
        seen_total = 0
        planned: set[str] = set()
        codec = self.e.codec(mapping)
        for side in jobs._sides(mapping):
            wm = await self.e.watermarks.get(mapping.name, side)
            service, entity, select = (
                (self.e.bc, mapping.bc_entity, mapping.bc_select)
                if side == Side.BC
                else (self.e.dv, mapping.dataverse_entity_set, mapping.dataverse_select)
            )
            async for page in service.iter_changes(entity, None if full else wm.cursor, select=select):
                if page.full_resync_required and not full:
                    return await self.plan_mapping(mapping, full=True)
                work, seen, coupled = await jobs._work_of(mapping, side, page.records)
                seen_total += seen
                by_id = {r.id: r for r in work}
                # A pair changed on both sides is synchronized once (the second pass finds it in sync).
                couplings = [coupled[r.id] for r in work if r.id in coupled and coupled[r.id].bc_id not in planned]
                planned.update(c.bc_id for c in couplings)
                items += await self.plan_couplings(mapping, couplings, mapping.direction, known=by_id)
                create_dir = Direction.TO_DATAVERSE if side == Side.BC else Direction.FROM_DATAVERSE
                uncoupled = [r for r in work if r.id not in coupled]
                if uncoupled and may_create(
                    create_dir, mapping.direction, mapping.sync_only_coupled, mapping.create_new
                ):
                    if side == Side.BC:
                        values = await codec.bc_values_many(uncoupled)
                    else:
                        values = {r.id: codec.dv_values(r) for r in uncoupled}
                    for r in uncoupled:
                        new = plan_create(mapping.fields, create_dir, values.get(r.id, {}))
                        items.append(item_of_create(mapping.fields, create_dir, r.id, new))
        return items, seen_total

    async def items_page(
        self, job_id: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[Job, list[dict[str, Any]], str | None]:
        """A page of a plan job's items (a job of another kind has none: 404 job_not_found)."""
        from shared.services.jobs import JobService

        job = await JobService(self.e).get(job_id)
        if job.kind != "plan":
            raise JobNotFoundError(f"Job {job_id[:60]} is not a plan job.")
        items, token = await self.e.jobs.plan_items_page(job.job_id, top=top, continuation=continuation)
        return job, items, token

    async def run_job(self, mapping: TableMapping, *, full: bool, job_id: str) -> dict[str, int]:
        """Worker side of a plan job: plans, stores the items with the job, returns the counts."""
        items, seen = await self.plan_mapping(mapping, full=full)
        await self.e.jobs.put_plan_items(job_id, items)
        base = empty_counts()
        base["unchanged"] += seen
        return counts_of(items, base)
