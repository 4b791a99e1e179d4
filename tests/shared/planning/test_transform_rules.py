"""Transform rules of the default mappings: a floor for numbers, a default for empty values."""

from __future__ import annotations

import pytest

from shared.mappings.config import Transform
from shared.planning.transform import apply_transform, same


def test_negative_inventory_is_written_as_zero() -> None:
    floor = Transform(minimum=0)
    assert [apply_transform(v, floor) for v in (-5, -0.5, 0, 12.5, "x")] == [0, 0.0, 0, 12.5, "x"]


def test_an_empty_value_gets_the_default() -> None:
    symbol = Transform(default="¤")
    assert [apply_transform(v, symbol) for v in (None, "", "  ", "$")] == ["¤", "¤", "¤", "$"]


def test_a_not_null_field_with_an_empty_bc_value_leaves_dataverse_alone() -> None:
    from shared.domain.model import Direction
    from shared.mappings.config import FieldMap, Lookup
    from shared.planning.planner import PairState, plan_record

    owner = FieldMap(
        bc="salespersonCode",
        dataverse="ownerid",
        direction=Direction.TO_DATAVERSE,
        notNull=True,
        lookup=Lookup(mapping="SALESPEOPLE", bcKey="code", dataverseEntitySet="systemusers"),
    )
    blank = PairState("b", "d", {owner.key: None}, {owner.key: "user-1"})
    assert plan_record((owner,), Direction.TO_DATAVERSE, blank, force=True).dv_update == {}
    named = PairState("b", "d", {owner.key: "user-2"}, {owner.key: "user-1"})
    assert plan_record((owner,), Direction.TO_DATAVERSE, named, force=True).dv_update == {owner.key: "user-2"}


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("x", "x", True),
        ("", None, True),  # BC "" is Dataverse null
        (12.5, "12.5", False),
        (12.5, 12.50, True),
        (1, True, True),
        ("A1B2C3D4-0000-0000-0000-000000000000", "a1b2c3d4-0000-0000-0000-000000000000", True),
        (float("nan"), float("nan"), False),
        (None, "x", False),
    ],
)
def test_same_compares_in_comparison_form(a: object, b: object, expected: bool) -> None:
    assert same(a, b) is expected
