"""Timer: starts the scheduled incremental syncs of the running mappings whose interval is due."""

import logging

import azure.functions as func

from shared.bootstrap import get_runtime
from shared.services.history import HistoryService
from shared.services.schedule import start_due_syncs
from shared.services.webhooks import ensure_bc_subscriptions

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_TIMER_SCHEDULE%", run_on_startup=False)
async def scheduled_sync(timer: func.TimerRequest) -> None:
    runtime = await get_runtime()
    started = await start_due_syncs(runtime.engine)
    log.info("Scheduled syncs started: %s", ", ".join(started) or "none due")
    purged = await HistoryService(runtime.engine).purge()  # #22: expired history of uncoupled records
    log.info("History rows past retention removed: %d", purged)
    if runtime.engine.settings.scheduled_sync:
        subscriptions = await ensure_bc_subscriptions(runtime.engine, runtime.bc)
        log.info("BC webhook subscriptions: %s", subscriptions)
