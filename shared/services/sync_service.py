"""Synchronize coupled records: gather both sides in batches, plan (pure), apply in batches, record.

Used by Synchronize now, sync from Dataverse, scheduled/incremental jobs and retries alike.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.domain.errors import DirectionNotAllowedError, DirectionRequiredError
from shared.domain.model import (
    COUNT_OF,
    Coupling,
    Direction,
    Outcome,
    RemoteRecord,
    SyncErrorEntry,
    WriteOp,
    WriteResult,
    final_status,
)
from shared.errors import SyncError
from shared.mappings.config import TableMapping
from shared.planning.decisions import (
    PARENT_NOT_COUPLED,
    UPSTREAM_UNAVAILABLE,
    FailureState,
    WriteFailure,
    after_failure,
    failure_code,
    failure_message,
    failure_transient,
    parent_missing_message,
    replan,
)
from shared.planning.lookups import unresolved_lookups
from shared.planning.planner import Changes, PairState, RecordPlan, detect_changes, plan_sync, suggest_direction
from shared.services import history  # #22
from shared.services.engine import Engine, empty_counts, utcnow
from shared.services.sync_errors import error_entry
from shared.telemetry import log_event, record_latency, record_sync_outcomes

log = logging.getLogger(__name__)

DIRECTION_OPTIONS = [d.value for d in Direction]


@dataclass(slots=True)
class RecordResult:
    bc_id: str | None
    dataverse_id: str | None
    status: Outcome
    direction: str | None
    error_code: str | None = None
    error_message: str | None = None
    transient: bool = False

    def __post_init__(self) -> None:
        self.status = Outcome(self.status)  # one vocabulary: anything else is a bug, raised here

    def as_json(self) -> dict[str, Any]:
        return {
            "bcId": self.bc_id,
            "dataverseId": self.dataverse_id,
            "status": self.status.value,
            "direction": self.direction,
            "error": (
                {"code": self.error_code, "message": self.error_message, "transient": self.transient}
                if self.error_code
                else None
            ),
        }


@dataclass(slots=True)
class SyncOutcome:
    results: list[RecordResult] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=empty_counts)

    def add(self, result: RecordResult) -> None:
        self.results.append(result)
        self.counts[COUNT_OF[result.status]] += 1
        if result.status == Outcome.CREATED:
            self.counts["coupled"] += 1

    def by_outcome(self) -> Counter[Outcome]:
        """How many results of each outcome (the ``sync.records`` metric's ``outcome``)."""
        return Counter(r.status for r in self.results)

    def merge(self, other: SyncOutcome) -> None:
        self.results.extend(other.results)
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v


def resolve_direction(mapping: TableMapping, requested: Direction | None) -> Direction | None:
    """The direction to use, or None when the caller must be asked (bidirectional mapping, none given)."""
    if requested is None:
        return None if mapping.direction == Direction.BIDIRECTIONAL else mapping.direction
    if not mapping.allows(requested):
        raise DirectionNotAllowedError(
            f"Mapping {mapping.name} synchronizes {mapping.direction.value} only; {requested.value} is not allowed.",
            allowed=[mapping.direction.value],
        )
    return requested


class SyncService:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    # ------------------------------------------------------------------ reading both sides
    async def _load(
        self, mapping: TableMapping, couplings: Sequence[Coupling], known: dict[str, RemoteRecord] | None = None
    ) -> tuple[dict[str, RemoteRecord], dict[str, RemoteRecord], dict[str, dict[str, Any]]]:
        """Both sides of these pairs; ``known`` records (just read from a change feed) are not read again."""
        known = known or {}
        bc_recs = {c.bc_id: known[c.bc_id] for c in couplings if c.bc_id in known}
        dv_recs = {c.dataverse_id: known[c.dataverse_id] for c in couplings if c.dataverse_id in known}
        missing_bc = [c.bc_id for c in couplings if c.bc_id not in bc_recs]
        missing_dv = [c.dataverse_id for c in couplings if c.dataverse_id not in dv_recs]
        if missing_bc:
            bc_recs.update(await self.e.bc.get_many(mapping.bc_entity, missing_bc, select=mapping.bc_select))
        if missing_dv:
            dv_recs.update(
                await self.e.dv.get_many(mapping.dataverse_entity_set, missing_dv, select=mapping.dataverse_select)
            )
        bc_values = await self.e.codec(mapping).bc_values_many(bc_recs.values())
        return bc_recs, dv_recs, bc_values

    def _pairs(
        self,
        mapping: TableMapping,
        couplings: Sequence[Coupling],
        bc_recs: dict[str, RemoteRecord],
        dv_recs: dict[str, RemoteRecord],
        bc_values: dict[str, dict[str, Any]],
    ) -> list[PairState]:
        codec = self.e.codec(mapping)
        pairs = []
        for c in couplings:
            b, d = bc_recs.get(c.bc_id), dv_recs.get(c.dataverse_id)
            pairs.append(
                PairState(
                    c.bc_id,
                    c.dataverse_id,
                    bc_values.get(c.bc_id) if b else None,
                    codec.dv_values(d) if d else None,
                    c.bc_values,
                    c.dv_values,
                    skipped=c.skipped,
                    bc_modified_on=b.modified_on if b else None,
                    dv_modified_on=d.modified_on if d else None,
                )
            )
        return pairs

    async def changes_for_prompt(self, mapping: TableMapping, couplings: Sequence[Coupling]) -> Changes:
        """What changed on each side since the last sync, across these couplings (read-only)."""
        bc_recs, dv_recs, bc_values = await self._load(mapping, couplings)
        pairs = self._pairs(mapping, couplings, bc_recs, dv_recs, bc_values)
        bc_f: list[str] = []
        dv_f: list[str] = []
        conf: list[str] = []
        for p in pairs:
            ch = detect_changes(mapping.fields, p)
            bc_f += [x for x in ch.bc_fields if x not in bc_f]
            dv_f += [x for x in ch.dv_fields if x not in dv_f]
            conf += [x for x in ch.conflicting_fields if x not in conf]
        return Changes(tuple(bc_f), tuple(dv_f), tuple(conf))

    async def direction_prompt(self, mapping: TableMapping, couplings: Sequence[Coupling]) -> DirectionRequiredError:
        extra: dict[str, Any] = {"options": DIRECTION_OPTIONS}
        if couplings:
            changes = await self.changes_for_prompt(mapping, couplings)
            extra["suggested"] = suggest_direction(changes).value
            if len(couplings) == 1:
                extra["changes"] = {
                    "businessCentral": changes.business_central,
                    "dataverse": changes.dataverse,
                    "conflictingFields": list(changes.conflicting_fields),
                }
        else:
            extra["suggested"] = Direction.BIDIRECTIONAL.value
        return DirectionRequiredError(
            f"Mapping {mapping.name} is bidirectional: choose toDataverse, fromDataverse or bidirectional (merge).",
            **extra,
        )

    # ------------------------------------------------------------------ synchronize
    async def sync_couplings(
        self,
        mapping: TableMapping,
        couplings: Sequence[Coupling],
        direction: Direction,
        *,
        force: bool = False,
        honour_skipped: bool = True,
        job_id: str | None = None,
        scheduled: bool = False,
        known: dict[str, RemoteRecord] | None = None,
        read_dv: dict[str, str | None] | None = None,
        _attempt: int = 0,
    ) -> SyncOutcome:
        """Synchronizes these coupled pairs in ``direction``; one result per coupling. A write refused because
        the record changed after it was read (412: another worker, or a change in between) is re-read and
        re-planned once, so a concurrent writer's values are merged, not lost and not reported as failures.
        ``read_dv`` (when given) receives the ETag of every Dataverse row this sync read, by id."""
        if not couplings:
            return SyncOutcome()
        if mapping.lines is not None:  # #21: documents sync a header with its lines as one unit
            from shared.services.documents import sync_document_couplings

            return await sync_document_couplings(self.e, mapping, couplings, direction, job_id)
        started = time.monotonic()
        d = await self.decide(
            mapping, couplings, direction, force=force, honour_skipped=honour_skipped,
            known=known if _attempt == 0 else None,
        )  # fmt: skip
        if read_dv is not None:
            read_dv.update({i: r.etag for i, r in d.dv_recs.items()})
        dv_ops = _dv_ops(d.codec, d.plans, d.dv_recs, d.blocked)
        bc_ops = [WriteOp("update", ref=r, id=r, fields=f, etag=d.bc_recs[r].etag) for r, f in d.bc_payloads.items()]
        writes = _Writes(
            await self._write(self.e.dv, mapping.dataverse_entity_set, dv_ops),
            await self._write(self.e.bc, mapping.bc_entity, bc_ops),
            d.bc_recs,
            d.dv_recs,
            d.blocked,
            {p.bc_id: p for p in d.pairs},  # #22 history: the values before the writes
        )
        outcome, stale = await self._record(mapping, couplings, d.plans, writes, direction, job_id, scheduled, _attempt)
        _report(mapping.name, direction, job_id, outcome, started)  # this pass only: a re-plan reports its own
        if stale:
            again = await self.sync_couplings(
                mapping, stale, direction, force=force, honour_skipped=honour_skipped, job_id=job_id,
                scheduled=scheduled, read_dv=read_dv, _attempt=1,
            )  # fmt: skip
            outcome.merge(again)
        return outcome

    async def decide(
        self,
        mapping: TableMapping,
        couplings: Sequence[Coupling],
        direction: Direction,
        *,
        force: bool = False,
        honour_skipped: bool = True,
        known: dict[str, RemoteRecord] | None = None,
    ) -> Decision:
        """Reads the pairs and decides what to write, under the dependency rule: shared by the sync and by
        plans (#22), so a plan can never disagree with the sync that follows it."""
        bc_recs, dv_recs, bc_values = await self._load(mapping, couplings, known)
        pairs = self._pairs(mapping, couplings, bc_recs, dv_recs, bc_values)
        plans = plan_sync(
            mapping.fields,
            direction,
            pairs,
            force=force,
            conflict_policy=mapping.conflict_policy,
            honour_skipped=honour_skipped,
        )
        codec = self.e.codec(mapping)
        blocked, bc_payloads = await self._bc_payloads(mapping, codec, couplings, plans, bc_recs, bc_values, direction)
        return Decision(bc_recs, dv_recs, pairs, plans, codec, blocked, bc_payloads)

    async def upstream_failed(
        self,
        mapping: TableMapping,
        couplings: Sequence[Coupling],
        direction: Direction,
        err: SyncError,
        job_id: str | None,
    ) -> SyncOutcome:
        """BC or Dataverse kept failing past the retries for these pairs: each one is a ``failed`` record result
        (``upstream_unavailable``, transient), recorded on its coupling and listed as a sync error to retry."""
        outcome, now = SyncOutcome(), utcnow()
        message = f"{err.service or 'a dependency'} is unavailable: {err.message}"
        errors: list[SyncErrorEntry] = []
        for c in couplings:
            r = RecordResult(
                c.bc_id, c.dataverse_id, Outcome.FAILED, direction.value, UPSTREAM_UNAVAILABLE, message, True
            )
            outcome.add(r)
            state = after_failure(
                FailureState(c.consecutive_failures, c.last_error, c.last_sync_result, c.skipped),
                message,
                True,
                self.e.settings.skip_after_failures,
            )
            c.consecutive_failures, c.last_error, c.last_sync_result = state.consecutive_failures, message, "failed"
            c.last_sync_direction = direction.value
            errors.append(error_entry(mapping.name, r, job_id, now))
            entry = history.new_entry(self.e, Outcome.FAILED, job_id=job_id, direction=direction.value,
                                      error=(UPSTREAM_UNAVAILABLE, message), at=now)  # fmt: skip
            history.append(self.e, c, entry)  # #22
        if couplings:
            await self.e.couplings.save_sync_state(list(couplings))
            await self.e.errors.record_many(errors)
        _report(mapping.name, direction, job_id, outcome)
        return outcome

    async def _bc_payloads(
        self,
        mapping: TableMapping,
        codec: Any,
        couplings: Sequence[Coupling],
        plans: Sequence[RecordPlan],
        bc_recs: dict[str, RemoteRecord],
        bc_values: dict[str, dict[str, Any]],
        direction: Direction,
    ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        """(records blocked by an uncoupled parent -> message, BC payloads by id) under the dependency rule."""
        blocked: dict[str, str] = {}
        for c in couplings:
            rec = bc_recs.get(c.bc_id)
            if rec is not None and direction != Direction.FROM_DATAVERSE:
                message = parent_missing_message(codec.unresolved_parents(bc_values.get(c.bc_id, {}), rec))
                if message:
                    blocked[c.bc_id] = message
        bc_values_by_ref = {p.bc_id: p.bc_update for p in plans if p.bc_update and p.bc_id not in blocked}
        bc_payloads = await codec.bc_payloads(bc_values_by_ref)
        lookups = [(f.key, f.bc) for f in mapping.fields if f.lookup is not None and f.bc is not None]
        for ref, missing in unresolved_lookups(lookups, bc_values_by_ref, bc_payloads).items():
            blocked[ref] = parent_missing_message(missing) or ""
            bc_payloads.pop(ref, None)
        return blocked, bc_payloads

    async def _record(
        self,
        mapping: TableMapping,
        couplings: Sequence[Coupling],
        plans: Sequence[RecordPlan],
        w: _Writes,
        direction: Direction,
        job_id: str | None,
        scheduled: bool,
        attempt: int,
    ) -> tuple[SyncOutcome, list[Coupling]]:
        """Results, coupling bookkeeping and sync errors of one pass; the stale couplings to re-plan."""
        outcome, stale = SyncOutcome(), []
        now = utcnow()
        to_save: list[Coupling] = []
        errors: list[SyncErrorEntry] = []
        succeeded: list[str] = []
        for c, plan in zip(couplings, plans, strict=True):
            dv_w, bc_w = w.dv.get(c.bc_id), w.bc.get(c.bc_id)
            result = _result_of(mapping, plan, dv_w, bc_w)
            if c.bc_id in w.blocked:
                result = RecordResult(
                    c.bc_id,
                    c.dataverse_id,
                    Outcome.FAILED,
                    direction.value,
                    PARENT_NOT_COUPLED,
                    w.blocked[c.bc_id],
                    True,
                )
            if replan(result.error_code if result.status == Outcome.FAILED else None, attempt):
                stale.append(c)  # re-planned with fresh reads; nothing recorded for this attempt
                continue
            outcome.add(result)
            before = _state_key(c)
            self._bookkeep(c, plan, result, now, dv_w, bc_w)
            if not (scheduled and result.status == Outcome.UNCHANGED and _state_key(c) == before):  # #22 history
                err = (result.error_code, result.error_message) if result.error_code else None
                history.on_sync(self.e, mapping, c, plan, w.pairs[c.bc_id], result.status, err, job_id, now)
            read_bc, read_dv = w.bc_recs.get(c.bc_id), w.dv_recs.get(c.dataverse_id)
            if result.status.succeeded:
                # Remember what was seen, so the change feeds' overlap and our own echoes are skipped cheaply.
                c.bc_modified_on = _latest(c.bc_modified_on, read_bc.modified_on if read_bc else None)
                c.dv_modified_on = _latest(c.dv_modified_on, read_dv.modified_on if read_dv else None)
            # A scheduled pass that found nothing new writes no table row (user actions always record it).
            if not (scheduled and result.status == Outcome.UNCHANGED and _state_key(c) == before):
                to_save.append(c)
            if result.status.succeeded:
                succeeded.append(c.bc_id)
            elif result.error_code and result.error_code not in ("record_skipped",):
                errors.append(
                    error_entry(mapping.name, result, job_id, now, bc_id=c.bc_id, dataverse_id=c.dataverse_id)
                )
        if to_save:
            await self.e.couplings.save_sync_state(to_save)
        if errors:
            await self.e.errors.record_many(errors)
        if succeeded:
            await self.e.errors.close_for_records(mapping.name, succeeded)
        return outcome, stale

    async def _write(self, service: Any, entity: str, ops: list[WriteOp]) -> dict[str, WriteResult]:
        if not ops:
            return {}
        results = await service.write_many(entity, ops)
        return {r.ref: r for r in results}

    def _bookkeep(
        self,
        c: Coupling,
        plan: RecordPlan,
        result: RecordResult,
        now: Any,
        dv_w: WriteResult | None,
        bc_w: WriteResult | None,
    ) -> None:
        """The coupling's record of this sync (BC's CRM Integration Record fields)."""
        c.last_sync_direction = plan.direction.value
        if result.status.succeeded:
            c.last_synced_at = now
            c.last_sync_result = "succeeded"
            c.last_error = None
            c.consecutive_failures = 0
            c.skipped = False
            if plan.bc_snapshot is not None:
                c.bc_values = plan.bc_snapshot
            if plan.dv_snapshot is not None:
                c.dv_values = plan.dv_snapshot
            for w, side in ((dv_w, "dv"), (bc_w, "bc")):
                if w is not None and w.record is not None:
                    setattr(c, f"{side}_etag", w.record.etag)
                    if w.record.modified_on is not None:
                        setattr(c, f"{side}_modified_on", w.record.modified_on)
            return
        if result.status == Outcome.SKIPPED:
            c.last_sync_result = "skipped"
            c.last_error = result.error_message
            return
        # failed / conflict / not_found: count repeated identical failures (BC marks Skipped on the 2nd).
        state = FailureState(c.consecutive_failures, c.last_error, c.last_sync_result, c.skipped)
        state = after_failure(state, result.error_message, result.transient, self.e.settings.skip_after_failures)
        c.consecutive_failures, c.last_error, c.last_sync_result, c.skipped = (
            state.consecutive_failures,
            state.last_error,
            state.last_sync_result,
            state.skipped,
        )


@dataclass(slots=True)
class Decision:
    """What one pass read and decided, before any write."""

    bc_recs: dict[str, RemoteRecord]
    dv_recs: dict[str, RemoteRecord]
    pairs: list[PairState]
    plans: list[RecordPlan]
    codec: Any
    blocked: dict[str, str]  # records held back by the dependency rule -> message
    bc_payloads: dict[str, dict[str, Any]]


@dataclass(slots=True)
class _Writes:
    """What one pass wrote (by BC id), what it read, and the records held back by the dependency rule."""

    dv: dict[str, WriteResult]
    bc: dict[str, WriteResult]
    bc_recs: dict[str, RemoteRecord]
    dv_recs: dict[str, RemoteRecord]
    blocked: dict[str, str]
    pairs: dict[str, PairState]  # #22 history: what each side held before the writes


def _dv_ops(
    codec: Any, plans: Sequence[RecordPlan], dv_recs: dict[str, RemoteRecord], blocked: dict[str, str]
) -> list[WriteOp]:
    return [
        WriteOp("update", ref=p.bc_id, id=p.dv_id, fields=codec.dv_payload(p.dv_update), etag=dv_recs[p.dv_id].etag)
        for p in plans
        if p.bc_id not in blocked and p.dv_update
    ]


def _report(
    mapping: str, direction: Direction, job_id: str | None, outcome: SyncOutcome, started: float | None = None
) -> None:
    """Metrics and logs of a sync pass: the results by outcome (``sync.records``; conflicts also feed
    ``sync.conflicts``), the pass's latency (``sync.latency_ms``, operation ``batch``), one warning per
    record that did not sync and one summary line."""
    record_sync_outcomes(mapping, direction.value, outcome.by_outcome())
    if started is not None:
        record_latency(mapping, direction.value, (time.monotonic() - started) * 1000, operation="batch")
    for r in outcome.results:
        if not r.status.succeeded:
            log_event(
                log,
                f"record {r.status.value}: {r.error_code}",
                mapping=mapping,
                job_id=job_id,
                record_ids=[x for x in (r.bc_id, r.dataverse_id) if x],
                direction=r.direction,
                outcome=r.status.value,
                code=r.error_code,
                level=logging.WARNING,
            )
    log_event(
        log,
        f"synchronized {len(outcome.results)} records",
        mapping=mapping,
        job_id=job_id,
        direction=direction.value,
        outcome=final_status(outcome.counts),
        **outcome.counts,
    )


def _latest(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b > a) else a


def _state_key(c: Coupling) -> tuple[Any, ...]:
    """What of a coupling matters to later syncs (not the timestamp of the last look)."""
    return (
        c.bc_values,
        c.dv_values,
        c.bc_etag,
        c.dv_etag,
        c.bc_modified_on,
        c.dv_modified_on,
        c.last_sync_result,
        c.last_error,
        c.skipped,
        c.consecutive_failures,
    )


def write_failure(err: Exception | None) -> WriteFailure:
    """The plain data of an adapter error that the decisions need."""
    if not isinstance(err, SyncError):
        return WriteFailure("", None, None, False)
    return WriteFailure(type(err).__name__, err.status, err.code, err.transient)


def _result_of(
    mapping: TableMapping, plan: RecordPlan, dv_w: WriteResult | None, bc_w: WriteResult | None
) -> RecordResult:
    """A pair's result: the plan's, unless a write was refused (a duplicate key names the key it wrote)."""
    dv_written = {f.dataverse: plan.dv_update[f.key] for f in mapping.fields if f.dataverse and f.key in plan.dv_update}
    for w, table, written in ((dv_w, mapping.dataverse_table, dv_written), (bc_w, mapping.bc_entity_name, {})):
        if w is not None and not w.ok:
            f = write_failure(w.error)
            remote = str(w.error) if w.error is not None else None
            message = failure_message(f, remote, table=table, written=written, keys=mapping.dataverse_keys)
            direction = plan.direction.value
            return RecordResult(
                plan.bc_id, plan.dv_id, Outcome.FAILED, direction, failure_code(f), message, failure_transient(f)
            )
    return RecordResult(plan.bc_id, plan.dv_id, plan.status, plan.direction.value, plan.error_code, plan.error_message)
