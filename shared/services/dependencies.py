"""Mapping-wide jobs in BC's dependency order (GetPrioritizedMappingList and each mapping's Dependency Filter).

Before a mapping-wide job started through the API runs, the mappings it depends on (transitively, parents
first) are brought up to date: their incremental sync runs, and the code tables BC couples by match
(CURRENCY, UNIT OF MEASURE and the option mappings: "Create New in Case of No Match") couple their new
records, creating the missing counterparts. A child record whose parent still is not coupled fails with the
retryable ``parent_not_coupled``; a retry after the parent synced heals it.

A ``full`` job is BC's "Run Full Synchronization": it also creates the counterparts of uncoupled records of a
mapping that otherwise synchronizes only coupled ones (BC runs the full synchronization with "Synch. Only
Coupled Records" off), and a code table couples all its records by match.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.mappings.config import TableMapping, dependency_order
from shared.messaging import work
from shared.services.option_sets import OptionSetService, is_option_mapping
from shared.services.sync_service import SyncOutcome

if TYPE_CHECKING:
    from shared.services.jobs import JobService

log = logging.getLogger(__name__)


def ancestors(mapping: TableMapping, all_mappings: list[TableMapping]) -> list[TableMapping]:
    """PURE: the mappings ``mapping`` depends on, transitively, parents first."""
    by_name = {m.name: m for m in all_mappings}
    wanted: set[str] = set()
    stack = list(mapping.depends_on)
    while stack:
        name = stack.pop()
        if name in wanted or name not in by_name:
            continue
        wanted.add(name)
        stack.extend(by_name[name].depends_on)
    return [m for m in dependency_order(list(by_name.values())) if m.name in wanted]


def for_full_run(mapping: TableMapping) -> TableMapping:
    """PURE: the mapping as a full synchronization runs it (creating uncoupled records where it may create)."""
    if mapping.sync_only_coupled and mapping.create_new and not is_option_mapping(mapping):
        return mapping.model_copy(update={"sync_only_coupled": False})
    return mapping


async def couple_code_table(jobs: JobService, mapping: TableMapping, job_id: str | None) -> SyncOutcome:
    """A code table's records coupled by match, the missing counterparts created (option sets included)."""
    if is_option_mapping(mapping):
        return await OptionSetService(jobs.e).run(mapping, None, job_id)
    if not mapping.create_new_if_no_match:
        return SyncOutcome()
    match = work.MatchCouple(mapping=mapping.name, create_new_if_no_match=True, sync_after=True)
    return await jobs._match(mapping, match, job_id)


async def bring_parents_up_to_date(jobs: JobService, mapping: TableMapping) -> None:
    """Runs the parents' work inline (their own counts are not the child's job's)."""
    for parent in ancestors(mapping, await jobs.e.registry.list()):
        if parent.state == "paused":
            continue
        if is_option_mapping(parent) or parent.create_new_if_no_match:
            await couple_code_table(jobs, parent, None)
        if not is_option_mapping(parent):
            await jobs.run_mapping_sync(parent, full=False, job_id=None)


async def run_mapping_job(
    jobs: JobService, mapping: TableMapping, *, full: bool, job_id: str, parents_first: bool = False
) -> SyncOutcome:
    """A mapping-wide job: parents first (jobs started through the API; the timer starts every mapping's
    job in dependency order itself), then the mapping (a full run as BC's full synchronization)."""
    if parents_first:
        await bring_parents_up_to_date(jobs, mapping)
    outcome = SyncOutcome()
    if full or mapping.create_new_if_no_match:
        outcome.merge(await couple_code_table(jobs, mapping, job_id))
    if not is_option_mapping(mapping):
        outcome.merge(await jobs.run_mapping_sync(for_full_run(mapping) if full else mapping, full=full, job_id=job_id))
    return outcome
