"""The table mappings in force: the shipped file with the stored mapping documents layered on top
(``shared.mappings.documents``), and the user-defined mappings that exist only as documents.

Documents are read once per few seconds, not per message: another process's change is seen within
``cache_seconds`` (5 s); this process's own change at once (the writer drops the cache).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from shared.domain.errors import MappingNotFoundError
from shared.mappings.config import MappingFile, TableMapping, dependency_order
from shared.mappings.documents import MappingDocument, effective_mapping, mapping_etag

log = logging.getLogger(__name__)


class MappingDocumentStore(Protocol):
    async def get_all(self) -> dict[str, MappingDocument]: ...

    async def get(self, name: str) -> MappingDocument | None: ...

    async def put(self, doc: MappingDocument) -> MappingDocument: ...

    async def delete(self, name: str, row_etag: str | None) -> None: ...


class MappingRegistry:
    def __init__(
        self,
        config: MappingFile,
        documents: MappingDocumentStore,
        *,
        cache_seconds: float = 5.0,
        legacy_settings: Any = None,
    ) -> None:
        # ``legacy_settings``: the part-1 settings store (direction, syncOnlyCoupled, state); its rows count as a
        # document's settings until the mapping's first document is written (which then carries them).
        self._legacy = legacy_settings
        self._config = config
        self._by_name = {m.name: m for m in config.mappings}
        self.documents = documents
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, MappingDocument]] | None = None
        # Effective mappings by (name, version): a document is validated once, not on every message.
        self._built: dict[tuple[str, int, str | None], TableMapping] = {}
        self._known: dict[str, TableMapping] = {}
        self._listeners: list[Any] = []

    def on_mapping(self, listener: Any) -> None:
        """``listener(mapping)`` is called with every mapping built (e.g. to register custom tables)."""
        self._listeners.append(listener)

    async def _docs(self) -> dict[str, MappingDocument]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self._cache_seconds:
            docs = await self.documents.get_all()
            for name, legacy in (await self._legacy_docs()).items():
                docs.setdefault(name, legacy)
            self._cached = (now, docs)
        return self._cached[1]

    async def _legacy_docs(self) -> dict[str, MappingDocument]:
        if self._legacy is None:
            return {}
        out: dict[str, MappingDocument] = {}
        for name, row in (await self._legacy.get_all()).items():
            if name not in self._by_name:
                continue
            settings = {
                k: getattr(v, "value", v)
                for k, v in (("direction", row.direction), ("syncOnlyCoupled", row.sync_only_coupled),
                             ("state", row.state))
                if v is not None
            }  # fmt: skip
            if settings:
                out[name] = MappingDocument(name=name, settings=settings)
        return out

    def invalidate(self) -> None:
        self._cached = None

    def names(self) -> list[str]:
        return list(self._by_name)

    def is_shipped(self, name: str) -> bool:
        return name in self._by_name

    def shipped(self, name: str) -> TableMapping:
        try:
            return self._by_name[name]
        except KeyError:
            raise MappingNotFoundError(f"There is no table mapping named '{name[:60]}'.") from None

    def known(self, name: str) -> TableMapping:
        """The last mapping built under this name (sync; for lookups through a parent mapping)."""
        if name in self._known:
            return self._known[name]
        return self.shipped(name)

    def _build(self, name: str, doc: MappingDocument | None) -> TableMapping:
        key = (name, doc.version if doc else 0, doc.row_etag if doc else None)
        built = self._built.get(key)
        if built is None:
            try:
                built = effective_mapping(self._by_name.get(name), doc)
            except ValueError:
                # A stored document that no longer fits (e.g. a redeploy removed a field): the shipped one.
                log.exception("mapping document of %s is invalid; using the shipped mapping", name)
                if name not in self._by_name:
                    raise MappingNotFoundError(f"The table mapping '{name[:60]}' is not usable.") from None
                built = effective_mapping(self._by_name[name], None)
            self._built[key] = built
            for listener in self._listeners:
                listener(built)
        self._known[name] = built
        return built

    async def get(self, name: str) -> TableMapping:
        doc = (await self._docs()).get(name)
        if doc is None and name not in self._by_name:
            raise MappingNotFoundError(f"There is no table mapping named '{name[:60]}'.")
        return self._build(name, doc)

    async def document(self, name: str, *, fresh: bool = False) -> MappingDocument | None:
        """The stored document of a mapping (``fresh``: read now, not from the cache)."""
        if fresh:
            return await self.documents.get(name) or (await self._legacy_docs()).get(name)
        return (await self._docs()).get(name)

    def etag(self, name: str, doc: MappingDocument | None) -> str:
        return mapping_etag(doc.version if doc else 0, self._by_name.get(name))

    async def list(self) -> list[TableMapping]:
        docs = await self._docs()
        names = list(self._by_name) + sorted(n for n, d in docs.items() if n not in self._by_name and d.user_defined)
        mappings = [self._build(n, docs.get(n)) for n in names]
        try:
            return dependency_order(mappings)
        except (KeyError, ValueError):
            return mappings

    def for_dataverse_table(self, logical_name: str) -> TableMapping | None:
        """The mapping of a Dataverse table (logical name ``account`` or entity set ``accounts``)."""
        for m in [*self._config.mappings, *(k for k in self._known.values() if k.user_defined)]:
            if logical_name in (m.dataverse_table, m.dataverse_entity_set):
                return m
        return None

    async def update(self, name: str, **changes: object) -> TableMapping:
        """Run-time settings (snake_case names of part 1's PATCH), stored in the mapping's document."""
        from shared.services.mapping_admin import SNAKE_TO_SETTING  # local: admin builds on the registry

        doc = await self.documents.get(name) or MappingDocument(name=name)
        await self.get(name)
        for key, value in changes.items():
            doc.settings[SNAKE_TO_SETTING.get(key, key)] = getattr(value, "value", value)
        await self.documents.put(doc)
        self.invalidate()
        return await self.get(name)
