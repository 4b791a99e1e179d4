"""Coupling history (#22): entries are appended to the coupling being written (so they travel in the same
table operation as its state), and read back newest first, paged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.domain.errors import ServiceError
from shared.domain.model import Coupling
from shared.mappings.config import TableMapping
from shared.planning import history
from shared.planning.plan_view import field_changes
from shared.planning.planner import PairState, RecordPlan
from shared.services.engine import Engine, utcnow
from shared.stores.tables import decode_token, encode_token


class HistoryNotFoundError(ServiceError):
    code, status, title = "not_found", 404, "No history"


def new_entry(
    engine: Engine,
    action: str,
    *,
    job_id: str | None = None,
    direction: str | None = None,
    changes: list[dict[str, Any]] | None = None,
    error: tuple[str | None, str | None] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return history.entry(
        at or utcnow(),
        trigger=history.TRIGGER.get(),
        action=action,
        job_id=job_id,
        direction=direction,
        changes=changes,
        error=error,
        values=engine.settings.history_values,
    )


def append(engine: Engine, c: Coupling, new: dict[str, Any]) -> None:
    c.history = history.appended(c.history, new, utcnow(), engine.settings.history_days)


def on_sync(
    engine: Engine,
    mapping: TableMapping,
    c: Coupling,
    plan: RecordPlan,
    pair: PairState,
    status: str,
    error: tuple[str | None, str | None] | None,
    job_id: str | None,
    now: datetime,
) -> None:
    """The entry of one synchronized pair (the sync decides whether the row, and so the entry, is saved)."""
    changes = (
        field_changes(mapping.fields, plan.bc_update, plan.dv_update, pair.bc, pair.dv) if status == "updated" else []
    )
    entry = new_entry(
        engine, status, job_id=job_id, direction=plan.direction.value, changes=changes, error=error, at=now
    )
    append(engine, c, entry)


class HistoryService:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    async def page(
        self, mapping_name: str, bc_id: str, *, top: int = 100, continuation: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        mapping = await self.e.registry.get(mapping_name)
        entries = await self.e.couplings.history(mapping.name, bc_id)
        if entries is None:
            raise HistoryNotFoundError(f"BC record {bc_id} was never coupled in mapping {mapping.name}.")
        ordered = history.newest_first(history.kept(entries, utcnow(), self.e.settings.history_days))
        offset = int(decode_token(continuation)) if continuation else 0
        page = ordered[offset : offset + top]
        more = offset + len(page) < len(ordered)
        return page, (encode_token(offset + len(page)) if more else None)

    async def purge(self) -> int:
        """Per timer tick: archive rows of uncoupled records past the retention (a key range, no scan)."""
        from datetime import timedelta

        before = utcnow() - timedelta(days=self.e.settings.history_days)
        return sum([await self.e.couplings.purge_history(m, before) for m in self.e.registry.names()])
