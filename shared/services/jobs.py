"""Mapping-wide work: jobs are created here and queued; workers run them (never inside an HTTP request)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.domain.errors import ErrorNotFoundError, JobNotFoundError
from shared.domain.model import (
    Coupling,
    Direction,
    Job,
    Outcome,
    RemoteRecord,
    Side,
    SyncErrorEntry,
    Watermark,
    final_status,
)
from shared.errors import PreconditionFailedError
from shared.mappings.config import TableMapping
from shared.messaging import work
from shared.messaging.work import WorkMessage
from shared.planning.automatic import may_run
from shared.planning.decisions import (
    holds_synced_mark,
    holds_synced_values,
    marks_pay,
    may_be_newer,
    snapshot_mark,
    synced_in_this_run,
)
from shared.planning.history import TRIGGER  # #22
from shared.planning.planner import may_create, plan_deletion
from shared.services.coupling_service import CouplingService
from shared.services.dependencies import for_full_run, run_mapping_job
from shared.services.documents import DOCUMENT_KINDS, handle_message, is_document_mapping  # #21
from shared.services.engine import Engine, new_job_id, utcnow
from shared.services.fan_out import fan_out, sync_batch_messages
from shared.services.filters import within_filter
from shared.services.option_sets import OptionSetService, is_option_mapping
from shared.services.sync_errors import create_error_entry
from shared.services.sync_service import RecordResult, SyncOutcome, SyncService
from shared.telemetry import CURRENT_MAPPING, log_event, record_job, record_queue_lag_since

log = logging.getLogger(__name__)
Handler = Callable[[TableMapping, Any, str], Awaitable[SyncOutcome]]

BATCH_SIZE = 100
# The kinds an option mapping (an option set: no rows, no change feed) answers by comparing its code table.
OPTION_KINDS = frozenset({"match-couple", "record-changed", "sync-batch", "retry-errors"})


class JobService:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.sync = SyncService(engine)
        self.coupling = CouplingService(engine)

    # ------------------------------------------------------------------ starting jobs (API side)
    async def start(
        self,
        mapping: str,
        kind: str,
        direction: str | None,
        messages: Sequence[WorkMessage] | None = None,
        **payload: Any,
    ) -> Job:
        """Creates a job of ``kind`` and queues its messages (by default the one ``work.for_job_kind`` builds
        from ``payload``), each stamped with the job id and its deterministic message id."""
        job = Job(job_id=new_job_id(), mapping=mapping, kind=kind, direction=direction, created_at=utcnow())
        msgs = list(messages) if messages is not None else [work.for_job_kind(kind, mapping, **payload)]
        stamped = [m.for_job(job.job_id, i) for i, m in enumerate(msgs)]
        job.expected_batches = len(stamped)
        await self.e.jobs.create(job)
        await self.e.publisher.publish([m.to_wire() for m in stamped])
        return job

    async def _mapping_name(self, mapping: str | None) -> str | None:
        return None if mapping is None else (await self.e.registry.get(mapping)).name

    async def jobs_page(
        self, mapping: str | None, top: int, continuation: str | None
    ) -> tuple[str | None, list[Job], str | None]:
        """(mapping name, a page of jobs newest first, continuation); an unknown mapping -> not found."""
        name = await self._mapping_name(mapping)
        items, token = await self.e.jobs.list_page(mapping=name, top=top, continuation=continuation)
        return name, items, token

    async def errors_page(
        self, mapping: str | None, top: int, continuation: str | None, include_closed: bool
    ) -> tuple[str | None, list[SyncErrorEntry], str | None]:
        """(mapping name, a page of sync errors newest first, continuation)."""
        name = await self._mapping_name(mapping)
        items, token = await self.e.errors.list_page(
            mapping=name, include_closed=include_closed, top=top, continuation=continuation
        )
        return name, items, token

    async def retry_errors(self, ids: Sequence[str]) -> tuple[list[Job], list[str]]:
        """One retry job per mapping of these open sync errors (the first mapping's job first) and the ids
        that match no open error; none matching -> ``ErrorNotFoundError``."""
        entries = [e for e in await self.e.errors.get_many(ids) if not e.closed]
        if not entries:
            raise ErrorNotFoundError("None of the ids names an open sync error.", unknown=list(ids))
        by_mapping: dict[str, list[str]] = {}
        for e in entries:
            by_mapping.setdefault(e.mapping, []).append(e.id)
        jobs = [await self.start(m, "retry", None, ids=m_ids) for m, m_ids in by_mapping.items()]
        known = {e.id for e in entries}
        return jobs, [i for i in ids if i not in known]

    async def retry_all(self, mapping: str) -> Job:
        return await self.start((await self.e.registry.get(mapping)).name, "retry", None, all=True)

    async def get(self, job_id: str) -> Job:
        job = await self.e.jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"There is no job {job_id[:60]}.")
        return job

    # ------------------------------------------------------------------ running jobs (worker side)
    async def receive(self, body: bytes | str, *, enqueued_at: datetime | None = None) -> None:
        """A message body from the queue: decoded (``work.decode``) and handled. A body that is no valid work
        message is permanent: it is logged, the job it names (if any) fails, and the message completes.
        ``enqueued_at`` (the broker's enqueue time) gives the ``queue.lag_ms`` metric."""
        record_queue_lag_since(enqueued_at)
        try:
            msg = work.decode(body)
        except work.MessageFormatError as exc:
            log.error("dropping a malformed work message: %s", exc)
            await self._fail_named_job(body, str(exc))
            return
        await self.handle(msg)

    async def handle(self, raw: WorkMessage | Mapping[str, Any]) -> None:
        """Processes one work message (a typed one, or its JSON object). Transient errors propagate (Service Bus
        redelivers); processing the same message twice changes nothing the second time (idempotent writes,
        per-batch counters)."""
        msg = work.parse(raw)
        CURRENT_MAPPING.set(msg.mapping)  # labels the connectors' sync.throttled
        job_id = msg.job_id
        mapping = await self.e.registry.get(msg.mapping)
        job = await self.e.jobs.get(job_id) if job_id else None
        if job is not None and job.status in ("succeeded", "partial", "failed"):
            return  # a redelivered message of a finished job
        if job is not None and job.status == "queued":
            await self.e.jobs.set_status(job_id, "running", started_at=utcnow())
        TRIGGER.set(trigger_of(msg, job))  # #22 history
        try:
            outcome = await self._handler_of(msg, mapping)(mapping, msg, job_id)
        except Exception as exc:
            if getattr(exc, "transient", False):
                raise
            log.exception("job %s failed", job_id)
            if job is not None:
                await self._fail(job, str(exc))
            return
        if job is None:
            return
        await self.e.jobs.add_counts(job_id, outcome.counts, batch_id=msg.batch or "0")
        await self._finish_if_done(job_id)

    async def _document(self, mapping: TableMapping, msg: WorkMessage, job_id: str) -> SyncOutcome:
        return await handle_message(self, mapping, msg.to_wire(), job_id) or SyncOutcome()

    def _handler_of(self, msg: WorkMessage, mapping: TableMapping) -> Handler:
        """The dispatch table: kind -> handler. An option set has no rows or change feed: every run of the
        kinds in ``OPTION_KINDS`` compares the code table with it."""
        if is_document_mapping(mapping) and msg.kind in DOCUMENT_KINDS:
            return self._document  # #21: a header with its lines, one unit
        if is_option_mapping(mapping) and msg.kind in OPTION_KINDS:
            return self._option_set
        handlers: dict[str, Handler] = {
            "mapping-sync": self._mapping_sync,
            "sync-batch": self._sync_batch,
            "record-changed": self.record_changed,
            "uncouple-all": self._uncouple_all,
            "match-couple": self._match,
            "retry-errors": self._retry,
            "plan": self._plan,
        }
        return handlers[msg.kind]

    async def _fail_named_job(self, body: bytes | str, reason: str) -> None:
        try:
            data = json.loads(body)
        except (ValueError, TypeError):
            return
        job_id = str(data.get("jobId") or "") if isinstance(data, dict) else ""
        job = await self.e.jobs.get(job_id) if job_id else None
        if job is not None and job.status not in ("succeeded", "partial", "failed"):
            await self._fail(job, reason)

    async def _fail(self, job: Job, reason: str) -> None:
        """Ends ``job`` failed, ``reason`` its detail; its pending cursors are dropped (no watermark moves)."""
        await self.e.jobs.set_status(
            job.job_id, "failed", finished_at=utcnow(), detail=reason[:500], pending_cursors={}
        )
        record_job(job.mapping, job.kind, "failed")

    async def _mapping_sync(self, mapping: TableMapping, msg: work.MappingSync, job_id: str) -> SyncOutcome:
        # Parents first, code tables coupled by match, option sets compared (shared.services.dependencies).
        return await run_mapping_job(self, mapping, full=msg.full, job_id=job_id, parents_first=msg.parents_first)

    async def _option_set(self, mapping: TableMapping, msg: WorkMessage, job_id: str) -> SyncOutcome:
        bc_ids = getattr(msg, "bc_ids", None)
        return await OptionSetService(self.e).run(mapping, bc_ids or None, job_id)

    async def _uncouple_all(self, mapping: TableMapping, msg: work.UncoupleAll, job_id: str) -> SyncOutcome:
        outcome = SyncOutcome()
        outcome.counts["uncoupled"] = await self.e.couplings.delete_all(mapping.name)
        if msg.delete_mapping:  # DELETE /api/mappings/{m}: its couplings first, then the mapping
            from shared.services.mapping_admin import admin_for

            await admin_for(self.e).remove(mapping.name)
        return outcome

    async def _plan(self, mapping: TableMapping, msg: work.Plan, job_id: str) -> SyncOutcome:
        """#22: a mapping-wide plan (shared/services/plans.py); writes nothing else."""
        from shared.services.plans import PlanService

        outcome = SyncOutcome()
        outcome.counts = await PlanService(self.e).run_job(mapping, full=msg.full, job_id=job_id)
        return outcome

    async def run_inline(self, job: Job, run: Callable[[], Awaitable[SyncOutcome]]) -> SyncOutcome:
        """A job run inside the request (a small Synchronize now), through the lifecycle of a queued one: created
        running with one batch, ``run``'s counts added as that batch, finished as any job (status, metric, log).
        A failure of ``run`` fails the job (as far as the job store answers) and propagates."""
        job.status, job.started_at, job.expected_batches = "running", utcnow(), 1
        await self.e.jobs.create(job)
        try:
            outcome = await run()
        except Exception as exc:
            with contextlib.suppress(Exception):  # the store may be what failed: the request's error wins
                await self._fail(job, str(exc))
            raise
        await self.e.jobs.add_counts(job.job_id, outcome.counts, batch_id="0")
        job.counts = {k: job.counts.get(k, 0) + outcome.counts.get(k, 0) for k in job.counts}
        await self._finish(job)
        return outcome

    async def _finish_if_done(self, job_id: str) -> None:
        job = await self.e.jobs.get(job_id)
        if job is None or job.status in ("succeeded", "partial", "failed"):
            return
        if job.expected_batches is None or job.completed_batches >= job.expected_batches:
            await self._finish(job)

    async def _finish(self, job: Job) -> None:
        """Ends a job whose batches are all done: its watermarks move to its pending cursors, then its status
        (from its counts), the job metric and the log line."""
        if job.pending_cursors:
            await self._advance_all(job.mapping, job.pending_cursors)
        status = final_status(job.counts)
        await self.e.jobs.set_status(job.job_id, status, finished_at=utcnow(), pending_cursors={})
        record_job(job.mapping, job.kind, status)
        log_event(
            log, f"job {status}", mapping=job.mapping, job_id=job.job_id, outcome=status, kind=job.kind, **job.counts
        )

    async def _sync_batch(self, mapping: TableMapping, msg: work.SyncBatch, job_id: str) -> SyncOutcome:
        if msg.full_run:  # a page of a full synchronization: it creates as the job does
            mapping = for_full_run(mapping)
        bc_ids = [i.lower() for i in msg.bc_ids or []]
        dv_ids = [i.lower() for i in msg.dataverse_ids or []]
        if msg.scheduled:  # a fanned-out page of changes: re-read the records, then as inline
            side = Side(msg.side) if msg.side else (Side.BC if bc_ids else Side.DATAVERSE)
            recs = await self._read(mapping, side, bc_ids or dv_ids)
            return await self.process_changes(
                mapping, side, list(recs.values()), msg.deleted_ids or [], job_id, filtered=msg.filtered,
                uncoupled=msg.uncoupled,
            )  # fmt: skip
        if msg.direction is None:
            raise work.MessageFormatError("a sync-batch message names no direction", code="InvalidMessage")
        from shared.services.synchronize_now import sync_ids  # local import: it builds on this module

        return await sync_ids(self.e, mapping, bc_ids, dv_ids, Direction(msg.direction), force=msg.force, job_id=job_id)

    async def _match(self, mapping: TableMapping, msg: work.MatchCouple, job_id: str | None = None) -> SyncOutcome:
        from shared.services.match_service import MatchService, criteria_from_body

        criteria = criteria_from_body(msg.match_fields) if msg.match_fields else None
        options = {
            "criteria": criteria,
            "create_new": msg.create_new_if_no_match,
            "sync_after": msg.sync_after,
            "job_id": msg.job_id or job_id or None,
        }
        select = sorted({*mapping.bc_select, *(c.bc for c in criteria or ())})
        matcher = MatchService(self.e)
        outcome = SyncOutcome()
        ids = msg.bc_ids
        if ids:
            recs = await self.e.bc.get_many(mapping.bc_entity, ids, select=select)
            outcome.merge(await matcher.match(mapping, list(recs.values()), **options))
            missing = [i for i in dict.fromkeys(x.lower() for x in ids) if i not in recs]
            for bc_id in missing:
                outcome.add(
                    RecordResult(bc_id, None, Outcome.NOT_FOUND, None, "record_not_found", "No such BC record.")
                )
            return outcome
        async for page in self.e.bc.list_records(mapping.bc_entity, select=select, filter=mapping.table_filter):
            outcome.merge(await matcher.match(mapping, page, **options))
        return outcome

    async def _retry(self, mapping: TableMapping, msg: work.RetryErrors, job_id: str) -> SyncOutcome:
        """Retry: un-skip the couplings of these errors and synchronize them again (BC's 'Synchronize')."""
        if msg.all:
            entries, cont = [], None
            while True:
                page, cont = await self.e.errors.list_page(mapping=mapping.name, top=1000, continuation=cont)
                entries += page
                if not cont:
                    break
        else:
            entries = [x for x in await self.e.errors.get_many(msg.ids or []) if x.mapping == mapping.name]
        bc_ids = sorted({x.bc_id for x in entries if x.bc_id})
        couplings = await self.e.couplings.get_many_by_bc_ids(mapping.name, bc_ids)
        for c in couplings.values():
            c.skipped = False
            c.consecutive_failures = 0
        await self.e.couplings.save_sync_state(list(couplings.values()))
        outcome = SyncOutcome()
        by_dir: dict[str, list] = {}
        for x in entries:
            if x.bc_id in couplings:
                d = x.direction if x.direction in [v.value for v in Direction] else mapping.direction.value
                if not mapping.allows(Direction(d)):
                    d = mapping.direction.value
                by_dir.setdefault(d, []).append(couplings[x.bc_id])
        for d, cs in by_dir.items():
            unique = list({c.bc_id: c for c in cs}.values())
            outcome.merge(
                await self.sync.sync_couplings(
                    mapping, unique, Direction(d), force=True, honour_skipped=False, job_id=job_id
                )
            )
        outcome.merge(await self._retry_creates(mapping, [x for x in entries if x.bc_id not in couplings], job_id))
        return outcome

    async def _retry_creates(self, mapping: TableMapping, entries: Sequence[Any], job_id: str) -> SyncOutcome:
        """Errors naming a record without a coupling are failed creates: the record is created on the other
        side again and coupled (a Dataverse row coupled meanwhile just has its error closed)."""
        outcome = SyncOutcome()
        bc_ids = sorted({x.bc_id for x in entries if x.bc_id})
        dv_ids = sorted({x.dataverse_id for x in entries if not x.bc_id and x.dataverse_id})
        if bc_ids and mapping.allows(Direction.TO_DATAVERSE):
            recs = await self._read(mapping, Side.BC, bc_ids)
            outcome.merge(
                await self.coupling.create_counterparts(mapping, Direction.TO_DATAVERSE, list(recs.values()), job_id)
            )
        if dv_ids and mapping.allows(Direction.FROM_DATAVERSE):
            coupled = await self._couplings_by(mapping, Side.DATAVERSE, dv_ids)
            if coupled:
                await self.e.errors.close_for_records(mapping.name, [], list(coupled))
            recs = await self._read(mapping, Side.DATAVERSE, [i for i in dv_ids if i not in coupled])
            outcome.merge(
                await self.coupling.create_counterparts(mapping, Direction.FROM_DATAVERSE, list(recs.values()), job_id)
            )
        return outcome

    # ------------------------------------------------------------------ mapping-wide sync
    def _sides(self, mapping: TableMapping) -> list[Side]:
        if mapping.direction == Direction.TO_DATAVERSE:
            return [Side.BC]
        if mapping.direction == Direction.FROM_DATAVERSE:
            return [Side.DATAVERSE]
        return [Side.BC, Side.DATAVERSE]

    async def run_mapping_sync(self, mapping: TableMapping, *, full: bool, job_id: str | None) -> SyncOutcome:
        """Changes since each side's watermark (everything when ``full``), page by page. Small pages are
        processed here; a large page is fanned out to workers as ``sync-batch`` messages. Watermarks move
        only after every page (and, when fanned out, every batch) succeeded: the last batch moves them."""
        outcome = SyncOutcome()
        if not may_run(mapping.state, job_id):
            return outcome  # paused: nothing read, so no watermark moves past unsynced changes
        batches: list[dict[str, Any]] = []
        cursors: dict[str, str] = {}
        # The Dataverse versions the BC pass synced inline: not synced again (a fanned-out page is not in it).
        read_dv: dict[str, str | None] = {}
        # The marks of the Dataverse snapshots the BC pass left (``synced_marks``' kind): its own writes come
        # back in the Dataverse pass's feed and are dropped without a lookup when no synced marks were read.
        synced_dv: dict[str, Any] = {}
        for side in self._sides(mapping):
            marks: dict[str, Any] | None = None  # the side's synced marks, read once the pages make them pay
            wm = await self.e.watermarks.get(mapping.name, side)
            cursor = None if full else wm.cursor
            service, entity = (
                (self.e.bc, mapping.bc_entity) if side == Side.BC else (self.e.dv, mapping.dataverse_entity_set)
            )
            select = mapping.bc_select if side == Side.BC else mapping.dataverse_select
            async for page in service.iter_changes(entity, cursor, select=select):
                if page.full_resync_required:
                    log.warning("change tracking of %s expired; full resync", mapping.name)
                    return await self.run_mapping_sync(mapping, full=True, job_id=job_id)
                # Changes already seen (feed overlap), our own writes coming back and the versions this run's
                # BC pass synced need no work: dropped here, before any fan-out or re-read.
                records = [r for r in page.records if not synced_in_this_run(read_dv, r.id, r.etag)]
                if marks is None and marks_pay(len(records), await self.e.couplings.estimated_count(mapping.name),
                                               full=cursor is None):  # fmt: skip
                    marks = await self.e.couplings.synced_marks(mapping.name, side, _flowing_keys(mapping, side))
                last_seen = marks or (synced_dv if side == Side.DATAVERSE else None)
                if last_seen:  # versions the last syncs saw: no coupling lookup for them (#23)
                    kept = self._not_synced(mapping, side, records, last_seen)
                    outcome.counts["unchanged"] += len(records) - len(kept)
                    records = kept
                # Read every coupling, the marks also tell which records have none: not looked up (a lookup
                # of absent ids reads per id); a concurrent couple is refused by the store's claims, as always.
                absent = None if marks is None else {r.id for r in records if r.id.lower() not in marks}
                work, seen, coupled = await self._work_of(mapping, side, records, absent=absent)
                outcome.counts["unchanged"] += seen
                if job_id and self.e.settings.fans_out(len(work)):
                    # Changed coupled records and uncoupled ones in batches of their own: the uncoupled are
                    # created without a second coupling lookup (a lookup of absent ids is a read per id, #23).
                    deletions = page.deleted_ids  # they ride with the page's first batch
                    for uncoupled in (False, True):
                        part = [r for r in work if (r.id not in coupled) is uncoupled]
                        if part:
                            batches += sync_batch_messages(
                                mapping,
                                side,
                                part,
                                job_id,
                                first=len(batches),
                                size=self.e.settings.fanout_batch_size,
                                deleted_ids=deletions,
                                full_run=not mapping.sync_only_coupled,
                                filtered=True,  # _work_of checked the page against the mapping's filters
                                uncoupled=uncoupled,
                            )
                            deletions = []
                elif work or page.deleted_ids:
                    # Only the BC pass's marks are read (by the Dataverse pass after it).
                    marks_to = synced_dv if side == Side.BC else None
                    outcome.merge(
                        await self._apply_work(
                            mapping, side, work, 0, coupled, page.deleted_ids, job_id, read_dv, marks_to
                        )
                    )
                if page.next_cursor:
                    cursors[side.value] = page.next_cursor
        if batches and job_id:
            await fan_out(self.e, job_id, batches, cursors)
        else:
            await self._advance_all(mapping.name, cursors)
        return outcome

    async def _advance_all(self, mapping: str, cursors: dict[str, str]) -> None:
        for side, cursor in cursors.items():
            wm = await self.e.watermarks.get(mapping, Side(side))
            await self._advance(Watermark(mapping, Side(side), cursor, utcnow(), wm.row_etag))

    async def _advance(self, wm: Watermark) -> None:
        try:
            await self.e.watermarks.put(wm)
        except PreconditionFailedError:
            # Another worker advanced it meanwhile; theirs is at least as new (both read the same feed).
            log.info("watermark of %s/%s moved concurrently", wm.mapping, wm.side)

    async def process_changes(
        self,
        mapping: TableMapping,
        side: Side,
        records: Sequence[RemoteRecord],
        deleted_ids: Sequence[str],
        job_id: str | None,
        *,
        filtered: bool = False,
        uncoupled: bool = False,
    ) -> SyncOutcome:
        """Syncs the changed coupled records of a change set and creates+couples the uncoupled ones the
        mapping allows; changes already seen and our own echoes cost nothing. ``filtered``: the records were
        found within the mapping's filters when the page was fanned out (not queried again); ``uncoupled``:
        and all of them were uncoupled then (their couplings are not looked up again)."""
        if not may_run(mapping.state, job_id):
            return SyncOutcome()
        if uncoupled and filtered:
            return await self._apply_work(mapping, side, records, 0, {}, deleted_ids, job_id)
        work, seen, coupled = await self._work_of(mapping, side, records, filtered=filtered)
        return await self._apply_work(mapping, side, work, seen, coupled, deleted_ids, job_id)

    async def _apply_work(
        self,
        mapping: TableMapping,
        side: Side,
        work: Sequence[RemoteRecord],
        seen: int,
        coupled: dict[str, Coupling],
        deleted_ids: Sequence[str],
        job_id: str | None,
        read_dv: dict[str, str | None] | None = None,
        synced_dv: dict[str, Any] | None = None,
    ) -> SyncOutcome:
        """Applies what ``_work_of`` found: ``work`` are the records that need it, ``seen`` the coupled ones
        that don't, ``coupled`` the couplings by this side's id; ``read_dv`` receives the Dataverse versions
        the syncs read, ``synced_dv`` the marks of the Dataverse snapshots they left (by lower-case id)."""
        outcome = SyncOutcome()
        outcome.counts["unchanged"] += seen
        by_id = {r.id: r for r in work}
        couplings = [coupled[r.id] for r in work if r.id in coupled]
        dv_keys = _flowing_keys(mapping, Side.DATAVERSE) if synced_dv is not None else []
        for start in range(0, len(couplings), 1000):
            chunk = couplings[start : start + 1000]
            result = await self.sync.sync_couplings(
                mapping, chunk, mapping.direction, job_id=job_id, scheduled=True, known=by_id, read_dv=read_dv
            )
            if synced_dv is not None:  # the syncs left each coupling's snapshots in it (failures: the old ones)
                synced_dv.update({c.dataverse_id.lower(): snapshot_mark(dv_keys, c.dv_values) for c in chunk})
            outcome.merge(await self._deletions_from_results(mapping, chunk, result))
        create_dir = Direction.TO_DATAVERSE if side == Side.BC else Direction.FROM_DATAVERSE
        uncoupled = [r for r in work if r.id not in coupled]
        if uncoupled and may_create(create_dir, mapping.direction, mapping.sync_only_coupled, mapping.create_new):
            for start in range(0, len(uncoupled), 1000):
                outcome.merge(
                    await self.coupling.create_counterparts(
                        mapping, create_dir, uncoupled[start : start + 1000], job_id
                    )
                )
        if deleted_ids:
            gone = await self._couplings_by(mapping, Side.DATAVERSE, deleted_ids)
            outcome.merge(await self._apply_deletions(mapping, list(gone.values()), deleted_side=Side.DATAVERSE))
        return outcome

    async def _read(self, mapping: TableMapping, side: Side, ids: Sequence[str]) -> dict[str, RemoteRecord]:
        if side == Side.BC:
            return await self.e.bc.get_many(mapping.bc_entity, ids, select=mapping.bc_select)
        return await self.e.dv.get_many(mapping.dataverse_entity_set, ids, select=mapping.dataverse_select)

    async def _couplings_by(self, mapping: TableMapping, side: Side, ids: Sequence[str]) -> dict[str, Coupling]:
        """Couplings keyed by this side's id."""
        if side == Side.BC:
            return await self.e.couplings.get_many_by_bc_ids(mapping.name, list(ids))
        return await self.e.couplings.get_many_by_dataverse_ids(mapping.name, list(ids))

    async def _work_of(
        self,
        mapping: TableMapping,
        side: Side,
        records: Sequence[RemoteRecord],
        *,
        filtered: bool = False,
        absent: set[str] | None = None,
    ) -> tuple[list[RemoteRecord], int, dict[str, Coupling]]:
        """The records of a change page that need work (uncoupled, or coupled and really changed), how many
        coupled ones don't, and the couplings found; ``absent``: ids known to have no coupling (not looked up)."""
        if not records:
            return [], 0, {}
        by_id = {r.id: r for r in records}
        wanted = [i for i in by_id if i not in absent] if absent else list(by_id)
        coupled = await self._couplings_by(mapping, side, wanted) if wanted else {}
        candidates = [c for i, c in coupled.items() if _newer(by_id[i], c, side)]
        changed = {
            c.bc_id if side == Side.BC else c.dataverse_id
            for c in await self._not_echoes(mapping, side, candidates, by_id)
        }
        work = [r for r in records if r.id not in coupled or r.id in changed]
        if not filtered:
            work = await within_filter(self.e, mapping, side, work)  # the side's table / integration table filter
        return work, len(coupled) - len(changed), coupled

    async def _not_echoes(
        self, mapping: TableMapping, side: Side, couplings: list[Coupling], records: dict[str, RemoteRecord]
    ) -> list[Coupling]:
        """Drops the pairs whose changed record still holds exactly the values of the last sync (our own write
        coming back, or a change to unmapped fields): nothing to do, and the other side is not even read.
        A change on the other side arrives through its own feed."""
        codec = self.e.codec(mapping)
        keys = _flowing_keys(mapping, side)
        if side == Side.BC:
            values = await codec.bc_values_many([records[c.bc_id] for c in couplings])
        else:
            values = {c.dataverse_id: codec.dv_values(records[c.dataverse_id]) for c in couplings}
        if side == Side.BC:
            return [c for c in couplings if not holds_synced_values(keys, values[c.bc_id], c.bc_values)]
        return [c for c in couplings if not holds_synced_values(keys, values[c.dataverse_id], c.dv_values)]

    def _not_synced(
        self, mapping: TableMapping, side: Side, records: Sequence[RemoteRecord], marks: Mapping[str, Any]
    ) -> list[RemoteRecord]:
        """The records of a change page that are not the versions their couplings last synced, by the synced
        marks: BC rows no newer than the ``lastModifiedDateTime`` the last sync saw, Dataverse rows holding
        the last sync's values (the echo rule, ``holds_synced_mark``). What is left goes the full way."""
        if side == Side.BC:
            return [r for r in records if may_be_newer(r.modified_on, marks.get(r.id.lower()), whole_seconds=False)]
        codec, keys = self.e.codec(mapping), _flowing_keys(mapping, side)
        return [r for r in records if not holds_synced_mark(keys, codec.dv_values(r), marks.get(r.id.lower()))]

    async def _deletions_from_results(self, mapping: TableMapping, couplings: list, result: SyncOutcome) -> SyncOutcome:
        """Scheduled syncs turn ``not_found`` results into the mapping's deletion policy."""
        by_id = {c.bc_id: c for c in couplings}
        gone = [by_id[r.bc_id] for r in result.results if r.status == Outcome.NOT_FOUND and r.bc_id in by_id]
        if not gone:
            return result
        kept = SyncOutcome()
        for r in result.results:
            if r.status != Outcome.NOT_FOUND:
                kept.add(r)
        bc_present = await self.e.bc.get_many(mapping.bc_entity, [c.bc_id for c in gone], select=["id"])
        bc_deleted = [c for c in gone if c.bc_id not in bc_present]
        dv_deleted = [c for c in gone if c.bc_id in bc_present]
        kept.merge(await self._apply_deletions(mapping, bc_deleted, deleted_side=Side.BC))
        kept.merge(await self._apply_deletions(mapping, dv_deleted, deleted_side=Side.DATAVERSE))
        return kept

    async def _apply_deletions(self, mapping: TableMapping, couplings: list, *, deleted_side: Side) -> SyncOutcome:
        outcome = SyncOutcome()
        if not couplings:
            return outcome
        action = plan_deletion(mapping.deletion_policy)
        bc_ids = [c.bc_id for c in couplings]
        if action == "fail":
            for c in couplings:
                outcome.add(
                    RecordResult(
                        c.bc_id,
                        c.dataverse_id,
                        Outcome.FAILED,
                        None,
                        "coupled_record_deleted",
                        "The record cannot be updated because it is coupled to a deleted record.",
                    )
                )
            # Listed like any failed record, so the change feed's watermark never leaves it unrecorded.
            await self.e.errors.record_many(
                [create_error_entry(mapping.name, r, None, utcnow()) for r in outcome.results]
            )
            return outcome
        await self.e.couplings.uncouple_many(mapping.name, bc_ids)
        await self.e.errors.close_for_records(mapping.name, bc_ids)
        outcome.counts["uncoupled"] += len(couplings)
        if action == "delete_survivor":
            from shared.domain.model import WriteOp

            if deleted_side == Side.BC:
                ops = [WriteOp("delete", ref=c.bc_id, id=c.dataverse_id) for c in couplings]
                await self.e.dv.write_many(mapping.dataverse_entity_set, ops)
            else:
                ops = [WriteOp("delete", ref=c.bc_id, id=c.bc_id) for c in couplings]
                await self.e.bc.write_many(mapping.bc_entity, ops)
            outcome.counts["deleted"] += len(couplings)
        elif action == "restore":
            if deleted_side == Side.BC:
                recs = await self.e.dv.get_many(
                    mapping.dataverse_entity_set, [c.dataverse_id for c in couplings], select=mapping.dataverse_select
                )
                outcome.merge(
                    await self.coupling.create_counterparts(mapping, Direction.FROM_DATAVERSE, list(recs.values()))
                )
            else:
                recs = await self.e.bc.get_many(mapping.bc_entity, bc_ids, select=mapping.bc_select)
                # A restored Dataverse row gets a fresh id: the deterministic one belongs to the deleted row.
                outcome.merge(
                    await self.coupling.create_counterparts(mapping, Direction.TO_DATAVERSE, list(recs.values()))
                )
        return outcome

    # ------------------------------------------------------------------ single changes (webhooks)
    async def record_changed(self, mapping: TableMapping, msg: work.RecordChanged, job_id: str | None) -> SyncOutcome:
        side = Side.BC if msg.bc_ids else Side.DATAVERSE
        ids = [i.lower() for i in (msg.bc_ids or msg.dataverse_ids or [])]
        if not may_run(mapping.state, job_id):
            return SyncOutcome()  # a webhook's change while paused: the incremental run after resume has it
        if msg.deleted:
            gone = await self._couplings_by(mapping, side, ids)
            return await self._apply_deletions(mapping, list(gone.values()), deleted_side=side)
        recs = await self._read(mapping, side, ids)
        return await self.process_changes(mapping, side, list(recs.values()), [], job_id)


def _flowing_keys(mapping: TableMapping, side: Side) -> list[str]:
    """The fields whose values flow from ``side``, which the echo rule compares. A value the other side alone
    writes (the owner from a salesperson, toDataverse only) may differ from what we wrote (Dataverse's default
    owner) and is no change."""
    flows_from_side = (
        Direction.BIDIRECTIONAL,
        Direction.TO_DATAVERSE if side == Side.BC else Direction.FROM_DATAVERSE,
    )
    return [
        f.key for f in mapping.fields if f.bc and f.dataverse and f.constant is None and f.direction in flows_from_side
    ]


def _newer(record: RemoteRecord, coupling: Coupling, side: Side) -> bool:
    """``may_be_newer`` for a feed row and its coupling: Dataverse stamps ``modifiedon`` in whole seconds."""
    seen = coupling.bc_modified_on if side == Side.BC else coupling.dv_modified_on
    return may_be_newer(record.modified_on, seen, whole_seconds=side == Side.DATAVERSE)


_TRIGGER_OF_KIND = {
    "record-changed": "webhook",
    "uncouple-all": "uncouple",
    "match-couple": "match",
    "retry-errors": "retry",
}


def trigger_of(msg: WorkMessage, job: Job | None) -> str:
    """#22: the history trigger of a work message (the timer marks the jobs it starts)."""
    if msg.trigger in ("timer", "webhook"):
        return msg.trigger
    if msg.kind in _TRIGGER_OF_KIND:
        return _TRIGGER_OF_KIND[msg.kind]
    return "syncNow" if job is not None and job.kind == "syncNow" else "job"
