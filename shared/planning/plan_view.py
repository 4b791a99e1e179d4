"""PURE: how a sync plan is shown to a person (``POST /api/mappings/{m}/plan``).

The plan is the planner's own output (``plan_record`` / ``plan_create``), so a plan can never disagree with
the sync that follows; this module only names its parts as the contract does.
"""

from __future__ import annotations

from typing import Any

from shared.domain.model import Direction
from shared.mappings.config import FieldMap
from shared.planning.planner import PairState, RecordPlan

# planner status -> plan action (contract part 2, "Plans")
ACTION_OF = {
    "updated": "update",
    "unchanged": "none",
    "conflict": "conflict",
    "skipped": "skip",
    "not_found": "not_found",
}
# plan action -> the job counter the sync would have increased
COUNT_OF = {
    "update": "modified",
    "none": "unchanged",
    "create": "inserted",
    "skip": "skipped",
    "not_coupled": "skipped",
    "conflict": "failed",
    "not_found": "failed",
    "failed": "failed",
}


def _names(fields: tuple[FieldMap, ...]) -> dict[str, FieldMap]:
    return {f.key: f for f in fields}


def field_changes(
    fields: tuple[FieldMap, ...],
    bc_update: dict[str, Any],
    dv_update: dict[str, Any],
    bc_before: dict[str, Any] | None,
    dv_before: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """``[{"field", "side", "from", "to"}]``: the side named is the one written, ``field`` its own name."""
    by_key = _names(fields)
    out: list[dict[str, Any]] = []
    for key, value in dv_update.items():
        f = by_key.get(key)
        out.append(
            {
                "field": (f.dataverse if f else None) or key,
                "side": "dataverse",
                "from": (dv_before or {}).get(key),
                "to": value,
            }
        )
    for key, value in bc_update.items():
        f = by_key.get(key)
        out.append(
            {
                "field": (f.bc if f else None) or key,
                "side": "businessCentral",
                "from": (bc_before or {}).get(key),
                "to": value,
            }
        )
    return out


def item_of_plan(
    fields: tuple[FieldMap, ...], plan: RecordPlan, pair: PairState, blocked: str | None = None
) -> dict[str, Any]:
    """One plan item for a coupled pair. ``blocked``: the sync would fail it before writing (a parent that is
    not coupled yet), so nothing would change."""
    if blocked is not None:
        return item("skip", plan.bc_id, plan.dv_id, plan.direction, "parent_not_coupled")
    action = ACTION_OF[plan.status]
    changes = field_changes(fields, plan.bc_update, plan.dv_update, pair.bc, pair.dv) if plan.writes else []
    return item(action, plan.bc_id, plan.dv_id, plan.direction, plan.error_code, changes)


def item_of_create(
    fields: tuple[FieldMap, ...], direction: Direction, source_id: str, new_values: dict[str, Any]
) -> dict[str, Any]:
    """A record the sync would create on the other side of ``direction`` and couple."""
    to_dv = direction == Direction.TO_DATAVERSE
    changes = field_changes(fields, {} if to_dv else new_values, new_values if to_dv else {}, None, None)
    return item("create", source_id if to_dv else None, None if to_dv else source_id, direction, None, changes)


def item(
    action: str,
    bc_id: str | None,
    dv_id: str | None,
    direction: Direction | str | None,
    reason: str | None = None,
    changes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "bcId": bc_id,
        "dataverseId": dv_id,
        "action": action,
        "direction": direction.value if isinstance(direction, Direction) else direction,
        "reason": reason,
        "changes": changes or [],
    }


def counts_of(items: list[dict[str, Any]], base: dict[str, int]) -> dict[str, int]:
    """Job counters as the sync would have counted these items (a create also couples)."""
    counts = dict(base)
    for it in items:
        key = COUNT_OF.get(it["action"], "failed")
        counts[key] = counts.get(key, 0) + 1
        if it["action"] == "create":
            counts["coupled"] = counts.get("coupled", 0) + 1
    return counts
