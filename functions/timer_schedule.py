"""Timer: starts the scheduled incremental syncs of the running mappings whose interval is due."""

import logging

import azure.functions as func

from shared.bootstrap import get_engine
from shared.services.schedule import start_due_syncs

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_TIMER_SCHEDULE%", run_on_startup=False)
async def scheduled_sync(timer: func.TimerRequest) -> None:
    started = await start_due_syncs(await get_engine())
    log.info("Scheduled syncs started: %s", ", ".join(started) or "none due")
