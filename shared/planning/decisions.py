"""Pure decisions of a sync pass over plain data (no I/O), tested with literals like the planner:
which change-feed rows need work (newer than the last sync and not our own echo), how a failed write is
classified, whether a stale write is re-planned, the parent-dependency rule and the next failure
bookkeeping of a coupling."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.planning.transform import same

# Dataverse's "a record with matching key values already exists": a permanent refusal of its own, not a
# concurrency conflict (only a stale ETag, 412 / 0x80060882, is re-read and re-planned).
DUPLICATE_KEY_CODES = frozenset({"0x80060892", "0x80040237", "0x80040333"})
STALE_ETAG_CODES = frozenset({"0x80060882"})

DUPLICATE_KEY = "duplicate_key"
CREATE_FAILED = "create_failed"
TARGET_CHANGED = "target_changed"
PARENT_NOT_COUPLED = "parent_not_coupled"
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
UPSTREAM_SERVICES = frozenset({"businessCentral", "dataverse"})


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """A refused write as plain data: the adapter error's class name, HTTP status, remote code, transience."""

    kind: str
    status: int | None
    code: str | None
    transient: bool


def may_be_newer(stamp: datetime | None, seen: datetime | None, *, whole_seconds: bool) -> bool:
    """Whether a change-feed row may be newer than what the last sync of its pair saw (feeds overlap and
    hand our own writes back). With whole-second stamps (Dataverse's ``modifiedon``) a person's edit in
    the second of our write carries our write's stamp, so an equal stamp is a candidate too (the value
    check, ``holds_synced_values``, then tells our echo from the edit); millisecond stamps (BC) must move."""
    if stamp is None or seen is None:
        return True
    return stamp >= seen if whole_seconds else stamp > seen


def holds_synced_values(keys: Sequence[str], now: Mapping[str, Any], snapshot: Mapping[str, Any]) -> bool:
    """Echo rule: a row whose every field that flows from its side (``keys``) still holds the value of the
    last sync (``snapshot``) is our own write coming back, or a change to fields the mapping ignores: no
    work. A value that differs, a field never synced, or no such field at all is a change."""
    if not keys:
        return False
    for k in keys:  # a loop, not all() over a generator: it runs per field of every record of a full sync's pages
        if k not in snapshot:
            return False
        a, b = now.get(k), snapshot[k]
        if a != b and not same(a, b):
            return False
    return True


def synced_in_this_run(read: Mapping[str, str | None], record_id: str, etag: str | None) -> bool:
    """Whether a Dataverse feed row is the very version an earlier pass of the same run read and synced
    (``read``: id -> ETag). A pair changed on both sides comes up in both feeds: the BC pass merges it
    (reading the Dataverse row), so the Dataverse pass must not sync it again: a conflict or a failure would
    count twice and mark the coupling skipped after one run. A newer version (another ETag) is a change."""
    return etag is not None and read.get(record_id) == etag


# A side's change page is first checked against the mapping's synced marks (one small row per coupling, read
# once per job and side) when the page alone holds at least 1 in MARKS_SHARE of the couplings: a coupling lookup
# reads ~2 rows and decodes a whole coupling per key, a mark is one small row (#23: the first tick after a
# 100,000-record full job reads 100,000 of our own creates back; pages of 20,000, 1 in 5 of the couplings).
MARKS_SHARE = 8
MARKS_MIN_ROWS = 1_000  # a smaller page's lookups are a few requests per bucket; the marks are >= 1 per bucket


def marks_pay(page_rows: int, couplings: float | None, *, full: bool) -> bool:
    """Whether a change page is first checked against the synced marks: on a full run (every record comes
    back), or when the page has ``MARKS_MIN_ROWS`` rows or more and holds at least 1 in ``MARKS_SHARE`` of the
    mapping's couplings (``couplings``: the store's estimate, None when not measured yet)."""
    if full:
        return True
    return couplings is not None and page_rows >= MARKS_MIN_ROWS and page_rows * MARKS_SHARE >= couplings


def _values_mark(values: Iterable[Any]) -> int | None:
    try:
        return hash(tuple(values))
    except TypeError:  # a list or dict value: no mark (the full check decides)
        return None


