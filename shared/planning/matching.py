"""PURE: match-based coupling as Business Central does it (codeunit 5360 "CDS Int. Table Couple").

- Criteria are the field mappings with ``useForMatch`` (enabled, not constants, not lookups), grouped by
  ``matchPriority``, lowest first; all fields of one priority must match together (AND).
- Text matches case-insensitively unless the criterion is ``caseSensitive``.
- Empty BC values are left out of the criteria (a priority whose values are all empty is skipped).
- Exactly one candidate not coupled yet at a priority -> couple; none, several, or only coupled
  candidates -> the next priority; no priority gives a unique match -> unmatched.

The service gathers candidates with one Dataverse query per chunk of records and priority
(:func:`candidate_filter`) and decides here, with plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from shared.mappings.config import TableMapping


@dataclass(frozen=True, slots=True)
class MatchCriterion:
    bc: str
    dataverse: str
    priority: int = 0
    case_sensitive: bool = False


@dataclass(frozen=True, slots=True)
class MatchDecision:
    """``coupled``: ``dataverse_id`` is the unique uncoupled candidate found at ``priority``."""

    bc_id: str
    outcome: Literal["coupled", "unmatched"]
    dataverse_id: str | None = None
    priority: int | None = None
    # Per priority tried: how many candidates there were and how many of them were coupled already.
    tried: tuple[tuple[int, int, int], ...] = ()


def criteria_of(mapping: TableMapping) -> list[MatchCriterion]:
    """The mapping's match criteria: enabled field mappings with ``useForMatch``, then the shipped
    ``matchFields`` that no field mapping covers (criteria on fields that are not synchronized)."""
    out: list[MatchCriterion] = []
    covered: set[tuple[str, str]] = set()
    for f in mapping.fields:
        if f.bc is None or f.dataverse is None:
            continue
        covered.add((f.bc, f.dataverse))
        if f.use_for_match and f.constant is None and f.lookup is None and f.status == "enabled":
            out.append(MatchCriterion(f.bc, f.dataverse, f.match_priority, f.case_sensitive))
    for m in mapping.match_fields:
        if (m.bc, m.dataverse) not in covered:
            out.append(MatchCriterion(m.bc, m.dataverse, m.priority, m.case_sensitive))
    return out


def by_priority(criteria: Iterable[MatchCriterion]) -> list[list[MatchCriterion]]:
    """Criteria grouped by priority, lowest first (order within a priority kept)."""
    groups: dict[int, list[MatchCriterion]] = {}
    for c in criteria:
        groups.setdefault(c.priority, []).append(c)
    return [groups[p] for p in sorted(groups)]


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def record_terms(group: Sequence[MatchCriterion], bc_fields: Mapping[str, Any]) -> list[tuple[MatchCriterion, Any]]:
    """The (criterion, BC value) pairs of one priority for one record; empty BC values are left out."""
    return [(c, bc_fields.get(c.bc)) for c in group if not _empty(bc_fields.get(c.bc))]


def _norm(value: Any, case_sensitive: bool) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 36 and text.count("-") == 4:
            return text.lower()  # GUIDs never compare by case
        return text if case_sensitive else text.casefold()
    return value


def values_match(bc_value: Any, dv_value: Any, *, case_sensitive: bool) -> bool:
    if _empty(dv_value):
        return False
    return bool(_norm(bc_value, case_sensitive) == _norm(dv_value, case_sensitive))


def row_matches(terms: Sequence[tuple[MatchCriterion, Any]], row: Mapping[str, Any]) -> bool:
    """All terms of one priority hold for this Dataverse row (AND)."""
    return bool(terms) and all(
        values_match(value, row.get(c.dataverse), case_sensitive=c.case_sensitive) for c, value in terms
    )


def decide(
    bc_id: str,
    bc_fields: Mapping[str, Any],
    groups: Sequence[Sequence[MatchCriterion]],
    candidates: Sequence[Mapping[str, Mapping[str, Any]]],
    coupled_dv_ids: set[str] | frozenset[str],
) -> MatchDecision:
    """One record's match. ``candidates[i]``: Dataverse rows (id -> fields) returned for priority ``i`` of
    this record's chunk (a superset: the query may be case-insensitive or span several records);
    ``coupled_dv_ids``: rows already coupled in this mapping (including pairs coupled earlier in the run)."""
    tried: list[tuple[int, int, int]] = []
    for group, rows in zip(groups, candidates, strict=True):
        terms = record_terms(group, bc_fields)
        if not terms:
            continue  # every value of this priority is empty: the priority says nothing about this record
        found = sorted(dv_id for dv_id, row in rows.items() if row_matches(terms, row))
        taken = [d for d in found if d in coupled_dv_ids]
        tried.append((group[0].priority, len(found), len(taken)))
        if len(found) == 1 and not taken:
            return MatchDecision(bc_id, "coupled", found[0], group[0].priority, tuple(tried))
    return MatchDecision(bc_id, "unmatched", tried=tuple(tried))


def decide_all(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    groups: Sequence[Sequence[MatchCriterion]],
    candidates: Sequence[Mapping[str, Mapping[str, Any]]],
    coupled_dv_ids: set[str] | frozenset[str],
) -> list[MatchDecision]:
    """Decisions for a chunk, in order; a row coupled to an earlier record of the chunk counts as coupled
    for the later ones (two BC records never couple to one row)."""
    taken = set(coupled_dv_ids)
    out: list[MatchDecision] = []
    for bc_id, fields in records:
        d = decide(bc_id, fields, groups, candidates, taken)
        if d.dataverse_id:
            taken.add(d.dataverse_id)
        out.append(d)
    return out


def unmatched_reason(decision: MatchDecision) -> str:
    """The sync error's message of an unmatched record (names what every priority found)."""
    if not decision.tried:
        return "No unique uncoupled matching Dataverse row: every match field of the record is empty."
    parts = []
    for priority, found, taken in decision.tried:
        if found == 0:
            parts.append(f"priority {priority}: no candidate")
        elif taken == found:
            parts.append(f"priority {priority}: {found} candidate(s), all coupled already")
        else:
            parts.append(f"priority {priority}: {found} candidates")
    return "No unique uncoupled matching Dataverse row (" + "; ".join(parts) + ")."


