"""Business Central API v2.0 client (``shared.ports.RecordService``).

- Reads: one company-scoped entity set, ``Prefer: odata.maxpagesize`` (large pages), ``@odata.nextLink``.
- Changes: ``$filter=lastModifiedDateTime gt <cursor - overlap>`` ordered by ``lastModifiedDateTime``; the
  cursor is the largest ``lastModifiedDateTime`` seen (ISO-8601). The overlap window re-reads the last few
  seconds so rows sharing the boundary timestamp are never missed; the engine de-duplicates by id +
  snapshot. BC has no deletion feed in API v2.0: ``deleted_ids`` is always empty (deletions are found by
  the engine's reconciliation / webhooks' ``deleted`` change type).
- Get many: chunked ``$filter=id in (...)`` GETs (the fewest calls that keep URLs < 8 KB).
- Writes: JSON ``$batch`` (<= 100 requests each, ``If-Match`` per request: ``op.etag`` or ``*``), batches
  sent concurrently within the per-user limit of 5; one ``WriteResult`` per op.

Create idempotency (BC assigns the ids): a ``$batch`` is never repeated blindly. 429/503 (not processed)
are retried by the pipeline. When a batch's outcome is unknown (500/502/504, timeout, connection reset
after sending), the client recovers once: creates whose natural key (``number`` by default; see
``natural_keys``) now exists are reported as created (BC numbers are unique, so a pre-existing one would
have failed anyway); the rest of the batch is sent once more; in that second send an update answering
412 whose target already holds the written values, and a delete answering 404, count as done. Creates
without a natural key in an ambiguous batch are not re-sent: they get a ``TransientError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential

from shared.config import Settings
from shared.connectors import _overlap
from shared.connectors._odata import (
    format_timestamp,
    gather_by_chunks,
    in_filter,
    normalise_guid,
    parse_timestamp,
    to_record,
    with_required,
)
from shared.connectors.http import ServiceClient, ServiceHttp, error_from_payload
from shared.domain.model import ChangePage, RemoteRecord, WriteOp, WriteResult
from shared.errors import (
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    SyncError,
    ThrottledError,
    TransientError,
)

log = logging.getLogger("shared.connectors.bc")

SERVICE = "businessCentral"
BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
BATCH_LIMIT = 100  # BC's maximum requests per $batch
DEFAULT_NATURAL_KEYS = {"customers": "number", "vendors": "number", "items": "number", "contacts": "number"}


class BusinessCentralClient(ServiceClient):
    """Async client of one BC environment + company. Build once per process; ``aclose()`` at the end."""

    def __init__(
        self,
        endpoint: Settings | str,
        credential: AsyncTokenCredential | None,
        *,
        company_id: str | None = None,
        scope: str | None = None,
        page_size: int = 20000,
        overlap_seconds: float = 2.0,
        max_concurrency: int = 5,
        batch_size: int = BATCH_LIMIT,
        natural_keys: Mapping[str, str] | None = None,
        retry_total_timeout: float = 30.0,
        retry_backoff_base: float = 0.5,
        requests_per_window: int | None = None,
        window_seconds: float = 300.0,
        transport: Any = None,
    ) -> None:
        if isinstance(endpoint, Settings):
            if requests_per_window is None:  # the service's request window, paced on our side
                requests_per_window = endpoint.bc_requests_per_window
                window_seconds = endpoint.bc_window_seconds
            self.api_root = endpoint.bc_api_root.rstrip("/")
            company_id = company_id or endpoint.bc_company_id
            scope = scope or endpoint.bc_audience.rstrip("/") + "/.default"
        else:
            self.api_root = endpoint.rstrip("/")
        if not 1 <= batch_size <= BATCH_LIMIT:
            raise ValueError(f"batch_size must be 1..{BATCH_LIMIT}")
        self._company_id = normalise_guid(company_id) if company_id else None
        self._company_lock = asyncio.Lock()
        self.page_size = page_size
        self.overlap = timedelta(seconds=overlap_seconds)
        self.batch_size = batch_size
        self.natural_keys = {**DEFAULT_NATURAL_KEYS, **(natural_keys or {})}
        self._http = ServiceHttp(
            service=SERVICE,
            base_url=self.api_root,
            credential=credential,
            scope=scope or BC_SCOPE,
            max_concurrency=max_concurrency,
            retry_total_timeout=retry_total_timeout,
            retry_backoff_base=retry_backoff_base,
            requests_per_window=requests_per_window or None,
            window_seconds=window_seconds,
            transport=transport,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: AsyncTokenCredential | None, **kw: Any
    ) -> BusinessCentralClient:
        return cls(settings, credential, **kw)

    # ------------------------------------------------------------------ lifecycle
    async def ping(self) -> None:
        """One cheap authenticated call (health check): raises the mapped ``SyncError`` when unusable."""
        await self._http.request(
            "GET", f"{self.api_root}/companies", params={"$top": "1", "$select": "id"}, kind="meta"
        )

    # ------------------------------------------------------------------ company
    async def company_id(self) -> str:
        """The configured company, else the first one (resolved once)."""
        if self._company_id:
            return self._company_id
        async with self._company_lock:
            if not self._company_id:
                response = await self._http.request("GET", f"{self.api_root}/companies", kind="meta")
                companies = response.json().get("value", [])
                if not companies:
                    raise NotFoundError("the Business Central environment has no company", service=SERVICE)
                self._company_id = normalise_guid(companies[0]["id"])
        return self._company_id

    def _root_of(self, entity: str) -> tuple[str, str]:
        """(API root, entity set) of an entity: ``customers`` is on API v2.0; ``contoso/sync/v1.0/widgets``
        is the custom API page ``widgets`` of ``.../api/contoso/sync/v1.0``."""
        if "/" not in entity:
            return self.api_root, entity
        route, name = entity.rsplit("/", 1)
        return f"{self.api_root.rsplit('/api/', 1)[0]}/api/{route}", name

    async def _entity_url(self, entity: str) -> str:
        root, name = self._root_of(entity)
        return f"{root}/companies({await self.company_id()})/{name}"

    async def get_metadata(self, api: str = "v2.0") -> str:
        """The EDMX ``$metadata`` document of API v2.0 or of a custom API route (``publisher/group/version``)."""
        root = self.api_root if api == "v2.0" else self._root_of(f"{api}/x")[0]
        response = await self._http.request(
            "GET", f"{root}/$metadata", headers={"Accept": "application/xml"}, kind="meta"
        )
        return response.text()

    async def probe(self, entity: str, filter: str) -> None:
        """One ``$top=1`` query with this filter: raises the mapped ``SyncError`` when BC refuses it."""
        await self._http.request(
            "GET", await self._entity_url(entity), params={"$filter": filter, "$top": "1", "$select": "id"}, kind="meta"
        )

    # ------------------------------------------------------------------ reads
    async def _pages(self, url: str, params: dict[str, str] | None) -> AsyncIterator[list[dict[str, Any]]]:
        headers = {"Prefer": f"odata.maxpagesize={self.page_size}"}
        seen: set[str] = set()
        next_url: str | None = url
        while next_url:
            response = await self._http.request("GET", next_url, params=params, headers=headers, kind="read")
            body = response.json()
            rows, next_url, params = body.get("value", []), body.get("@odata.nextLink"), None
            del response, body  # a 20,000-row page's body (bytes and text) is not held while its rows are used
            self.calls.records_read += len(rows)
            yield rows
            del rows
            if next_url in seen:  # a service bug would otherwise loop forever
                raise PermanentError("the same @odata.nextLink came back twice", service=SERVICE)
            if next_url:
                seen.add(next_url)

    @staticmethod
    def _record(row: dict[str, Any]) -> RemoteRecord:
        return to_record(row, id_field="id", modified_field="lastModifiedDateTime")

    async def list_records(
        self, entity: str, *, select: Sequence[str] | None = None, filter: str | None = None
    ) -> AsyncIterator[list[RemoteRecord]]:
        params: dict[str, str] = {}
        cols = with_required(select, "id", "lastModifiedDateTime")
        if cols:
            params["$select"] = ",".join(cols)
        if filter:
            params["$filter"] = filter
        async for rows in self._pages(await self._entity_url(entity), params or None):
            yield [self._record(r) for r in rows]

    async def iter_changes(
        self, entity: str, cursor: str | None, *, select: Sequence[str] | None = None
    ) -> AsyncIterator[ChangePage]:
        params: dict[str, str] = {"$orderby": "lastModifiedDateTime asc"}
        cols = with_required(select, "id", "lastModifiedDateTime")
        if cols:
            params["$select"] = ",".join(cols)
        stamp, delivered = _overlap.split_cursor(cursor)
        since = parse_timestamp(stamp) if stamp else None
        if cursor and since is None:
            raise PermanentError(f"invalid BC change cursor {cursor!r}", service=SERVICE)
        if since is not None:
            params["$filter"] = f"lastModifiedDateTime gt {format_timestamp(since - self.overlap)}"
        newest = since
        window = _overlap.Window(self.overlap)
        # Each page is handed over as soon as it is read (one page of records alive at a time, not two); the
        # cursor goes out on a last page of its own, once every row before it was handed over.
        async for rows in self._pages(await self._entity_url(entity), params):
            records = []
            for rec in map(self._record, rows):
                if rec.modified_on is None:
                    records.append(rec)
                    continue
                if newest is None or rec.modified_on > newest:
                    newest = rec.modified_on
                d = _overlap.digest(rec.id, rec.modified_on)
                window.add(rec.modified_on, d)
                if d not in delivered:  # the same version the last read handed over (overlap): dropped
                    records.append(rec)
            if newest is not None:
                window.trim(newest)
            rows.clear()  # the raw rows (``_pages`` still holds the list) are not kept while the page is used
            if records:
                yield ChangePage(records=records)
            del records
        last = ChangePage(records=[], is_last=True)
        if newest is None:
            last.next_cursor = cursor
        else:
            last.next_cursor = _overlap.join_cursor(format_timestamp(newest), window.remembered(newest))
        yield last

    async def get_many(
        self, entity: str, ids: Sequence[str], *, select: Sequence[str] | None = None
    ) -> dict[str, RemoteRecord]:
        wanted = list(dict.fromkeys(normalise_guid(i) for i in ids))
        if not wanted:
            return {}
        url = await self._entity_url(entity)
        cols = with_required(select, "id", "lastModifiedDateTime")
        base_len = len(url) + (len(",".join(cols)) + 12 if cols else 0)

        async def fetch(chunk: list[str]) -> list[RemoteRecord]:
            params = {"$filter": in_filter("id", chunk)}
            if cols:
                params["$select"] = ",".join(cols)
            out: list[RemoteRecord] = []
            async for rows in self._pages(url, params):
                out += [self._record(r) for r in rows]
            return out

        return await gather_by_chunks(wanted, fetch, field="id", base_len=base_len)

    # ------------------------------------------------------------------ writes
    async def write_many(self, entity: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        if not ops:
            return []
        company = await self.company_id()
        chunks = [list(ops[i : i + self.batch_size]) for i in range(0, len(ops), self.batch_size)]
        # Concurrency is bounded by the pipeline's limiter (5), so gather does not overrun BC.
        results = await asyncio.gather(*(self._write_chunk(entity, company, c) for c in chunks))
        flat = [r for chunk in results for r in chunk]
        self.calls.records_written += sum(1 for r in flat if r.ok)
        return flat

    def _batch_request(self, entity: str, company: str, n: int, op: WriteOp) -> dict[str, Any]:
        base = f"companies({company})/{self._root_of(entity)[1]}"
        headers: dict[str, str] = {}
        req: dict[str, Any] = {"id": str(n)}
        if op.kind == "create":
            req.update(method="POST", url=base, body=dict(op.fields))
            headers["Content-Type"] = "application/json"
        elif op.kind == "update":
            req.update(method="PATCH", url=f"{base}({self._op_id(op)})", body=dict(op.fields))
            headers.update({"Content-Type": "application/json", "If-Match": op.etag or "*"})
        elif op.kind == "delete":
            req.update(method="DELETE", url=f"{base}({self._op_id(op)})")
            headers["If-Match"] = op.etag or "*"
        else:
            raise ValueError(f"unknown write kind {op.kind!r}")
        req["headers"] = headers
        return req

    @staticmethod
    def _op_id(op: WriteOp) -> str:
        if not op.id:
            raise ValueError(f"{op.kind} of {op.ref!r} needs an id")
        return normalise_guid(op.id)

    async def _send_batch(self, entity: str, company: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """$batch calls for these ops (requests a service left unanswered, e.g. after stopping at a failure,
        were not executed and go out again); raises only when a call as a whole failed."""
        results: list[WriteResult | None] = [None] * len(ops)
        todo = list(range(len(ops)))
        while todo:
            body = {"requests": [self._batch_request(entity, company, i, ops[i]) for i in todo]}
            response = await self._http.request(
                "POST",
                f"{self._root_of(entity)[0]}/$batch",
                json=body,
                # every request its own outcome: a failing one must not stop the others
                headers={"Content-Type": "application/json", "Prefer": "odata.continue-on-error"},
                kind="write",
                idempotent=False,  # creates have no client key: never repeated on an ambiguous failure
                what=f"$batch of {len(todo)} {entity}",
            )
            answers = {str(a.get("id")): a for a in response.json().get("responses", [])}
            left = []
            for i in todo:
                answer = answers.get(str(i))
                if answer is None:
                    left.append(i)
                else:
                    results[i] = self._result(ops[i], int(answer.get("status", 500)), answer.get("body"),
                                              answer.get("headers"))  # fmt: skip
            if len(left) == len(todo):
                err = TransientError("no answer for this request in the $batch response", service=SERVICE)
                for i in left:
                    results[i] = WriteResult(ops[i].ref, False, error=err)
                break
            todo = left
        return [r for r in results if r is not None]

    def _result(self, op: WriteOp, status: int, body: Any, headers: Mapping[str, str] | None) -> WriteResult:
        if 200 <= status < 300:
            record = self._record(body) if isinstance(body, dict) and body.get("id") else None
            if record is None and op.kind != "delete" and op.id:
                record = RemoteRecord(id=normalise_guid(op.id), fields=dict(op.fields))
            return WriteResult(op.ref, True, record=record)
        if op.kind == "delete" and status == 404:
            return WriteResult(op.ref, True)  # already gone: deletes tolerate a missing target
        return WriteResult(op.ref, False, error=error_from_payload(status, body, SERVICE, headers))

    async def _write_chunk(self, entity: str, company: str, ops: list[WriteOp]) -> list[WriteResult]:
        try:
            return await self._send_batch(entity, company, ops)
        except (ThrottledError, PermanentError) as e:
            # Not processed (throttled past the retry cap, or rejected as a whole): same error per op.
            return [WriteResult(op.ref, False, error=e) for op in ops]
        except TransientError as e:
            if e.status in (503,):  # refused before processing, retries exhausted
                return [WriteResult(op.ref, False, error=e) for op in ops]
            log.warning("BC $batch outcome unknown (%s); recovering %d ops", e, len(ops))
            return await self._recover(entity, company, ops, e)

    async def _recover(self, entity: str, company: str, ops: list[WriteOp], cause: SyncError) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        key = self.natural_keys.get(entity)
        creates = [(i, op) for i, op in enumerate(ops) if op.kind == "create"]
        keyed = [(i, op) for i, op in creates if key and op.fields.get(key) not in (None, "")]
        for i, op in creates:
            if (i, op) not in keyed:
                msg = f"outcome of the create is unknown ({cause}); not re-sent (no natural key)"
                results[i] = WriteResult(
                    op.ref, False, error=TransientError(msg, code="outcome_unknown", service=SERVICE)
                )
        if keyed and key:
            try:
                existing = await self._find_by_key(entity, key, [str(op.fields[key]) for _, op in keyed])
            except SyncError as e:
                existing = None
                for i, op in keyed:
                    results[i] = WriteResult(op.ref, False, error=e)
            if existing is not None:
                for i, op in keyed:
                    rec = existing.get(str(op.fields[key]))
                    if rec is not None:
                        results[i] = WriteResult(op.ref, True, record=rec)
        resend = [(i, op) for i, op in enumerate(ops) if i not in results]
        if resend:
            try:
                again = await self._send_batch(entity, company, [op for _, op in resend])
            except SyncError as e:
                again = [WriteResult(op.ref, False, error=e) for _, op in resend]
            to_verify: list[tuple[int, WriteOp]] = []
            for (i, op), res in zip(resend, again, strict=True):
                results[i] = res
                if op.kind == "update" and isinstance(res.error, PreconditionFailedError):
                    to_verify.append((i, op))
            if to_verify:
                current = await self.get_many(entity, [self._op_id(op) for _, op in to_verify])
                for i, op in to_verify:
                    rec = current.get(self._op_id(op))
                    if rec is not None and all(rec.fields.get(k) == v for k, v in op.fields.items()):
                        results[i] = WriteResult(op.ref, True, record=rec)  # the first send had applied it
        return [results[i] for i in range(len(ops))]

    async def _find_by_key(self, entity: str, key: str, values: list[str]) -> dict[str, RemoteRecord]:
        url = await self._entity_url(entity)
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
        found: dict[str, RemoteRecord] = {}
        async for rows in self._pages(url, {"$filter": f"{key} in ({quoted})"}):
            for row in rows:
                found[str(row.get(key))] = self._record(row)
        return found

    # ------------------------------------------------------------------ webhook subscriptions
    async def create_subscription(self, notification_url: str, resource: str, client_state: str) -> dict[str, Any]:
        """Registers a webhook (BC calls ``notification_url?validationToken=...`` first). ``resource`` is
        relative to the API root, e.g. ``companies(<id>)/customers``; the answer has ``subscriptionId``,
        ``expirationDateTime`` and ``@odata.etag``."""
        body = {"notificationUrl": notification_url, "resource": resource, "clientState": client_state}
        # Not repeated on an ambiguous failure: a duplicate subscription is harmless but listed twice.
        response = await self._http.request("POST", f"{self.api_root}/subscriptions", json=body, kind="meta")
        return dict(response.json())

    async def renew_subscription(self, subscription_id: str, etag: str, **fields: Any) -> dict[str, Any]:
        """Extends the expiry (BC: PATCH with the subscription's ETag; ``fields`` as BC requires them)."""
        response = await self._http.request(
            "PATCH",
            f"{self.api_root}/subscriptions('{subscription_id}')",
            json=dict(fields),
            headers={"If-Match": etag, "Content-Type": "application/json"},
            kind="meta",
            idempotent=True,
        )
        return dict(response.json()) if response.content else {}

    async def delete_subscription(self, subscription_id: str) -> None:
        try:
            await self._http.request("DELETE", f"{self.api_root}/subscriptions('{subscription_id}')", kind="meta")
        except NotFoundError:
            return

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        response = await self._http.request("GET", f"{self.api_root}/subscriptions", kind="meta")
        return list(response.json().get("value", []))
