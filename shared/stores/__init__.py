"""Table Storage adapters of the store ports (``shared.ports``). Build them with :func:`build_stores`."""

from __future__ import annotations

from dataclasses import dataclass

from azure.core.credentials_async import AsyncTokenCredential

from shared.config import STORAGE_AUDIENCE, Settings
from shared.stores.coupling_store import TableCouplingStore
from shared.stores.error_store import TableSyncErrorStore
from shared.stores.job_store import TableJobStore
from shared.stores.settings_store import TableMappingSettingsStore
from shared.stores.tables import OpCounter, TableNames, TableProvider, build_service_client, escape_key, unescape_key
from shared.stores.watermark_store import TableWatermarkStore

__all__ = [
    "OpCounter",
    "Stores",
    "TableCouplingStore",
    "TableJobStore",
    "TableMappingSettingsStore",
    "TableSyncErrorStore",
    "TableWatermarkStore",
    "build_stores",
    "escape_key",
    "unescape_key",
]


@dataclass(slots=True)
class Stores:
    couplings: TableCouplingStore
    errors: TableSyncErrorStore
    jobs: TableJobStore
    watermarks: TableWatermarkStore
    settings: TableMappingSettingsStore
    op_counter: OpCounter
    tables: TableProvider

    async def close(self) -> None:
        await self.tables.close()

    async def ping(self) -> None:
        """One cheap request (health check): raises a ``shared.errors`` type when the service is unusable."""
        await self.tables.get(self.couplings._name)  # creates/looks up the table once
        await self.settings.get_all()


def build_stores(settings: Settings, credential: AsyncTokenCredential | None = None) -> Stores:
    """The five stores over ONE TableServiceClient (one pipeline: retry policy, op counter, connections).
    ``TABLES_CONNECTION_STRING`` wins; else ``TABLES_ENDPOINT`` + ``credential`` (default: the process's
    MSAL credential). Call once per process (and event loop) and keep the result."""
    counter = OpCounter()
    if settings.tables_connection_string:
        service = build_service_client(
            connection_string=settings.tables_connection_string, counter=counter, ca_file=settings.authority_ca
        )
    else:
        if credential is None:
            from shared.identity import get_credential  # lazy: only the endpoint mode needs MSAL

            credential = get_credential()
        service = build_service_client(
            endpoint=settings.tables_endpoint,
            credential=credential,
            counter=counter,
            ca_file=settings.authority_ca,
            audience=STORAGE_AUDIENCE,
        )
    tables = TableProvider(service)
    names = TableNames.with_prefix(settings.table_prefix)
    return Stores(
        couplings=TableCouplingStore(tables, names.couplings),
        errors=TableSyncErrorStore(tables, names.errors),
        jobs=TableJobStore(tables, names.jobs),
        watermarks=TableWatermarkStore(tables, names.watermarks),
        settings=TableMappingSettingsStore(tables, names.settings),
        op_counter=counter,
        tables=tables,
    )
