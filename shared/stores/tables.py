"""The one place for Table Storage plumbing: client + lazy table creation, key escaping, error mapping,
transaction batching, point-read lookups, lean reads and paging with opaque continuation tokens.

Transient retries are azure-core's ``AsyncTablesRetryPolicy`` (5xx, 408, 429, timeouts, connection errors),
configured once in :func:`build_service_client`; nothing here retries transient failures again. The loops in
the stores only retry *optimistic-concurrency* outcomes (412 / 409), which are not transient.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import re
import ssl
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, SansIOHTTPPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.domain.errors import InvalidContinuationError
from shared.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    SyncError,
    ThrottledError,
    TransientError,
    UnauthorizedError,
    classify_status,
)
from shared.stores import table_batch
from shared.stores._json import spaced_str
from shared.urlquote import quote_fast

SERVICE = "tables"
MAX_BATCH = 100  # entities per transaction (Azurite answers more with a malformed response)
MAX_BATCH_BYTES = 3_500_000  # transaction payload limit is 4 MiB; keep headroom for the multipart framing
MAX_PAGE = 1000  # rows per query page (service maximum)
MAX_FILTER_KEYS = 14  # at most 15 comparisons per $filter; one is the PartitionKey
# A key-list query (:func:`key_rows`) spends one comparison on the PartitionKey and two on the RowKey range.
KEYS_PER_QUERY = MAX_FILTER_KEYS - 2
LOOKUP_CONCURRENCY = 8
BATCH_CONCURRENCY = 4  # transactions in flight per call (different rows, so order does not matter)

T = TypeVar("T")
Entity = dict[str, Any]
Op = tuple[Any, ...]  # ("create" | "upsert" | "update" | "delete", entity[, kwargs]) as TableClient expects


# ----------------------------------------------------------------------------- operation counter
class OpCounter:
    """Counts every HTTP request sent to the table service (retries and ``$batch`` included, once each)."""

    def __init__(self) -> None:
        self.count = 0

    def reset(self) -> int:
        before, self.count = self.count, 0
        return before

    def hook(self, request: PipelineRequest[Any]) -> None:  # azure-core raw_request_hook
        self.count += 1


class ReadCounter:
    """Entities the service returned to reads (point reads and query pages), process-wide: what a lookup
    touched, whether it used the rows or not (#23: entities read per changed record)."""

    def __init__(self) -> None:
        self.count = 0

    def reset(self) -> int:
        before, self.count = self.count, 0
        return before


ENTITIES_READ = ReadCounter()


# ----------------------------------------------------------------------------- keys
# Forbidden in PartitionKey/RowKey: / \ # ? and control characters; '%' is the escape itself.
_ESCAPE_RE = re.compile(r"[%/\\#?\x00-\x1f\x7f-\x9f]")
_UNESCAPE_RE = re.compile(r"%([0-9A-F]{2})")


def escape_key(value: str) -> str:
    """Reversible percent-encoding of the characters Table Storage forbids in keys."""
    return _ESCAPE_RE.sub(lambda m: f"%{ord(m.group()):02X}", value)


def unescape_key(value: str) -> str:
    return _UNESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), value)


def norm_id(record_id: str) -> str:
    """Key form of a record id: GUIDs compare case-insensitively (contract), so keys are lower-case."""
    return escape_key(record_id.lower())


def quote(value: str) -> str:
    """An OData string literal."""
    return "'" + value.replace("'", "''") + "'"


