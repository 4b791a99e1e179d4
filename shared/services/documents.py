"""Documents: a header with its lines synchronized as one unit (SALESORDER-ORDER, POSTEDSALESINV-INV).

Gather (BC headers within the table filter, their lines in one query per 100 documents, the coupled Dataverse
headers and their details), plan each document (``shared.planning.documents``, pure), then write in bulk:
headers through CreateMultiple/UpdateMultiple, then the lines of every document whose header was written, in
one ``write_many`` (CreateMultiple, UpdateMultiple, ``$batch`` for deletes). A header is coupled as soon as it
exists, so a later attempt after a failed line write completes the same document (the Dataverse ids are
deterministic: a repeated create finds the row an earlier attempt made). A document whose product, unit,
customer or currency is not coupled fails with the retryable ``parent_not_coupled`` before anything is written.

Orders need a price list in Dataverse: one per currency, created on first use ("Business Central default
price list", as BC's integration keeps one). A posted invoice is created once (``createOnce``) and links the
Dataverse order it was posted from when that order is coupled; the linked order's state becomes Invoiced.

The job paths dispatch here (``handle_message``) for the message kinds that synchronize records; Synchronize
now calls ``sync_document_ids``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.connectors._odata import dataverse_in_filter, in_filter
from shared.domain.model import Coupling, Direction, RemoteRecord, Side, SyncErrorEntry, WriteOp, WriteResult
from shared.errors import SyncError
from shared.mappings.config import TableMapping
from shared.planning.automatic import may_run
from shared.planning.decisions import (
    UPSTREAM_UNAVAILABLE,
    FailureState,
    after_failure,
    failure_code,
    failure_transient,
    upstream_failure_is_per_record,
)
from shared.planning.documents import (
    DESCRIPTION,
    WRITE_IN,
    DocumentPlan,
    DocumentState,
    LineState,
    line_mapping,
    plan_document,
)
from shared.planning.identity_keys import dataverse_id_for
from shared.services import history
from shared.services.engine import Engine, utcnow
from shared.services.fan_out import fan_out, sync_batch_messages
from shared.services.filters import within_filter
from shared.services.sync_errors import error_entry
from shared.services.sync_service import RecordResult, SyncOutcome, write_failure
from shared.telemetry import record_sync_outcomes

if TYPE_CHECKING:
    from shared.services.jobs import JobService

log = logging.getLogger(__name__)

CHUNK = 100  # documents per query of lines (an ``in`` filter of 100 GUIDs keeps the URL short)
DOCUMENTS_PER_PASS = 500  # documents decided and written together (lookups resolved once, bulk writes fuller)
DOCUMENT_KINDS = ("mapping-sync", "sync-batch", "record-changed", "retry-errors")
PRICE_LIST_NAME = "Business Central default price list"
# Dataverse salesorder state Invoiced (4) / status Invoiced (100003): an order whose posted invoice was sent.
ORDER_INVOICED = {"statecode": 4, "statuscode": 100003}
# ... and Fulfilled (3) / Complete (100001): an order BC shipped in full (``fullyShipped``).
ORDER_FULFILLED = {"statecode": 3, "statuscode": 100001}
SHIPPED = "fullyShipped"
TO_DV = Direction.TO_DATAVERSE.value
FROM_DV = Direction.FROM_DATAVERSE.value


def is_document_mapping(mapping: TableMapping) -> bool:
    return mapping.lines is not None


@dataclass(slots=True)
class _Decision:
    """What one chunk read and decided, before any write (shared by the sync and by plans)."""

    outcome: SyncOutcome  # results already known (created-once documents, locked Sales orders)
    headers: list[RemoteRecord]
    couplings: dict[str, Coupling]
    plans: list[DocumentPlan]
    lines_map: TableMapping
    codec: Any
    line_codec: Any


class DocumentSync:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    # ------------------------------------------------------------------ entry points
    async def sync_headers(
        self,
        mapping: TableMapping,
        headers: Sequence[RemoteRecord],
        job_id: str | None,
        *,
        create: bool = True,
        filtered: bool = True,
    ) -> SyncOutcome:
        """Synchronizes these BC headers (as read) with their lines: the ones outside the table filter are left
        alone (unreleased orders, draft invoices) unless not ``filtered`` (an explicit "create new");
        uncoupled ones are created when ``create``."""
        outcome = SyncOutcome()
        if filtered:
            headers = await within_filter(self.e, mapping, Side.BC, list(headers))
        for start in range(0, len(headers), DOCUMENTS_PER_PASS):
            chunk = headers[start : start + DOCUMENTS_PER_PASS]
            outcome.merge(await self._sync_chunk(mapping, chunk, job_id, create))
        return outcome

    async def run_job(self, mapping: TableMapping, *, full: bool, job_id: str | None) -> SyncOutcome:
        """A mapping-wide run over BC's change feed of headers (everything when ``full``). Large pages are fanned
        out as ``sync-batch`` messages like master data; the watermark moves after every page succeeded."""
        outcome = SyncOutcome()
        if not may_run(mapping.state, job_id):
            return outcome
        wm = await self.e.watermarks.get(mapping.name, Side.BC)
        cursor: str | None = None
        batches: list[dict[str, Any]] = []
        async for page in self.e.bc.iter_changes(
            mapping.bc_entity, None if full else wm.cursor, select=_select(mapping)
        ):
            work = await self._changed(mapping, page.records)
            outcome.counts["unchanged"] += len(page.records) - len(work)
            if job_id and self.e.settings.fans_out(len(work)):
                batches += sync_batch_messages(
                    mapping, Side.BC, work, job_id, first=len(batches), size=self.e.settings.fanout_batch_size
                )
            elif work:
                outcome.merge(await self.sync_headers(mapping, work, job_id))
            if page.next_cursor:
                cursor = page.next_cursor
        pending = {Side.BC.value: cursor} if cursor else {}
        if batches and job_id:
            await fan_out(self.e, job_id, batches, pending)
        elif cursor:  # failed documents are listed as sync errors and retried from there, as master data
            from shared.domain.model import Watermark

            try:
                await self.e.watermarks.put(Watermark(mapping.name, Side.BC, cursor, utcnow(), wm.row_etag))
            except Exception:  # another worker moved it meanwhile; theirs is at least as new
                log.info("watermark of %s moved concurrently", mapping.name)
        if mapping.allows(Direction.FROM_DATAVERSE) and mapping.dataverse_table == "salesorder":
            outcome.merge(await self._submitted_orders(mapping, full=full, job_id=job_id))
        return outcome

    async def sync_ids(
        self, mapping: TableMapping, bc_ids: Sequence[str], dv_ids: Sequence[str], job_id: str | None
    ) -> SyncOutcome:
        """Synchronize now: the coupled documents among these ids (uncoupled ones are ``not_coupled``)."""
        if bc_ids:
            keys = list(dict.fromkeys(i.lower() for i in bc_ids))
            found = await self.e.couplings.get_many_by_bc_ids(mapping.name, keys)
            by_key = {k: found[k] for k in keys if k in found}
        else:
            keys = list(dict.fromkeys(i.lower() for i in dv_ids))
            found = await self.e.couplings.get_many_by_dataverse_ids(mapping.name, keys)
            by_key = {k: found[k] for k in keys if k in found}
        skipped = {c.bc_id for c in by_key.values() if c.skipped}
        records = await self.e.bc.get_many(
            mapping.bc_entity, [c.bc_id for c in by_key.values() if c.bc_id not in skipped], select=_select(mapping)
        )
        synced = SyncOutcome()
        for start in range(0, len(records), DOCUMENTS_PER_PASS):
            chunk = list(records.values())[start : start + DOCUMENTS_PER_PASS]
            synced.merge(await self._sync_chunk(mapping, chunk, job_id, create=False))
        results = {r.bc_id: r for r in synced.results}
        outcome = SyncOutcome()
        for k in keys:
            c = by_key.get(k)
            if c is None:
                bc, dv = (k, None) if bc_ids else (None, k)
                msg = "The record is not coupled; set up a coupling first."
                outcome.add(RecordResult(bc, dv, "not_coupled", TO_DV, "not_coupled", msg))
            elif c.bc_id in skipped:
                msg = "The record failed repeatedly and is skipped; retry it from the sync errors."
                outcome.add(RecordResult(c.bc_id, c.dataverse_id, "skipped", TO_DV, "record_skipped", msg))
            elif c.bc_id not in results:
                outcome.add(
                    RecordResult(c.bc_id, c.dataverse_id, "not_found", TO_DV, "record_not_found", "No such BC record.")
                )
            else:
                outcome.add(results[c.bc_id])
        return outcome

    async def retry(self, mapping: TableMapping, msg: dict[str, Any], job_id: str | None) -> SyncOutcome:
        """Retry of sync errors: the documents named are synchronized again (created where not coupled)."""
        if msg.get("all"):
            entries: list[SyncErrorEntry] = []
            cont = None
            while True:
                page, cont = await self.e.errors.list_page(mapping=mapping.name, top=1000, continuation=cont)
                entries += page
                if not cont:
                    break
        else:
            entries = [x for x in await self.e.errors.get_many(msg.get("ids") or []) if x.mapping == mapping.name]
        from_sales = [x for x in entries if x.direction == FROM_DV and x.dataverse_id]
        bc_ids = sorted({x.bc_id for x in entries if x.bc_id and x not in from_sales})
        couplings = await self.e.couplings.get_many_by_bc_ids(
            mapping.name, sorted({x.bc_id for x in entries if x.bc_id})
        )
        for c in couplings.values():
            c.skipped, c.consecutive_failures = False, 0
        if couplings:
            await self.e.couplings.save_sync_state(list(couplings.values()))
        records = await self.e.bc.get_many(mapping.bc_entity, bc_ids, select=_select(mapping))
        outcome = await self.sync_headers(mapping, list(records.values()), job_id)
        dv_ids = sorted({x.dataverse_id for x in from_sales if x.dataverse_id})
        if dv_ids and mapping.allows(Direction.FROM_DATAVERSE):  # orders from Sales: created or changed there
            outcome.merge(await self.from_sales(mapping, dv_ids, job_id))
        return outcome

    async def from_sales(self, mapping: TableMapping, dv_ids: Sequence[str], job_id: str | None) -> SyncOutcome:
        """These Sales orders as BC takes them: a submitted uncoupled one creates its BC order, a coupled one
        brings its changes (or is refused), anything else is left alone."""
        orders = await self.e.dv.get_many(mapping.dataverse_entity_set, list(dv_ids), select=_DV_ORDER_SELECT)
        return await SubmittedOrders(self).create(mapping, list(orders.values()), job_id)

    async def _submitted_orders(self, mapping: TableMapping, *, full: bool, job_id: str | None) -> SyncOutcome:
        """The Dataverse side of a bidirectional order mapping: submitted orders not coupled yet create BC orders."""
        outcome = SyncOutcome()
        wm = await self.e.watermarks.get(mapping.name, Side.DATAVERSE)
        cursor: str | None = None
        async for page in self.e.dv.iter_changes(
            mapping.dataverse_entity_set, None if full else wm.cursor, select=_DV_ORDER_SELECT
        ):
            if page.full_resync_required:
                return await self._submitted_orders(mapping, full=True, job_id=job_id)
            if page.records:
                outcome.merge(await SubmittedOrders(self).create(mapping, page.records, job_id))
            if page.next_cursor:
                cursor = page.next_cursor
        if cursor:
            from shared.domain.model import Watermark

            try:
                await self.e.watermarks.put(Watermark(mapping.name, Side.DATAVERSE, cursor, utcnow(), wm.row_etag))
            except Exception:
                log.info("watermark of %s (Dataverse) moved concurrently", mapping.name)
        return outcome

    # ------------------------------------------------------------------ one chunk of documents
    async def _changed(self, mapping: TableMapping, records: Sequence[RemoteRecord]) -> list[RemoteRecord]:
        """The headers of a change page that may need work: uncoupled, or changed since their last sync."""
        if not records:
            return []
        coupled = await self.e.couplings.get_many_by_bc_ids(mapping.name, [r.id for r in records])
        out = []
        for r in records:
            c = coupled.get(r.id)
            if c is not None and c.skipped:
                continue  # failed repeatedly: left out of scheduled syncs until retried
            if c is None or c.last_sync_result != "succeeded" or c.bc_modified_on is None:
                out.append(r)
            elif r.modified_on is None or r.modified_on > c.bc_modified_on:
                out.append(r)
        return out

    async def _sync_chunk(
        self, mapping: TableMapping, headers: Sequence[RemoteRecord], job_id: str | None, create: bool
    ) -> SyncOutcome:
        d = await self._decide(mapping, headers, create)
        if not d.plans:
            return d.outcome
        return await self._apply(
            mapping, d.lines_map, d.codec, d.line_codec, d.headers, d.couplings, d.plans, job_id, d.outcome
        )

    async def plan_chunk(
        self, mapping: TableMapping, headers: Sequence[RemoteRecord], create: bool
    ) -> list[dict[str, Any]]:
        """Plan items (``POST .../plan``) of these headers: decided exactly as the sync decides, nothing written."""
        from shared.planning.plan_view import item

        d = await self._decide(mapping, headers, create)
        items = [item("none", r.bc_id, r.dataverse_id, TO_DV) for r in d.outcome.results]
        for p in d.plans:
            dv_id = d.couplings[p.bc_id].dataverse_id if p.bc_id in d.couplings else None
            if p.action == "fail":
                items.append(item("skip", p.bc_id, dv_id, TO_DV, p.error_code))
                continue
            changes = [
                {"field": k.split("|", 1)[-1], "side": "dataverse", "from": None, "to": v} for k, v in p.header.items()
            ]
            if p.writes_lines:
                summary = f"{len(p.line_creates)} created, {len(p.line_updates)} updated, {len(p.line_deletes)} deleted"
                changes.append({"field": "lines", "side": "dataverse", "from": None, "to": summary})
            items.append(item(p.action, p.bc_id, dv_id, TO_DV, None, changes))
        return items

    async def _decide(self, mapping: TableMapping, headers: Sequence[RemoteRecord], create: bool) -> _Decision:
        lines_map = line_mapping(mapping)
        assert mapping.lines is not None
        couplings = await self.e.couplings.get_many_by_bc_ids(mapping.name, [h.id for h in headers])
        if not create:
            headers = [h for h in headers if h.id in couplings]
        if mapping.create_once:
            # Created once: a coupled document is never read or written again.
            done = [h for h in headers if h.id in couplings]
            headers = [h for h in headers if h.id not in couplings]
        else:
            done = []
        outcome = SyncOutcome()
        for h in done:
            outcome.add(RecordResult(h.id, couplings[h.id].dataverse_id, "unchanged", TO_DV))
        codec, line_codec = self.e.codec(mapping), self.e.codec(lines_map)
        if not headers:
            return _Decision(outcome, [], couplings, [], lines_map, codec, line_codec)
        bc_lines = await self._bc_lines(mapping, [h.id for h in headers])
        header_values = await codec.bc_values_many(headers)
        all_lines = [ln for h in headers for ln in bc_lines.get(h.id, [])]
        line_values = await line_codec.bc_values_many(all_lines)
        dv_headers, dv_lines = await self._dv_side(
            mapping, lines_map, [couplings[h.id] for h in headers if h.id in couplings]
        )
        states: list[DocumentState] = []
        for h in headers:
            c = couplings.get(h.id)
            missing = codec.unresolved_parents(header_values[h.id], h)
            lines = []
            for ln in sorted(bc_lines.get(h.id, []), key=lambda r: r.fields.get("sequence") or 0):
                is_item = ln.fields.get("lineType") == mapping.lines.item_line_type
                values = line_values[ln.id]
                if is_item:
                    missing += [
                        f"line {ln.fields.get('sequence')}: {m}" for m in line_codec.unresolved_parents(values, ln)
                    ]
                lines.append(LineState(ln.id, values, is_item, str(ln.fields.get("description") or "")))
            dv_header = None
            if c is not None and c.dataverse_id in dv_headers:
                if dv_headers[c.dataverse_id].fields.get("statecode") not in (0, None):
                    # Submitted in Sales (then BC takes it from there, bidirectional), or closed (fulfilled,
                    # invoiced, canceled: Dataverse locks its details): left alone.
                    outcome.add(RecordResult(h.id, c.dataverse_id, "unchanged", TO_DV))
                    continue
                dv_header = codec.dv_values(dv_headers[c.dataverse_id])
            states.append(
                DocumentState(
                    h.id,
                    header_values[h.id],
                    lines,
                    missing,
                    dv_id=c.dataverse_id if c else None,
                    dv_header=dv_header,
                    dv_lines={i: v for i, v in dv_lines.get(c.dataverse_id, {}).items()} if c else {},
                )
            )
        plans = [
            plan_document(mapping.name, mapping.fields, lines_map.fields, s, create_once=mapping.create_once)
            for s in states
        ]
        headers = [h for h in headers if h.id in {s.bc_id for s in states}]
        return _Decision(outcome, list(headers), couplings, plans, lines_map, codec, line_codec)

    async def _bc_lines(self, mapping: TableMapping, doc_ids: list[str]) -> dict[str, list[RemoteRecord]]:
        """The BC lines of these documents: one query per chunk (the line pages need a documentId filter).
        No ``$select``: the real line pages have no ``lastModifiedDateTime`` to add to one."""
        assert mapping.lines is not None
        parent = mapping.lines.bc_parent_field
        out: dict[str, list[RemoteRecord]] = {}
        for start in range(0, len(doc_ids), CHUNK):
            filt = in_filter(parent, doc_ids[start : start + CHUNK])
            async for page in self.e.bc.list_records(mapping.lines.bc_entity, filter=filt):
                for rec in page:
                    out.setdefault(str(rec.fields.get(parent) or "").lower(), []).append(rec)
        return out

    async def _dv_side(
        self, mapping: TableMapping, lines_map: TableMapping, couplings: list[Coupling]
    ) -> tuple[dict[str, RemoteRecord], dict[str, dict[str, dict[str, Any]]]]:
        """The coupled Dataverse headers and, per header, its lines' values by line id."""
        if not couplings:
            return {}, {}
        assert mapping.lines is not None
        dv_ids = [c.dataverse_id for c in couplings]
        select = sorted({*mapping.dataverse_select, "statecode"})
        headers = await self.e.dv.get_many(mapping.dataverse_entity_set, dv_ids, select=select)
        parent_attr = f"_{mapping.lines.dataverse_parent}_value"
        select = sorted({*lines_map.dataverse_select, parent_attr, WRITE_IN, DESCRIPTION})
        line_codec = self.e.codec(lines_map)
        lines: dict[str, dict[str, dict[str, Any]]] = {}
        for start in range(0, len(dv_ids), CHUNK):
            filt = dataverse_in_filter(parent_attr, dv_ids[start : start + CHUNK])
            async for page in self.e.dv.list_records(lines_map.dataverse_entity_set, select=select, filter=filt):
                for rec in page:
                    values = line_codec.dv_values(rec)
                    values[WRITE_IN] = bool(rec.fields.get(WRITE_IN))
                    values[DESCRIPTION] = rec.fields.get(DESCRIPTION)
                    lines.setdefault(str(rec.fields.get(parent_attr) or "").lower(), {})[rec.id] = values
        return headers, lines

    # ------------------------------------------------------------------ writing
    async def _price_lists(self, currency_ids: set[str]) -> dict[str, str]:
        """The Dataverse price list of each currency (created on first use, with a deterministic id)."""
        cache: dict[str, str] = self.e._lookup_cache.setdefault("priceLists", {})  # type: ignore[assignment]
        wanted = {c: dataverse_id_for("PRICELIST", c) for c in currency_ids if c and c not in cache}
        if wanted:
            found = await self.e.dv.get_many("pricelevels", list(wanted.values()), select=["pricelevelid"])
            ops = [
                WriteOp(
                    "create",
                    ref=cur,
                    id=pl,
                    fields={
                        "name": PRICE_LIST_NAME,
                        "transactioncurrencyid@odata.bind": f"/transactioncurrencies({cur})",
                    },
                )
                for cur, pl in wanted.items()
                if pl not in found
            ]
            results = await self.e.dv.write_many("pricelevels", ops) if ops else []
            failed = {r.ref for r in results if not r.ok}
            for cur, pl in wanted.items():
                if cur not in failed:
                    cache[cur] = pl
        return {c: cache[c] for c in currency_ids if c in cache}

    async def _apply(
        self,
        mapping: TableMapping,
        lines_map: TableMapping,
        codec: Any,
        line_codec: Any,
        headers: Sequence[RemoteRecord],
        couplings: dict[str, Coupling],
        plans: list[DocumentPlan],
        job_id: str | None,
        outcome: SyncOutcome,
    ) -> SyncOutcome:
        assert mapping.lines is not None
        by_id = {h.id: h for h in headers}
        currency_key = next((f.key for f in mapping.fields if f.dataverse == "transactioncurrencyid"), None)
        creates = [p for p in plans if p.action == "create"]
        price_lists = await self._price_lists({str(p.header.get(currency_key) or "") for p in creates if currency_key})
        ops: list[WriteOp] = []
        failed: dict[str, RecordResult] = {}
        for p in plans:
            if p.action == "fail":
                failed[p.bc_id] = RecordResult(
                    p.bc_id, couplings[p.bc_id].dataverse_id if p.bc_id in couplings else None, "failed", TO_DV,
                    p.error_code, p.error_message, True,
                )  # fmt: skip
            elif p.action == "create":
                payload = codec.dv_payload(p.header)
                currency = str(p.header.get(currency_key) or "") if currency_key else ""
                if mapping.dataverse_table == "salesorder" or mapping.dataverse_table == "invoice":
                    if currency not in price_lists:
                        failed[p.bc_id] = RecordResult(
                            p.bc_id, None, "failed", TO_DV, "price_list_unavailable",
                            "The Dataverse price list of the document's currency could not be found or created.", True,
                        )  # fmt: skip
                        continue
                    payload["pricelevelid@odata.bind"] = f"/pricelevels({price_lists[currency]})"
                ops.append(WriteOp("create", ref=p.bc_id, id=p.dv_id, fields=payload))
            elif p.action == "update" and p.header:
                ops.append(WriteOp("update", ref=p.bc_id, id=p.dv_id, fields=codec.dv_payload(p.header)))
        header_results = {r.ref: r for r in await self._write(mapping.dataverse_entity_set, ops)}
        if any(not r.ok for r in header_results.values()):
            self.e._lookup_cache.pop("priceLists", None)  # a price list removed in Sales is found (or made) again
        # Headers that exist now are coupled at once: a later attempt after a failed line write completes them.
        now = utcnow()
        new = [
            Coupling(mapping.name, p.bc_id, p.dv_id, coupled_at=now)
            for p in creates
            if p.bc_id in header_results and header_results[p.bc_id].ok and p.bc_id not in couplings
        ]  # (a coupled document whose Dataverse row was deleted is made again under its coupling)
        if new:
            stored = await self.e.couplings.couple_many(new)
            for c, st in zip(new, stored, strict=True):
                couplings[c.bc_id] = st if isinstance(st, Coupling) else c
        line_ops: list[WriteOp] = []
        bind = f"{mapping.lines.dataverse_parent}@odata.bind"
        for p in plans:
            hr = header_results.get(p.bc_id)
            if p.bc_id in failed or (hr is not None and not hr.ok) or p.action in ("fail", "none"):
                continue
            for line_id, values in p.line_creates:
                fields = {**_line_payload(line_codec, values), bind: f"/{mapping.dataverse_entity_set}({p.dv_id})"}
                line_ops.append(WriteOp("create", ref=f"{p.bc_id}|{line_id}", id=line_id, fields=fields))
            for line_id, values in p.line_updates:
                line_ops.append(
                    WriteOp("update", ref=f"{p.bc_id}|{line_id}", id=line_id, fields=_line_payload(line_codec, values))
                )
            for line_id in p.line_deletes:
                line_ops.append(WriteOp("delete", ref=f"{p.bc_id}|{line_id}", id=line_id))
        line_failures: dict[str, WriteResult] = {}
        for r in await self._write(lines_map.dataverse_entity_set, line_ops):
            if not r.ok:
                line_failures.setdefault(r.ref.split("|", 1)[0], r)
        await self._invoiced_orders(mapping, plans, header_results, line_failures)
        await self._fulfilled_orders(mapping, by_id, plans, header_results, line_failures, failed)
        return await self._record(
            mapping, by_id, couplings, plans, header_results, line_failures, failed, job_id, outcome
        )

    async def _write(self, entity: str, ops: list[WriteOp]) -> list[WriteResult]:
        return await self.e.dv.write_many(entity, ops) if ops else []

    async def _invoiced_orders(
        self,
        mapping: TableMapping,
        plans: list[DocumentPlan],
        header_results: dict[str, WriteResult],
        line_failures: dict[str, WriteResult],
    ) -> None:
        """A posted invoice created from a coupled order sets that Dataverse order's state to Invoiced."""
        link = next((f for f in mapping.fields if f.dataverse == "salesorderid" and f.lookup), None)
        if link is None:
            return
        orders = {
            str(p.header[link.key])
            for p in plans
            if p.action == "create" and p.header.get(link.key) and header_results.get(p.bc_id, None) is not None
            and header_results[p.bc_id].ok and p.bc_id not in line_failures
        }  # fmt: skip
        if orders:
            ops = [WriteOp("update", ref=o, id=o, fields=dict(ORDER_INVOICED)) for o in sorted(orders)]
            for r in await self._write("salesorders", ops):
                if not r.ok:
                    log.warning("could not set the Dataverse order %s to Invoiced: %s", r.ref, r.error)

    async def _fulfilled_orders(
        self,
        mapping: TableMapping,
        headers: dict[str, RemoteRecord],
        plans: list[DocumentPlan],
        header_results: dict[str, WriteResult],
        line_failures: dict[str, WriteResult],
        failed: dict[str, RecordResult],
    ) -> None:
        """A BC order shipped in full: its Dataverse order becomes Fulfilled (BC's sales order status update),
        after its lines were written (a fulfilled order's details are locked)."""
        if mapping.dataverse_table != "salesorder":
            return
        ops = []
        for p in plans:
            hr = header_results.get(p.bc_id)
            ok = p.action != "fail" and p.bc_id not in failed and p.bc_id not in line_failures and (hr is None or hr.ok)
            if ok and headers.get(p.bc_id) is not None and headers[p.bc_id].fields.get(SHIPPED) is True:
                ops.append(WriteOp("update", ref=p.bc_id, id=p.dv_id, fields=dict(ORDER_FULFILLED)))
        for r in await self._write(mapping.dataverse_entity_set, ops):
            if not r.ok:
                log.warning("could not set the Dataverse order of %s to Fulfilled: %s", r.ref, r.error)

    async def _record(
        self,
        mapping: TableMapping,
        headers: dict[str, RemoteRecord],
        couplings: dict[str, Coupling],
        plans: list[DocumentPlan],
        header_results: dict[str, WriteResult],
        line_failures: dict[str, WriteResult],
        failed: dict[str, RecordResult],
        job_id: str | None,
        outcome: SyncOutcome,
    ) -> SyncOutcome:
        now = utcnow()
        to_save: list[Coupling] = []
        errors: list[SyncErrorEntry] = []
        succeeded: list[str] = []
        for p in plans:
            c = couplings.get(p.bc_id)
            result = failed.get(p.bc_id)
            w = header_results.get(p.bc_id)
            if result is None and w is not None and not w.ok:
                result = _failed(p.bc_id, c.dataverse_id if c else None, TO_DV, w)
            if result is None and p.bc_id in line_failures:
                result = _failed(p.bc_id, c.dataverse_id if c else None, TO_DV, line_failures[p.bc_id])
            if result is None:
                status = {"create": "created", "update": "updated"}.get(p.action, "unchanged")
                if p.action == "create" and w is not None and w.existed:
                    status = "updated"  # an earlier attempt's header, completed now
                result = RecordResult(p.bc_id, p.dv_id, status, TO_DV)
            outcome.add(result)
            if c is None:
                if result.status == "failed":
                    errors.append(error_entry(mapping.name, result, job_id, now, bc_id=p.bc_id, dataverse_id=None))
                continue
            c.last_sync_direction = TO_DV
            if result.status != "unchanged":  # #22 history: what the document's sync did
                history.append(self.e, c, _history_entry(self.e, p, result, job_id, now))
            if result.status == "failed":
                state = after_failure(
                    FailureState(c.consecutive_failures, c.last_error, c.last_sync_result, c.skipped),
                    result.error_message,
                    result.transient,
                    self.e.settings.skip_after_failures,
                )
                c.consecutive_failures, c.last_error, c.last_sync_result, c.skipped = (
                    state.consecutive_failures, state.last_error, state.last_sync_result, state.skipped,
                )  # fmt: skip
                errors.append(
                    error_entry(mapping.name, result, job_id, now, bc_id=c.bc_id, dataverse_id=c.dataverse_id)
                )
            else:
                c.last_synced_at, c.last_sync_result, c.last_error = now, "succeeded", None
                c.consecutive_failures, c.skipped = 0, False
                rec = headers.get(p.bc_id)
                if rec is not None and rec.modified_on is not None:
                    c.bc_modified_on = rec.modified_on
                succeeded.append(c.bc_id)
            to_save.append(c)
        if to_save:
            await self.e.couplings.save_sync_state(to_save)
        if errors:
            await self.e.errors.record_many(errors)
        if succeeded:
            await self.e.errors.close_for_records(mapping.name, succeeded)
        record_sync_outcomes(mapping.name, TO_DV, outcome.counts)
        return outcome


