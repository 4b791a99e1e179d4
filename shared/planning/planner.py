"""PURE sync planning: what to write where for a set of coupled pairs, and why.

Functional core, imperative shell: the services gather both sides and the couplings, call these
functions with plain values, then apply the returned plans in batches. Nothing here does I/O.

Values are dicts keyed by ``FieldMap.key``; a side's *snapshot* is what that side held after the last
successful sync (``{}`` = never synced). A field *changed* on a side when its value differs from the
snapshot; it is *in sync* when the source value converted to the other side equals the other side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.domain.model import Direction, Outcome
from shared.mappings.config import FieldMap
from shared.planning.transform import apply_transform, convert, same

ConflictPolicy = Literal["none", "bcWins", "dataverseWins"]
# Module constants for the per-field loops: an Enum member read off its class costs ~0.2 µs a time.
_TO_DATAVERSE, _FROM_DATAVERSE = Direction.TO_DATAVERSE, Direction.FROM_DATAVERSE
_BIDIRECTIONAL = Direction.BIDIRECTIONAL


@dataclass(frozen=True, slots=True)
class PairState:
    """One coupled pair as the planner sees it. ``bc``/``dv`` None = that record no longer exists."""

    bc_id: str
    dv_id: str
    bc: dict[str, Any] | None
    dv: dict[str, Any] | None
    bc_snapshot: dict[str, Any] = field(default_factory=dict)
    dv_snapshot: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    bc_modified_on: datetime | None = None
    dv_modified_on: datetime | None = None


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed on each side since the last sync (the direction prompt's ``changes``)."""

    bc_fields: tuple[str, ...]
    dv_fields: tuple[str, ...]
    conflicting_fields: tuple[str, ...]

    @property
    def business_central(self) -> bool:
        return bool(self.bc_fields)

    @property
    def dataverse(self) -> bool:
        return bool(self.dv_fields)


@dataclass(frozen=True, slots=True)
class RecordPlan:
    bc_id: str
    dv_id: str
    status: Outcome  # UPDATED, UNCHANGED, CONFLICT, SKIPPED or NOT_FOUND
    direction: Direction
    bc_update: dict[str, Any] = field(default_factory=dict)  # field key -> value to write to BC
    dv_update: dict[str, Any] = field(default_factory=dict)  # field key -> value to write to Dataverse
    error_code: str | None = None
    error_message: str | None = None
    conflicting_fields: tuple[str, ...] = ()
    # The snapshot to store after the writes succeed (None: keep the stored one).
    bc_snapshot: dict[str, Any] | None = None
    dv_snapshot: dict[str, Any] | None = None

    @property
    def writes(self) -> bool:
        return bool(self.bc_update or self.dv_update)


_REMEMBERED: dict[tuple[int, str], tuple[tuple[FieldMap, ...], Any]] = {}  # (id(fields), what) -> (fields, it)


def _remembered(fields: tuple[FieldMap, ...], what: str, build: Any) -> Any:
    """``build(fields)`` for one of the mapping's (frozen) field tuples, computed once: the per-record loops
    call these with the same tuple, remembered by identity (the tuple kept so its id is not reused)."""
    hit = _REMEMBERED.get((id(fields), what))
    if hit is not None and hit[0] is fields:
        return hit[1]
    out = build(fields)
    if isinstance(fields, tuple):  # a list may change after the call: not remembered
        if len(_REMEMBERED) >= 1024:  # mappings reloaded many times: start over
            _REMEMBERED.clear()
        _REMEMBERED[(id(fields), what)] = (fields, out)
    return out


def _paired_of(fields: tuple[FieldMap, ...]) -> list[FieldMap]:
    return [f for f in fields if f.bc is not None and f.dataverse is not None and f.constant is None]


def _paired(fields: tuple[FieldMap, ...]) -> list[FieldMap]:
    """Fields present on both sides (constants are only written on create)."""
    return _remembered(fields, "paired", _paired_of)


def _label(f: FieldMap) -> str:
    return f.bc or f.dataverse or f.key


def detect_changes(fields: tuple[FieldMap, ...], pair: PairState) -> Changes:
    bc_changed: list[str] = []
    dv_changed: list[str] = []
    conflicting: list[str] = []
    if pair.bc is None or pair.dv is None:
        return Changes((), (), ())
    for f in _paired(fields):
        b = _changed(pair.bc, pair.bc_snapshot, f.key)
        d = _changed(pair.dv, pair.dv_snapshot, f.key)
        if b:
            bc_changed.append(_label(f))
        if d:
            dv_changed.append(_label(f))
        if b and d and f.direction == Direction.BIDIRECTIONAL and not _in_sync(f, pair):
            conflicting.append(_label(f))
    return Changes(tuple(bc_changed), tuple(dv_changed), tuple(conflicting))