def prefix_range(prefix: str) -> str:
    """``RowKey`` filter for every key starting with ``prefix`` (prefixes end in ':' whose successor is ';')."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return f"RowKey ge {quote(prefix)} and RowKey lt {quote(upper)}"


def encode_token(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> Any:
    """Inverse of :func:`encode_token`; a malformed token is a caller error (``ValueError``)."""
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidContinuationError("continuation is not a token this service issued.") from e


def _is_table_token(token: Any) -> bool:
    """The shape of a Table Storage continuation token (next partition/row key): a tampered token of valid
    base64 but another JSON shape is refused here, not passed on to the SDK."""
    return isinstance(token, dict) and all(
        k in ("PartitionKey", "RowKey") and (v is None or isinstance(v, str)) for k, v in token.items()
    )


# ----------------------------------------------------------------------------- values
def utcnow() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime | None) -> datetime | None:
    """Plain aware UTC ``datetime`` (the SDK returns its own subclass; naive values are taken as UTC)."""
    if value is None:
        return None
    if type(value) is datetime and value.tzinfo is UTC:  # already one (the common case): immutable, as is
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, tzinfo=UTC
    )


def etag_of(entity: Entity) -> str | None:
    meta = getattr(entity, "metadata", None)
    return meta.get("etag") if meta else None


def dt_literal(value: datetime) -> str:
    return "datetime'" + to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "'"  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- errors
def map_error(error: AzureError) -> SyncError:
    """azure-core exception -> the adapter taxonomy of ``shared.errors`` (caller raises it ``from`` the original)."""
    status = getattr(error, "status_code", None)
    code = getattr(error, "error_code", None)
    code = str(code.value if hasattr(code, "value") else code) if code else None
    message = getattr(error, "message", None) or str(error)
    kw: dict[str, Any] = {"code": code, "status": status, "service": SERVICE}
    if isinstance(error, ResourceExistsError):
        return ConflictError(message, **kw)
    if isinstance(error, ResourceModifiedError):
        return PreconditionFailedError(message, **kw)
    if isinstance(error, ResourceNotFoundError):
        return NotFoundError(message, **kw)
    if isinstance(error, ClientAuthenticationError):
        return UnauthorizedError(message, **kw)
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return TransientError(message, **kw)
    if isinstance(error, HttpResponseError) and status:
        cls = classify_status(status)
        if cls is ThrottledError:
            return ThrottledError(message, **kw)
        return cls(message, **kw)
    return PermanentError(message, **kw)


async def call(awaitable: Awaitable[T]) -> T:
    """Await one table call, translating azure-core errors (the single error-mapping point)."""
    try:
        return await awaitable
    except TableTransactionError:
        raise  # callers inspect .index to drop the failing operation
    except AzureError as e:
        raise map_error(e) from e


def is_status(error: BaseException, *statuses: int) -> bool:
    return getattr(error, "status_code", None) in statuses or getattr(error, "status", None) in statuses


# ----------------------------------------------------------------------------- client + tables
@dataclass(frozen=True, slots=True)
class TableNames:
    couplings: str
    errors: str
    jobs: str
    watermarks: str
    settings: str

    @classmethod
    def with_prefix(cls, prefix: str) -> TableNames:
        return cls(
            couplings=f"{prefix}Couplings",
            errors=f"{prefix}Errors",
            jobs=f"{prefix}Jobs",
            watermarks=f"{prefix}Watermarks",
            settings=f"{prefix}MappingSettings",
        )


@functools.cache
def ssl_context(ca_file: str) -> ssl.SSLContext:
    """The process's one TLS context trusting ``ca_file`` (loading a CA bundle costs ~1 ms of CPU)."""
    return ssl.create_default_context(cafile=ca_file)


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class TablesTransport(AioHttpTransport):
    """The Table clients' aiohttp transport, built once per process (one session, shared by every TableClient
    derived from the TableServiceClient). Two per-request costs of azure-core's default removed (#23):

    - with ``connection_verify`` a CA path, azure-core builds a new ``SSLContext`` (and loads the CA file) for
      EVERY request; here the process's cached context (:func:`ssl_context`) is handed out instead;
    - its session trusts the environment, so aiohttp reads ``~/.netrc`` and the proxy variables in a worker
      thread on EVERY request (two thread hops, most of a point read's client CPU); here the environment is
      trusted only when a proxy variable is actually set.
    """

    def __init__(self, *, connection_verify: bool | str = True) -> None:
        super().__init__(
            connection_verify=connection_verify, use_env_settings=any(os.environ.get(v) for v in PROXY_VARIABLES)
        )

    def _build_ssl_config(self, cert: Any, verify: Any) -> Any:
        if not cert and isinstance(verify, str):
            return ssl_context(verify)
        return super()._build_ssl_config(cert, verify)


OneContextTransport = TablesTransport  # the name the TLS tests use


