"""PURE: the history entries of a coupling (``GET …/couplings/{bcId}/history``).

Entries are kept newest last inside the coupling's own state row, so they are written by the very table
operation that writes the coupling state (no extra request); when the coupling goes, they move to an archive
row in the same partition. Retention trims them whenever the row is written.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

# What started the work being done (contract triggers); set once where the work enters (HTTP use case,
# worker message), read where entries are made, so no signature down the call chain has to carry it.
TRIGGER: ContextVar[str] = ContextVar("sync_trigger", default="job")

MAX_ENTRIES = 200  # per coupling; the oldest go first (the row stays far below the 1 MiB entity limit)

# sync/record status -> history action
ACTION_OF = {
    "updated": "updated",
    "unchanged": "unchanged",
    "created": "created",
    "coupled": "coupled",
    "conflict": "conflict",
    "skipped": "skipped",
    "failed": "failed",
    "not_found": "failed",
    "uncoupled": "uncoupled",
}


def entry(
    at: datetime,
    *,
    trigger: str,
    action: str,
    job_id: str | None = None,
    direction: str | None = None,
    changes: list[dict[str, Any]] | None = None,
    error: tuple[str | None, str | None] | None = None,
    values: bool = True,
) -> dict[str, Any]:
    """One entry; ``values=False`` (``SYNC_HISTORY_VALUES=false``) keeps the field names only."""
    shown = [
        {"field": c["field"], "side": c["side"], "from": c.get("from") if values else None,
         "to": c.get("to") if values else None}
        for c in changes or []
    ]  # fmt: skip
    code, message = error or (None, None)
    return {
        "at": at.isoformat(),
        "jobId": job_id,
        "trigger": trigger,
        "action": ACTION_OF.get(action, action),
        "direction": direction,
        "changes": shown,
        "error": {"code": code, "message": message} if code else None,
    }


def appended(history: list[dict[str, Any]], new: dict[str, Any], now: datetime, days: int) -> list[dict[str, Any]]:
    """``history`` plus ``new``, without entries older than ``days`` and at most MAX_ENTRIES."""
    return kept([*history, new], now, days)


def kept(history: list[dict[str, Any]], now: datetime, days: int) -> list[dict[str, Any]]:
    cutoff = (now - timedelta(days=days)).isoformat()
    return [e for e in history if e.get("at", "") >= cutoff][-MAX_ENTRIES:]


def newest_first(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(history, key=lambda e: e.get("at", ""), reverse=True)
