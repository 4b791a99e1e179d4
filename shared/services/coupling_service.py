"""Set up coupling (existing pair, create the other side, match), read couplings, delete couplings."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from shared.domain.errors import (
    AlreadyCoupledError,
    DirectionNotAllowedError,
    DuplicateKeyError,
    NotCoupledError,
    RecordNotFoundError,
)
from shared.domain.model import Coupling, Direction, Outcome, RemoteRecord, WriteOp, WriteResult
from shared.mappings.config import TableMapping
from shared.planning.decisions import DUPLICATE_KEY, create_failure_code, failure_message
from shared.planning.history import TRIGGER  # #22
from shared.planning.planner import plan_create, snapshot_after_create
from shared.planning.transform import convert, same
from shared.services.adoption import create_in_bc, create_in_dataverse
from shared.services.codec import odata_string
from shared.services.engine import Engine, utcnow
from shared.services.history import new_entry  # #22
from shared.services.sync_errors import create_error_entry, created_sources, failed_creates
from shared.services.sync_service import RecordResult, SyncOutcome, SyncService, write_failure
from shared.telemetry import record_sync_outcomes


def _refused_create(
    mapping: TableMapping, direction: Direction, src_id: str, w: WriteResult, written: Mapping[str, Any]
) -> RecordResult:
    """The result of a create the other side refused (a duplicate key has its own code and names the key)."""
    f = write_failure(w.error)
    remote = str(w.error) if w.error else "The record could not be created."
    table = mapping.dataverse_table if direction == Direction.TO_DATAVERSE else mapping.bc_entity_name
    return RecordResult(
        src_id if direction == Direction.TO_DATAVERSE else None,
        src_id if direction == Direction.FROM_DATAVERSE else None,
        Outcome.FAILED,
        direction.value,
        create_failure_code(f),
        failure_message(f, remote, table=table, written=written, keys=mapping.dataverse_keys),
        transient=bool(getattr(w.error, "transient", False)),
    )


def default_sync_after(mapping: TableMapping) -> Direction:
    """BC's coupling dialog: 'Use the Dataverse data' when the mapping is fromDataverse, else BC's data."""
    return Direction.FROM_DATAVERSE if mapping.direction == Direction.FROM_DATAVERSE else Direction.TO_DATAVERSE


class CouplingService:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.sync = SyncService(engine)

    # ------------------------------------------------------------------ read
    async def get_by_bc_id(self, mapping_name: str, bc_id: str) -> Coupling:
        mapping = await self.e.registry.get(mapping_name)
        c = await self.e.couplings.get_by_bc_id(mapping.name, bc_id)
        if c is None:
            raise NotCoupledError(f"The Business Central record {bc_id} is not coupled in mapping {mapping.name}.")
        return c

    async def find_by_dataverse_id(self, mapping_name: str, dv_id: str) -> list[Coupling]:
        mapping = await self.e.registry.get(mapping_name)
        c = await self.e.couplings.get_by_dataverse_id(mapping.name, dv_id)
        return [c] if c else []

    async def list_page(
        self, mapping_name: str, top: int, continuation: str | None
    ) -> tuple[list[Coupling], str | None]:
        mapping = await self.e.registry.get(mapping_name)
        return await self.e.couplings.list_page(mapping.name, top=top, continuation=continuation)

    # ------------------------------------------------------------------ couple an existing pair
    async def couple_existing(
        self,
        mapping_name: str,
        bc_id: str,
        dv_id: str,
        *,
        replace: bool = False,
        sync_after: Direction | str | None = "default",
    ) -> Coupling:
        TRIGGER.set("couple")  # #22 history
        mapping = await self.e.registry.get(mapping_name)
        direction = default_sync_after(mapping) if sync_after == "default" else sync_after
        if isinstance(direction, Direction) and not mapping.allows(direction):
            raise DirectionNotAllowedError(
                f"Mapping {mapping.name} synchronizes {mapping.direction.value} only; cannot sync {direction.value}."
            )
        bc_rec = (await self.e.bc.get_many(mapping.bc_entity, [bc_id], select=mapping.bc_select)).get(bc_id)
        dv_rec = (await self.e.dv.get_many(mapping.dataverse_entity_set, [dv_id], select=mapping.dataverse_select)).get(
            dv_id
        )
        if bc_rec is None:
            raise RecordNotFoundError(f"Business Central {mapping.bc_entity} {bc_id} does not exist.")
        if dv_rec is None:
            raise RecordNotFoundError(f"Dataverse {mapping.dataverse_entity_set} {dv_id} does not exist.")

        by_bc = await self.e.couplings.get_by_bc_id(mapping.name, bc_id)
        by_dv = await self.e.couplings.get_by_dataverse_id(mapping.name, dv_id)
        if by_bc and by_bc.dataverse_id == dv_id:
            coupling = by_bc  # already exactly this pair: idempotent
        else:
            stale = await self._only_stale(mapping, by_bc, by_dv)
            if (by_bc or by_dv) and not (replace or stale):
                other = by_bc.dataverse_id if by_bc else (by_dv.bc_id if by_dv else "")
                raise AlreadyCoupledError(
                    f"Cannot couple: the record is already coupled to {other}. Use replace to couple anyway.",
                )
            coupling = Coupling(mapping=mapping.name, bc_id=bc_id, dataverse_id=dv_id, coupled_at=utcnow())
            coupling.history = [new_entry(self.e, Outcome.COUPLED)]  # #22
            removed = await self.e.couplings.couple(coupling, replace=True if (by_bc or by_dv) else False)
            if removed:
                await self.e.errors.close_for_records(mapping.name, [c.bc_id for c in removed])
        if isinstance(direction, Direction):
            await self.sync.sync_couplings(mapping, [coupling], direction, force=True, honour_skipped=False)
            coupling = await self.e.couplings.get_by_bc_id(mapping.name, bc_id) or coupling
        return coupling

    async def _only_stale(self, mapping: TableMapping, by_bc: Coupling | None, by_dv: Coupling | None) -> bool:
        """True when every coupling in the way points at a record that no longer exists."""
        if by_bc is None and by_dv is None:
            return False
        if by_bc is not None:
            found = await self.e.dv.get_many(mapping.dataverse_entity_set, [by_bc.dataverse_id], select=["modifiedon"])
            if by_bc.dataverse_id in found:
                return False
        if by_dv is not None:
            found = await self.e.bc.get_many(mapping.bc_entity, [by_dv.bc_id], select=["id"])
            if by_dv.bc_id in found:
                return False
        return True

    # ------------------------------------------------------------------ couple + create the other side
    async def couple_create_new(
        self, mapping_name: str, *, bc_id: str | None = None, dv_id: str | None = None, replace: bool = False
    ) -> Coupling:
        TRIGGER.set("couple")  # #22 history
        mapping = await self.e.registry.get(mapping_name)
        direction = Direction.TO_DATAVERSE if bc_id else Direction.FROM_DATAVERSE
        if not mapping.allows(direction):
            raise DirectionNotAllowedError(
                f"Mapping {mapping.name} synchronizes {mapping.direction.value} only; cannot create "
                f"{'in Dataverse' if bc_id else 'in Business Central'}."
            )
        if bc_id:
            rec = (await self.e.bc.get_many(mapping.bc_entity, [bc_id], select=mapping.bc_select)).get(bc_id)
            existing = await self.e.couplings.get_by_bc_id(mapping.name, bc_id)
        else:
            assert dv_id is not None
            rec = (
                await self.e.dv.get_many(mapping.dataverse_entity_set, [dv_id], select=mapping.dataverse_select)
            ).get(dv_id)
            existing = await self.e.couplings.get_by_dataverse_id(mapping.name, dv_id)
        if rec is None:
            raise RecordNotFoundError(f"The record {bc_id or dv_id} does not exist.")
        if existing is not None:
            if not replace:
                raise AlreadyCoupledError("The record is already coupled. Use replace to create a new counterpart.")
            await self.e.couplings.uncouple_many(mapping.name, [existing.bc_id])
        outcome = await self.create_counterparts(mapping, direction, [rec])
        result = outcome.results[0]
        if result.error_code == "already_coupled" or result.status == Outcome.UNCHANGED:  # a concurrent call won
            raise AlreadyCoupledError("The record was coupled meanwhile by another request.")
        if result.error_code == DUPLICATE_KEY:
            raise DuplicateKeyError(result.error_message or "A record with the same key values exists.")
        if result.status != Outcome.CREATED or result.bc_id is None:
            raise RecordNotFoundError(result.error_message or "The counterpart could not be created.")
        coupling = await self.e.couplings.get_by_bc_id(mapping.name, result.bc_id)
        assert coupling is not None
        return coupling

    async def create_counterparts(
        self, mapping: TableMapping, direction: Direction, sources: Sequence[RemoteRecord], job_id: str | None = None
    ) -> SyncOutcome:
        """Creates the other side of uncoupled records in batches and couples them (status ``created``)."""
        if mapping.lines is not None:  # #21: documents are created with their lines
            from shared.services.documents import create_documents

            return await create_documents(self.e, mapping, direction, sources, job_id)
        outcome = SyncOutcome()
        if not sources:
            return outcome
        codec = self.e.codec(mapping)
        now = utcnow()
        if direction == Direction.TO_DATAVERSE:
            values = await codec.bc_values_many(sources)
            # A parent (currency, unit, salesperson) that is not coupled yet: not created without it (retryable).
            blocked = parents_missing(codec, sources, values)
            for rec_id, missing in blocked.items():
                outcome.add(
                    RecordResult(
                        rec_id, None, Outcome.FAILED, direction.value, "parent_not_coupled", missing, transient=True
                    )
                )
            sources = [rec for rec in sources if rec.id not in blocked]
            planned = {rec.id: plan_create(mapping.fields, direction, values[rec.id]) for rec in sources}
            dv_payloads = {rec_id: codec.dv_payload(v) for rec_id, v in planned.items()}
            written = await create_in_dataverse(self.e, mapping, sources, dv_payloads)
            sent = dv_payloads
            pairs = [(rec.id, w) for rec, w in zip(sources, written, strict=True)]
            src_values = {rec.id: values[rec.id] for rec in sources}
        else:
            src_values = {rec.id: codec.dv_values(rec) for rec in sources}
            planned = {rec.id: plan_create(mapping.fields, direction, src_values[rec.id]) for rec in sources}
            payloads = await codec.bc_payloads(planned)
            sent = payloads
            written, lost = await create_in_bc(
                self.e, mapping, sources, payloads, functools.partial(self._recover_refused_creates, mapping)
            )
            for dv_id in lost:  # another worker created and coupled it at the same time: nothing to do here
                outcome.add(RecordResult(None, dv_id, Outcome.UNCHANGED, direction.value))
            sources = [rec for rec in sources if rec.id not in lost]
            pairs = [(rec.id, w) for rec, w in zip(sources, written, strict=True)]
            created_bc = await codec.bc_values_many([w.record for w in written if w.ok and w.record is not None])
            await self._write_back_assigned(mapping, sources, written, created_bc, src_values)

        couplings: list[Coupling] = []
        created = new_entry(self.e, Outcome.CREATED, job_id=job_id, direction=direction.value, at=now)  # #22
        for (src_id, w), rec in zip(pairs, sources, strict=True):
            if not w.ok or w.record is None:
                outcome.add(_refused_create(mapping, direction, src_id, w, sent.get(src_id, {})))
                continue
            target = w.record
            if direction == Direction.TO_DATAVERSE:
                bc_id, dv_id = rec.id, target.id
                bc_vals = src_values[rec.id]
                dv_vals = {**planned[rec.id]}  # plan_create is pure: the values the payload was built from
                bc_etag, dv_etag = rec.etag, target.etag
            else:
                bc_id, dv_id = target.id, rec.id
                dv_vals = src_values[rec.id]
                bc_vals = created_bc.get(target.id) or {**planned[rec.id]}
                bc_etag, dv_etag = target.etag, rec.etag
            # The source's values are the ones planned from (the write-back above touches only fields that
            # flow to Dataverse alone): the fields the create wrote as planned are not compared again.
            bc_snap, dv_snap = snapshot_after_create(
                mapping.fields, bc_vals, dv_vals, direction=direction, planned=planned[rec.id]
            )
            couplings.append(
                Coupling(
                    mapping=mapping.name,
                    bc_id=bc_id.lower(),
                    dataverse_id=dv_id.lower(),
                    coupled_at=now,
                    last_synced_at=now,
                    last_sync_direction=direction.value,
                    last_sync_result="succeeded",
                    bc_values=bc_snap,
                    dv_values=dv_snap,
                    bc_etag=bc_etag,
                    dv_etag=dv_etag,
                    # What the change feeds will show for this pair: its echo there is skipped without reads.
                    bc_modified_on=(rec if direction == Direction.TO_DATAVERSE else target).modified_on,
                    dv_modified_on=(target if direction == Direction.TO_DATAVERSE else rec).modified_on,
                    history=[{**created, "changes": []}],  # #22: each its own entry (and list), same content
                )
            )
        stored = await self.e.couplings.couple_many(couplings) if couplings else []
        refused = [c.bc_id for c, st in zip(couplings, stored, strict=True) if isinstance(st, Exception)]
        now_coupled = await self.e.couplings.get_many_by_bc_ids(mapping.name, refused) if refused else {}
        for c, st in zip(couplings, stored, strict=True):
            if not isinstance(st, Exception):
                outcome.add(RecordResult(c.bc_id, c.dataverse_id, Outcome.CREATED, direction.value))
            elif (other := now_coupled.get(c.bc_id)) is not None and other.dataverse_id == c.dataverse_id:
                # A concurrent worker coupled exactly this pair first: the same outcome, counted once (there).
                outcome.add(RecordResult(c.bc_id, c.dataverse_id, Outcome.UNCHANGED, direction.value))
            else:
                outcome.add(
                    RecordResult(c.bc_id, c.dataverse_id, Outcome.FAILED, direction.value, "already_coupled", str(st))
                )
        await self._record_create_outcomes(mapping, outcome, job_id)
        record_sync_outcomes(mapping.name, direction.value, outcome.by_outcome())
        return outcome

    async def _record_create_outcomes(self, mapping: TableMapping, outcome: SyncOutcome, job_id: str | None) -> None:
        """A create that failed keeps its place: it is listed as a sync error naming its source record (there
        is no coupling yet), so retry-all re-does it and no watermark leaves it behind unrecorded; a create
        that succeeded closes the error of an earlier failed attempt."""
        now = utcnow()
        failed = failed_creates(outcome.results)
        if failed:
            await self.e.errors.record_many([create_error_entry(mapping.name, r, job_id, now) for r in failed])
        bc_ids, dv_ids = created_sources(outcome.results)
        if bc_ids or dv_ids:
            await self.e.errors.close_for_records(mapping.name, bc_ids, dv_ids)

    async def _recover_refused_creates(
        self,
        mapping: TableMapping,
        sources: Sequence[RemoteRecord],
        written: Sequence[WriteResult],
        payloads: dict[str, dict[str, Any]],
    ) -> tuple[list[WriteResult], set[str]]:
        """A refused BC create whose natural key already exists was created before (a concurrent worker, or an
        attempt that died before coupling): coupled meanwhile -> nothing to do; else adopt that record."""
        key = mapping.bc_natural_key
        failed = {rec.id: payloads[rec.id].get(key) for rec, w in zip(sources, written, strict=True) if not w.ok}
        if not key or not failed:
            return list(written), set()
        coupled = await self.e.couplings.get_many_by_dataverse_ids(mapping.name, list(failed))
        lost = set(coupled)
        wanted = {str(v): dv for dv, v in failed.items() if dv not in coupled and v}
        found: dict[str, RemoteRecord] = {}
        for chunk in _chunks(sorted(wanted), 15):
            filt = f"{key} in ({','.join(odata_string(v) for v in chunk)})"
            async for page in self.e.bc.list_records(mapping.bc_entity, select=mapping.bc_select, filter=filt):
                for rec in page:
                    found[wanted[str(rec.fields.get(key))]] = rec
        out = [
            WriteResult(w.ref, True, found[rec.id], existed=True) if not w.ok and rec.id in found else w
            for rec, w in zip(sources, written, strict=True)
        ]
        return out, lost

    async def _write_back_assigned(
        self,
        mapping: TableMapping,
        sources: Sequence[RemoteRecord],
        written: Sequence[WriteResult],
        created_bc: dict[str, dict[str, Any]],
        dv_values: dict[str, dict[str, Any]],
    ) -> None:
        """Values BC assigned on create (e.g. the customer number) flow to Dataverse at once, in one batch,
        instead of on a later pass that would race with other writes to the new pair."""
        one_way = [
            f
            for f in mapping.fields
            if f.direction == Direction.TO_DATAVERSE and f.bc and f.dataverse and f.constant is None
        ]
        ops: list[WriteOp] = []
        if not one_way:
            return
        codec = self.e.codec(mapping)  # one for the batch: its payload plan is built once
        to_dv = Direction.TO_DATAVERSE
        for rec, w in zip(sources, written, strict=True):
            if not (w.ok and w.record is not None and w.record.id in created_bc):
                continue
            fix = {}
            created, current = created_bc[w.record.id], dv_values[rec.id]
            for f in one_way:
                value = convert(f, created.get(f.key), to_dv)
                if not same(value, current.get(f.key)):
                    fix[f.key] = value
            if fix:
                ops.append(WriteOp("update", ref=rec.id, id=rec.id, fields=codec.dv_payload(fix)))
                current.update(fix)
        if ops:
            results = await self.e.dv.write_many(mapping.dataverse_entity_set, ops)
            for op, r in zip(ops, results, strict=True):
                if not r.ok:  # left for the next pass: the snapshot must not claim Dataverse has it
                    for f in one_way:
                        dv_values[op.ref].pop(f.key, None)

    # ------------------------------------------------------------------ match-based coupling
    async def match_couple(self, mapping: TableMapping, bc_records: Sequence[RemoteRecord]) -> SyncOutcome:
        """Couples uncoupled BC records to the Dataverse row found by the mapping's match criteria, with BC's
        rules (``shared.services.match_service``)."""
        from shared.services.match_service import MatchService  # local: it builds on this module

        return await MatchService(self.e).match(mapping, bc_records)

    # ------------------------------------------------------------------ delete couplings
    async def uncouple(self, mapping_name: str, bc_id: str) -> None:
        TRIGGER.set("uncouple")  # #22 history
        mapping = await self.e.registry.get(mapping_name)
        removed = await self.e.couplings.uncouple_many(mapping.name, [bc_id])
        if not removed:
            raise NotCoupledError(f"The Business Central record {bc_id} is not coupled in mapping {mapping.name}.")
        await self.e.errors.close_for_records(mapping.name, [bc_id])

    async def uncouple_many(
        self, mapping_name: str, *, bc_ids: Sequence[str] = (), dv_ids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        TRIGGER.set("uncouple")  # #22 history
        mapping = await self.e.registry.get(mapping_name)
        results: list[dict[str, Any]] = []
        targets: dict[str, tuple[str | None, str | None]] = {}
        if bc_ids:
            found = await self.e.couplings.get_many_by_bc_ids(mapping.name, list(bc_ids))
            for b in bc_ids:
                c = found.get(b)
                targets[b] = (b, c.dataverse_id if c else None)
        else:
            found_dv = await self.e.couplings.get_many_by_dataverse_ids(mapping.name, list(dv_ids))
            for d in dv_ids:
                c = found_dv.get(d)
                targets[c.bc_id if c else f"dv:{d}"] = (c.bc_id if c else None, d)
        coupled_bc = [b for b, (bid, dvid) in targets.items() if bid and dvid]
        removed = {c.bc_id for c in await self.e.couplings.uncouple_many(mapping.name, coupled_bc)}
        if removed:
            await self.e.errors.close_for_records(mapping.name, list(removed))
        for bid, dvid in targets.values():
            status = "uncoupled" if bid in removed else "not_coupled"
            results.append({"bcId": bid, "dataverseId": dvid, "status": status})
        return results


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def parents_missing(codec: Any, sources: Sequence[RemoteRecord], values: dict[str, dict[str, Any]]) -> dict[str, str]:
    """BC id -> the message of a record whose lookups name parents that are not coupled yet."""
    out: dict[str, str] = {}
    for rec in sources:
        missing = codec.unresolved_parents(values[rec.id], rec)
        if missing:
            out[rec.id] = (
                f"The parent record ({', '.join(missing)}) is not coupled yet; couple or sync the parent mapping first."
            )
    return out