class FusedSansIOPolicies(AsyncHTTPPolicy):  # type: ignore[type-arg]
    """Consecutive SansIO policies of a pipeline run as ONE step, with exactly the nesting azure-core gives
    them: ``on_request`` in order, then the rest of the pipeline, then ``on_response`` (or ``on_exception``)
    in reverse order, each only for the policies whose ``on_request`` ran. azure-core wraps each SansIO policy
    in its own runner coroutine and awaits each hook through ``await_result`` (an ``isinstance(result,
    typing.Awaitable)`` check, ~40 µs of CPU per request over the Table pipeline's ten SansIO policies, #23);
    here a hook's result is awaited only when it is one."""

    def __init__(self, policies: Sequence[SansIOHTTPPolicy]) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.policies = list(policies)
        self._reversed = self.policies[::-1]

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        entered = 0
        try:
            for policy in self.policies:
                result = policy.on_request(request)
                if result is not None:
                    await result
                entered += 1
            response = await self.next.send(request)
        except Exception:
            for policy in self.policies[entered - 1 :: -1] if entered else ():
                result = policy.on_exception(request)
                if result is not None:
                    await result
            raise
        left = len(self.policies)
        try:
            for policy in self._reversed:
                left -= 1
                result = policy.on_response(request, response)
                if result is not None:
                    await result
        except Exception:  # as when an inner runner's on_response raises: the outer ones see the exception
            for policy in self.policies[left - 1 :: -1] if left else ():
                result = policy.on_exception(request)
                if result is not None:
                    await result
            raise
        return response


def fused_policies(policies: Iterable[Any]) -> list[Any]:
    """``policies`` (a pipeline's list, in order) with each run of consecutive SansIO policies fused into one
    :class:`FusedSansIOPolicies` step: the same policy objects (token cache, retry settings, op counter hook),
    in the same order, with the same hooks called."""
    out: list[Any] = []
    run: list[SansIOHTTPPolicy] = []  # type: ignore[type-arg]
    for policy in policies:
        if isinstance(policy, SansIOHTTPPolicy):
            run.append(policy)
            continue
        if run:
            out.append(FusedSansIOPolicies(run))
            run = []
        if policy:
            out.append(policy)
    if run:
        out.append(FusedSansIOPolicies(run))
    return out


def build_service_client(
    *,
    connection_string: str | None = None,
    endpoint: str | None = None,
    credential: AsyncTokenCredential | None = None,
    counter: OpCounter | None = None,
    ca_file: str | None = None,
    audience: str | None = None,
    retry_total: int = 5,
) -> TableServiceClient:
    """The process's one TableServiceClient; its pipeline (retry policy, op counter) is shared by every
    TableClient derived from it."""
    kwargs: dict[str, Any] = {
        "retry_total": retry_total,
        "retry_backoff_factor": 0.4,
        "retry_backoff_max": 20,
    }
    if counter is not None:
        kwargs["raw_request_hook"] = counter.hook
    kwargs["transport"] = TablesTransport(connection_verify=ca_file or True)  # see TablesTransport
    if connection_string:
        return TableServiceClient.from_connection_string(connection_string, **kwargs)
    if not endpoint or credential is None:
        raise ValueError("either a connection string or an endpoint with a credential is required")
    # Audience https://storage.azure.com -> scope https://storage.azure.com/.default (Azurite accepts it too).
    return TableServiceClient(endpoint, credential=credential, audience=audience, **kwargs)


def table_client(service: TableServiceClient, name: str) -> TableClient:
    """``service.get_table_client(name)`` over a pipeline of the same policies with the SansIO ones fused
    (:func:`fused_policies`): same transport (connections), credential policy (token cache), retry policy
    and op counter, fewer steps per request."""
    policies = getattr(service, "_policies", None)
    transport = getattr(getattr(getattr(service._client, "_client", None), "_pipeline", None), "_transport", None)
    if not policies or transport is None:
        return service.get_table_client(name)
    from azure.data.tables.aio._base_client_async import AsyncTransportWrapper

    return TableClient(
        service.url,
        table_name=name,
        credential=service.credential,
        api_version=service.api_version,
        pipeline=AsyncPipeline(transport=AsyncTransportWrapper(transport), policies=fused_policies(policies)),
        location_mode=service._location_mode,
        _hosts=service._hosts,
    )


