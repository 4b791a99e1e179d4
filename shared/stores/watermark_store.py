"""Watermarks (change cursors) in Table Storage: partition = mapping, RowKey = side. Writes are optimistic:
``put`` with ``row_etag=None`` only creates, otherwise replaces If-Match; a lost race raises
``PreconditionFailedError``."""

from __future__ import annotations

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.model import Side, Watermark
from shared.errors import PreconditionFailedError
from shared.stores.tables import TableProvider, escape_key, etag_of, get_row, map_error, to_utc, utcnow


class TableWatermarkStore:
    """``shared.ports.WatermarkStore`` on Table Storage."""

    def __init__(self, tables: TableProvider, table_name: str) -> None:
        self._tables = tables
        self._name = table_name

    async def _table(self) -> TableClient:
        return await self._tables.get(self._name)

    async def get(self, mapping: str, side: Side) -> Watermark:
        row = await get_row(await self._table(), escape_key(mapping), Side(side).value)
        if row is None:
            return Watermark(mapping=mapping, side=Side(side))
        return Watermark(
            mapping=mapping,
            side=Side(side),
            cursor=row.get("Cursor"),
            updated_at=to_utc(row.get("UpdatedAt")),
            row_etag=etag_of(row),
        )

    async def put(self, watermark: Watermark) -> Watermark:
        table = await self._table()
        now = utcnow()
        entity = {
            "PartitionKey": escape_key(watermark.mapping),
            "RowKey": Side(watermark.side).value,
            "Cursor": watermark.cursor,
            "UpdatedAt": now,
        }
        try:
            if watermark.row_etag is None:
                out = await table.create_entity(entity)
            else:
                out = await table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=watermark.row_etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as e:
            raise PreconditionFailedError(
                f"watermark {watermark.mapping}/{watermark.side} changed meanwhile", status=412, service="tables"
            ) from e
        except AzureError as e:
            raise map_error(e) from e
        return Watermark(
            mapping=watermark.mapping,
            side=Side(watermark.side),
            cursor=watermark.cursor,
            updated_at=now,
            row_etag=out.get("etag"),
        )