def odata_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    text = str(value).strip()
    if len(text) == 36 and text.count("-") == 4:
        return text.lower()
    return "'" + text.replace("'", "''") + "'"


def candidate_filter(group: Sequence[MatchCriterion], chunk: Sequence[Mapping[str, Any]]) -> str | None:
    """One Dataverse ``$filter`` finding the candidates of every record of ``chunk`` at this priority:
    ``(a eq 'x' and b eq 'y') or (a eq 'z' and b eq 'w')``, each distinct term set once. Text compares
    case-insensitively in Dataverse (its collation); case-sensitive criteria are narrowed afterwards by
    :func:`row_matches`. None when no record has a value for this priority."""
    clauses: list[str] = []
    seen: set[str] = set()
    for fields in chunk:
        terms = record_terms(group, fields)
        if not terms:
            continue
        clause = " and ".join(f"{c.dataverse} eq {odata_literal(v)}" for c, v in terms)
        key = clause.casefold()
        if key not in seen:
            seen.add(key)
            clauses.append(f"({clause})" if len(terms) > 1 else clause)
    if not clauses:
        return None
    return " or ".join(clauses)


def sync_after_direction(
    mapping_direction: str, conflict_policy: str
) -> Literal["toDataverse", "fromDataverse", "bidirectional"]:
    """BC's "Synch. After Match-Based Coupling": the mapping's direction; for a bidirectional mapping its
    conflict policy decides (bcWins -> toDataverse, dataverseWins -> fromDataverse, none -> merge)."""
    if mapping_direction in ("toDataverse", "fromDataverse"):
        return mapping_direction  # type: ignore[return-value]
    if conflict_policy == "bcWins":
        return "toDataverse"
    if conflict_policy == "dataverseWins":
        return "fromDataverse"
    return "bidirectional"