# ---------------------------------------------------------------------- bidirectional orders (from Sales)
SUBMITTED = 1  # salesorder statecode Submitted
_DV_ORDER_SELECT = ["salesorderid", "statecode", "ordernumber", "name", "modifiedon", "_customerid_value",
                    "_transactioncurrencyid_value"]  # fmt: skip
WRITE_IN_NOT_SET_UP = "write_in_product_not_set_up"


class SubmittedOrders:
    """With ``direction: bidirectional`` on SALESORDER-ORDER, an order submitted in Sales (statecode 1) and not
    coupled creates one BC sales order with its lines (BC's "CRM Sales Order to Sales Order"), coupled at once.
    Exactly once: the BC order's number is derived from the Dataverse id (a repeated or concurrent create is
    refused as a duplicate and the existing order is adopted), and lines are created for the sequences the BC
    order does not have yet. A coupled order is not changed from Sales again (BC takes an order once).
    The customer, currency and products resolve through CUSTOMER, CURRENCY and ITEM-PRODUCT; one that is not
    coupled fails the order with ``parent_not_coupled``; a write-in product needs BC's write-in setup
    (not available here): ``write_in_product_not_set_up``."""

    def __init__(self, sync: DocumentSync) -> None:
        self.s = sync
        self.e = sync.e

    async def create(self, mapping: TableMapping, orders: Sequence[RemoteRecord], job_id: str | None) -> SyncOutcome:
        from shared.planning.decisions import PARENT_NOT_COUPLED, parent_missing_message
        from shared.planning.identity_keys import bc_number_for

        outcome = SyncOutcome()
        assert mapping.lines is not None
        orders = [o for o in orders if o.fields.get("statecode") == SUBMITTED]
        coupled = await self.e.couplings.get_many_by_dataverse_ids(mapping.name, [o.id for o in orders])
        changed = []
        for o in orders:
            c = coupled.get(o.id)
            if c is None:
                continue
            # Dataverse stamps whole seconds: a change in the second of the last look is a candidate too (the
            # comparison of the lines then tells).
            if c.dv_modified_on is not None and o.modified_on is not None and o.modified_on >= c.dv_modified_on:
                changed.append(o)
            else:
                outcome.add(RecordResult(c.bc_id, o.id, "unchanged", FROM_DV))
        if changed:
            outcome.merge(await self._changes_from_sales(mapping, changed, coupled, job_id))
        orders = [o for o in orders if o.id not in coupled]
        if not orders:
            return outcome
        codec, lines_map = self.e.codec(mapping), line_mapping(mapping)
        line_codec = self.e.codec(lines_map)
        keys = {f.dataverse: f.key for f in mapping.fields if f.lookup is not None and f.dataverse}
        header_values = {
            o.id: {
                keys[a]: _lower(o.fields.get(f"_{a}_value"))
                for a in ("customerid", "transactioncurrencyid")
                if a in keys
            }
            for o in orders
        }
        payloads = await codec.bc_payloads(header_values)
        details = await self._details(mapping, lines_map, [o.id for o in orders])
        product_key = next(f.key for f in lines_map.fields if f.dataverse == "productid")
        line_values = {
            d.id: {product_key: _lower(d.fields.get("_productid_value"))}
            for ds in details.values()
            for d in ds
            if not d.fields.get(WRITE_IN)
        }
        line_payloads = await line_codec.bc_payloads(line_values)
        failed: dict[str, RecordResult] = {}
        ops: list[WriteOp] = []
        for o in orders:
            p = payloads.get(o.id, {})
            refs = (("customerid", "customerId"), ("transactioncurrencyid", "currencyCode"))
            missing = [
                f"{a}={o.fields.get(f'_{a}_value')}" for a, bc in refs if bc not in p and o.fields.get(f"_{a}_value")
            ]
            missing += [
                f"productid={d.fields.get('_productid_value')}"
                for d in details.get(o.id, [])
                if not d.fields.get(WRITE_IN) and "itemId" not in line_payloads.get(d.id, {})
            ]
            if any(d.fields.get(WRITE_IN) for d in details.get(o.id, [])):
                message = "The order has a write-in product; BC needs a write-in product set up to take it."
                failed[o.id] = RecordResult(None, o.id, "failed", FROM_DV, WRITE_IN_NOT_SET_UP, message, False)
            elif missing:
                failed[o.id] = RecordResult(
                    None, o.id, "failed", FROM_DV, PARENT_NOT_COUPLED, parent_missing_message(missing), True
                )
            else:
                fields = {
                    "number": bc_number_for(o.id),
                    "customerId": p["customerId"],
                    "externalDocumentNumber": str(o.fields.get("ordernumber") or "")[:35],
                }
                if "currencyCode" in p:
                    fields["currencyCode"] = p["currencyCode"]
                ops.append(WriteOp("create", ref=o.id, fields=fields))
        created = await self.e.bc.write_many(mapping.bc_entity, ops) if ops else []
        bc_ids: dict[str, str] = {}
        refused = []
        for r in created:
            if r.ok and r.record is not None:
                bc_ids[r.ref] = r.record.id
            else:
                refused.append(r)
        if refused:  # a duplicate number: an earlier attempt made the order; adopt it
            numbers = {bc_number_for(r.ref): r for r in refused}
            filt = " or ".join(f"number eq '{n}'" for n in numbers)
            async for page in self.e.bc.list_records(mapping.bc_entity, select=["id", "number"], filter=filt):
                for rec in page:
                    bc_ids[numbers[str(rec.fields.get("number"))].ref] = rec.id
            for r in refused:
                if r.ref not in bc_ids:
                    failed[r.ref] = _failed(None, r.ref, FROM_DV, r)
        # Lines before the coupling: a worker dying before it couples leaves an uncoupled order, which the next
        # attempt adopts (its number) and completes (the sequences it lacks); a coupled order is a complete one.
        existing = await self.s._bc_lines(mapping, list(bc_ids.values()))
        line_ops: list[WriteOp] = []
        pairs: dict[str, dict[str, str]] = {}  # Dataverse order -> its detail ids -> the BC line ids
        for dv_id, bc_id in bc_ids.items():
            have = {int(x.fields.get("sequence") or 0): x.id for x in existing.get(bc_id, [])}
            pairs[dv_id] = {}
            for n, d in enumerate(details.get(dv_id, []), start=1):
                seq = n * 10000
                if seq in have:
                    pairs[dv_id][d.id] = have[seq]
                    continue
                fields = {
                    mapping.lines.bc_parent_field: bc_id,
                    "sequence": seq,
                    "lineType": mapping.lines.item_line_type,
                    "itemId": line_payloads[d.id]["itemId"],
                    "quantity": d.fields.get("quantity") or 0,
                }
                if d.fields.get("priceperunit") is not None:
                    fields["unitPrice"] = d.fields["priceperunit"]
                if d.fields.get("manualdiscountamount"):
                    fields["discountAmount"] = d.fields["manualdiscountamount"]
                line_ops.append(WriteOp("create", ref=f"{dv_id}|{d.id}", fields=fields))
        line_fail: dict[str, WriteResult] = {}
        for r in await self.e.bc.write_many(mapping.lines.bc_entity, line_ops) if line_ops else []:
            dv_id, detail = r.ref.split("|", 1)
            if not r.ok:
                line_fail.setdefault(dv_id, r)
            elif r.record is not None:
                pairs[dv_id][detail] = r.record.id
        errors: list[SyncErrorEntry] = []
        now = utcnow()
        modified = {o.id: o.modified_on for o in orders}
        results = {
            dv_id: _failed(bc_id, dv_id, FROM_DV, line_fail[dv_id])
            if dv_id in line_fail
            else RecordResult(bc_id, dv_id, "created", FROM_DV)
            for dv_id, bc_id in bc_ids.items()
        }
        new = [
            Coupling(
                mapping.name,
                bc_id,
                dv_id,
                coupled_at=now,
                last_sync_direction=FROM_DV,
                last_synced_at=now,
                last_sync_result="failed" if results[dv_id].status == "failed" else "succeeded",
                last_error=results[dv_id].error_message,
                dv_values={"lines": pairs.get(dv_id, {})},
                dv_modified_on=modified.get(dv_id),
            )
            for dv_id, bc_id in bc_ids.items()
        ]
        stored = await self.e.couplings.couple_many(new) if new else []
        for c, st in zip(new, stored, strict=True):
            if isinstance(st, Exception):  # a concurrent worker coupled it first: its order stands
                bc_ids.pop(c.dataverse_id, None)
                outcome.add(RecordResult(None, c.dataverse_id, "unchanged", FROM_DV))
                continue
            result = results[c.dataverse_id]
            outcome.add(result)
            if result.status == "failed":
                errors.append(error_entry(mapping.name, result, job_id, now))
        for r in failed.values():
            outcome.add(r)
            errors.append(error_entry(mapping.name, r, job_id, now))
        if errors:
            await self.e.errors.record_many(errors)
        done = [bc for dv, bc in bc_ids.items() if dv not in line_fail]
        if done:
            await self.e.errors.close_for_records(mapping.name, done, [dv for dv in bc_ids if dv not in line_fail])
        return outcome

    async def _changes_from_sales(
        self, mapping: TableMapping, orders: list[RemoteRecord], coupled: dict[str, Coupling], job_id: str | None
    ) -> SyncOutcome:
        """A coupled order changed in Sales after it was submitted: BC takes line changes (quantity, price,
        discount, product; new and removed lines) while its order is open, and refuses them once it is released
        (BC's TestField: "Status must be equal to 'Open'"), listed as the sync error ``bc_order_released``."""
        from shared.planning.decisions import PARENT_NOT_COUPLED, parent_missing_message

        assert mapping.lines is not None
        outcome, now = SyncOutcome(), utcnow()
        lines_map = line_mapping(mapping)
        bc_orders = await self.e.bc.get_many(
            mapping.bc_entity, [coupled[o.id].bc_id for o in orders], select=_select(mapping)
        )
        details = await self._details(mapping, lines_map, [o.id for o in orders])
        bc_lines = await self.s._bc_lines(mapping, list(bc_orders))
        product_key = next(f.key for f in lines_map.fields if f.dataverse == "productid")
        values = {d.id: {product_key: _lower(d.fields.get("_productid_value"))} for ds in details.values() for d in ds}
        items = await self.e.codec(lines_map).bc_payloads(values)
        errors: list[SyncErrorEntry] = []
        for o in orders:
            c = coupled[o.id]
            bc = bc_orders.get(c.bc_id)
            result: RecordResult
            if bc is None:
                result = RecordResult(
                    c.bc_id, o.id, "failed", FROM_DV, "record_not_found", "The BC order no longer exists."
                )
            elif bc.fields.get("status") == "Released":
                number = bc.fields.get("number")
                msg = (
                    f"Status must be equal to 'Open'  in Sales Header: Document Type=Order, No.={number}. Current "
                    "value is 'Released'. Reopen the order in Business Central to take the change from Sales."
                )
                result = RecordResult(c.bc_id, o.id, "failed", FROM_DV, "bc_order_released", msg, False)
            else:
                result = await self._apply_sales_lines(
                    mapping, c, details.get(o.id, []), bc_lines.get(c.bc_id, []), items
                )
                if result.error_code == PARENT_NOT_COUPLED:
                    result.error_message = parent_missing_message([result.error_message or ""])
            if result.status != "failed":
                c.dv_modified_on = o.modified_on
            c.last_sync_direction, c.last_synced_at = FROM_DV, now
            c.last_sync_result = "failed" if result.status == "failed" else "succeeded"
            c.last_error = result.error_message if result.status == "failed" else None
            await self.e.couplings.save_sync_state([c])
            outcome.add(result)
            if result.status == "failed":
                errors.append(error_entry(mapping.name, result, job_id, now, bc_id=c.bc_id, dataverse_id=o.id))
            else:
                await self.e.errors.close_for_records(mapping.name, [c.bc_id])
        if errors:
            await self.e.errors.record_many(errors)
        return outcome

    async def _apply_sales_lines(
        self,
        mapping: TableMapping,
        c: Coupling,
        details: list[RemoteRecord],
        lines: list[RemoteRecord],
        items: dict[str, dict[str, Any]],
    ) -> RecordResult:
        assert mapping.lines is not None
        from shared.planning.decisions import PARENT_NOT_COUPLED
        from shared.planning.transform import same

        pairs = dict((c.dv_values or {}).get("lines") or {})
        by_id = {ln.id: ln for ln in lines}
        missing = [f"productid={d.fields.get('_productid_value')}" for d in details
                   if not d.fields.get(WRITE_IN) and "itemId" not in items.get(d.id, {})]  # fmt: skip
        if any(d.fields.get(WRITE_IN) for d in details):
            message = "The order has a write-in product; BC needs a write-in product set up to take it."
            return RecordResult(c.bc_id, c.dataverse_id, "failed", FROM_DV, WRITE_IN_NOT_SET_UP, message, False)
        if missing:
            return RecordResult(
                c.bc_id, c.dataverse_id, "failed", FROM_DV, PARENT_NOT_COUPLED, ", ".join(missing), True
            )
        ops: list[WriteOp] = []
        next_seq = max([int(ln.fields.get("sequence") or 0) for ln in lines] or [0]) + 10000
        for d in details:
            want = {"itemId": items[d.id]["itemId"], "quantity": d.fields.get("quantity") or 0}
            if d.fields.get("priceperunit") is not None:
                want["unitPrice"] = d.fields["priceperunit"]
            want["discountAmount"] = d.fields.get("manualdiscountamount") or 0
            line = by_id.get(pairs.get(d.id, ""))
            if line is None:
                fields = {
                    mapping.lines.bc_parent_field: c.bc_id,
                    "sequence": next_seq,
                    "lineType": mapping.lines.item_line_type,
                    **want,
                }
                ops.append(WriteOp("create", ref=d.id, fields=fields))
                next_seq += 10000
            else:
                diff = {k: v for k, v in want.items() if not same(v, line.fields.get(k))}
                if diff:
                    ops.append(WriteOp("update", ref=d.id, id=line.id, fields=diff))
        kept = {pairs[d.id] for d in details if d.id in pairs}
        for detail, line_id in list(pairs.items()):
            if line_id not in kept and line_id in by_id:
                ops.append(WriteOp("delete", ref=detail, id=line_id))
        if not ops:
            return RecordResult(c.bc_id, c.dataverse_id, "unchanged", FROM_DV)
        results = await self.e.bc.write_many(mapping.lines.bc_entity, ops)
        failure = next((r for r in results if not r.ok), None)
        for op, r in zip(ops, results, strict=True):
            if not r.ok:
                continue
            if op.kind == "create" and r.record is not None:
                pairs[op.ref] = r.record.id
            elif op.kind == "delete":
                pairs.pop(op.ref, None)
        c.dv_values = {"lines": pairs}
        if failure is not None:
            return _failed(c.bc_id, c.dataverse_id, FROM_DV, failure)
        return RecordResult(c.bc_id, c.dataverse_id, "updated", FROM_DV)

    async def _details(
        self, mapping: TableMapping, lines_map: TableMapping, dv_ids: list[str]
    ) -> dict[str, list[RemoteRecord]]:
        assert mapping.lines is not None
        parent = f"_{mapping.lines.dataverse_parent}_value"
        select = [lines_map.dataverse_primary_key, parent, "_productid_value", "quantity", "priceperunit",
                  "manualdiscountamount", WRITE_IN, DESCRIPTION, "sequencenumber", "lineitemnumber"]  # fmt: skip
        out: dict[str, list[RemoteRecord]] = {}
        for start in range(0, len(dv_ids), CHUNK):
            filt = dataverse_in_filter(parent, dv_ids[start : start + CHUNK])
            async for page in self.e.dv.list_records(lines_map.dataverse_entity_set, select=select, filter=filt):
                for rec in page:
                    out.setdefault(str(rec.fields.get(parent) or "").lower(), []).append(rec)
        for lst in out.values():
            lst.sort(key=lambda r: (r.fields.get("lineitemnumber") or 0, r.fields.get("sequencenumber") or 0,
                                    r.modified_on or utcnow(), r.id))  # fmt: skip
        return out


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _history_entry(
    engine: Engine, p: DocumentPlan, result: RecordResult, job_id: str | None, now: Any
) -> dict[str, Any]:
    changes: list[dict[str, Any]] = []
    if result.status in ("created", "updated"):
        changes = [
            {"field": k.split("|", 1)[-1], "side": "dataverse", "from": None, "to": v} for k, v in p.header.items()
        ]
        summary = f"{len(p.line_creates)} created, {len(p.line_updates)} updated, {len(p.line_deletes)} deleted"
        changes.append({"field": "lines", "side": "dataverse", "from": None, "to": summary})
    err = (result.error_code, result.error_message) if result.error_code else None
    return history.new_entry(
        engine, result.status, job_id=job_id, direction=result.direction, changes=changes, error=err, at=now
    )


