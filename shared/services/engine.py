"""The engine's dependencies in one place (built by ``shared.bootstrap``, or with fakes in tests)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.config import Settings
from shared.domain.model import COUNT_KEYS
from shared.mappings.config import TableMapping
from shared.ports import (
    CouplingStore,
    JobStore,
    MessagePublisher,
    RecordService,
    SyncErrorStore,
    WatermarkStore,
)
from shared.services.codec import RecordCodec
from shared.services.registry import MappingRegistry


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return str(uuid.uuid4())


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


@dataclass
class Engine:
    settings: Settings
    registry: MappingRegistry
    bc: RecordService
    dv: RecordService
    couplings: CouplingStore
    errors: SyncErrorStore
    jobs: JobStore
    watermarks: WatermarkStore
    publisher: MessagePublisher
    _codecs: dict[str, RecordCodec] = field(default_factory=dict)
    _lookup_cache: dict[str, object] = field(default_factory=dict)

    def codec(self, mapping: TableMapping) -> RecordCodec:
        parents = {
            f.lookup.mapping: self.registry.known(f.lookup.mapping) for f in mapping.fields if f.lookup is not None
        }
        return RecordCodec(mapping, parents, self.bc, self.couplings, self.dv, self._lookup_cache)