class TableProvider:
    """Hands out TableClients, creating each table once per process (lazily, idempotently)."""

    def __init__(self, service: TableServiceClient) -> None:
        self.service = service
        self._ready: dict[str, TableClient] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> TableClient:
        client = self._ready.get(name)
        if client is not None:
            return client
        async with self._lock:
            if name not in self._ready:
                try:
                    await self.service.create_table(name)
                except ResourceExistsError:
                    pass
                except AzureError as e:
                    raise map_error(e) from e
                self._ready[name] = table_client(self.service, name)
            return self._ready[name]

    async def close(self) -> None:
        for client in self._ready.values():
            await client.close()
        self._ready.clear()
        await self.service.close()


# ----------------------------------------------------------------------------- batching
def _op_size(op: Op) -> int:
    return len(spaced_str(op[1])) + 300  # entity JSON (json.dumps(default=str)) + per-part multipart headers


async def submit(table: TableClient, ops: Sequence[Op]) -> list[Entity]:
    """One transaction (all ops in one partition, ≤100). Raises ``TableTransactionError`` (with ``.index``)
    when an operation fails, other azure errors mapped to ``shared.errors``."""
    if len(ops) == 1:
        return [await _single(table, ops[0])]
    return await call(table_batch.submit_transaction(table, ops))


async def _single(table: TableClient, op: Op) -> Entity:
    """A lone operation as a plain request (cheaper for the service; same semantics and error type)."""
    kind, entity = op[0], op[1]
    kw = dict(op[2]) if len(op) > 2 else {}
    try:
        if kind == "create":
            return await table.create_entity(entity)
        if kind == "upsert":
            return await table.upsert_entity(entity, mode=kw.get("mode", UpdateMode.MERGE))
        if kind == "update":
            return await table.update_entity(entity, **kw)
        await table.delete_entity(entity["PartitionKey"], entity["RowKey"], **kw)
        return {}
    except AzureError as e:
        # Same shape as a failed transaction so callers handle one error type.
        raise TableTransactionError(
            message=f"0:{getattr(e, 'message', e)}", response=getattr(e, "response", None)
        ) from e


def failure_kind(error: TableTransactionError) -> str:
    """'exists' | 'modified' | 'missing' | 'other' for a failed operation."""
    cause = error.__cause__
    if isinstance(cause, ResourceExistsError):
        return "exists"
    if isinstance(cause, ResourceModifiedError):
        return "modified"
    if isinstance(cause, ResourceNotFoundError):
        return "missing"
    code = str(getattr(error.error_code, "value", error.error_code) or "")
    status = error.status_code
    if code == "EntityAlreadyExists" or status == 409:
        return "exists"
    if code in ("UpdateConditionNotSatisfied", "ConditionNotMet") or status == 412:
        return "modified"
    if code == "ResourceNotFound" or status == 404:
        return "missing"
    return "other"


def transaction_failure(error: TableTransactionError) -> SyncError:
    kind = failure_kind(error)
    cls = {"exists": ConflictError, "modified": PreconditionFailedError, "missing": NotFoundError}.get(kind)
    if cls is None:
        return map_error(error)
    return cls(error.message or str(error), code=str(error.error_code or "") or None, status=error.status_code)


async def submit_tolerant(
    table: TableClient,
    ops: Sequence[Op],
    *,
    drop: Callable[[int, str], Iterable[int]],
    groups: Sequence[Sequence[int]] | None = None,
) -> list[Entity | None]:
    """Submit one partition's ``ops`` in transactions; when an op fails, ``drop(index, kind)`` names the
    indexes (into ``ops``) to leave out (e.g. both rows of one coupling) and the rest of that transaction is
    resubmitted. ``groups`` keeps related ops in the same transaction. Returns the per-op result (``None``
    for dropped ops); an op ``drop`` does not remove aborts with the mapped error."""
    results: list[Entity | None] = [None] * len(ops)
    sem = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def run(chunk: list[int]) -> None:
        pending = list(chunk)
        while pending:
            try:
                async with sem:
                    out = await submit(table, [ops[i] for i in pending])
            except TableTransactionError as e:
                failed = pending[e.index] if 0 <= e.index < len(pending) else pending[0]
                removed = set(drop(failed, failure_kind(e)))
                if failed not in removed:
                    raise transaction_failure(e) from e
                pending = [i for i in pending if i not in removed]
                continue
            for i, res in zip(pending, out, strict=False):
                results[i] = res
            pending = []

    await asyncio.gather(*(run(chunk) for chunk in group_chunks(ops, groups)))
    return results