def _line_payload(codec: Any, values: dict[str, Any]) -> dict[str, Any]:
    payload = codec.dv_payload(values)
    for extra in (WRITE_IN, DESCRIPTION):
        if extra in values:
            payload[extra] = values[extra]
    return payload


def _failed(bc_id: str | None, dv_id: str | None, direction: str, w: WriteResult) -> RecordResult:
    """The record result of a refused write (its code and transience classified as everywhere)."""
    f = write_failure(w.error)
    message = str(w.error) if w.error is not None else "The write failed."
    return RecordResult(bc_id, dv_id, "failed", direction, failure_code(f), message, failure_transient(f))


def _select(mapping: TableMapping) -> list[str]:
    extra = {"status", SHIPPED} if mapping.bc_entity_name == "salesOrders" else {"status"}
    return sorted({*mapping.bc_select, *extra})


# ---------------------------------------------------------------------- dispatch from the job and sync paths
async def handle_message(
    jobs: JobService, mapping: TableMapping, msg: dict[str, Any], job_id: str
) -> SyncOutcome | None:
    """The document variant of a work message (None: the kind is not about syncing records)."""
    kind = msg.get("kind")
    if kind not in DOCUMENT_KINDS:
        return None
    sync = DocumentSync(jobs.e)
    if kind == "mapping-sync":
        if msg.get("parentsFirst"):
            from shared.services.dependencies import bring_parents_up_to_date

            await bring_parents_up_to_date(jobs, mapping)
        return await sync.run_job(mapping, full=bool(msg.get("full")), job_id=job_id)
    if kind == "retry-errors":
        return await sync.retry(mapping, msg, job_id)
    if kind == "sync-batch" and not msg.get("scheduled"):
        direction = Direction(msg.get("direction") or mapping.direction.value)
        bc_ids, dv_ids = msg.get("bcIds") or [], msg.get("dataverseIds") or []
        return await sync_document_ids(jobs.e, mapping, bc_ids, dv_ids, job_id, direction)
    if not may_run(mapping.state, job_id):
        return SyncOutcome()
    dv_ids = [i.lower() for i in msg.get("dataverseIds") or []]
    if dv_ids and not msg.get("deleted") and mapping.allows(Direction.FROM_DATAVERSE):
        return await sync.from_sales(mapping, dv_ids, job_id)  # a Sales order changed (webhook)
    ids = [i.lower() for i in msg.get("bcIds") or []]
    if not ids or msg.get("deleted"):
        return SyncOutcome()  # Dataverse-side changes and BC deletions of documents are not synchronized
    records = await jobs.e.bc.get_many(mapping.bc_entity, ids, select=_select(mapping))
    return await sync.sync_headers(mapping, list(records.values()), job_id)


