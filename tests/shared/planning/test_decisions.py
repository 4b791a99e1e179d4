from datetime import UTC, datetime

import pytest

from shared.planning.decisions import (
    DUPLICATE_KEY,
    PARENT_NOT_COUPLED,
    TARGET_CHANGED,
    FailureState,
    WriteFailure,
    after_failure,
    after_success,
    create_failure_code,
    failure_code,
    failure_message,
    failure_transient,
    holds_synced_mark,
    holds_synced_values,
    marks_pay,
    may_be_newer,
    parent_missing_message,
    replan,
    snapshot_mark,
    synced_in_this_run,
)


def test_duplicate_key_is_its_own_permanent_code_not_a_conflict() -> None:
    for code in ("0x80060892", "0x80040237", "0X80060892"):
        f = WriteFailure("ConflictError", 412 if code == "0x80040237" else 409, code, False)
        assert failure_code(f) == DUPLICATE_KEY and not failure_transient(f)
    assert failure_code(WriteFailure("ConflictError", 409, None, False)) == "remote_conflict"


DUP = WriteFailure("PreconditionFailedError", 412, "0x80060892", False)
SAID = "A record with matching key values already exists."
KEYS = ["accountnumber", "name"]


def test_a_refused_create_is_duplicate_key_or_create_failed() -> None:
    assert create_failure_code(DUP) == DUPLICATE_KEY
    assert create_failure_code(WriteFailure("PreconditionFailedError", 412, "0x80040237", False)) == DUPLICATE_KEY
    assert create_failure_code(WriteFailure("PermanentError", 400, "0x80040217", False)) == "create_failed"
    assert create_failure_code(WriteFailure("TransientError", 503, None, True)) == "create_failed"


def test_a_duplicate_key_message_names_the_key_values_the_write_set() -> None:
    written = {"accountnumber": "C-42", "telephone1": "555"}
    msg = failure_message(DUP, SAID, table="account", written=written, keys=KEYS)
    assert msg == (
        "Another account row already has the key value accountnumber 'C-42': a key must be unique, so the "
        "write was refused (A record with matching key values already exists.)."
    )
    both = failure_message(DUP, None, table="account", written=written | {"name": "Contoso"}, keys=KEYS)
    assert "accountnumber 'C-42', name 'Contoso':" in both and "(" not in both
    for none_written in ({}, {"telephone1": "555"}, {"accountnumber": None, "name": ""}):
        msg = failure_message(DUP, SAID, table="account", written=none_written, keys=KEYS)
        assert "the same key values" in msg and SAID in msg


def test_other_refusals_keep_the_remote_message() -> None:
    other = WriteFailure("PermanentError", 400, "0x80040217", False)
    written = {"accountnumber": "C-42"}
    assert failure_message(other, "Bad value", table="account", written=written, keys=KEYS) == "Bad value"
    assert failure_message(other, None, table="account", written=written, keys=KEYS) == "The write failed."


def test_only_a_stale_etag_is_target_changed_and_replanned_once() -> None:
    stale = WriteFailure("PreconditionFailedError", 412, "0x80060882", False)
    assert failure_code(stale) == TARGET_CHANGED and failure_transient(stale)
    assert failure_code(WriteFailure("PreconditionFailedError", None, "0x80060882", False)) == TARGET_CHANGED
    assert replan(TARGET_CHANGED, 0) and not replan(TARGET_CHANGED, 1) and not replan(DUPLICATE_KEY, 0)


def test_other_failures_keep_the_adapter_error_name() -> None:
    assert failure_code(WriteFailure("TransientError", 503, None, True)) == "remote_transient"
    assert failure_transient(WriteFailure("TransientError", 503, None, True))
    assert failure_code(WriteFailure("", None, None, False)) == "sync_failed"
    assert failure_code(WriteFailure("SyncError", 400, "0x80040217", False)) == "remote_sync"