async def submit_partitioned(
    table: TableClient,
    ops: Sequence[Op],
    *,
    drop: Callable[[int, str], Iterable[int]],
    groups: Sequence[Sequence[int]] | None = None,
) -> list[Entity | None]:
    """:func:`submit_tolerant` for ops over several partitions (a transaction holds one partition's rows): one
    call per partition, concurrently. ``drop`` and ``groups`` use indexes into ``ops``; a group stays within
    one partition."""
    parts: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        parts.setdefault(op[1]["PartitionKey"], []).append(i)
    results: list[Entity | None] = [None] * len(ops)

    async def one(idx: list[int]) -> None:
        local = {g: n for n, g in enumerate(idx)}
        sub = None if groups is None else [[local[i] for i in g] for g in groups if g and g[0] in local]
        out = await submit_tolerant(
            table,
            [ops[i] for i in idx],
            drop=lambda n, kind: [local[g] for g in drop(idx[n], kind) if g in local],
            groups=sub,
        )
        for i, res in zip(idx, out, strict=True):
            results[i] = res

    await asyncio.gather(*(one(idx) for idx in parts.values()))
    return results


def group_chunks(ops: Sequence[Op], groups: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """Pack op indexes into transactions of ≤100 ops and ≤``MAX_BATCH_BYTES`` without splitting a group."""
    if groups is None:
        groups = [[i] for i in range(len(ops))]
    chunks: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for group in groups:
        size = sum(_op_size(ops[i]) for i in group)
        if current and (len(current) + len(group) > MAX_BATCH or current_bytes + size > MAX_BATCH_BYTES):
            chunks.append(current)
            current, current_bytes = [], 0
        current.extend(group)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks


# ----------------------------------------------------------------------------- reads
async def get_row(table: TableClient, pk: str, rk: str) -> Entity | None:
    try:
        row = await table.get_entity(pk, rk)
        ENTITIES_READ.count += 1
        return row
    except ResourceNotFoundError:
        return None
    except AzureError as e:
        raise map_error(e) from e


async def query_all(
    table: TableClient, query: str, *, select: list[str] | None = None, page_size: int = MAX_PAGE, lean: bool = True
) -> AsyncIterator[list[Entity]]:
    """Every matching row, one service page (≤1,000 rows, one request) at a time (decoded by the lean reader
    unless ``lean`` is False or it is unavailable)."""
    if lean and _pipeline(table) is not None and not getattr(table, "_cosmos_endpoint", False):
        async for raw in raw_pages(table, query, select=select, page_size=page_size):
            yield [entity_of(r) for r in raw]
        return
    if query:
        pages = table.query_entities(query, results_per_page=page_size, select=select).by_page()
    else:
        pages = table.list_entities(results_per_page=page_size, select=select).by_page()
    try:
        async for page in pages:
            rows = [row async for row in page]
            ENTITIES_READ.count += len(rows)
            if rows:
                yield rows
    except AzureError as e:
        raise map_error(e) from e


async def query_page(
    table: TableClient,
    query: str,
    *,
    top: int,
    continuation: str | None,
    select: list[str] | None = None,
) -> tuple[list[Entity], str | None]:
    """One page of ≤``top`` rows and the opaque token of the next page (``None`` at the end). Pages that a
    filtered scan returns empty are skipped so a page is only empty at the end."""
    token: Any = decode_token(continuation) if continuation else None
    if token is not None and not _is_table_token(token):
        raise InvalidContinuationError("continuation is not a token this service issued.")
    top = max(1, min(top, MAX_PAGE))
    try:
        while True:
            pages = table.query_entities(query, results_per_page=top, select=select).by_page(continuation_token=token)
            rows: list[Entity] = []
            async for page in pages:
                rows = [row async for row in page]
                ENTITIES_READ.count += len(rows)
                break
            token = pages.continuation_token or None
            if rows or not token:
                return rows, encode_token(token) if token else None
    except AzureError as e:
        raise map_error(e) from e


async def lookup_rows(table: TableClient, pk: str, row_keys: Iterable[str]) -> dict[str, Entity]:
    """Rows by key in one partition: concurrent point reads, each touching only its row (an OR-filter of row
    keys is a partition scan on the service, see docs/storage.md)."""
    return await point_rows(table, pk, row_keys)


# ----------------------------------------------------------------------------- lean reads
# The SDK decodes every property of every row through a generic deserializer (~47 µs a coupling row) and
# builds a paged iterator per query; these read through the table client's own pipeline (authentication,
# retries, the operation counter apply as before) and decode a row with one dict pass.
POINT_CONCURRENCY = 16
# Lean reads in flight per process (event loop), whatever the number of partitions a lookup spans (#23): a
# lookup over 16 buckets at POINT_CONCURRENCY each opened up to 256 requests at once, so the connection pool
# grew to aiohttp's 100 connections, each a new TLS handshake (~1 ms of CPU), instead of reusing a few.
READ_CONCURRENCY = 16
_read_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    sem = _read_slots.get(loop)
    if sem is None:
        sem = _read_slots[loop] = asyncio.Semaphore(READ_CONCURRENCY)
    return sem


_ACCEPT = "application/json;odata=minimalmetadata"


def _edm_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value)  # 3.11: 'Z' and 7 fraction digits (truncated to µs)


