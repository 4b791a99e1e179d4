"""The one composition root: builds the engine's clients once per process (lazily, on first use).

Identities are chosen here, per resource: Table Storage and Service Bus get the managed identity's
credential, Business Central and Dataverse the app registration's (``shared.identity.build_credentials``);
health and telemetry use the same objects through the ``Runtime``.

Nothing here runs at import time, so indexing the function app never does I/O. Tests build an
``Engine`` from fakes instead, or call ``set_engine``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.collector import tune as tune_collector
from shared.config import Settings, get_settings
from shared.mappings.config import load_mapping_file
from shared.services.engine import Engine
from shared.services.registry import MappingRegistry

if TYPE_CHECKING:
    from shared.identity import Credentials


@dataclass
class Runtime:
    """The engine plus the concrete clients behind it (for health checks, counters and closing)."""

    engine: Engine
    stores: Any
    bc: Any
    dv: Any
    publisher: Any
    credentials: Credentials | None = None

    async def aclose(self) -> None:
        for closer in (self.bc.aclose, self.dv.aclose, self.publisher.aclose, self.stores.close):
            try:
                await closer()
            except Exception:  # noqa: S112 -- closing is best effort at shutdown
                continue


_runtime: Runtime | None = None
_lock: asyncio.Lock | None = None


def build_runtime(
    settings: Settings,
    *,
    credentials: Credentials | None = None,
    credential: Any = None,
    wrap_publisher: Callable[[Any], Any] | None = None,
) -> Runtime:
    """Everything from ``settings``. ``credentials`` (default: both identities built from these settings),
    ``credential`` (one object for every resource: fakes in unit tests only; the local stack refuses it) and
    ``wrap_publisher`` (e.g. a recording wrapper in benchmarks) let tools reuse the one composition."""
    from shared.connectors.business_central import BusinessCentralClient
    from shared.connectors.dataverse import DataverseClient
    from shared.identity import build_credentials
    from shared.messaging.publisher import ServiceBusPublisher
    from shared.stores import build_stores
    from shared.telemetry import configure_telemetry

    if credential is None and credentials is None:
        credentials = build_credentials(settings)
    azure = credential if credential is not None else credentials.azure  # type: ignore[union-attr]
    apps = credential if credential is not None else credentials.apps  # type: ignore[union-attr]
    # Only when APPLICATIONINSIGHTS_CONNECTION_STRING is set; the exporter authenticates as the managed identity.
    configure_telemetry(settings, credential=credentials.azure_sync if credentials else None)
    mappings = load_mapping_file(settings.mappings_file)  # a bad file fails here, at start-up, with the reason
    stores = build_stores(settings, azure)
    bc = BusinessCentralClient(settings, apps)
    dv = DataverseClient(settings, apps)
    publisher = ServiceBusPublisher.from_settings(settings, azure)
    if wrap_publisher is not None:
        publisher = wrap_publisher(publisher)
    registry = MappingRegistry(mappings, _document_store(settings, stores), legacy_settings=stores.settings)
    registry.on_mapping(lambda m: _register_custom_table(dv, m))
    engine = Engine(
        settings=settings,
        registry=registry,
        bc=bc,
        dv=dv,
        couplings=stores.couplings,
        errors=stores.errors,
        jobs=stores.jobs,
        watermarks=stores.watermarks,
        publisher=publisher,
    )
    tune_collector(settings.gc_gen0_threshold)  # after start-up's objects exist: they are frozen (shared.collector)
    return Runtime(engine, stores, bc, dv, publisher, credentials)


def _document_store(settings: Settings, stores: Any) -> Any:
    """Mapping documents live in the mapping-settings table (their own partition)."""
    from shared.stores.mapping_document_store import TableMappingDocumentStore
    from shared.stores.tables import TableNames

    return TableMappingDocumentStore(stores.tables, TableNames.with_prefix(settings.table_prefix).settings)


def _register_custom_table(dv: Any, mapping: Any) -> None:
    """A user-defined mapping's Dataverse table: the client learns its logical name and primary key."""
    if getattr(mapping, "user_defined", False) and hasattr(dv, "register_entity"):
        dv.register_entity(mapping.dataverse_entity_set, mapping.dataverse_table, mapping.dataverse_primary_key)


async def get_runtime() -> Runtime:
    global _runtime, _lock
    if _runtime is None:
        if _lock is None:
            _lock = asyncio.Lock()
        async with _lock:
            if _runtime is None:
                from shared.identity import get_credentials

                _runtime = build_runtime(get_settings(), credentials=get_credentials())
    return _runtime


async def get_engine() -> Engine:
    return (await get_runtime()).engine


def set_runtime(runtime: Runtime | None) -> None:
    """For tests: use this runtime (or reset with None)."""
    global _runtime
    _runtime = runtime
