"""PURE: option mappings (BC's "CDS Int. Option Couple"): a BC code table coupled with the values of a
Dataverse option set (payment terms <-> account.paymenttermscode).

A BC record is coupled with the option whose label equals its code (case-insensitively, as BC matches); an
option already coupled with another record is not taken again. A code without an option gets a new one
(added through the metadata API, labelled with the code). A coupled record keeps its option while the
option still exists; an option removed in Dataverse is created again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

OptionAction = Literal["unchanged", "couple", "create", "recouple"]


@dataclass(frozen=True, slots=True)
class OptionPlan:
    bc_id: str
    code: str
    action: OptionAction
    value: int | None  # the option to couple with (None: create one labelled ``code``)


def plan_options(codes: Mapping[str, str], options: Mapping[int, str], coupled: Mapping[str, int]) -> list[OptionPlan]:
    """``codes``: BC id -> code; ``options``: option value -> label; ``coupled``: BC id -> coupled value."""
    taken = {v for bc_id, v in coupled.items() if v in options and bc_id in codes}
    by_label: dict[str, int] = {}
    for value, label in sorted(options.items()):
        by_label.setdefault(label.strip().lower(), value)
    out: list[OptionPlan] = []
    for bc_id, code in sorted(codes.items(), key=lambda kv: kv[1]):
        current = coupled.get(bc_id)
        if current is not None and current in options:
            out.append(OptionPlan(bc_id, code, "unchanged", current))
            continue
        match = by_label.get(code.strip().lower())
        if match is not None and match not in taken:
            taken.add(match)
            out.append(OptionPlan(bc_id, code, "recouple" if current is not None else "couple", match))
        else:
            out.append(OptionPlan(bc_id, code, "create", None))
    return out


def option_target(dataverse_table: str) -> tuple[str, str] | None:
    """``account.paymenttermscode`` -> ("account", "paymenttermscode"); None for a table mapping."""
    if "." not in dataverse_table:
        return None
    table, attribute = dataverse_table.split(".", 1)
    return table, attribute
