"""Creating records under deterministic keys, and what to do when a key is already taken.

A create answered by a record that already exists at its key (an earlier attempt, a concurrent worker, or
the row of an earlier coupling of the same record) is adopted only after that record is brought up to date
with today's values, so the coupling's baseline is what each side really holds and an old row's values
never win a later merge. A record at the key that is coupled to another record is never adopted: the next
key of the source's sequence is used (``shared.planning.identity_keys``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.domain.model import RemoteRecord, Side, WriteOp, WriteResult
from shared.errors import ConflictError
from shared.mappings.config import TableMapping
from shared.planning.identity_keys import MAX_KEY_ATTEMPTS, adoptable, bc_number_for, dataverse_id_for
from shared.services.engine import Engine

Recover = Any  # (sources, written) -> awaitable (written, lost ids): the BC side's refused-create recovery


async def create_in_dataverse(
    engine: Engine, mapping: TableMapping, sources: Sequence[RemoteRecord], payloads: dict[str, dict[str, Any]]
) -> list[WriteResult]:
    """Creates one Dataverse row per BC record (payloads by BC id); results in ``sources`` order."""
    pk = mapping.dataverse_primary_key
    results: dict[str, WriteResult] = {}
    todo = list(sources)
    for attempt in range(MAX_KEY_ATTEMPTS):
        if not todo:
            break
        ops = []
        for rec in todo:
            new_id = dataverse_id_for(mapping.name, rec.id, attempt)
            ops.append(WriteOp("create", ref=rec.id, id=new_id, fields={**payloads[rec.id], pk: new_id}))
        written = await engine.dv.write_many(mapping.dataverse_entity_set, ops)
        todo = await _settle(engine, mapping, Side.DATAVERSE, todo, written, payloads, results)
    _give_up(todo, results)
    return [results[rec.id] for rec in sources]


async def create_in_bc(
    engine: Engine,
    mapping: TableMapping,
    sources: Sequence[RemoteRecord],
    payloads: dict[str, dict[str, Any]],
    recover: Recover,
) -> tuple[list[WriteResult], set[str]]:
    """Creates one BC record per Dataverse row (payloads by Dataverse id), the No. derived from the row's id
    unless the mapping supplies one; returns the results in ``sources`` order and the rows another worker
    created and coupled meanwhile."""
    key = mapping.bc_natural_key
    own_number = {rec.id: bool(key) and key not in payloads[rec.id] for rec in sources}
    results: dict[str, WriteResult] = {}
    lost: set[str] = set()
    todo = list(sources)
    for attempt in range(MAX_KEY_ATTEMPTS):
        if not todo:
            break
        for rec in todo:
            if own_number[rec.id]:
                payloads[rec.id][key] = bc_number_for(rec.id, attempt)  # type: ignore[index]
        ops = [WriteOp("create", ref=rec.id, fields=payloads[rec.id]) for rec in todo]
        written = await engine.bc.write_many(mapping.bc_entity, ops)
        written, gone = await recover(todo, written, payloads)
        lost |= gone
        kept = [(rec, w) for rec, w in zip(todo, written, strict=True) if rec.id not in gone]
        todo = await _settle(engine, mapping, Side.BC, [r for r, _ in kept], [w for _, w in kept], payloads, results)
        todo = [rec for rec in todo if own_number[rec.id]] + _give_up(
            [rec for rec in todo if not own_number[rec.id]], results
        )
    _give_up(todo, results)
    return [results[rec.id] for rec in sources if rec.id not in lost], lost


async def _settle(
    engine: Engine,
    mapping: TableMapping,
    target: Side,
    todo: Sequence[RemoteRecord],
    written: Sequence[WriteResult],
    payloads: dict[str, dict[str, Any]],
    results: dict[str, WriteResult],
) -> list[RemoteRecord]:
    """Files each create's result; returns the sources whose key is held by another coupling (next key)."""
    found = {rec.id: w.record for rec, w in zip(todo, written, strict=True) if w.ok and w.existed and w.record}
    owners: dict[str, str] = {}
    if found:
        ids = [r.id for r in found.values()]
        if target == Side.DATAVERSE:
            owners = {
                i: c.bc_id for i, c in (await engine.couplings.get_many_by_dataverse_ids(mapping.name, ids)).items()
            }
        else:
            owners = {
                i: c.dataverse_id for i, c in (await engine.couplings.get_many_by_bc_ids(mapping.name, ids)).items()
            }
    again: list[RemoteRecord] = []
    refresh: list[tuple[RemoteRecord, RemoteRecord]] = []
    for rec, w in zip(todo, written, strict=True):
        existing = found.get(rec.id)
        if existing is not None and not adoptable(rec.id, owners.get(existing.id)):
            again.append(rec)
            continue
        results[rec.id] = w
        if existing is not None and existing.id not in owners:
            refresh.append((rec, existing))
    if refresh:
        await _bring_up_to_date(engine, mapping, target, refresh, payloads, results)
    return again


async def _bring_up_to_date(
    engine: Engine,
    mapping: TableMapping,
    target: Side,
    refresh: Sequence[tuple[RemoteRecord, RemoteRecord]],
    payloads: dict[str, dict[str, Any]],
    results: dict[str, WriteResult],
) -> None:
    """Writes today's values over records adopted at their key; a record that can't be updated is a failed
    create (recorded, retried later), never a coupling whose baseline claims values the record lacks."""
    skip = {mapping.dataverse_primary_key, mapping.bc_natural_key}
    ops = [
        WriteOp(
            "update",
            ref=rec.id,
            id=existing.id,
            fields={k: v for k, v in payloads[rec.id].items() if k not in skip},
            etag=existing.etag,
        )
        for rec, existing in refresh
    ]
    service, entity = (
        (engine.dv, mapping.dataverse_entity_set) if target == Side.DATAVERSE else (engine.bc, mapping.bc_entity)
    )
    for (rec, existing), w in zip(refresh, await service.write_many(entity, ops), strict=True):
        if w.ok:
            results[rec.id] = WriteResult(rec.id, True, w.record or existing, existed=True)
        else:
            results[rec.id] = WriteResult(rec.id, False, error=w.error)


def _give_up(todo: Sequence[RemoteRecord], results: dict[str, WriteResult]) -> list[RemoteRecord]:
    for rec in todo:
        results[rec.id] = WriteResult(
            rec.id, False, error=ConflictError("Every key for the new record is taken by another coupled record.")
        )
    return []