async def sync_document_ids(
    engine: Engine,
    mapping: TableMapping,
    bc_ids: Sequence[str],
    dv_ids: Sequence[str],
    job_id: str | None,
    direction: Direction = Direction.TO_DATAVERSE,
) -> SyncOutcome:
    """Synchronize now of a document mapping: toward Dataverse as a unit; from Dataverse (bidirectional orders)
    the coupled Sales orders' changes as BC takes them. Uncoupled ids are ``not_coupled`` either way."""
    sync = DocumentSync(engine)
    if direction != Direction.FROM_DATAVERSE:
        try:
            return await sync.sync_ids(mapping, bc_ids, dv_ids, job_id)
        except SyncError as e:  # BC or Dataverse kept failing past the retries: a result per record, as elsewhere
            if not upstream_failure_is_per_record(e.service, e.transient):
                raise
            outcome = SyncOutcome()
            message = f"{e.service or 'a dependency'} is unavailable: {e.message}"
            for k in dict.fromkeys(i.lower() for i in (bc_ids or dv_ids)):
                bc, dv = (k, None) if bc_ids else (None, k)
                outcome.add(RecordResult(bc, dv, "failed", TO_DV, UPSTREAM_UNAVAILABLE, message, True))
            return outcome
    if bc_ids:
        keys = list(dict.fromkeys(i.lower() for i in bc_ids))
        found = await engine.couplings.get_many_by_bc_ids(mapping.name, keys)
    else:
        keys = list(dict.fromkeys(i.lower() for i in dv_ids))
        found = await engine.couplings.get_many_by_dataverse_ids(mapping.name, keys)
    done = await sync.from_sales(mapping, [c.dataverse_id for c in found.values()], job_id)
    by_dv = {r.dataverse_id: r for r in done.results}
    outcome = SyncOutcome()
    for k in keys:
        c = found.get(k)
        r = by_dv.get(c.dataverse_id) if c else None
        if r is None:
            bc, dv = (k, None) if bc_ids else (None, k)
            status = "not_coupled" if c is None else "unchanged"
            r = RecordResult(bc, dv, status, FROM_DV, "not_coupled" if c is None else None,
                             "The record is not coupled; set up a coupling first." if c is None else None)  # fmt: skip
        outcome.add(r)
    return outcome


