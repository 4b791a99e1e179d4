"""Dataverse Web API client (``shared.ports.RecordService``).

- Reads: ``Prefer: odata.maxpagesize=5000`` pages following ``@odata.nextLink``.
- Changes: change tracking. Cursor None -> ``Prefer: odata.track-changes`` initial read; the last page's
  ``@odata.deltaLink`` is the next cursor. A stored delta link -> changed rows plus ``$deletedEntity``
  rows (``deleted_ids``). An expired/invalid delta token -> one ``ChangePage(full_resync_required=True)``.
  A delta link keeps the ``$select`` of the read that made it: when the mapping now reads columns that
  ``$select`` lacks (a field added or enabled since), each page's changed rows are read again with the
  whole ``$select`` (a missing column is no empty value: it would be synced as one).
- Get many: chunked ``$filter=Microsoft.Dynamics.CRM.In(...)`` GETs (URLs < 8 KB).
- Writes: creates carry the engine's deterministic primary key (``WriteOp.id``; a random one when absent)
  and go through ``CreateMultiple`` (<= 1,000 rows per call). Because the keys are fixed, the call is
  safe to repeat: the pipeline retries it on ambiguous failures too. Updates without an ETag go through
  ``UpdateMultiple``; updates with an ETag (``If-Match``, which the bulk actions cannot carry) and deletes
  through ``$batch`` (multipart, no change set, ``odata.continue-on-error``: every request its own
  outcome). A bulk call is all-or-nothing: when it fails for some row, the same rows are sent once as a
  ``$batch`` to learn each row's outcome (one extra call, no bisection). A create answering "duplicate
  key" whose row exists is a success (the first, ambiguous attempt had created it). Tables without the
  bulk actions fall back to ``$batch`` for good.
- Echo markers on every write: query ``tag=<tag>`` (default ``bc-sync``) and header
  ``MSCRM.BypassCustomPluginExecution: false`` (plugins still run; the tag lets them spot our writes).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from azure.core.credentials_async import AsyncTokenCredential

from shared.config import Settings
from shared.connectors._multipart import BatchPart, build_batch, parse_batch_response
from shared.connectors._odata import (
    dataverse_in_filter,
    gather_by_chunks,
    normalise_guid,
    to_record,
    with_required,
)
from shared.connectors.http import ServiceClient, ServiceHttp, error_from_payload
from shared.domain.model import ChangePage, RemoteRecord, WriteOp, WriteResult
from shared.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    SyncError,
    TransientError,
)

log = logging.getLogger("shared.connectors.dataverse")
MODIFIED_CURSOR = "modifiedon:"  # a change cursor of a table without change tracking: the last stamp read

SERVICE = "dataverse"
BULK_LIMIT = 1000  # rows per CreateMultiple/UpdateMultiple and requests per $batch
DUPLICATE_CODES = {"0x80040237", "0x80040333", "0x80060892"}  # DuplicateRecord, duplicate key, entity key
EXPIRED_TOKEN_CODES = {"0x80044352", "0x80044353", "0x80048560"}
UNSUPPORTED_BULK_CODES = {"0x80040265", "0x8006088a", "0x80048d19"}


@dataclass(frozen=True, slots=True)
class EntityInfo:
    entity_set: str
    logical_name: str
    primary_key: str


DEFAULT_ENTITIES: dict[str, EntityInfo] = {
    "accounts": EntityInfo("accounts", "account", "accountid"),
    "contacts": EntityInfo("contacts", "contact", "contactid"),
    "products": EntityInfo("products", "product", "productid"),
    "systemusers": EntityInfo("systemusers", "systemuser", "systemuserid"),
    "transactioncurrencies": EntityInfo("transactioncurrencies", "transactioncurrency", "transactioncurrencyid"),
    "uomschedules": EntityInfo("uomschedules", "uomschedule", "uomscheduleid"),
    "uoms": EntityInfo("uoms", "uom", "uomid"),
    "opportunities": EntityInfo("opportunities", "opportunity", "opportunityid"),
}


class DataverseClient(ServiceClient):
    """Async client of one Dataverse org. Build once per process; ``aclose()`` at the end."""

    def __init__(
        self,
        endpoint: Settings | str,
        credential: AsyncTokenCredential | None,
        *,
        scope: str | None = None,
        entities: Mapping[str, EntityInfo | tuple[str, str]] | None = None,
        tag: str = "bc-sync",
        page_size: int = 5000,
        change_page_records: int = 20000,  # as BC's page: the change feed hands out this many rows at once
        initial_concurrency: int = 4,
        max_concurrency: int = 52,
        bulk_size: int = BULK_LIMIT,
        retry_total_timeout: float = 30.0,
        retry_backoff_base: float = 0.5,
        requests_per_window: int | None = None,
        window_seconds: float = 300.0,
        transport: Any = None,
    ) -> None:
        if isinstance(endpoint, Settings):
            if requests_per_window is None:  # the service's request window, paced on our side
                requests_per_window = endpoint.dataverse_requests_per_window
                window_seconds = endpoint.dataverse_window_seconds
            self.api_root = endpoint.dataverse_api_root.rstrip("/")
            scope = scope or endpoint.dataverse_audience + "/.default"
        else:
            self.api_root = endpoint.rstrip("/")
            if scope is None:
                # the org URL is the audience: https://org.crm.dynamics.com/api/data/v9.2 -> https://org...
                org = self.api_root.split("/api/data/")[0]
                scope = org + "/.default"
        if not 1 <= bulk_size <= BULK_LIMIT:
            raise ValueError(f"bulk_size must be 1..{BULK_LIMIT}")
        self.tag = tag
        self.page_size = page_size
        self.change_page_records = change_page_records
        self.bulk_size = bulk_size
        self._entities = dict(DEFAULT_ENTITIES)
        for name, info in (entities or {}).items():
            self._entities[name] = info if isinstance(info, EntityInfo) else EntityInfo(name, info[0], info[1])
        self._no_bulk: set[tuple[str, str]] = set()
        # Entity sets seen without change tracking: their changes are read by a modifiedon query (health says so).
        self.untracked: set[str] = set()
        self._http = ServiceHttp(
            service=SERVICE,
            base_url=self.api_root,
            credential=credential,
            scope=scope,
            max_concurrency=initial_concurrency,
            max_concurrency_limit=max_concurrency,
            dop_header="x-ms-dop-hint",
            retry_total_timeout=retry_total_timeout,
            retry_backoff_base=retry_backoff_base,
            requests_per_window=requests_per_window or None,
            window_seconds=window_seconds,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings, credential: AsyncTokenCredential | None, **kw: Any) -> DataverseClient:
        return cls(settings, credential, **kw)

    # ------------------------------------------------------------------ lifecycle
    @property
    def concurrency_limit(self) -> int:
        return self._http.limiter.limit

    def register_entity(self, entity_set: str, logical_name: str, primary_key: str) -> None:
        """Names a table the defaults do not know (a user-defined mapping's custom table)."""
        self._entities[entity_set] = EntityInfo(entity_set, logical_name, primary_key)

    async def get_entity_definition(self, logical_name: str) -> dict[str, Any]:
        """``EntityDefinitions(LogicalName='…')``: entity set name, primary id and name attributes."""
        response = await self._http.request(
            "GET",
            f"{self.api_root}/EntityDefinitions(LogicalName='{quote(logical_name, safe='')}')",
            params={"$select": "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute"},
            kind="meta",
        )
        return dict(response.json())

    async def get_attributes(self, logical_name: str) -> list[dict[str, Any]]:
        """``EntityDefinitions(LogicalName='…')/Attributes`` (every attribute, MaxLength on string/memo ones)."""
        response = await self._http.request(
            "GET",
            f"{self.api_root}/EntityDefinitions(LogicalName='{quote(logical_name, safe='')}')/Attributes",
            kind="meta",
        )
        return list(response.json().get("value", []))

    async def get_options(self, logical_name: str, attribute: str) -> dict[int, str]:
        """The options of a picklist attribute: value -> label (the user's language)."""
        response = await self._http.request(
            "GET",
            f"{self.api_root}/EntityDefinitions(LogicalName='{quote(logical_name, safe='')}')/Attributes("
            f"LogicalName='{quote(attribute, safe='')}')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            params={"$select": "LogicalName", "$expand": "OptionSet"},
            kind="meta",
        )
        options = (response.json().get("OptionSet") or {}).get("Options") or []
        out: dict[int, str] = {}
        for o in options:
            label = (o.get("Label") or {}).get("UserLocalizedLabel") or {}
            out[int(o["Value"])] = str(label.get("Label") or "")
        return out

    async def insert_option(self, logical_name: str, attribute: str, label: str) -> int:
        """``InsertOptionValue``: adds an option to a picklist attribute; returns its value."""
        response = await self._http.request(
            "POST",
            f"{self.api_root}/InsertOptionValue",
            json={
                "EntityLogicalName": logical_name,
                "AttributeLogicalName": attribute,
                "Label": {"LocalizedLabels": [{"Label": label, "LanguageCode": 1033}]},
            },
            kind="write",
        )
        return int(response.json()["NewOptionValue"])

    async def probe(self, entity: str, filter: str) -> None:
        """One ``$top=1`` query with this filter: raises the mapped ``SyncError`` when Dataverse refuses it."""
        info = self.entity(entity)
        await self._http.request(
            "GET",
            f"{self.api_root}/{entity}",
            params={"$filter": filter, "$top": "1", "$select": info.primary_key},
            kind="meta",
        )

    def entity(self, entity_set: str) -> EntityInfo:
        info = self._entities.get(entity_set)
        if info is None:
            # Regular English plural entity sets (e.g. "opportunities" need an explicit registration).
            logical = entity_set[:-1] if entity_set.endswith("s") else entity_set
            info = EntityInfo(entity_set, logical, f"{logical}id")
        return info

    def _write_headers(self) -> dict[str, str]:
        return {"MSCRM.BypassCustomPluginExecution": "false"}

    def _tagged(self, url: str) -> str:
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}tag={quote(self.tag, safe='')}"

    # ------------------------------------------------------------------ reads
    def _record(self, entity: str, row: dict[str, Any]) -> RemoteRecord:
        return to_record(row, id_field=self.entity(entity).primary_key, modified_field="modifiedon")

    async def _pages(
        self, url: str, params: dict[str, str] | None, *, track: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        prefer = f"odata.maxpagesize={self.page_size}"
        if track:
            prefer = f"odata.track-changes,{prefer}"
        headers = {"Prefer": prefer}
        seen: set[str] = set()
        next_url: str | None = url
        while next_url:
            response = await self._http.request("GET", next_url, params=params, headers=headers, kind="read")
            body = response.json()
            del response  # the page's bytes and text are not held while its rows are used
            self.calls.records_read += len(body.get("value", []))
            next_url, params = body.get("@odata.nextLink"), None  # read first: the consumer may clear the body
            yield body
            if next_url in seen:
                raise PermanentError("the same @odata.nextLink came back twice", service=SERVICE)
            if next_url:
                seen.add(next_url)

    async def ping(self) -> None:
        """One cheap authenticated call (health check, ``WhoAmI``): raises the mapped ``SyncError``."""
        await self._http.request("GET", f"{self.api_root}/WhoAmI", kind="meta")

    async def list_records(
        self, entity: str, *, select: Sequence[str] | None = None, filter: str | None = None
    ) -> AsyncIterator[list[RemoteRecord]]:
        info = self.entity(entity)
        params: dict[str, str] = {}
        cols = with_required(select, info.primary_key, "modifiedon")
        if cols:
            params["$select"] = ",".join(cols)
        if filter:
            params["$filter"] = filter
        async for body in self._pages(f"{self.api_root}/{entity}", params or None):
            yield [self._record(entity, r) for r in body.get("value", [])]

    async def iter_changes(
        self, entity: str, cursor: str | None, *, select: Sequence[str] | None = None
    ) -> AsyncIterator[ChangePage]:
        """The change feed, in pages of at least ``change_page_records`` rows (but the last): Dataverse
        answers at most 5,000 rows a page, and the engine looks up the couplings of a page at once — four
        service pages in one lookup read each coupling partition once instead of four times (#23)."""
        merged: ChangePage | None = None
        async for page in self._change_pages(entity, cursor, select):
            if page.full_resync_required:  # the caller starts over with a full run
                yield page
                return
            if merged is None:
                merged = page
            else:
                merged.records += page.records
                merged.deleted_ids += page.deleted_ids
                merged.next_cursor = page.next_cursor or merged.next_cursor
                merged.is_last = page.is_last
            if len(merged.records) + len(merged.deleted_ids) >= self.change_page_records:
                yield merged
                merged = None
        if merged is not None:
            yield merged

    async def _change_pages(
        self, entity: str, cursor: str | None, select: Sequence[str] | None
    ) -> AsyncIterator[ChangePage]:
        """The service's pages of changes (delta link on the last)."""
        info = self.entity(entity)
        if (cursor or "").startswith(MODIFIED_CURSOR) or entity in self.untracked:
            async for page in self._changes_by_modifiedon(entity, cursor, select):
                yield page
            return
        missing: list[str] = []
        if cursor:
            url, params = cursor, None  # the delta link keeps the original $select
            missing = columns_missing_from(cursor, with_required(select, info.primary_key, "modifiedon"))
            if missing:
                log.info("the delta link of %s lacks %s: changed rows are read again", entity, ",".join(missing))
        else:
            url = f"{self.api_root}/{entity}"
            cols = with_required(select, info.primary_key, "modifiedon")
            params = {"$select": ",".join(cols)} if cols else None
        # Each page is handed over as soon as it is read (one page alive at a time); the cursor goes out on a
        # last page of its own, once every row before it was handed over.
        delivered = False
        delta: str | None = None
        try:
            async for body in self._pages(url, params, track=True):
                page = ChangePage(records=[])
                for row in body.get("value", []):
                    if "$deletedEntity" in str(row.get("@odata.context", "")) or row.get("reason") == "deleted":
                        rid = row.get("id") or row.get(info.primary_key)
                        if rid:
                            page.deleted_ids.append(normalise_guid(str(rid)))
                    else:
                        page.records.append(self._record(entity, row))
                if missing and page.records:
                    fresh = await self.get_many(entity, [r.id for r in page.records], select=select)
                    page.records = [fresh[r.id] for r in page.records if r.id in fresh]  # gone: its deletion follows
                delta = body.get("@odata.deltaLink") or delta
                body.clear()  # the raw rows (``_pages`` still holds the body) are not kept while the page is used
                if page.records or page.deleted_ids:
                    delivered = True
                    yield page
                del page
        except PermanentError as e:
            if not delivered and _is_change_tracking_off(e):
                log.warning("Dataverse change tracking is off for %s (%s): reading by modifiedon", entity, e)
                self.untracked.add(entity)
                async for page in self._changes_by_modifiedon(entity, None, select):
                    yield page
                return
            if cursor and _is_expired_token(e):
                log.warning("Dataverse delta token of %s expired (%s): full resync", entity, e)
                yield ChangePage(records=[], is_last=True, full_resync_required=True)
                return
            raise
        yield ChangePage(records=[], is_last=True, next_cursor=delta or cursor)

    async def _changes_by_modifiedon(
        self, entity: str, cursor: str | None, select: Sequence[str] | None
    ) -> AsyncIterator[ChangePage]:
        """The change feed of a table without change tracking: rows with ``modifiedon ge <last stamp>``
        (whole seconds, so the last second is read again; the engine's echo check drops what it already
        synced). Deletions cannot be seen this way (documented; health names the table)."""
        info = self.entity(entity)
        since = (cursor or "").removeprefix(MODIFIED_CURSOR) or None
        cols = with_required(select, info.primary_key, "modifiedon")
        params = {"$orderby": "modifiedon asc"}
        if cols:
            params["$select"] = ",".join(cols)
        if since:
            params["$filter"] = f"modifiedon ge {since}"
        latest = since
        pending: ChangePage | None = None
        async for body in self._pages(f"{self.api_root}/{entity}", params):
            page = ChangePage(records=[self._record(entity, row) for row in body.get("value", [])])
            for rec in page.records:
                if rec.modified_on is not None:
                    stamp = rec.modified_on.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    latest = stamp if latest is None or stamp > latest else latest
            if pending is not None:
                yield pending
            pending = page
        last = pending or ChangePage(records=[])
        last.is_last = True
        last.next_cursor = MODIFIED_CURSOR + (latest or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        yield last

    async def get_many(
        self, entity: str, ids: Sequence[str], *, select: Sequence[str] | None = None
    ) -> dict[str, RemoteRecord]:
        info = self.entity(entity)
        wanted = list(dict.fromkeys(normalise_guid(i) for i in ids))
        if not wanted:
            return {}
        url = f"{self.api_root}/{entity}"
        cols = with_required(select, info.primary_key, "modifiedon")
        base_len = len(url) + (len(",".join(cols)) + 12 if cols else 0)

        async def fetch(chunk: list[str]) -> list[RemoteRecord]:
            params = {"$filter": dataverse_in_filter(info.primary_key, chunk)}
            if cols:
                params["$select"] = ",".join(cols)
            out: list[RemoteRecord] = []
            async for body in self._pages(url, params):
                out += [self._record(entity, r) for r in body.get("value", [])]
            return out

        return await gather_by_chunks(wanted, fetch, field=info.primary_key, base_len=base_len, dataverse=True)

    # ------------------------------------------------------------------ writes
    async def write_many(self, entity: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        if not ops:
            return []
        # Fix every create's key up front: from here on any repetition of the create is harmless.
        fixed = [
            WriteOp(op.kind, op.ref, str(uuid.uuid4()), op.fields, op.etag) if op.kind == "create" and not op.id else op
            for op in ops
        ]
        creates = [(i, op) for i, op in enumerate(fixed) if op.kind == "create"]
        plain_updates = [(i, op) for i, op in enumerate(fixed) if op.kind == "update" and not op.etag]
        batched = [(i, op) for i, op in enumerate(fixed) if op.kind == "delete" or (op.kind == "update" and op.etag)]
        for op in fixed:
            if op.kind not in ("create", "update", "delete"):
                raise ValueError(f"unknown write kind {op.kind!r}")
        jobs = []
        n = self.bulk_size
        for group, action in ((creates, "CreateMultiple"), (plain_updates, "UpdateMultiple")):
            for k in range(0, len(group), n):
                jobs.append(self._bulk(entity, action, group[k : k + n]))
        for k in range(0, len(batched), n):
            jobs.append(self._batch(entity, batched[k : k + n]))
        results: dict[int, WriteResult] = {}
        for part in await asyncio.gather(*jobs):
            results.update(part)
        out = [results[i] for i in range(len(fixed))]
        self.calls.records_written += sum(1 for r in out if r.ok)
        return out

    def _target(self, info: EntityInfo, op: WriteOp) -> dict[str, Any]:
        row = {"@odata.type": f"Microsoft.Dynamics.CRM.{info.logical_name}", **op.fields}
        row[info.primary_key] = normalise_guid(str(op.id))
        return row

    async def _bulk(self, entity: str, action: str, group: list[tuple[int, WriteOp]]) -> dict[int, WriteResult]:
        if (entity, action) in self._no_bulk:
            return await self._batch(entity, group)
        info = self.entity(entity)
        try:
            await self._http.request(
                "POST",
                self._tagged(f"{self.api_root}/{entity}/Microsoft.Dynamics.CRM.{action}"),
                json={"Targets": [self._target(info, op) for _, op in group]},
                headers={**self._write_headers(), "Content-Type": "application/json"},
                kind="write",
                idempotent=True,  # fixed keys: a repeated create fails as duplicate, never duplicates
                what=f"{action} of {len(group)} {entity}",
            )
        except TransientError as e:
            # Throttled past the cap, or still failing: the rows' state is unknown but a later retry with
            # the same keys is safe; the engine re-queues them.
            return {i: WriteResult(op.ref, False, error=e) for i, op in group}
        except PermanentError as e:
            if _is_unsupported_bulk(e):
                log.info("%s does not support %s; using $batch", entity, action)
                self._no_bulk.add((entity, action))
            # All-or-nothing failed: one $batch tells which rows are bad (and applies the good ones).
            return await self._batch(entity, group)
        return {
            i: WriteResult(op.ref, True, record=RemoteRecord(id=normalise_guid(str(op.id)), fields=dict(op.fields)))
            for i, op in group
        }

    def _batch_part(self, info: EntityInfo, op: WriteOp) -> BatchPart:
        headers = dict(self._write_headers())
        if op.kind == "create":
            body = {**op.fields, info.primary_key: normalise_guid(str(op.id))}
            headers["Prefer"] = "return=representation"
            return BatchPart("POST", self._tagged(f"{self.api_root}/{info.entity_set}"), headers, body)
        if not op.id:
            raise ValueError(f"{op.kind} of {op.ref!r} needs an id")
        url = self._tagged(f"{self.api_root}/{info.entity_set}({normalise_guid(op.id)})")
        if op.kind == "update":
            headers["If-Match"] = op.etag or "*"  # "*": update only, never an upsert
            headers["Prefer"] = "return=representation"
            return BatchPart("PATCH", url, headers, dict(op.fields))
        if op.etag:
            headers["If-Match"] = op.etag
        return BatchPart("DELETE", url, headers)

    async def _batch(self, entity: str, group: list[tuple[int, WriteOp]]) -> dict[int, WriteResult]:
        """``$batch`` without change sets; requests left unanswered (a service that stops at the first
        error) are sent again in a following batch."""
        info = self.entity(entity)
        results: dict[int, WriteResult] = {}
        todo = list(group)
        while todo:
            ctype, body = build_batch([self._batch_part(info, op) for _, op in todo])
            try:
                response = await self._http.request(
                    "POST",
                    f"{self.api_root}/$batch",
                    content=body,
                    headers={"Content-Type": ctype, "Prefer": "odata.continue-on-error", **self._write_headers()},
                    kind="write",
                    # Repeating is harmless: creates have fixed keys (duplicate -> verified below), updates
                    # carry If-Match (412 -> verified), deletes tolerate 404.
                    idempotent=True,
                    what=f"$batch of {len(todo)} {entity}",
                )
                answers = parse_batch_response(response.headers.get("Content-Type", ""), response.content)
            except SyncError as e:
                results.update({i: WriteResult(op.ref, False, error=e) for i, op in todo})
                break
            except ValueError as e:
                err = TransientError(f"unreadable $batch response: {e}", service=SERVICE)
                results.update({i: WriteResult(op.ref, False, error=err) for i, op in todo})
                break
            for (i, op), answer in zip(todo, answers, strict=False):
                results[i] = self._result(entity, op, answer.status, answer.body, answer.headers)
            rest = todo[len(answers) :]
            if len(rest) == len(todo):  # no progress at all: do not loop
                err = TransientError("empty $batch response", service=SERVICE)
                results.update({i: WriteResult(op.ref, False, error=err) for i, op in rest})
                break
            todo = rest
        await self._verify_duplicates(entity, group, results)
        return results

    def _result(self, entity: str, op: WriteOp, status: int, body: Any, headers: Mapping[str, str]) -> WriteResult:
        if 200 <= status < 300:
            if isinstance(body, dict) and body:
                return WriteResult(op.ref, True, record=self._record(entity, body))
            if op.kind == "delete":
                return WriteResult(op.ref, True)
            return WriteResult(op.ref, True, record=RemoteRecord(id=normalise_guid(str(op.id)), fields=dict(op.fields)))
        if op.kind == "delete" and status == 404:
            return WriteResult(op.ref, True)  # already gone: deletes tolerate a missing target
        return WriteResult(op.ref, False, error=error_from_payload(status, body, SERVICE, headers))

    async def _verify_duplicates(
        self, entity: str, group: list[tuple[int, WriteOp]], results: dict[int, WriteResult]
    ) -> None:
        """A create refused as duplicate whose row exists was made by an earlier attempt (fixed key)."""
        dup = [
            (i, op) for i, op in group if op.kind == "create" and not results[i].ok and _is_duplicate(results[i].error)
        ]
        if not dup:
            return
        try:
            found = await self.get_many(entity, [str(op.id) for _, op in dup])
        except SyncError:
            return
        for i, op in dup:
            rec = found.get(normalise_guid(str(op.id)))
            if rec is not None:
                results[i] = WriteResult(op.ref, True, record=rec, existed=True)


def columns_missing_from(link: str, wanted: Sequence[str] | None) -> list[str]:
    """The ``wanted`` columns that a link's ``$select`` does not return (none when it has no ``$select``:
    every column comes back)."""
    values = parse_qs(urlsplit(link).query).get("$select")
    if not values or not wanted:
        return []
    have = {c.strip().lower() for v in values for c in v.split(",")}
    return [c for c in wanted if c.lower() not in have]


def _is_duplicate(err: Exception | None) -> bool:
    if not isinstance(err, SyncError):
        return False
    if err.code and err.code.lower() in DUPLICATE_CODES:
        return True
    return isinstance(err, ConflictError | PreconditionFailedError) and "duplicate" in err.message.lower()


def _is_expired_token(err: SyncError) -> bool:
    if err.code and err.code.lower() in EXPIRED_TOKEN_CODES:
        return True
    text = err.message.lower()
    return any(w in text for w in ("expired", "version stamp", "delta token", "deltatoken", "change tracking token"))


def _is_change_tracking_off(err: SyncError) -> bool:
    return "change tracking is not enabled" in err.message.lower()


def _is_unsupported_bulk(err: SyncError) -> bool:
    if err.code and err.code.lower() in UNSUPPORTED_BULK_CODES:
        return True
    if isinstance(err, NotFoundError) and err.code is None:
        return True
    text = err.message.lower()
    return any(
        w in text for w in ("not supported", "not enabled", "is not available", "resource not found for the segment")
    )
