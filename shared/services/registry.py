"""The table mappings in force: the shipped file with the run-time overrides from the settings store on top."""

from __future__ import annotations

import time

from shared.domain.errors import MappingNotFoundError
from shared.domain.model import MappingSettings
from shared.mappings.config import MappingFile, TableMapping, dependency_order
from shared.ports import MappingSettingsStore


class MappingRegistry:
    def __init__(
        self, config: MappingFile, settings_store: MappingSettingsStore, *, cache_seconds: float = 5.0
    ) -> None:
        self._config = config
        self._by_name = {m.name: m for m in config.mappings}
        self._store = settings_store
        # Overrides are read once per few seconds, not per message: another process's PATCH is seen within
        # cache_seconds; this process's own PATCH at once.
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, MappingSettings]] | None = None

    async def _overrides(self) -> dict[str, MappingSettings]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self._cache_seconds:
            self._cached = (now, await self._store.get_all())
        return self._cached[1]

    def names(self) -> list[str]:
        return list(self._by_name)

    def shipped(self, name: str) -> TableMapping:
        try:
            return self._by_name[name]
        except KeyError:
            raise MappingNotFoundError(f"There is no table mapping named '{name[:60]}'.") from None

    async def get(self, name: str) -> TableMapping:
        base = self.shipped(name)
        return _apply(base, (await self._overrides()).get(name))

    async def list(self) -> list[TableMapping]:
        overrides = await self._overrides()
        return [_apply(m, overrides.get(m.name)) for m in dependency_order(self._config.mappings)]

    def for_dataverse_table(self, logical_name: str) -> TableMapping | None:
        """The mapping of a Dataverse table (logical name ``account`` or entity set ``accounts``)."""
        for m in self._config.mappings:
            if logical_name in (m.dataverse_table, m.dataverse_entity_set):
                return m
        return None

    async def update(self, name: str, **changes: object) -> TableMapping:
        self.shipped(name)
        current = (await self._store.get_all()).get(name) or MappingSettings(mapping=name)
        for key, value in changes.items():
            setattr(current, key, value)
        await self._store.put(current)
        self._cached = None
        return await self.get(name)


def _apply(mapping: TableMapping, overrides: MappingSettings | None) -> TableMapping:
    if overrides is None:
        return mapping
    update: dict[str, object] = {}
    if overrides.direction is not None:
        update["direction"] = overrides.direction
    if overrides.sync_only_coupled is not None:
        update["sync_only_coupled"] = overrides.sync_only_coupled
    if overrides.state is not None:
        update["state"] = overrides.state
    return mapping.model_copy(update=update) if update else mapping