async def create_documents(
    engine: Engine, mapping: TableMapping, direction: Direction, sources: Sequence[RemoteRecord], job_id: str | None
) -> SyncOutcome:
    """``CouplingService.create_counterparts`` of a document mapping (couple with "create new", retries of
    failed creates): the documents with their lines, one result per source."""
    sync = DocumentSync(engine)
    ids = [r.id for r in sources]
    if direction == Direction.TO_DATAVERSE:
        records = await engine.bc.get_many(mapping.bc_entity, ids, select=_select(mapping))
        done = await sync.sync_headers(mapping, list(records.values()), job_id, filtered=False)
    else:
        orders = await engine.dv.get_many(mapping.dataverse_entity_set, ids, select=_DV_ORDER_SELECT)
        done = await SubmittedOrders(sync).create(mapping, list(orders.values()), job_id)
    by_id = {(r.bc_id if direction == Direction.TO_DATAVERSE else r.dataverse_id): r for r in done.results}
    outcome = SyncOutcome()
    for i in ids:
        r = by_id.get(i)
        if r is None:
            bc, dv = (i, None) if direction == Direction.TO_DATAVERSE else (None, i)
            why = "Only orders submitted in Sales create BC orders." if bc is None else "The record does not exist."
            r = RecordResult(bc, dv, "failed", direction.value, "not_created", why)
        outcome.add(r)
    return outcome


