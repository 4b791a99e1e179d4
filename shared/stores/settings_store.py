"""Run-time mapping settings in Table Storage: partition ``settings``, one row per mapping. ``put`` replaces
the row (If-Match when ``row_etag`` is set, raising ``PreconditionFailedError`` on a lost race)."""

from __future__ import annotations

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.model import Direction, MappingSettings
from shared.errors import PreconditionFailedError
from shared.stores.tables import TableProvider, escape_key, etag_of, map_error, query_all, quote

PK = "settings"


class TableMappingSettingsStore:
    """``shared.ports.MappingSettingsStore`` on Table Storage."""

    def __init__(self, tables: TableProvider, table_name: str) -> None:
        self._tables = tables
        self._name = table_name

    async def _table(self) -> TableClient:
        return await self._tables.get(self._name)

    async def get_all(self) -> dict[str, MappingSettings]:
        out: dict[str, MappingSettings] = {}
        async for page in query_all(await self._table(), f"PartitionKey eq {quote(PK)}"):
            for row in page:
                direction = row.get("Direction")
                out[row["Mapping"]] = MappingSettings(
                    mapping=row["Mapping"],
                    direction=Direction(direction) if direction else None,
                    sync_only_coupled=row.get("SyncOnlyCoupled"),
                    state=row.get("State"),
                    row_etag=etag_of(row),
                )
        return out

    async def put(self, settings: MappingSettings) -> MappingSettings:
        table = await self._table()
        entity = {
            "PartitionKey": PK,
            "RowKey": escape_key(settings.mapping),
            "Mapping": settings.mapping,
            "Direction": settings.direction.value if settings.direction else None,
            "SyncOnlyCoupled": settings.sync_only_coupled,
            "State": settings.state,
        }
        try:
            if settings.row_etag is None:
                out = await table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            else:
                out = await table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=settings.row_etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceModifiedError, ResourceNotFoundError) as e:
            raise PreconditionFailedError(
                f"settings of {settings.mapping} changed meanwhile", status=412, service="tables"
            ) from e
        except AzureError as e:
            raise map_error(e) from e
        return MappingSettings(
            mapping=settings.mapping,
            direction=settings.direction,
            sync_only_coupled=settings.sync_only_coupled,
            state=settings.state,
            row_etag=out.get("etag"),
        )