def test_parent_dependency_rule() -> None:
    assert parent_missing_message([]) is None
    msg = parent_missing_message(["customerId", "parentcustomerid"])
    assert msg is not None and "customerId, parentcustomerid" in msg and "not coupled" in msg
    assert PARENT_NOT_COUPLED == "parent_not_coupled"


def test_identical_permanent_failures_skip_after_n() -> None:
    s = FailureState(0, None, "succeeded", False)
    s = after_failure(s, "boom", False, 2)
    assert s == FailureState(1, "boom", "failed", False)
    s = after_failure(s, "boom", False, 2)
    assert s == FailureState(2, "boom", "failed", True)


def test_a_different_failure_starts_counting_again_and_transient_never_skips() -> None:
    s = after_failure(FailureState(3, "old", "failed", False), "new", False, 5)
    assert s.consecutive_failures == 1 and not s.skipped
    s = FailureState(0, None, None, False)
    for _ in range(5):
        s = after_failure(s, "503", True, 2)
    assert s.consecutive_failures == 5 and not s.skipped


def test_success_unskips_and_resets() -> None:
    assert after_success() == FailureState(0, None, "succeeded", False)


def test_classifications_applied_twice_change_nothing() -> None:
    cases = [
        WriteFailure(kind, status, code, transient)
        for kind in ("", "ConflictError", "TransientError", "PreconditionFailedError")
        for status in (None, 409, 412, 503)
        for code in (None, "0x80060892", "0x80060882", "0x80040217")
        for transient in (False, True)
    ]
    for f in cases:
        assert failure_code(f) == failure_code(f)
        # classifying the classified result again: a code decided once stays that code
        assert failure_code(WriteFailure(f.kind, f.status, f.code, failure_transient(f))) == failure_code(f)
    s = FailureState(2, "x", "failed", True)
    assert after_failure(s, "x", False, 2).skipped  # a skipped coupling stays skipped until a success


# Change-feed rows: Dataverse stamps modifiedon in whole seconds, BC in milliseconds.
SECOND = datetime(2026, 12, 3, 10, 0, 1, tzinfo=UTC)  # the stamp of our write (and of an edit in its second)
NEXT = datetime(2026, 12, 3, 10, 0, 2, tzinfo=UTC)
BEFORE = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
PHONE = ["phone"]
WROTE = {"phone": "+1 01", "name": "Contoso"}  # the snapshot of our write


def needs_work(stamp: datetime, seen: datetime, now: dict[str, str], *, whole_seconds: bool = True) -> bool:
    return may_be_newer(stamp, seen, whole_seconds=whole_seconds) and not holds_synced_values(PHONE, now, WROTE)


def test_a_persons_edit_in_the_second_of_our_write_is_a_change() -> None:
    # same stamp as our write, a value that differs from what we wrote
    assert needs_work(SECOND, SECOND, {"phone": "+1 02", "name": "Contoso"})


def test_our_write_coming_back_is_an_echo() -> None:
    assert may_be_newer(SECOND, SECOND, whole_seconds=True)  # a candidate by its stamp...
    assert not needs_work(SECOND, SECOND, {"phone": "+1 01", "name": "Contoso"})  # ...and dropped by its values
    assert not needs_work(SECOND, SECOND, {"phone": "+1 01", "name": "Renamed", "unmapped": "x"})  # not a flowing key


def test_a_stamp_equal_to_what_was_seen_is_a_candidate_only_with_whole_seconds() -> None:
    assert may_be_newer(SECOND, SECOND, whole_seconds=True)
    assert not may_be_newer(SECOND, SECOND, whole_seconds=False)  # BC: the very version we saw
    assert not needs_work(SECOND, SECOND, {"phone": "+1 02"}, whole_seconds=False)


@pytest.mark.parametrize(
    ("stamp", "seen", "whole_seconds", "expected"),
    [
        (NEXT, SECOND, True, True),
        (NEXT, SECOND, False, True),
        (BEFORE, SECOND, True, False),  # older than the last sync: the feed's overlap handing it over again
        (BEFORE, SECOND, False, False),
        (None, SECOND, True, True),  # no stamp or never seen: cannot rule it out
        (SECOND, None, False, True),
    ],
)
def test_may_be_newer(stamp: datetime | None, seen: datetime | None, whole_seconds: bool, expected: bool) -> None:
    assert may_be_newer(stamp, seen, whole_seconds=whole_seconds) is expected


