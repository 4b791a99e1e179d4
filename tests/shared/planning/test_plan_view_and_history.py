"""PURE (#22): plan items and history entries from plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain.model import Direction
from shared.mappings.config import FieldMap
from shared.planning import history
from shared.planning.plan_view import counts_of, field_changes, item_of_create, item_of_plan
from shared.planning.planner import PairState, RecordPlan

PHONE_F = FieldMap(bc="phoneNumber", dataverse="telephone1")
NAME_F = FieldMap(bc="displayName", dataverse="name")
FIELDS = (PHONE_F, NAME_F)
PHONE, NAME = PHONE_F.key, NAME_F.key
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_changes_name_each_side_by_its_own_field_name() -> None:
    got = field_changes(FIELDS, {NAME: "B"}, {PHONE: "2"}, {NAME: "A"}, {PHONE: "1"})
    assert got == [
        {"field": "telephone1", "side": "dataverse", "from": "1", "to": "2"},
        {"field": "displayName", "side": "businessCentral", "from": "A", "to": "B"},
    ]


def test_items_and_counts() -> None:
    pair = PairState("b", "d", {PHONE: "2"}, {PHONE: "1"})
    update = RecordPlan("b", "d", "updated", Direction.TO_DATAVERSE, dv_update={PHONE: "2"})
    assert item_of_plan(FIELDS, update, pair)["action"] == "update"
    blocked = item_of_plan(FIELDS, update, pair, "parent_not_coupled")
    assert (blocked["action"], blocked["reason"], blocked["changes"]) == ("skip", "parent_not_coupled", [])
    conflict = RecordPlan("b", "d", "conflict", Direction.BIDIRECTIONAL, error_code="update_conflict")
    create = item_of_create(FIELDS, Direction.FROM_DATAVERSE, "d2", {NAME: "N"})
    assert (create["bcId"], create["dataverseId"], create["changes"][0]["side"]) == (None, "d2", "businessCentral")
    items = [item_of_plan(FIELDS, update, pair), item_of_plan(FIELDS, conflict, pair), create]
    counts = counts_of(items, {"unchanged": 4})
    assert counts == {"unchanged": 4, "modified": 1, "failed": 1, "inserted": 1, "coupled": 1}


def test_entries_hide_values_and_retention_keeps_recent_ones() -> None:
    e = history.entry(NOW, trigger="job", action="not_found", changes=[{"field": "f", "side": "dataverse",
                      "from": 1, "to": 2}], error=("record_not_found", "gone"), values=False)  # fmt: skip
    assert e["action"] == "failed" and e["changes"] == [{"field": "f", "side": "dataverse", "from": None, "to": None}]
    assert e["error"] == {"code": "record_not_found", "message": "gone"}
    old = history.entry(NOW - timedelta(days=10), trigger="couple", action="coupled")
    assert history.appended([old], e, NOW, days=5) == [e]
    many = [history.entry(NOW - timedelta(seconds=n), trigger="job", action="updated") for n in range(250)]
    assert len(history.kept(many, NOW, 90)) == history.MAX_ENTRIES
    assert history.newest_first([old, e]) == [e, old]