def suggest_direction(changes: Changes) -> Direction:
    """The direction prompt's default: the side that changed alone wins; otherwise merge."""
    if changes.business_central and not changes.dataverse:
        return Direction.TO_DATAVERSE
    if changes.dataverse and not changes.business_central:
        return Direction.FROM_DATAVERSE
    return Direction.BIDIRECTIONAL


def _changed(values: dict[str, Any], snapshot: dict[str, Any], key: str) -> bool:
    # Never synced (no snapshot for this field): nothing is known to have changed.
    return key in snapshot and not same(values.get(key), snapshot.get(key))


def _agree(f: FieldMap, bc_value: Any, dv_value: Any, direction: Direction) -> bool:
    """Whether the two values are equivalent as seen from ``direction`` (transforms may be lossy, so a
    value that flows one way is compared in that way; a merge accepts either)."""
    if direction != _FROM_DATAVERSE:
        to_dv = same(convert(f, bc_value, _TO_DATAVERSE), dv_value)
        if to_dv or direction == _TO_DATAVERSE:
            return to_dv  # a merge that agrees one way needs no second conversion
    return same(convert(f, dv_value, _FROM_DATAVERSE), bc_value)


def _in_sync(f: FieldMap, pair: PairState, direction: Direction = Direction.BIDIRECTIONAL) -> bool:
    assert pair.bc is not None and pair.dv is not None
    return _agree(f, pair.bc.get(f.key), pair.dv.get(f.key), direction)


def plan_record(
    fields: tuple[FieldMap, ...],
    direction: Direction,
    pair: PairState,
    *,
    force: bool = False,
    conflict_policy: ConflictPolicy = "none",
    honour_skipped: bool = True,
) -> RecordPlan:
    """Plans one coupled pair in ``direction`` (``bidirectional`` = per-field merge)."""
    if honour_skipped and pair.skipped:
        return RecordPlan(
            pair.bc_id,
            pair.dv_id,
            Outcome.SKIPPED,
            direction,
            error_code="record_skipped",
            error_message="The record is marked as skipped after repeated failures; retry it to restore it.",
        )
    if pair.bc is None or pair.dv is None:
        side = "Business Central record" if pair.bc is None else "Dataverse row"
        return RecordPlan(
            pair.bc_id,
            pair.dv_id,
            Outcome.NOT_FOUND,
            direction,
            error_code="record_not_found",
            error_message=f"The coupled {side} no longer exists.",
        )

    bc_update: dict[str, Any] = {}
    dv_update: dict[str, Any] = {}
    overwritten_newer: list[str] = []
    conflicts: list[str] = []

    in_sync: list[FieldMap] = []  # agree as they are: they agree after the writes too (nothing written to them)
    out_of_sync: list[FieldMap] = []
    for f in _paired(fields):
        flow = direction if direction != Direction.BIDIRECTIONAL else f.direction
        if _in_sync(f, pair, flow):
            in_sync.append(f)
            continue
        out_of_sync.append(f)
        if _kept_by_not_null(f, pair):
            continue
        bc_val, dv_val = pair.bc.get(f.key), pair.dv.get(f.key)
        bc_changed = _changed(pair.bc, pair.bc_snapshot, f.key)
        dv_changed = _changed(pair.dv, pair.dv_snapshot, f.key)
        winner = _winner(f, direction, bc_changed, dv_changed, pair, conflict_policy)
        if winner == "conflict":
            conflicts.append(_label(f))
        elif winner == Direction.TO_DATAVERSE:
            dv_update[f.key] = convert(f, bc_val, Direction.TO_DATAVERSE)
            if dv_changed and direction != Direction.BIDIRECTIONAL:
                overwritten_newer.append(_label(f))
        elif winner == Direction.FROM_DATAVERSE:
            bc_update[f.key] = convert(f, dv_val, Direction.FROM_DATAVERSE)
            if bc_changed and direction != Direction.BIDIRECTIONAL:
                overwritten_newer.append(_label(f))

    if conflicts:
        return RecordPlan(
            pair.bc_id,
            pair.dv_id,
            Outcome.CONFLICT,
            direction,
            error_code="update_conflict",
            error_message=("Both sides changed since the last synchronization: " + ", ".join(conflicts) + "."),
            conflicting_fields=tuple(conflicts),
        )
    if overwritten_newer and not force:
        return RecordPlan(
            pair.bc_id,
            pair.dv_id,
            Outcome.SKIPPED,
            direction,
            error_code="target_changed",
            error_message=(
                "The target contains newer data in "
                + ", ".join(overwritten_newer)
                + "; synchronize with force to overwrite it."
            ),
        )

    bc_after = {**pair.bc, **bc_update}
    dv_after = {**pair.dv, **dv_update}
    bc_snap, dv_snap = dict(pair.bc_snapshot), dict(pair.dv_snapshot)
    # The snapshot records the last state both sides agreed on, field by field. A field in sync one way
    # (``flow``) agrees in ``direction`` too (a merge accepts either way), so only the others are compared.
    for f in in_sync:
        bc_snap[f.key] = bc_after.get(f.key)
        dv_snap[f.key] = dv_after.get(f.key)
    for f in out_of_sync:
        if _agree(f, bc_after.get(f.key), dv_after.get(f.key), direction):
            bc_snap[f.key] = bc_after.get(f.key)
            dv_snap[f.key] = dv_after.get(f.key)
    return RecordPlan(
        pair.bc_id,
        pair.dv_id,
        Outcome.UPDATED if (bc_update or dv_update) else Outcome.UNCHANGED,
        direction,
        bc_update=bc_update,
        dv_update=dv_update,
        bc_snapshot=bc_snap,
        dv_snapshot=dv_snap,
    )