def test_a_field_never_synced_or_no_flowing_field_is_a_change() -> None:
    assert not holds_synced_values(["phone", "email"], {"phone": "+1 01", "email": "a@x"}, WROTE)  # email unseen
    assert not holds_synced_values([], {"phone": "+1 01"}, WROTE)
    assert holds_synced_values(PHONE, {"phone": "+1 01"}, WROTE)
    assert not holds_synced_values(PHONE, {}, WROTE)  # the value was cleared


def test_a_dataverse_version_the_bc_pass_synced_is_not_synced_again_but_a_newer_one_is() -> None:
    read = {"d1": 'W/"7"', "d2": None}
    assert synced_in_this_run(read, "d1", 'W/"7"')  # the very version the BC pass read
    assert not synced_in_this_run(read, "d1", 'W/"8"')  # edited after that read: a change
    assert not synced_in_this_run(read, "d3", 'W/"7"')  # not read by the BC pass
    assert not synced_in_this_run(read, "d2", None)  # no version to compare: synced


@pytest.mark.parametrize(
    ("page_rows", "couplings", "full", "expected"),
    [
        (10, None, True, True),  # a full run reads every record back: always
        (10, 1_000_000, True, True),
        (20_000, None, False, False),  # not measured yet: the first page goes the full way (and measures)
        (20_000, 100_000, False, True),  # 1 in 5 of the couplings: one small row each beats the lookups
        (12_500, 100_000, False, True),  # exactly 1 in MARKS_SHARE
        (12_499, 100_000, False, False),
        (50, 10_000, False, False),  # a few changes: lookups of those keys only
        (999, 1_000, False, False),  # a small page: its lookups are a few requests per bucket
        (1_000, 1_000, False, True),
    ],
)
def test_marks_pay_on_full_runs_and_on_pages_holding_a_large_share_of_the_couplings(
    page_rows: int, couplings: float | None, full: bool, expected: bool
) -> None:
    assert marks_pay(page_rows, couplings, full=full) is expected


def test_a_synced_mark_matches_exactly_the_values_the_echo_rule_accepts() -> None:
    keys = ["name", "phone"]
    snapshot = {"name": "Contoso", "phone": "111", "ignored": "x"}
    mark = snapshot_mark(keys, snapshot)
    assert holds_synced_mark(keys, {"name": "Contoso", "phone": "111", "other": 1}, mark)
    assert holds_synced_values(keys, {"name": "Contoso", "phone": "111"}, snapshot)
    assert not holds_synced_mark(keys, {"name": "Contoso", "phone": "222"}, mark)  # a change
    assert not holds_synced_mark(keys, {"name": "Contoso"}, mark)  # a value gone is a change
    assert not holds_synced_mark(["phone", "name"], {"name": "Contoso", "phone": "111"}, mark)  # other keys


def test_a_snapshot_without_every_key_or_with_unhashable_values_has_no_mark() -> None:
    assert snapshot_mark(["name", "email"], {"name": "Contoso"}) is None  # a field mapped since: a change
    assert snapshot_mark([], {"name": "Contoso"}) is None  # nothing flows from the side: the rule says change
    assert snapshot_mark(["tags"], {"tags": ["a"]}) is None
    assert not holds_synced_mark(["name"], {"name": "Contoso"}, None)
    assert not holds_synced_mark([], {}, snapshot_mark(["name"], {"name": "Contoso"}))


def test_a_mark_does_not_match_values_equal_only_in_form_so_the_full_check_decides() -> None:
    keys = ["amount"]
    mark = snapshot_mark(keys, {"amount": "12.50"})
    assert not holds_synced_mark(keys, {"amount": "12.5"}, mark)  # the full check (``same``) may still match
    assert holds_synced_mark(keys, {"amount": "12.50"}, mark)
