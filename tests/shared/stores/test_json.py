"""The stores' prebuilt JSON encoders write exactly what ``json.dumps`` writes with the same arguments."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.stores._json import compact, compact_str, spaced_str

VALUES = [
    {},
    [],
    "x",
    0,
    -(2**70),
    1.5,
    float("nan"),
    None,
    True,
    {"a": [1, 2, {"b": 'é"\\\n\u2028😀'}], "n": None, "t": False},
    [{"at": "2026-12-03T10:00:00+00:00", "outcome": "created"}],
    {1: "int key", 2.5: "float key", False: "bool key", None: "null key"},
]


@pytest.mark.parametrize("value", VALUES)
def test_the_encoders_write_what_json_dumps_writes(value: object) -> None:
    assert compact(value) == json.dumps(value, separators=(",", ":"))
    assert compact_str(value) == json.dumps(value, separators=(",", ":"), default=str)
    assert spaced_str(value) == json.dumps(value, default=str)


def test_default_str_covers_what_json_cannot_encode_and_compact_refuses_it_the_same_way() -> None:
    value = {"at": datetime(2026, 12, 3, tzinfo=UTC), "amount": Decimal("12.50")}
    assert compact_str(value) == json.dumps(value, separators=(",", ":"), default=str)
    with pytest.raises(TypeError) as ours:
        compact(value)
    with pytest.raises(TypeError) as theirs:
        json.dumps(value, separators=(",", ":"))
    assert str(ours.value) == str(theirs.value)
