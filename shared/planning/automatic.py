"""PURE: whether a mapping's state lets a piece of work run.

A paused mapping does no automatic work: neither the timer nor webhook notifications of either side
(single changes, BC ``collection`` notifications) sync it. Actions on records and jobs started through the
API still run. Work that belongs to no job came from a notification, never from the API. Nothing is read
while paused, so no watermark moves: the next incremental run after resuming catches up.
"""

from __future__ import annotations


def does_automatic_work(state: str) -> bool:
    return state != "paused"


def may_run(state: str, job_id: str | None) -> bool:
    """Work of a job (started through the API, or by the timer while running) runs; work without a job
    (a webhook's single change) runs only on a running mapping."""
    return does_automatic_work(state) or bool(job_id)
