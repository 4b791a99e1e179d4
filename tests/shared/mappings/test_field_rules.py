"""Field mappings against both sides' metadata (pure, with literals): the contract's codes and details."""

from __future__ import annotations

from shared.domain.model import Direction
from shared.mappings.config import FieldMap
from shared.mappings.field_rules import check_field
from shared.services.metadata import EntityMeta, FieldMeta, parse_dv_entity, parse_edmx

BC = EntityMeta(
    "businessCentral",
    "customers",
    {
        "displayName": FieldMeta("displayName", "text", "Edm.String", 100),
        "addressLine2": FieldMeta("addressLine2", "text", "Edm.String", 50),
        "balanceDue": FieldMeta("balanceDue", "number", "Edm.Decimal", creatable=False, updatable=False),
        "taxLiable": FieldMeta("taxLiable", "bool", "Edm.Boolean"),
        "blocked": FieldMeta("blocked", "enum", "Microsoft.NAV.customerBlocked", members=("_x0020_", "All")),
        "number": FieldMeta("number", "text", "Edm.String", 20),
    },
)
DV = EntityMeta(
    "dataverse",
    "account",
    {
        "name": FieldMeta("name", "text", "String", 160),
        "address1_line2": FieldMeta("address1_line2", "text", "String", 250),
        "revenue": FieldMeta("revenue", "number", "Money"),
        "createdon": FieldMeta("createdon", "datetime", "DateTime", creatable=False, updatable=False),
        "customertypecode": FieldMeta("customertypecode", "option", "Picklist"),
        "primarycontactid": FieldMeta("primarycontactid", "lookup", "Lookup"),
        "accountnumber": FieldMeta("accountnumber", "text", "String", 20),
    },
)
BIDI = Direction.BIDIRECTIONAL


def f(bc: str | None, dv: str | None, **kw: object) -> FieldMap:
    return FieldMap.model_validate({"bc": bc, "dataverse": dv, **kw})


def test_unknown_names_name_the_side_and_the_field() -> None:
    p = check_field(f("nickname", "name"), BIDI, BC, DV)
    assert p and (p.code, p.status) == ("unknown_field", 422) and "Business Central customers" in p.detail
    p = check_field(f("displayName", "title"), BIDI, BC, DV)
    assert p and p.code == "unknown_field" and "Dataverse account" in p.detail and "'title'" in p.detail


def test_read_only_target_only_when_the_direction_writes_it() -> None:
    p = check_field(f("balanceDue", "revenue"), BIDI, BC, DV)
    assert p and p.code == "read_only_field" and "balanceDue" in p.detail
    assert check_field(f("balanceDue", "revenue", direction="toDataverse"), BIDI, BC, DV) is None
    # A toDataverse mapping never writes BC, so a bidirectional field is narrowed and fine.
    assert check_field(f("balanceDue", "revenue"), Direction.TO_DATAVERSE, BC, DV) is None
    p = check_field(f("number", "createdon", direction="toDataverse"), BIDI, BC, DV)
    assert p and p.code == "read_only_field" and "createdon" in p.detail


def test_types_that_do_not_convert_and_lengths_that_do_not_fit() -> None:
    p = check_field(f("taxLiable", "address1_line2"), BIDI, BC, DV)
    assert p and p.code == "type_mismatch"
    p = check_field(f("blocked", "customertypecode"), BIDI, BC, DV)
    assert p and p.code == "type_mismatch" and "optionMap" in p.detail
    assert check_field(f("blocked", "customertypecode", optionMap={"_x0020_": 3, "All": 4}), BIDI, BC, DV) is None
    p = check_field(f("displayName", "primarycontactid"), BIDI, BC, DV)
    assert p and p.code == "type_mismatch" and "lookup" in p.detail
    # 250 Dataverse characters into 50 BC characters: only with a transform that cuts to 50.
    p = check_field(f("addressLine2", "address1_line2"), BIDI, BC, DV)
    assert p and p.code == "type_mismatch" and "maxLength 50" in p.detail
    assert check_field(f("addressLine2", "address1_line2", transform={"maxLength": 50}), BIDI, BC, DV) is None
    assert check_field(f("addressLine2", "address1_line2", direction="toDataverse"), BIDI, BC, DV) is None
    assert check_field(f("blocked", "name", direction="toDataverse"), BIDI, BC, DV) is None  # enum -> text
    p = check_field(f(None, "customertypecode", direction="toDataverse", constant="three"), BIDI, BC, DV)
    assert p and p.code == "type_mismatch"
    assert check_field(f(None, "customertypecode", direction="toDataverse", constant=3), BIDI, BC, DV) is None