_EDM_DECODE: dict[str, Callable[[Any], Any]] = {
    "Edm.DateTime": _edm_datetime,
    "Edm.Int64": int,
    "Edm.Double": float,
    "Edm.Guid": uuid.UUID,
    "Edm.Binary": base64.b64decode,
}


def entity_of(raw: dict[str, Any]) -> TableEntity:
    """A service JSON row (``odata=minimalmetadata``) as the SDK's ``TableEntity`` (``.metadata`` with the
    etag and timestamp; typed values decoded), in one pass over the properties."""
    entity = TableEntity()
    typed: list[tuple[str, Any]] = []
    for name, value in raw.items():  # annotations: odata.etag, X@odata.type (before or after X)
        if "@" in name:
            if name.endswith("@odata.type"):
                typed.append((name[:-11], value))
        elif not name.startswith("odata."):
            entity[name] = value
    for prop, kind in typed:
        decode = _EDM_DECODE.get(kind)
        if decode is not None and entity.get(prop) is not None:
            entity[prop] = decode(entity[prop])
    timestamp = entity.pop("Timestamp", None)
    if isinstance(timestamp, str):
        timestamp = _edm_datetime(timestamp)
    entity._metadata = {"etag": raw.get("odata.etag"), "timestamp": timestamp}  # type: ignore[misc]
    return entity


def _pipeline(table: TableClient) -> Any:
    return getattr(getattr(table, "_client", None), "_client", None)


def query_url(url: str, params: dict[str, str] | None) -> str:
    """``url`` with ``params`` as its query, each value percent-encoded (a key's escape '%2F' must reach the
    service as such, not as '/'): the text azure-core's ``HttpRequest(params=)`` joins from pre-quoted values,
    built here without its per-request URL re-parsing."""
    if not params:
        return url
    return url + "?" + "&".join(f"{k}={quote_fast(v, safe='')}" for k, v in params.items())


async def _send(table: TableClient, url: str, params: dict[str, str] | None = None) -> Any:
    headers = {
        "Accept": _ACCEPT,
        "DataServiceVersion": "3.0",
        "x-ms-version": table.api_version,
        # What RequestIdPolicy would add (it keeps a caller's id): a uuid4 costs ~2 µs where its uuid1 costs
        # ~11 µs and a lock on the clock file.
        "x-ms-client-request-id": str(uuid.uuid4()),
    }
    request = HttpRequest("GET", query_url(url, params), headers=headers)
    try:
        async with _slots():
            response = await _pipeline(table).send_request(request, stream=True)
            await response.read()
    except AzureError as e:
        raise map_error(e) from e
    if response.status_code >= 300 and response.status_code != 404:
        error = table_batch._decode_error(response)
        raise map_error(error) from error
    return response


def _base(table: TableClient) -> str:
    return f"{table.scheme}://{table._primary_hostname}/{table.table_name}"