async def sync_document_couplings(
    engine: Engine, mapping: TableMapping, couplings: Sequence[Coupling], direction: Direction, job_id: str | None
) -> SyncOutcome:
    """``SyncService.sync_couplings`` of a document mapping (Synchronize from Dataverse, sync after coupling):
    the same as Synchronize now of these couplings."""
    return await sync_document_ids(engine, mapping, [c.bc_id for c in couplings], [], job_id, direction)


# ---------------------------------------------------------------------- plans (#22) of documents
async def plan_document_couplings(
    engine: Engine, mapping: TableMapping, couplings: Sequence[Coupling], direction: Direction
) -> list[dict[str, Any]]:
    """``PlanService.plan_couplings`` of a document mapping: what Synchronize now would do to these documents."""
    from shared.planning.plan_view import item

    if direction == Direction.FROM_DATAVERSE:
        return [item("none", c.bc_id, c.dataverse_id, FROM_DV, "documents_from_sales_not_planned") for c in couplings]
    records = await engine.bc.get_many(mapping.bc_entity, [c.bc_id for c in couplings], select=_select(mapping))
    sync = DocumentSync(engine)
    items: list[dict[str, Any]] = []
    found = list(records.values())
    for start in range(0, len(found), DOCUMENTS_PER_PASS):
        items += await sync.plan_chunk(mapping, found[start : start + DOCUMENTS_PER_PASS], create=False)
    return items


async def plan_document_mapping(
    engine: Engine, mapping: TableMapping, *, full: bool
) -> tuple[list[dict[str, Any]], int]:
    """``PlanService.plan_mapping`` of a document mapping: the items a mapping-wide run would produce from the
    same change pages (BC's side; Sales orders taken into BC are not planned), and how many it would skip."""
    sync = DocumentSync(engine)
    wm = await engine.watermarks.get(mapping.name, Side.BC)
    items: list[dict[str, Any]] = []
    seen = 0
    async for page in engine.bc.iter_changes(mapping.bc_entity, None if full else wm.cursor, select=_select(mapping)):
        work = await sync._changed(mapping, page.records)
        seen += len(page.records) - len(work)
        work = await within_filter(engine, mapping, Side.BC, work)
        for start in range(0, len(work), DOCUMENTS_PER_PASS):
            items += await sync.plan_chunk(mapping, work[start : start + DOCUMENTS_PER_PASS], create=True)
    return items, seen
