"""The sync planner's rules, with plain values (no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.model import Direction
from shared.mappings.config import FieldMap
from shared.planning.planner import (
    PairState,
    RecordPlan,
    best_match,
    detect_changes,
    may_create,
    plan_create,
    plan_deletion,
    plan_record,
    snapshot_after_create,
    suggest_direction,
)

NAME = FieldMap(bc="displayName", dataverse="name", transform={"trim": True, "maxLength": 10})
PHONE = FieldMap(bc="phoneNumber", dataverse="telephone1")
NUMBER = FieldMap(bc="number", dataverse="accountnumber", direction=Direction.TO_DATAVERSE)
STATE = FieldMap(
    bc="blocked", dataverse="statecode", direction=Direction.TO_DATAVERSE, optionMap={"false": 0, "true": 1}
)
CONST = FieldMap(bc=None, dataverse="customertypecode", direction=Direction.TO_DATAVERSE, constant=3)
FIELDS = (NAME, PHONE, NUMBER, CONST)

T = Direction.TO_DATAVERSE
F = Direction.FROM_DATAVERSE
B = Direction.BIDIRECTIONAL


def bc(name: str = "Contoso", phone: str = "1", number: str = "C1") -> dict:
    return {NAME.key: name, PHONE.key: phone, NUMBER.key: number}


def dv(name: str = "Contoso", phone: str = "1", number: str = "C1") -> dict:
    return {NAME.key: name, PHONE.key: phone, NUMBER.key: number}


def pair(b: dict | None, d: dict | None, bsnap: dict | None = None, dsnap: dict | None = None, **kw) -> PairState:
    return PairState("b1", "d1", b, d, bsnap if bsnap is not None else {}, dsnap if dsnap is not None else {}, **kw)


def synced(**kw) -> PairState:
    """A pair whose last sync left both sides equal to bc()/dv(); kw replaces current values."""
    b, d = bc(), dv()
    b.update({k: v for k, v in kw.items() if k.startswith("displayName") or k.startswith("phone")})
    return pair(b, d, bc(), dv())


def test_nothing_changed_is_unchanged_without_writes() -> None:
    plan = plan_record(FIELDS, T, pair(bc(), dv(), bc(), dv()))
    assert plan.status == "unchanged" and not plan.writes


def test_one_way_sync_writes_only_the_changed_fields() -> None:
    plan = plan_record(FIELDS, T, pair(bc(phone="2"), dv(), bc(), dv()))
    assert plan.status == "updated"
    assert plan.dv_update == {PHONE.key: "2"} and plan.bc_update == {}
    assert plan.dv_snapshot is not None and plan.dv_snapshot[PHONE.key] == "2"


def test_from_dataverse_never_writes_a_to_dataverse_only_field() -> None:
    plan = plan_record(FIELDS, F, pair(bc(number="C1"), dv(number="X9", phone="7"), bc(), dv(number="C1")))
    assert plan.bc_update == {PHONE.key: "7"}


def test_one_way_sync_skips_when_the_target_changed_since_last_sync() -> None:
    plan = plan_record(FIELDS, T, pair(bc(phone="2"), dv(phone="3"), bc(), dv()))
    assert plan.status == "skipped" and plan.error_code == "target_changed" and not plan.writes


def test_force_overwrites_newer_target_data() -> None:
    plan = plan_record(FIELDS, T, pair(bc(phone="2"), dv(phone="3"), bc(), dv()), force=True)
    assert plan.status == "updated" and plan.dv_update == {PHONE.key: "2"}


def test_target_change_in_a_field_this_sync_does_not_touch_is_not_a_skip() -> None:
    # Dataverse changed the name to the value BC has too: nothing to overwrite.
    plan = plan_record(FIELDS, T, pair(bc(name="New", phone="2"), dv(name="New"), bc(), dv()))
    assert plan.status == "updated" and plan.dv_update == {PHONE.key: "2"}


def test_merge_takes_each_field_from_the_side_that_changed() -> None:
    plan = plan_record(FIELDS, B, pair(bc(phone="2"), dv(name="Fabrikam"), bc(), dv()))
    assert plan.status == "updated"
    assert plan.dv_update == {PHONE.key: "2"}
    assert plan.bc_update == {NAME.key: "Fabrikam"}


def test_merge_same_field_changed_on_both_sides_is_a_conflict_without_writes() -> None:
    plan = plan_record(FIELDS, B, pair(bc(phone="2"), dv(phone="3"), bc(), dv()))
    assert plan.status == "conflict" and not plan.writes
    assert plan.conflicting_fields == ("phoneNumber",) and plan.error_code == "update_conflict"


def test_merge_both_changed_to_the_same_value_is_no_conflict() -> None:
    plan = plan_record(FIELDS, B, pair(bc(phone="2"), dv(phone="2"), bc(), dv()))
    assert plan.status == "unchanged"
    assert plan.bc_snapshot is not None and plan.bc_snapshot[PHONE.key] == "2"


@pytest.mark.parametrize(("policy", "expected"), [("bcWins", {"dv": "2"}), ("dataverseWins", {"bc": "3"})])
def test_conflict_policy_decides(policy: str, expected: dict) -> None:
    plan = plan_record(FIELDS, B, pair(bc(phone="2"), dv(phone="3"), bc(), dv()), conflict_policy=policy)
    assert plan.status == "updated"
    if "dv" in expected:
        assert plan.dv_update == {PHONE.key: expected["dv"]} and not plan.bc_update
    else:
        assert plan.bc_update == {PHONE.key: expected["bc"]} and not plan.dv_update


def test_skipped_coupling_is_skipped_with_its_code_unless_retried() -> None:
    p = pair(bc(phone="2"), dv(), bc(), dv(), skipped=True)
    assert plan_record(FIELDS, T, p).error_code == "record_skipped"
    assert plan_record(FIELDS, T, p, honour_skipped=False).status == "updated"


def test_missing_side_is_not_found() -> None:
    plan = plan_record(FIELDS, T, pair(bc(), None, bc(), dv()))
    assert plan.status == "not_found" and plan.error_code == "record_not_found"


def test_never_synced_merge_lets_the_newer_side_win() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    newer_dv = pair(bc(phone="1"), dv(phone="9"), bc_modified_on=now, dv_modified_on=now + timedelta(seconds=1))
    assert plan_record(FIELDS, B, newer_dv).bc_update == {PHONE.key: "9"}
    newer_bc = pair(bc(phone="1"), dv(phone="9"), bc_modified_on=now + timedelta(seconds=1), dv_modified_on=now)
    assert plan_record(FIELDS, B, newer_bc).dv_update == {PHONE.key: "1"}


def test_never_synced_one_way_sync_is_not_blocked() -> None:
    plan = plan_record(FIELDS, T, pair(bc(phone="1"), dv(phone="9")))
    assert plan.status == "updated" and plan.dv_update == {PHONE.key: "1"}


def test_transform_trims_and_cuts_and_empty_equals_null() -> None:
    plan = plan_record(FIELDS, T, pair(bc(name="  A very long name  ", phone=""), {**dv(), PHONE.key: None}))
    assert plan.dv_update == {NAME.key: "A very lon"}


def test_option_map_both_ways() -> None:
    fields = (STATE,)
    p = pair({STATE.key: True}, {STATE.key: 0})
    assert plan_record(fields, T, p).dv_update == {STATE.key: 1}
    assert plan_record(fields, T, pair({STATE.key: False}, {STATE.key: 0})).status == "unchanged"


def test_changes_and_suggestion_for_the_prompt() -> None:
    only_bc = detect_changes(FIELDS, pair(bc(phone="2"), dv(), bc(), dv()))
    assert only_bc.business_central and not only_bc.dataverse and suggest_direction(only_bc) == T
    only_dv = detect_changes(FIELDS, pair(bc(), dv(phone="2"), bc(), dv()))
    assert suggest_direction(only_dv) == F
    both = detect_changes(FIELDS, pair(bc(phone="2"), dv(phone="3"), bc(), dv()))
    assert both.conflicting_fields == ("phoneNumber",) and suggest_direction(both) == B
    neither = detect_changes(FIELDS, pair(bc(), dv(), bc(), dv()))
    assert suggest_direction(neither) == B and neither.conflicting_fields == ()


def test_plan_create_includes_constants_and_respects_field_direction() -> None:
    to_dv = plan_create(FIELDS, T, bc(name=" Fabrikam ", phone=""))
    assert to_dv == {NAME.key: "Fabrikam", NUMBER.key: "C1", CONST.key: 3}
    from_dv = plan_create(FIELDS, F, dv(name="Fabrikam"))
    assert NUMBER.key not in from_dv and CONST.key not in from_dv and from_dv[NAME.key] == "Fabrikam"
    b, d = snapshot_after_create(FIELDS, bc(), dv())
    assert b.keys() == d.keys() == {NAME.key, PHONE.key, NUMBER.key}


BACK = FieldMap(bc="blocked", dataverse="statecode", direction=Direction.FROM_DATAVERSE)  # flows to BC only


@pytest.mark.parametrize(
    ("direction", "source", "target"),
    [
        # BC -> Dataverse: the new row holds exactly what was planned; BC's values are the source
        (T, {NAME.key: " Fabrikam ", PHONE.key: "", NUMBER.key: "C1", BACK.key: "x"}, None),
        # a one-way field against the flow (statecode) is compared as without the plan
        (T, {NAME.key: "Fabrikam", PHONE.key: None, NUMBER.key: "C1", BACK.key: None}, None),
        # Dataverse -> BC, BC answered with the planned values ("" for what was left out)
        (F, {NAME.key: "Contoso Ltd", PHONE.key: None, NUMBER.key: None, BACK.key: 1},
         {NAME.key: "Contoso Ltd", PHONE.key: "", NUMBER.key: "DV-1", BACK.key: 1}),
        # BC changed what it was sent (cut, a value in a field left out): compared, not trusted
        (F, {NAME.key: "Contoso Ltd", PHONE.key: None, NUMBER.key: None, BACK.key: 1},
         {NAME.key: "Contoso", PHONE.key: "5", NUMBER.key: "DV-1", BACK.key: 2}),
    ],
)  # fmt: skip
def test_snapshot_after_create_with_the_plan_equals_the_full_comparison(
    direction: Direction, source: dict, target: dict | None
) -> None:
    fields = (NAME, PHONE, NUMBER, BACK, CONST)
    planned = plan_create(fields, direction, source)
    answer = dict(planned) if target is None else target
    bc_vals, dv_vals = (source, answer) if direction == T else (answer, source)
    fast = snapshot_after_create(fields, bc_vals, dv_vals, direction=direction, planned=planned)
    assert fast == snapshot_after_create(fields, bc_vals, dv_vals)


def test_snapshot_after_create_with_the_plan_literals() -> None:
    fields = (NAME, PHONE, NUMBER, BACK)
    src = {NAME.key: " Fabrikam ", PHONE.key: "", NUMBER.key: "C1", BACK.key: "x"}
    planned = plan_create(fields, T, src)
    assert planned == {NAME.key: "Fabrikam", NUMBER.key: "C1"}
    b, d = snapshot_after_create(fields, src, dict(planned), direction=T, planned=planned)
    # statecode flows to BC only: "x" against no value does not agree; the rest do (phone: "" and None)
    assert b == {NAME.key: " Fabrikam ", PHONE.key: "", NUMBER.key: "C1"}
    assert d == {NAME.key: "Fabrikam", PHONE.key: None, NUMBER.key: "C1"}
    # BC cut the name it was sent: that field is not in the snapshot
    src_dv = {NAME.key: "Contoso Ltd", PHONE.key: "7", NUMBER.key: None, BACK.key: 1}
    planned_bc = plan_create(fields, F, src_dv)
    assert planned_bc == {NAME.key: "Contoso Lt", PHONE.key: "7", BACK.key: 1}
    answer = {NAME.key: "Contoso", PHONE.key: "7", NUMBER.key: "DV-1", BACK.key: 1}
    b, d = snapshot_after_create(fields, answer, src_dv, direction=F, planned=planned_bc)
    assert b == {PHONE.key: "7", BACK.key: 1}
    assert d == {PHONE.key: "7", BACK.key: 1}


def test_plan_create_remembers_per_tuple_and_direction_and_reads_a_list_afresh() -> None:
    as_list = [NAME, PHONE]
    assert plan_create(as_list, T, {NAME.key: "a", PHONE.key: "1"}) == {NAME.key: "a", PHONE.key: "1"}
    as_list.append(NUMBER)  # a list is not remembered: the next call sees the new field
    assert plan_create(as_list, T, {NUMBER.key: "C9"}) == {NUMBER.key: "C9"}
    assert plan_create(FIELDS, F, {NUMBER.key: "C9", PHONE.key: "2"}) == {PHONE.key: "2"}
    to_dv = plan_create(FIELDS, T, {NUMBER.key: "C9", PHONE.key: "2"})
    assert to_dv == {PHONE.key: "2", NUMBER.key: "C9", CONST.key: 3}


def test_deletion_policies_and_auto_create_rule() -> None:
    assert [plan_deletion(p) for p in ("none", "removeCoupling", "restore", "delete")] == [
        "fail",
        "remove_coupling",
        "restore",
        "delete_survivor",
    ]
    assert may_create(F, B, sync_only_coupled=False, create_new=True)
    assert may_create(F, F, sync_only_coupled=False, create_new=True)
    assert not may_create(F, T, sync_only_coupled=False, create_new=True)
    assert not may_create(F, B, sync_only_coupled=True, create_new=True)


def test_match_priorities() -> None:
    assert best_match([["a"], ["b", "c"]]) == ("a", ["a"])
    assert best_match([[], ["b"]]) == ("b", ["b"])
    assert best_match([["a", "b"], ["c"]]) == (None, ["a", "b"])
    assert best_match([[], []]) == (None, [])


def _apply(p: PairState, plan: RecordPlan) -> PairState:
    assert p.bc is not None and p.dv is not None
    if plan.status not in ("updated", "unchanged"):
        return p
    return PairState(
        p.bc_id,
        p.dv_id,
        {**p.bc, **plan.bc_update},
        {**p.dv, **plan.dv_update},
        plan.bc_snapshot or {},
        plan.dv_snapshot or {},
    )


@pytest.mark.parametrize("seed", range(200))
def test_property_a_plan_applied_twice_changes_nothing_the_second_time(seed: int) -> None:
    rnd = random.Random(seed)
    values = ["", "a", "b", " a ", None, "C1"]

    def side() -> dict:
        return {f.key: rnd.choice(values) for f in (NAME, PHONE, NUMBER)}

    p = pair(side(), side(), side() if rnd.random() < 0.7 else {}, side() if rnd.random() < 0.7 else {})
    direction = rnd.choice([T, F, B])
    policy = rnd.choice(["none", "bcWins", "dataverseWins"])
    force = rnd.random() < 0.5
    first = plan_record(FIELDS, direction, p, force=force, conflict_policy=policy)
    second = plan_record(FIELDS, direction, _apply(p, first), force=force, conflict_policy=policy)
    if first.status in ("updated", "unchanged"):
        assert second.status == "unchanged", (first, second)
        assert not second.writes
    else:
        assert second.status == first.status


def test_a_whole_second_dataverse_stamp_counts_as_the_end_of_its_second() -> None:
    second = datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC)
    bc_ms = second + timedelta(milliseconds=400)  # BC edited 0.4 s into the second the DV row is stamped with
    same_second = pair(bc(phone="1"), dv(phone="9"), bc_modified_on=bc_ms, dv_modified_on=second)
    assert plan_record(FIELDS, B, same_second).bc_update == {PHONE.key: "9"}
    bc_later = pair(bc(phone="1"), dv(phone="9"), bc_modified_on=second + timedelta(seconds=1), dv_modified_on=second)
    assert plan_record(FIELDS, B, bc_later).dv_update == {PHONE.key: "1"}


def test_plan_create_leaves_blank_values_out_unless_the_transform_has_a_default() -> None:
    code = FieldMap(bc="currencyCode", dataverse="currencysymbol", transform={"trim": True, "default": "$"})
    cased = FieldMap(bc="email", dataverse="emailaddress1", transform={"trim": True, "case": "upper"})
    plain = FieldMap(bc="city", dataverse="address1_city")
    fields = (code, cased, plain)
    assert plan_create(fields, T, {code.key: "", cased.key: None, plain.key: ""}) == {code.key: "$"}
    assert plan_create(fields, T, {code.key: None, cased.key: "  ", plain.key: None}) == {code.key: "$"}
    assert plan_create(fields, F, {code.key: " € ", cased.key: " a@b ", plain.key: 0}) == {
        code.key: "€", cased.key: "A@B", plain.key: 0,
    }  # fmt: skip
