"""Mapping documents in Table Storage (the mapping-settings table, partition ``mappingdocs``).

One head row per mapping (RowKey = the escaped name, ``Kind`` = ``head``) with the document JSON and its
version, plus one history row per version (RowKey ``<name>|v00000003``, ``Kind`` = ``version``) written in
the same transaction, so every stored version can be read back. ``put`` is optimistic: a new document is
created (a concurrent create loses with ``PreconditionFailedError``), an existing one replaced with
If-Match on the head row's ETag.
"""

from __future__ import annotations

import json

from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.errors import PreconditionFailedError, SyncError
from shared.mappings.documents import MappingDocument
from shared.stores.tables import (
    TableProvider,
    TableTransactionError,
    escape_key,
    etag_of,
    failure_kind,
    get_row,
    query_all,
    quote,
    submit,
    transaction_failure,
)

PK = "mappingdocs"
MAX_DOCUMENT_CHARS = 30_000  # a string property holds 64 KiB (32K UTF-16 characters)


class DocumentTooLargeError(ValueError):
    pass


class TableMappingDocumentStore:
    def __init__(self, tables: TableProvider, table_name: str) -> None:
        self._tables = tables
        self._name = table_name

    async def _table(self) -> TableClient:
        return await self._tables.get(self._name)

    async def get_all(self) -> dict[str, MappingDocument]:
        out: dict[str, MappingDocument] = {}
        query = f"PartitionKey eq {quote(PK)} and Kind eq 'head'"
        async for page in query_all(await self._table(), query):
            for row in page:
                doc = MappingDocument.from_json(json.loads(row["Document"]), etag_of(row))
                out[doc.name] = doc
        return out

    async def get(self, name: str) -> MappingDocument | None:
        row = await get_row(await self._table(), PK, escape_key(name))
        if row is None:
            return None
        return MappingDocument.from_json(json.loads(row["Document"]), etag_of(row))

    async def get_version(self, name: str, version: int) -> MappingDocument | None:
        row = await get_row(await self._table(), PK, f"{escape_key(name)}|v{version:08d}")
        return MappingDocument.from_json(json.loads(row["Document"])) if row else None

    async def put(self, doc: MappingDocument) -> MappingDocument:
        """Stores ``doc`` as the next version (``doc.version + 1``); ``doc.row_etag`` None = must not exist."""
        stored = doc.copy()
        stored.version = doc.version + 1
        text = json.dumps(stored.to_json(), separators=(",", ":"))
        if len(text) > MAX_DOCUMENT_CHARS:
            raise DocumentTooLargeError(f"the mapping document would have {len(text)} characters")
        head = {
            "PartitionKey": PK,
            "RowKey": escape_key(doc.name),
            "Kind": "head",
            "Mapping": doc.name,
            "Version": stored.version,
            "Document": text,
        }
        history = {**head, "RowKey": f"{escape_key(doc.name)}|v{stored.version:08d}", "Kind": "version"}
        if doc.row_etag is None:
            head_op: tuple = ("create", head)
        else:
            head_op = (
                "update",
                head,
                {"mode": UpdateMode.REPLACE, "etag": doc.row_etag, "match_condition": MatchConditions.IfNotModified},
            )
        table = await self._table()
        try:
            results = await submit(table, [head_op, ("upsert", history, {"mode": UpdateMode.REPLACE})])
        except TableTransactionError as e:
            if failure_kind(e) in ("exists", "modified", "missing"):
                raise PreconditionFailedError(
                    f"the mapping {doc.name} was changed meanwhile", status=412, service="tables"
                ) from e
            raise transaction_failure(e) from e
        stored.row_etag = _etag(results[0]) if results else None
        if stored.row_etag is None:
            again = await self.get(doc.name)
            stored.row_etag = again.row_etag if again else None
        return stored

    async def delete(self, name: str, row_etag: str | None) -> None:
        """Removes the head row (history rows stay); a concurrent change -> ``PreconditionFailedError``."""
        table = await self._table()
        try:
            await submit(
                table,
                [("delete", {"PartitionKey": PK, "RowKey": escape_key(name)},
                  {"etag": row_etag, "match_condition": MatchConditions.IfNotModified} if row_etag else {})],
            )  # fmt: skip
        except TableTransactionError as e:
            if failure_kind(e) == "missing":
                return
            if failure_kind(e) == "modified":
                raise PreconditionFailedError(f"the mapping {name} was changed meanwhile", status=412) from e
            raise transaction_failure(e) from e
        except SyncError:
            raise


def _etag(result: object) -> str | None:
    if isinstance(result, dict):
        return result.get("etag")  # type: ignore[return-value]
    return etag_of(result)  # type: ignore[arg-type]