def _kept_by_not_null(f: FieldMap, pair: PairState) -> bool:
    """A "Not Null" field whose BC value is empty leaves Dataverse's value alone (it never flows back)."""
    return f.not_null and pair.bc is not None and pair.bc.get(f.key) is None


def _winner(
    f: FieldMap,
    direction: Direction,
    bc_changed: bool,
    dv_changed: bool,
    pair: PairState,
    conflict_policy: ConflictPolicy,
) -> Direction | Literal["conflict"] | None:
    """Which way a field that is out of sync flows (None: it does not flow in this sync)."""
    if direction != Direction.BIDIRECTIONAL:
        return direction if f.allows(direction) else None
    if f.direction != Direction.BIDIRECTIONAL:
        return f.direction  # one-way field inside a merge
    if bc_changed and not dv_changed:
        return Direction.TO_DATAVERSE
    if dv_changed and not bc_changed:
        return Direction.FROM_DATAVERSE
    if bc_changed and dv_changed:
        if conflict_policy == "bcWins":
            return Direction.TO_DATAVERSE
        if conflict_policy == "dataverseWins":
            return Direction.FROM_DATAVERSE
        return "conflict"
    # Out of sync but neither side known to have changed (never synced): the newer record wins,
    # Business Central when unknown (BC runs its To pass first).
    if pair.dv_modified_on and pair.bc_modified_on and dv_stamp_end(pair.dv_modified_on) > pair.bc_modified_on:
        return Direction.FROM_DATAVERSE
    return Direction.TO_DATAVERSE


def dv_stamp_end(stamp: datetime) -> datetime:
    """Dataverse stamps `modifiedon` in whole seconds: a row stamped 10:00:01 changed at some moment of that
    second, so against BC's millisecond stamps it counts as the second's end (a row created in Dataverse just
    after the BC record, in the same second, is the newer one)."""
    return stamp.replace(microsecond=0) + timedelta(microseconds=999_999)


def plan_sync(
    fields: tuple[FieldMap, ...],
    direction: Direction,
    pairs: list[PairState],
    *,
    force: bool = False,
    conflict_policy: ConflictPolicy = "none",
    honour_skipped: bool = True,
) -> list[RecordPlan]:
    return [
        plan_record(fields, direction, p, force=force, conflict_policy=conflict_policy, honour_skipped=honour_skipped)
        for p in pairs
    ]


# How plan_create writes a field: its constant, its value through the transform alone (a blank value stays
# blank, so is left out, unless the transform has a default), or through ``convert`` (an option map).
_CONSTANT, _TRANSFORM, _TRANSFORM_DEFAULT, _CONVERT = 0, 1, 2, 3


def _create_steps_of(fields: tuple[FieldMap, ...], direction: Direction) -> list[tuple[str, FieldMap, int]]:
    to_dv = direction == _TO_DATAVERSE
    steps: list[tuple[str, FieldMap, int]] = []
    for f in fields:
        if (f.dataverse if to_dv else f.bc) is None or (f.direction != _BIDIRECTIONAL and f.direction != direction):
            continue  # no target field, or the field does not flow this way (``FieldMap.allows``)
        if f.constant is not None:
            steps.append((f.key, f, _CONSTANT))
        elif (f.bc if to_dv else f.dataverse) is not None:
            if f.option_map is not None:
                steps.append((f.key, f, _CONVERT))
            else:
                default = f.transform is not None and f.transform.default is not None
                steps.append((f.key, f, _TRANSFORM_DEFAULT if default else _TRANSFORM))
    return steps


