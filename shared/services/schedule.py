"""Which mappings' scheduled syncs are due, and starting them (parents first)."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.services.engine import Engine, utcnow
from shared.services.jobs import JobService

# A job still queued/running after this long is considered abandoned (its worker died for good).
STALE_AFTER = timedelta(hours=1)


async def start_due_syncs(engine: Engine, *, now: datetime | None = None) -> dict[str, str]:
    """Starts one incremental job per running, due mapping that has no job in flight; returns
    ``{mapping: job id}`` in the order started. ``SYNC_SCHEDULED_SYNC=false`` turns this off (API-started
    jobs still run)."""
    if not engine.settings.scheduled_sync:
        return {}
    started: dict[str, str] = {}
    now = now or utcnow()
    jobs = JobService(engine)
    for mapping in await engine.registry.list():  # dependency order: parents first
        if mapping.state != "running":
            continue
        recent, _ = await engine.jobs.list_page(mapping=mapping.name, top=1)
        last = recent[0] if recent else None
        if last is not None and last.created_at is not None:
            in_flight = last.status in ("queued", "running") and now - last.created_at < STALE_AFTER
            not_due = now - last.created_at < timedelta(minutes=mapping.schedule_minutes)
            if in_flight or (not_due and last.kind == "incremental"):
                continue
        job = await jobs.start(mapping.name, "incremental", mapping.direction.value, full=False, trigger="timer")  # #22
        started[mapping.name] = job.job_id
    return started
