"""PURE: what one document (a header with its lines) needs in Dataverse, from plain values.

A document is synchronized as one unit (SALESORDER-ORDER, POSTEDSALESINV-INV): a header is never written
without its lines, and a document with a line that cannot be resolved (its product or unit not coupled yet)
is not written at all (``parent_not_coupled``, retryable). The Dataverse rows get deterministic ids, derived
out of the BC ids (``document_id_for`` / ``line_id_for``), so a retry after a partial write completes the same
document instead of creating a second one. Lines are matched by those ids: a BC line without its row is
created, a row without its BC line is deleted, a row whose values differ is updated.

Values are keyed by ``FieldMap.key`` (as the planner's), lookups already resolved to the parent's Dataverse
id. Lines without a product (comments, G/L accounts, resources) become write-in products: the keys
``WRITE_IN`` (``isproductoverridden``) and ``DESCRIPTION`` (``productdescription``) carry that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.domain.model import Direction
from shared.mappings.config import FieldMap, TableMapping
from shared.planning.decisions import PARENT_NOT_COUPLED, parent_missing_message
from shared.planning.identity_keys import dataverse_id_for
from shared.planning.transform import convert, same

WRITE_IN = "isproductoverridden"
DESCRIPTION = "productdescription"

DocumentAction = Literal["create", "update", "none", "fail"]


def document_id_for(mapping: str, bc_id: str) -> str:
    """The Dataverse id of the header created for a BC document (the same on every attempt)."""
    return dataverse_id_for(mapping, bc_id)


def line_id_for(mapping: str, bc_line_id: str) -> str:
    return dataverse_id_for(f"{mapping}:line", bc_line_id)


def line_mapping(mapping: TableMapping) -> TableMapping:
    """The lines of a document mapping as a table mapping of their own (for the codec)."""
    lines = mapping.lines
    if lines is None:
        raise ValueError(f"mapping {mapping.name} has no lines")
    return TableMapping.model_validate(
        {
            "name": mapping.name,
            "bcEntity": lines.bc_entity,
            "dataverseTable": lines.dataverse_table,
            "dataverseEntitySet": lines.dataverse_entity_set,
            "dataversePrimaryKey": lines.dataverse_primary_key,
            "direction": mapping.direction,
            "fields": list(lines.fields),
        }
    )


@dataclass(frozen=True, slots=True)
class LineState:
    bc_id: str
    values: dict[str, Any]  # BC values by field key, lookups resolved (None: not coupled)
    is_item: bool  # a line with a product; else a write-in
    description: str = ""


@dataclass(slots=True)
class DocumentState:
    bc_id: str
    header: dict[str, Any]
    lines: list[LineState]
    missing: list[str] = field(default_factory=list)  # lookups (header and lines) whose parent is not coupled
    dv_id: str | None = None  # the coupled Dataverse header, if any
    dv_header: dict[str, Any] | None = None  # its values by field key (None: coupled but not found)
    dv_lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # Dataverse line id -> values


@dataclass(slots=True)
class DocumentPlan:
    bc_id: str
    dv_id: str
    action: DocumentAction
    header: dict[str, Any] = field(default_factory=dict)  # values to write (all on create, changed on update)
    line_creates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    line_updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    line_deletes: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None

    @property
    def writes_lines(self) -> bool:
        return bool(self.line_creates or self.line_updates or self.line_deletes)


def _to_dv(fields: Sequence[FieldMap], values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if f.dataverse is None or not f.allows(Direction.TO_DATAVERSE):
            continue
        if f.constant is None and f.key not in values:
            continue
        out[f.key] = convert(f, values.get(f.key), Direction.TO_DATAVERSE)
    return out


def line_target(fields: Sequence[FieldMap], line: LineState) -> dict[str, Any]:
    """The Dataverse values of one line: a product line, or a write-in product with the line's description."""
    out = _to_dv(fields, line.values)
    if line.is_item:
        out[WRITE_IN] = False
        out[DESCRIPTION] = None
    else:
        for f in fields:
            if f.lookup is not None:
                out.pop(f.key, None)
        out[WRITE_IN] = True
        out[DESCRIPTION] = line.description or "-"
    return out


def _differences(target: dict[str, Any], current: dict[str, Any], constants: set[str]) -> dict[str, Any]:
    """The target values that differ from the current row (constants are written on create only)."""
    return {k: v for k, v in target.items() if k not in constants and not same(v, current.get(k))}


def plan_document(
    mapping: str,
    header_fields: Sequence[FieldMap],
    line_fields: Sequence[FieldMap],
    doc: DocumentState,
    *,
    create_once: bool = False,
) -> DocumentPlan:
    """The writes one document needs. A missing parent fails it before anything is written; a coupled
    document of a create-once mapping (posted invoices) is never written again."""
    dv_id = doc.dv_id or document_id_for(mapping, doc.bc_id)
    if doc.missing:
        return DocumentPlan(
            doc.bc_id, dv_id, "fail", error_code=PARENT_NOT_COUPLED, error_message=parent_missing_message(doc.missing)
        )
    if doc.dv_id is not None and create_once and doc.dv_header is not None:
        return DocumentPlan(doc.bc_id, dv_id, "none")
    header = _to_dv(header_fields, doc.header)
    targets = {line_id_for(mapping, ln.bc_id): line_target(line_fields, ln) for ln in doc.lines}
    if doc.dv_id is None or doc.dv_header is None:
        # Not coupled (or its row is gone): the whole document; rows an earlier attempt left are matched by id.
        plan = DocumentPlan(doc.bc_id, dv_id, "create", header=header)
        plan.line_creates = list(targets.items())
        return plan
    constants = {f.key for f in (*header_fields, *line_fields) if f.constant is not None}
    plan = DocumentPlan(doc.bc_id, dv_id, "update", header=_differences(header, doc.dv_header, constants))
    for line_id, target in targets.items():
        current = doc.dv_lines.get(line_id)
        if current is None:
            plan.line_creates.append((line_id, target))
            continue
        changed = _differences(target, current, constants)
        if changed:
            plan.line_updates.append((line_id, changed))
    plan.line_deletes = sorted(i for i in doc.dv_lines if i not in targets)
    if not plan.header and not plan.writes_lines:
        plan.action = "none"
    return plan
