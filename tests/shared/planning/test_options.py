"""Option mappings: BC codes coupled with option values by label, missing ones created."""

from __future__ import annotations

from shared.planning.options import OptionPlan, option_target, plan_options


def test_codes_couple_by_label_case_insensitively_and_missing_ones_are_created() -> None:
    codes = {"b1": "NET30", "b2": "fob", "b3": "NEW"}
    options = {1: "net30", 2: "FOB", 3: "Other"}
    assert plan_options(codes, options, {}) == [
        OptionPlan("b1", "NET30", "couple", 1),
        OptionPlan("b3", "NEW", "create", None),
        OptionPlan("b2", "fob", "couple", 2),
    ]


def test_coupled_records_keep_their_option_and_an_option_is_never_taken_twice() -> None:
    codes = {"b1": "A", "b2": "a"}
    options = {1: "A", 7: "Renamed"}
    plans = {p.bc_id: p for p in plan_options(codes, options, {"b1": 7})}
    assert plans["b1"] == OptionPlan("b1", "A", "unchanged", 7)  # coupled with an option that exists
    assert plans["b2"] == OptionPlan("b2", "a", "couple", 1)
    # The coupled option was removed in Dataverse: matched again, or created when its label is taken.
    plans = {p.bc_id: p for p in plan_options(codes, {1: "A"}, {"b1": 7, "b2": 1})}
    assert plans["b2"].action == "unchanged" and plans["b1"] == OptionPlan("b1", "A", "create", None)


def test_an_option_mapping_names_table_and_attribute() -> None:
    assert option_target("account.paymenttermscode") == ("account", "paymenttermscode")
    assert option_target("account") is None
