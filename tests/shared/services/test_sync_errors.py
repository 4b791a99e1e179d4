from datetime import UTC, datetime

from shared.services.sync_errors import create_error_entry, created_sources, failed_creates
from shared.services.sync_service import RecordResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_only_failed_creates_become_errors_naming_the_source_record() -> None:
    results = [
        RecordResult("b1", None, "failed", "toDataverse", "create_failed", "500", transient=True),
        RecordResult(None, "d2", "failed", "fromDataverse", "create_failed", "boom"),
        RecordResult("b3", "d3", "failed", "toDataverse", "already_coupled", "taken"),
        RecordResult("b4", "d4", "created", "toDataverse"),
        RecordResult(None, "d5", "unchanged", "fromDataverse"),
        RecordResult("b6", None, "failed", "toDataverse", "duplicate_key", "accountnumber 'C-1' is taken"),
        RecordResult("b7", None, "failed", "toDataverse", "parent_not_coupled", "currency", transient=True),
    ]
    failed = failed_creates(results)
    assert [(r.bc_id, r.dataverse_id) for r in failed] == [("b1", None), (None, "d2"), ("b6", None), ("b7", None)]
    e = create_error_entry("CUSTOMER", failed[0], "job-1", NOW)
    assert (e.bc_id, e.dataverse_id, e.code, e.transient, e.job_id) == ("b1", None, "create_failed", True, "job-1")
    e = create_error_entry("CUSTOMER", failed[1], "", NOW)
    assert (e.bc_id, e.dataverse_id, e.direction, e.job_id) == (None, "d2", "fromDataverse", None)
    assert created_sources(results) == (["b4"], ["d4"])


def test_one_builder_for_sync_errors_of_pairs_and_of_creates() -> None:
    from shared.services.sync_errors import error_entry, error_id
    from shared.services.sync_service import RecordResult

    r = RecordResult("b1", None, "failed", "toDataverse", "upstream_unavailable", "dataverse is unavailable", True)
    e = error_entry("CUSTOMER", r, "", NOW, bc_id="b1", dataverse_id="d1")
    assert (e.bc_id, e.dataverse_id, e.code, e.transient, e.job_id) == ("b1", "d1", "upstream_unavailable", True, None)
    assert e.id == error_id("CUSTOMER", "b1", "d1", "toDataverse")
    bare = error_entry("CUSTOMER", RecordResult("b1", None, "failed", None), "j", NOW)
    assert (bare.code, bare.message, bare.direction, bare.dataverse_id) == ("sync_failed", "", "", None)
