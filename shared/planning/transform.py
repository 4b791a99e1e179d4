"""PURE: field values on their way from one side to the other (transforms, option sets, comparison).

Lookup fields are compared as the parent's Dataverse id on both sides; the executor resolves them
before planning and turns them back into payloads after planning.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.domain.model import Direction
from shared.mappings.config import FieldMap, Transform

_TO_DATAVERSE = Direction.TO_DATAVERSE  # module constants: an Enum member read off its class costs ~0.2 µs
_NUMBER = (int, float)


def apply_transform(value: Any, transform: Transform | None) -> Any:
    """trim, then case, then cut to maxLength (cut after trimming so no trailing blank survives the cut);
    numbers are raised to ``minimum``; ``default`` replaces an empty value."""
    if transform is None:
        return value
    if isinstance(value, str):  # called per field and record in every planning loop: the common case first
        if transform.default is not None and not value.strip():
            return transform.default
        if transform.trim:
            value = value.strip()
        case = transform.case
        if case == "upper":
            value = value.upper()
        elif case == "lower":
            value = value.lower()
        limit = transform.max_length
        if limit is not None and len(value) > limit:
            value = value[:limit].rstrip() if transform.trim else value[:limit]
        return value
    if value is None and transform.default is not None:
        return transform.default
    if transform.minimum is not None and isinstance(value, _NUMBER) and not isinstance(value, bool):
        return max(value, type(value)(transform.minimum))
    return value


def _option_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def convert(field: FieldMap, value: Any, direction: Direction) -> Any:
    """The value ``field`` gets on the target side of ``direction`` for a source ``value``."""
    if field.constant is not None:
        return field.constant
    if field.option_map is not None:
        if direction == _TO_DATAVERSE:
            value = field.option_map.get(_option_key(value), value)
        else:
            reverse = {_option_key(v): k for k, v in field.option_map.items()}
            mapped = reverse.get(_option_key(value), value)
            value = {"true": True, "false": False}.get(mapped, mapped) if isinstance(mapped, str) else mapped
    transform = field.transform
    return value if transform is None else apply_transform(value, transform)


def normalize(value: Any) -> Any:
    """Comparison form: empty string equals null (BC returns "", Dataverse null); GUIDs case-insensitive;
    numbers compared by value (12.5 == Decimal('12.50'))."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    if isinstance(value, str):
        if len(value) == 36 and value.count("-") == 4:
            return value.lower()
        return value
    return value


def same(a: Any, b: Any) -> bool:
    # Equal values normalise equally: the common case (an unchanged value) skips ``normalize``.
    return a == b or normalize(a) == normalize(b)
