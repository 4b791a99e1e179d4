"""Dependency order of mapping-wide jobs (pure parts)."""

from __future__ import annotations

from shared.mappings.config import load_mapping_file
from shared.services.dependencies import ancestors, for_full_run

SHIPPED = "shared/mappings/mappings.yaml"


def test_ancestors_are_transitive_and_parents_come_first() -> None:
    mappings = list(load_mapping_file(SHIPPED).mappings)
    by_name = {m.name: m for m in mappings}
    assert [m.name for m in ancestors(by_name["OPPORTUNITY"], mappings)] == [
        "SALESPEOPLE",
        "CURRENCY",
        "PAYMENT TERMS",
        "SHIPMENT METHOD",
        "CUSTOMER",
        "VENDOR",
        "CONTACT",
    ]
    assert [m.name for m in ancestors(by_name["ITEM-PRODUCT"], mappings)] == ["UNIT OF MEASURE"]
    assert ancestors(by_name["CURRENCY"], mappings) == []


def test_a_full_run_creates_uncoupled_records_except_in_option_mappings() -> None:
    by_name = {m.name: m for m in load_mapping_file(SHIPPED).mappings}
    assert for_full_run(by_name["CONTACT"]).sync_only_coupled is False
    assert by_name["CONTACT"].sync_only_coupled is True  # the mapping itself is unchanged
    assert for_full_run(by_name["PAYMENT TERMS"]).sync_only_coupled is True
