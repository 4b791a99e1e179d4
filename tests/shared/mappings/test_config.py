"""The shipped mappings load, match the contract, and a bad file fails with file, path and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import PROJECT_ROOT
from shared.domain.model import Direction
from shared.mappings.config import FieldMap, MappingConfigError, dependency_order, load_mapping_file

SHIPPED = PROJECT_ROOT / "shared" / "mappings" / "mappings.yaml"


def test_shipped_mappings_match_the_contract() -> None:
    cfg = load_mapping_file(SHIPPED)
    by_name = {m.name: m for m in cfg.mappings}
    cust, contact, item = by_name["CUSTOMER"], by_name["CONTACT"], by_name["ITEM-PRODUCT"]
    assert (cust.bc_entity, cust.dataverse_entity_set, cust.direction, cust.sync_only_coupled) == (
        "customers",
        "accounts",
        Direction.BIDIRECTIONAL,
        False,
    )
    assert (contact.bc_entity, contact.dataverse_entity_set, contact.sync_only_coupled, contact.depends_on) == (
        "contacts",
        "contacts",
        True,
        ("CUSTOMER", "VENDOR"),
    )
    assert (item.bc_entity, item.dataverse_entity_set, item.direction) == ("items", "products", Direction.TO_DATAVERSE)
    pairs = {(f.bc, f.dataverse, f.direction) for f in cust.fields}
    for bc, dv in [
        ("displayName", "name"),
        ("phoneNumber", "telephone1"),
        ("email", "emailaddress1"),
        ("website", "websiteurl"),
        ("addressLine1", "address1_line1"),
        ("city", "address1_city"),
        ("postalCode", "address1_postalcode"),
        ("country", "address1_country"),
    ]:
        assert (bc, dv, Direction.BIDIRECTIONAL) in pairs
    assert ("number", "accountnumber", Direction.TO_DATAVERSE) in pairs
    assert [m.name for m in dependency_order(cfg.mappings)].index("CUSTOMER") < [
        m.name for m in dependency_order(cfg.mappings)
    ].index("CONTACT")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mappings.yaml"
    p.write_text(text)
    return p


def test_bad_field_direction_names_file_path_and_reason(tmp_path: Path) -> None:
    text = SHIPPED.read_text().replace(
        "{bc: number, dataverse: accountnumber, direction: toDataverse}",
        "{bc: number, dataverse: accountnumber, direction: sideways}",
    )
    with pytest.raises(MappingConfigError) as e:
        load_mapping_file(_write(tmp_path, text))
    msg = str(e.value)
    assert "mappings.yaml" in msg and "mappings[0] (CUSTOMER).fields[1].direction" in msg


@pytest.mark.parametrize(
    ("needle", "replacement", "reason"),
    [
        ("dependsOn: [CUSTOMER, VENDOR]", "dependsOn: [NOPE]", "unknown mapping NOPE"),
        ("version: 1", "version: 2", "version"),
        (
            "scheduleMinutes: 5\n    matchFields:\n      - {bc: email",
            "scheduleMinutes: 0\n    matchFields:\n      - {bc: email",
            "scheduleMinutes",
        ),
        ("name: CUSTOMER", "name: CONTACT", "duplicate mapping names"),
        (
            "    direction: toDataverse\n    syncOnlyCoupled: true",
            "    direction: toDataverse\n    syncOnlyCoupled: true\n    colour: red",
            "colour",
        ),
    ],
)
def test_invalid_files_fail_with_a_reason(tmp_path: Path, needle: str, replacement: str, reason: str) -> None:
    text = SHIPPED.read_text()
    assert needle in text
    with pytest.raises(MappingConfigError, match=reason):
        load_mapping_file(_write(tmp_path, text.replace(needle, replacement, 1)))


def test_unreadable_and_non_yaml(tmp_path: Path) -> None:
    with pytest.raises(MappingConfigError, match="cannot read"):
        load_mapping_file(tmp_path / "missing.yaml")
    with pytest.raises(MappingConfigError, match="not valid YAML"):
        load_mapping_file(_write(tmp_path, "mappings: [unclosed"))


def test_the_dataverse_keys_are_the_natural_key_then_the_match_fields() -> None:
    by_name = {m.name: m for m in load_mapping_file(SHIPPED).mappings}
    assert by_name["CUSTOMER"].dataverse_keys == ["accountnumber", "name"]
    assert by_name["ITEM-PRODUCT"].dataverse_keys[0] == "productnumber"


def test_a_field_key_follows_its_names_also_in_a_copy() -> None:
    f = FieldMap(bc="phoneNumber", dataverse="telephone1")
    assert f.key == "phoneNumber|telephone1" and f.key is f.key  # computed once (a planning-loop hot spot)
    copy = f.model_copy(update={"dataverse": "telephone2"})
    assert copy.key == "phoneNumber|telephone2" and f.key == "phoneNumber|telephone1"
    assert f == FieldMap(bc="phoneNumber", dataverse="telephone1")  # the cached key is not part of equality
    assert "key" not in f.model_dump()
