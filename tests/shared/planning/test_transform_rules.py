"""Transform rules of the default mappings: a floor for numbers, a default for empty values."""

from __future__ import annotations

from shared.mappings.config import Transform
from shared.planning.transform import apply_transform


def test_negative_inventory_is_written_as_zero() -> None:
    floor = Transform(minimum=0)
    assert [apply_transform(v, floor) for v in (-5, -0.5, 0, 12.5, "x")] == [0, 0.0, 0, 12.5, "x"]


def test_an_empty_value_gets_the_default() -> None:
    symbol = Transform(default="¤")
    assert [apply_transform(v, symbol) for v in (None, "", "  ", "$")] == ["¤", "¤", "¤", "$"]