def _create_steps(fields: tuple[FieldMap, ...], direction: Direction) -> list[tuple[str, FieldMap, int]]:
    """(key, field, how) of each field a create in ``direction`` writes, in the mapping's order."""
    return _remembered(fields, f"create:{direction.value}", lambda fs: _create_steps_of(fs, direction))


def plan_create(fields: tuple[FieldMap, ...], direction: Direction, source: dict[str, Any]) -> dict[str, Any]:
    """Field key -> value for a new record on the target side of ``direction``, from the source's values.
    Includes the constants written that way."""
    out: dict[str, Any] = {}
    get = source.get
    for key, f, how in _create_steps(fields, direction):
        if how == _CONSTANT:
            out[key] = f.constant
            continue
        if how == _TRANSFORM or how == _TRANSFORM_DEFAULT:  # ``convert`` without an option map
            value = get(key)
            if value is None or value == "":
                if how == _TRANSFORM:
                    continue  # trimmed, cased or cut, a blank value is still blank: left out
            if f.transform is not None:
                value = apply_transform(value, f.transform)
        else:
            value = convert(f, get(key), direction)
        if value is not None and value != "":
            out[key] = value
    return out


def _flowing_of(fields: tuple[FieldMap, ...], direction: Direction) -> list[tuple[FieldMap, str, bool]]:
    return [(f, f.key, f.direction == _BIDIRECTIONAL or f.direction == direction) for f in _paired(fields)]


def snapshot_after_create(
    fields: tuple[FieldMap, ...],
    bc_values: dict[str, Any],
    dv_values: dict[str, Any],
    *,
    direction: Direction | None = None,
    planned: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Snapshots of a freshly created pair: the fields both sides agree on.

    ``planned``: ``plan_create(fields, direction, source values)`` of this create (the source being the side
    the create read). A field it wrote whose target value is still the planned one (or, left out as empty,
    is still empty) agrees by construction -- the target holds the source's value converted -- so it is not
    converted and compared again; every other field is compared as without it."""
    bc_snap: dict[str, Any] = {}
    dv_snap: dict[str, Any] = {}
    bc_get, dv_get = bc_values.get, dv_values.get
    to_dv = direction == _TO_DATAVERSE
    if planned is None or direction is None or direction == _BIDIRECTIONAL:
        for f in _paired(fields):
            key = f.key
            b, d = bc_get(key), dv_get(key)
            if _agree(f, b, d, _BIDIRECTIONAL):
                bc_snap[key], dv_snap[key] = b, d
        return bc_snap, dv_snap
    steps = _remembered(fields, f"flowing:{direction.value}", lambda fs: _flowing_of(fs, direction))
    for f, key, flows in steps:
        b, d = bc_get(key), dv_get(key)
        if flows:
            t = d if to_dv else b
            if (t == planned[key]) if key in planned else (t is None or t == ""):
                bc_snap[key], dv_snap[key] = b, d
                continue
        if _agree(f, b, d, _BIDIRECTIONAL):
            bc_snap[key], dv_snap[key] = b, d
    return bc_snap, dv_snap


def best_match(
    candidates_by_priority: list[list[str]],
) -> tuple[str | None, list[str]]:
    """Match coupling: the first priority level with exactly one candidate wins; several candidates at
    the first level that has any -> ambiguous (returns None and the candidates)."""
    for candidates in candidates_by_priority:
        unique = sorted(set(candidates))
        if len(unique) == 1:
            return unique[0], unique
        if len(unique) > 1:
            return None, unique
    return None, []


DeletionAction = Literal["fail", "remove_coupling", "restore", "delete_survivor"]


def plan_deletion(policy: Literal["none", "removeCoupling", "restore", "delete"]) -> DeletionAction:
    """A coupled record was deleted on one side (scheduled syncs; BC's 'Resolve Deletion Conflicts'):
    none -> the coupling fails ('coupled to a deleted record'); removeCoupling -> uncouple only;
    restore -> uncouple, then recreate the deleted record from the survivor and couple it;
    delete -> delete the survivor too, and uncouple."""
    return {
        "none": "fail",
        "removeCoupling": "remove_coupling",
        "restore": "restore",
        "delete": "delete_survivor",
    }[policy]  # type: ignore[return-value]


def may_create(direction: Direction, mapping_direction: Direction, sync_only_coupled: bool, create_new: bool) -> bool:
    """Whether an uncoupled record may be created on the other side of ``direction`` and coupled."""
    if sync_only_coupled or not create_new:
        return False
    return mapping_direction in (Direction.BIDIRECTIONAL, direction)
