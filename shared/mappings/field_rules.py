"""PURE: whether a field mapping fits both sides' metadata (BC's Integration Field Mapping checks).

A field mapping is refused when a name is unknown (``unknown_field``), when the values cannot convert
without a transform or option map (``type_mismatch``, also a text that may not fit the target's length
without a ``maxLength`` transform), when the direction would write a field nobody may write
(``read_only_field``) or when another enabled field mapping already writes the target
(``field_already_mapped``). Details name the side, the field and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.domain.model import Direction
from shared.mappings.config import FieldMap
from shared.services.metadata import EntityMeta, FieldMeta

SIDE_LABEL = {"businessCentral": "Business Central", "dataverse": "Dataverse"}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    code: str
    status: int
    detail: str


# Kinds whose values convert as they are (BC kind, Dataverse kind).
_SAME = {
    ("text", "text"),
    ("enum", "text"),
    ("number", "number"),
    ("bool", "bool"),
    ("guid", "guid"),
    ("datetime", "datetime"),
    ("date", "datetime"),
}
_OPTION_KINDS = {"text", "enum", "bool", "number", "option"}


def writes(f: FieldMap, mapping_direction: Direction) -> tuple[bool, bool]:
    """(writes Dataverse, writes Business Central) for this field under the mapping's direction."""
    to_dv = f.allows(Direction.TO_DATAVERSE) and mapping_direction in (Direction.BIDIRECTIONAL, Direction.TO_DATAVERSE)
    to_bc = f.allows(Direction.FROM_DATAVERSE) and mapping_direction in (
        Direction.BIDIRECTIONAL,
        Direction.FROM_DATAVERSE,
    )
    if f.constant is not None:  # a constant is written to the one side it names
        return (f.dataverse is not None and to_dv, f.bc is not None and to_bc)
    return to_dv, to_bc


def _label(meta: EntityMeta) -> str:
    return f"{SIDE_LABEL[meta.side]} {meta.name}"


def _constant_fits(value: Any, target: FieldMeta) -> bool:
    kind = target.kind
    if kind == "text" or kind == "enum":
        return isinstance(value, str) and (not target.members or value in target.members)
    if kind in ("number", "option"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


def check_field(
    f: FieldMap,
    mapping_direction: Direction,
    bc: EntityMeta,
    dv: EntityMeta,
    others: Sequence[FieldMap] = (),
) -> FieldProblem | None:
    """The first problem of ``f`` (None: it fits). ``others``: the mapping's other field mappings."""
    bc_f = bc.fields.get(f.bc) if f.bc else None
    dv_f = dv.fields.get(f.dataverse) if f.dataverse else None
    if f.bc and bc_f is None:
        return FieldProblem("unknown_field", 422, f"{_label(bc)} has no field '{f.bc}'.")
    if f.dataverse and dv_f is None:
        return FieldProblem("unknown_field", 422, f"{_label(dv)} has no attribute '{f.dataverse}'.")
    to_dv, to_bc = writes(f, mapping_direction)
    for other in others:
        if other.id == f.id:
            if other is not f:
                return FieldProblem("field_already_mapped", 409, f"The field mapping '{f.id}' exists already.")
            continue
        if other.status != "enabled":
            continue
        o_dv, o_bc = writes(other, mapping_direction)
        if to_dv and o_dv and f.dataverse and other.dataverse == f.dataverse:
            return FieldProblem(
                "field_already_mapped",
                409,
                f"{_label(dv)} attribute '{f.dataverse}' is already written by the field mapping '{other.id}'.",
            )
        if to_bc and o_bc and f.bc and other.bc == f.bc:
            return FieldProblem(
                "field_already_mapped",
                409,
                f"{_label(bc)} field '{f.bc}' is already written by the field mapping '{other.id}'.",
            )

    for target, meta, written in ((dv_f, dv, to_dv), (bc_f, bc, to_bc)):
        if written and target is not None and not target.writable:
            way = "toDataverse" if meta is bc else "fromDataverse"
            return FieldProblem(
                "read_only_field",
                422,
                f"{_label(meta)} field '{target.name}' is read-only ({target.type_name}); nobody can write it "
                f"through the API. Map it {way} only.",
            )

    if f.constant is not None:
        target = dv_f if f.dataverse else bc_f
        meta = dv if f.dataverse else bc
        if target is not None and not _constant_fits(f.constant, target):
            return FieldProblem(
                "type_mismatch",
                422,
                f"The constant {f.constant!r} does not fit {_label(meta)} field '{target.name}' ({target.type_name}).",
            )
    elif bc_f is not None and dv_f is not None:
        problem = _types(f, bc_f, dv_f, bc, dv, to_dv, to_bc)
        if problem is not None:
            return problem

    return None


def _types(
    f: FieldMap, bc_f: FieldMeta, dv_f: FieldMeta, bc: EntityMeta, dv: EntityMeta, to_dv: bool, to_bc: bool
) -> FieldProblem | None:
    pair = (bc_f.kind, dv_f.kind)
    if f.lookup is not None:
        if dv_f.kind != "lookup":
            return FieldProblem(
                "type_mismatch",
                422,
                f"{_label(dv)} attribute '{dv_f.name}' is {dv_f.type_name}, not a lookup; a lookup field needs one.",
            )
        return None
    if dv_f.kind == "lookup":
        return FieldProblem(
            "type_mismatch",
            422,
            f"{_label(dv)} attribute '{dv_f.name}' is a lookup ({dv_f.type_name}); map it with \"lookup\" through "
            "the parent mapping.",
        )
    if f.option_map is not None:
        if bc_f.kind in _OPTION_KINDS and dv_f.kind in _OPTION_KINDS:
            return None
    elif pair in _SAME:
        pass
    else:
        hint = " (an optionMap converts it)" if bc_f.kind in _OPTION_KINDS and dv_f.kind in _OPTION_KINDS else ""
        return FieldProblem(
            "type_mismatch",
            422,
            f"{_label(bc)} field '{bc_f.name}' ({bc_f.type_name}) and {_label(dv)} attribute '{dv_f.name}' "
            f"({dv_f.type_name}) do not convert without a transform{hint}.",
        )
    if bc_f.kind == "text" and dv_f.kind == "text":
        cut = f.transform.max_length if f.transform else None
        for source, target, meta, written in ((bc_f, dv_f, dv, to_dv), (dv_f, bc_f, bc, to_bc)):
            if not written or target.max_length is None:
                continue
            longest = source.max_length
            if cut is not None:
                longest = min(longest or cut, cut)
            if longest is None or longest > target.max_length:
                return FieldProblem(
                    "type_mismatch",
                    422,
                    f"{_label(meta)} field '{target.name}' takes at most {target.max_length} characters but "
                    f"'{source.name}' holds up to {source.max_length or 'unlimited'}; add a transform with "
                    f"maxLength {target.max_length} or less.",
                )
    return None