def snapshot_mark(keys: Sequence[str], snapshot: Mapping[str, Any]) -> int | None:
    """The mark of a coupling's snapshot over ``keys`` (the fields that flow from the side), for
    ``holds_synced_mark``; None when some key was never synced (a field mapped or enabled since: a change)."""
    if not keys or any(k not in snapshot for k in keys):
        return None
    return _values_mark(snapshot[k] for k in keys)


def holds_synced_mark(keys: Sequence[str], now: Mapping[str, Any], mark: int | None) -> bool:
    """The echo rule (``holds_synced_values``) against a snapshot's mark: equal marks mean equal values
    (marks are compared within one process only). Values that differ only in form (``same``) do not match
    here; the full check still sees them, so a match drops only rows the full check would drop too."""
    return mark is not None and bool(keys) and _values_mark(now.get(k) for k in keys) == mark


def failure_code(f: WriteFailure) -> str:
    """The sync-error code of a refused write."""
    remote = (f.code or "").lower()
    if remote in DUPLICATE_KEY_CODES:
        return DUPLICATE_KEY
    # Dataverse 412, or BC's 409 Request_EntityChanged (classified PreconditionFailedError by the adapter)
    if f.status == 412 or f.kind == "PreconditionFailedError" or remote in STALE_ETAG_CODES:
        return TARGET_CHANGED
    if not f.kind:
        return "sync_failed"
    return "remote_" + (f.kind.removesuffix("Error").lower() or "error")


def failure_transient(f: WriteFailure) -> bool:
    """A stale write is worth retrying (the record changed meanwhile); a duplicate key never is."""
    return failure_code(f) == TARGET_CHANGED or (f.transient and failure_code(f) != DUPLICATE_KEY)


def create_failure_code(f: WriteFailure) -> str:
    """The sync-error code of a refused create: a duplicate key has its own, anything else is ``create_failed``."""
    return DUPLICATE_KEY if failure_code(f) == DUPLICATE_KEY else CREATE_FAILED


def failure_message(
    f: WriteFailure, remote: str | None, *, table: str, written: Mapping[str, Any], keys: Sequence[str]
) -> str:
    """The message of a refused write. A duplicate key names the key columns the write set (``keys``: the
    table's identifying columns, in order) with their values, so whoever fixes it knows which value clashes."""
    if failure_code(f) != DUPLICATE_KEY:
        return remote or "The write failed."
    named = ", ".join(f"{k} {written[k]!r}" for k in dict.fromkeys(keys) if written.get(k) not in (None, ""))
    clash = f"the key value {named}" if named else "the same key values"
    said = f" ({remote})" if remote else ""
    return f"Another {table} row already has {clash}: a key must be unique, so the write was refused{said}."


def replan(code: str | None, attempt: int) -> bool:
    """Stale-ETag rule: a write refused because the target changed is re-read and re-planned once."""
    return code == TARGET_CHANGED and attempt == 0


def upstream_failure_is_per_record(service: str | None, transient: bool) -> bool:
    """A lasting transient failure of BC or Dataverse during Synchronize now is a per-record result; one of
    the service's own stores or queue stays a failed request (503)."""
    return transient and service in UPSTREAM_SERVICES


def parent_missing_message(missing: list[str]) -> str | None:
    """Parent-dependency rule: a lookup whose parent is not coupled fails the record (retryable) rather than
    writing it without its parent; ``None`` when nothing is missing."""
    if not missing:
        return None
    return f"The parent record ({', '.join(missing)}) is not coupled yet; couple or sync the parent mapping first."


@dataclass(frozen=True, slots=True)
class FailureState:
    consecutive_failures: int
    last_error: str | None
    last_sync_result: str | None
    skipped: bool


def after_failure(s: FailureState, message: str | None, transient: bool, skip_after: int) -> FailureState:
    """Next coupling state after a failed sync: identical failures in a row are counted (a different one starts
    again at 1) and a permanent one repeated ``skip_after`` times marks the coupling skipped (BC's Skipped)."""
    same_again = s.last_error == message and s.last_sync_result == "failed"
    failures = s.consecutive_failures + 1 if same_again or s.consecutive_failures == 0 else 1
    skipped = s.skipped or (failures >= skip_after and not transient)
    return FailureState(failures, message, "failed", skipped)


def after_success() -> FailureState:
    """Next coupling state after a successful sync: counters reset and a skipped coupling is un-skipped."""
    return FailureState(0, None, "succeeded", False)