async def raw_pages(
    table: TableClient, query: str, *, select: list[str] | None = None, page_size: int = MAX_PAGE
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching row as the service's JSON (undecoded: a scan decodes only the rows it keeps), one
    service page at a time; the SDK's paging when the lean path is unavailable."""
    if _pipeline(table) is None or getattr(table, "_cosmos_endpoint", False):
        async for page in query_all(table, query, select=select, page_size=page_size, lean=False):
            yield page
        return
    params: dict[str, str] = {"$top": str(page_size)}
    if query:
        params["$filter"] = query
    if select:
        params["$select"] = ",".join(select)
    while True:
        response = await _send(table, _base(table) + "()", params)
        npk = response.headers.get("x-ms-continuation-NextPartitionKey")
        nrk = response.headers.get("x-ms-continuation-NextRowKey")
        rows = json.loads(response.content or b"{}").get("value") or []
        del response  # neither the body nor the decoded page is held while the next page is awaited
        ENTITIES_READ.count += len(rows)
        if rows:
            yield rows
        del rows
        if not npk and not nrk:
            return
        params = {k: v for k, v in params.items() if k.startswith("$")}
        if npk:
            params["NextPartitionKey"] = npk
        if nrk:
            params["NextRowKey"] = nrk


async def point_rows(table: TableClient, pk: str, row_keys: Iterable[str]) -> dict[str, Entity]:
    """Rows by key: one point read (``GET Table(PartitionKey,RowKey)``) per key, ``POINT_CONCURRENCY`` at a
    time; a missing row is a 404 answer, not an exception."""
    keys = sorted(set(row_keys))
    if not keys:
        return {}
    if _pipeline(table) is None or getattr(table, "_cosmos_endpoint", False):
        rows = await asyncio.gather(*(get_row(table, pk, k) for k in keys))
        return {k: r for k, r in zip(keys, rows, strict=True) if r is not None}
    from shared.stores.table_batch import _key

    base, quoted_pk = _base(table), _key(pk)
    sem = asyncio.Semaphore(POINT_CONCURRENCY)

    async def one(rk: str) -> Entity | None:
        async with sem:
            response = await _send(table, f"{base}(PartitionKey='{quoted_pk}',RowKey='{_key(rk)}')")
        if response.status_code == 404:
            return None
        ENTITIES_READ.count += 1
        return entity_of(json.loads(response.content))

    found = await asyncio.gather(*(one(k) for k in keys))
    return {k: r for k, r in zip(keys, found, strict=True) if r is not None}


def key_list_filter(pk: str, keys: Sequence[str]) -> str:
    """``$filter`` for a few rows of one partition by key (sorted keys, at most ``KEYS_PER_QUERY``): bounded by
    their key range, so the service serves it as a range query whose rows it filters by the ``eq`` terms,
    never as a scan of the partition (an OR of RowKeys alone is one, docs/storage.md "Lookups")."""
    if not 0 < len(keys) <= KEYS_PER_QUERY:
        raise ValueError(f"a key-list query takes 1 to {KEYS_PER_QUERY} keys, not {len(keys)}")
    low, high = min(keys), max(keys)
    eqs = " or ".join(f"RowKey eq {quote(k)}" for k in keys)
    return f"PartitionKey eq {quote(pk)} and RowKey ge {quote(low)} and RowKey le {quote(high)} and ({eqs})"


async def key_rows(table: TableClient, pk: str, row_keys: Iterable[str]) -> dict[str, Entity]:
    """Rows by key in one partition, ``KEYS_PER_QUERY`` keys per query (consecutive in key order, so the
    queries' ranges do not overlap: the service reads each row of ``[min key, max key]`` at most once and
    returns only the rows asked for), ``POINT_CONCURRENCY`` queries at a time. One request answers up to 12
    keys where a point read answers one (#23: a request costs ~0.7-1.2 ms of client CPU, a row ~5 µs). For
    keys dense in their range only: the caller decides (``coupling_store.lookup_plan``)."""
    keys = sorted(set(row_keys))
    if not keys:
        return {}
    if _pipeline(table) is None or getattr(table, "_cosmos_endpoint", False):
        return await point_rows(table, pk, keys)
    sem = asyncio.Semaphore(POINT_CONCURRENCY)

    async def one(chunk: list[str]) -> list[dict[str, Any]]:
        async with sem:
            return [raw async for page in raw_pages(table, key_list_filter(pk, chunk)) for raw in page]

    chunks = [keys[i : i + KEYS_PER_QUERY] for i in range(0, len(keys), KEYS_PER_QUERY)]
    wanted = set(keys)
    return {
        raw["RowKey"]: entity_of(raw)
        for rows in await asyncio.gather(*(one(c) for c in chunks))
        for raw in rows
        if raw["RowKey"] in wanted
    }
