"""Fan-out of a mapping-wide run: a large page of changes becomes ``sync-batch`` work messages for the workers,
and the job's bookkeeping (expected batches, the cursors its watermarks move to after the last batch) is
recorded in the job row's typed fields before any of them is queued. Master data and documents both use it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.domain.model import RemoteRecord, Side
from shared.mappings.config import TableMapping
from shared.messaging import work
from shared.services.engine import Engine


async def fan_out(engine: Engine, job_id: str, batches: Sequence[dict[str, Any]], cursors: Mapping[str, str]) -> None:
    """Queues the ``batches`` of job ``job_id``. Expected batches (these and the run that made them) and the
    pending ``cursors`` (side -> cursor) are recorded first, so no batch can end the job early and the one
    that ends it knows where the watermarks go."""
    await engine.jobs.set_status(job_id, "running", expected_batches=1 + len(batches), pending_cursors=dict(cursors))
    await engine.publisher.publish(list(batches))


def sync_batch_messages(
    mapping: TableMapping,
    side: Side,
    records: Sequence[RemoteRecord],
    job_id: str,
    *,
    first: int,
    size: int,
    deleted_ids: Sequence[str] = (),
    full_run: bool = False,
    filtered: bool = False,
    uncoupled: bool = False,
) -> list[dict[str, Any]]:
    """A fanned-out page of changes as ``sync-batch`` messages of ``size`` records each (the deletions ride
    with the first); numbered after the ``first`` batches already made for the job."""
    out = []
    for n, start in enumerate(range(0, len(records), size)):
        ids = [r.id for r in records[start : start + size]]
        batch = work.SyncBatch(
            mapping=mapping.name,
            batch=f"b{first + n + 1}",
            direction=mapping.direction.value,
            scheduled=True,
            full_run=full_run,
            filtered=filtered,
            uncoupled=uncoupled,
            side=side.value,
            bc_ids=ids if side == Side.BC else None,
            dataverse_ids=ids if side == Side.DATAVERSE else None,
            deleted_ids=list(deleted_ids) if n == 0 and deleted_ids else None,
        )
        out.append(batch.for_job(job_id, 0).to_wire())
    return out