def test_a_target_written_by_another_field_mapping() -> None:
    shipped = [f("displayName", "name"), f("number", "accountnumber", direction="toDataverse")]
    p = check_field(f("addressLine2", "name", direction="toDataverse"), BIDI, BC, DV, shipped)
    assert p and (p.code, p.status) == ("field_already_mapped", 409) and "displayName~name" in p.detail
    p = check_field(f("number", "address1_line2", direction="fromDataverse", transform={"maxLength": 20}), BIDI,
                    BC, DV, shipped)  # fmt: skip
    assert p is None  # BC number is only read by the shipped field, never written
    p = check_field(f("displayName", "name"), BIDI, BC, DV, shipped)
    assert p and p.code == "field_already_mapped"
    disabled = [f("displayName", "name", status="disabled")]
    assert check_field(f("addressLine2", "name", direction="toDataverse"), BIDI, BC, DV, disabled) is None


EDMX = """<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>
<Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">
<EntityType Name="customer"><Key><PropertyRef Name="id" /></Key>
<Property Name="id" Type="Edm.Guid" Nullable="false" />
<Property Name="displayName" Type="Edm.String" MaxLength="100" />
<Property Name="blocked" Type="Microsoft.NAV.customerBlocked" />
<Property Name="balanceDue" Type="Edm.Decimal" Scale="Variable">
<Annotation Term="Org.OData.Core.V1.Computed" Bool="true" /></Property>
<Property Name="lastModifiedDateTime" Type="Edm.DateTimeOffset" />
</EntityType>
<EnumType Name="customerBlocked"><Member Name="_x0020_" Value="0" /><Member Name="All" Value="3" /></EnumType>
<EntityContainer Name="NAV"><EntitySet Name="customers" EntityType="Microsoft.NAV.customer" /></EntityContainer>
</Schema></edmx:DataServices></edmx:Edmx>"""


def test_parse_bc_edmx() -> None:
    meta = parse_edmx(EDMX)["customers"]
    assert meta.fields["displayName"] == FieldMeta("displayName", "text", "Edm.String", 100)
    assert meta.fields["blocked"].kind == "enum" and meta.fields["blocked"].members == ("_x0020_", "All")
    assert not meta.fields["balanceDue"].writable and not meta.fields["id"].writable
    assert meta.fields["lastModifiedDateTime"].kind == "datetime" and not meta.fields["lastModifiedDateTime"].writable


def test_parse_dataverse_attributes() -> None:
    meta = parse_dv_entity(
        {"LogicalName": "account", "EntitySetName": "accounts", "PrimaryIdAttribute": "accountid"},
        [
            {"LogicalName": "name", "AttributeType": "String", "MaxLength": 160, "IsValidForCreate": True,
             "IsValidForUpdate": True, "RequiredLevel": {"Value": "ApplicationRequired"}},
            {"LogicalName": "createdon", "AttributeType": "DateTime", "IsValidForCreate": False,
             "IsValidForUpdate": False},
            {"LogicalName": "owneridname", "AttributeType": "String", "AttributeOf": "ownerid"},
        ],
    )  # fmt: skip
    assert (meta.entity_set, meta.primary_key) == ("accounts", "accountid")
    assert meta.fields["name"].max_length == 160 and meta.fields["name"].required == "ApplicationRequired"
    assert not meta.fields["createdon"].writable and "owneridname" not in meta.fields
