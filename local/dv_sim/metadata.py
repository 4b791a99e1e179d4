"""Dataverse metadata endpoints, generated from the simulator's table definitions (``store.TABLES``):

- ``GET EntityDefinitions(LogicalName='account')`` -> the entity's definition (EntitySetName,
  PrimaryIdAttribute, PrimaryNameAttribute, ...);
- ``GET EntityDefinitions(LogicalName='account')/Attributes`` -> ``{"value": [AttributeMetadata]}`` with
  ``LogicalName``, ``AttributeType``, ``MaxLength`` (string and memo attributes only, as in Dataverse, where
  it is a property of the derived ``StringAttributeMetadata``/``MemoAttributeMetadata`` types),
  ``IsValidForCreate``, ``IsValidForUpdate``, ``IsValidForRead`` and ``RequiredLevel``.

``$select`` is checked against the base type's properties (``MaxLength`` on the base type is refused with
Dataverse's error), ``$filter`` runs over them. Lookups appear under their attribute name
(``parentcustomerid``, AttributeType ``Customer``/``Lookup``), not as ``_x_value``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from local.dv_sim.store import DvError, FieldDef, TableDef
from local.odata import parse_filter, parse_select

_NS = uuid.UUID("0b5f8f0e-7d2c-4c39-9d53-6a2f1e0c9b11")
_KEY = re.compile(r"^\s*(?:LogicalName\s*=\s*)?'([^']*)'\s*$")

ENTITY_PROPERTIES = (
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "EntitySetName",
    "LogicalCollectionName",
    "PrimaryIdAttribute",
    "PrimaryNameAttribute",
    "ObjectTypeCode",
    "IsCustomEntity",
    "IsActivity",
    "ChangeTrackingEnabled",
)
ATTRIBUTE_PROPERTIES = (
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "EntityLogicalName",
    "AttributeType",
    "AttributeTypeName",
    "AttributeOf",
    "IsCustomAttribute",
    "IsPrimaryId",
    "IsPrimaryName",
    "IsValidForCreate",
    "IsValidForUpdate",
    "IsValidForRead",
    "RequiredLevel",
)
_TYPE_NAMES = {
    "String": "StringType",
    "Memo": "MemoType",
    "Integer": "IntegerType",
    "BigInt": "BigIntType",
    "Decimal": "DecimalType",
    "Money": "MoneyType",
    "Boolean": "BooleanType",
    "DateTime": "DateTimeType",
    "Uniqueidentifier": "UniqueidentifierType",
    "Lookup": "LookupType",
    "Customer": "CustomerType",
    "Owner": "OwnerType",
    "Picklist": "PicklistType",
    "State": "StateType",
    "Status": "StatusType",
}
# Derived AttributeMetadata types (Uniqueidentifier attributes are plain AttributeMetadata).
_METADATA_TYPES = {
    "String": "String",
    "Memo": "Memo",
    "Integer": "Integer",
    "BigInt": "BigInt",
    "Decimal": "Decimal",
    "Money": "Money",
    "Boolean": "Boolean",
    "DateTime": "DateTime",
    "Lookup": "Lookup",
    "Customer": "Lookup",
    "Owner": "Lookup",
    "Picklist": "Picklist",
    "State": "State",
    "Status": "Status",
}
_OTC = {"account": 1, "contact": 2, "systemuser": 8, "product": 1024}
_PRIMARY_NAME = {"account": "name", "contact": "fullname", "product": "name", "systemuser": "fullname"}
_CREATE_ONLY = {"createdon", "modifiedon", "versionnumber"}


def _schema_name(logical: str) -> str:
    if "_" in logical and logical.split("_", 1)[0].startswith("cr"):
        prefix, rest = logical.split("_", 1)
        return f"{prefix}_{rest[:1].upper()}{rest[1:]}"
    return logical[:1].upper() + logical[1:]


def _attribute_type(table: TableDef, name: str, fdef: FieldDef) -> str:
    if fdef.attribute_type:
        return fdef.attribute_type
    if name == table.primary_key:
        return "Uniqueidentifier"
    return {
        "guid": "Uniqueidentifier",
        "string": "String",
        "int": "Integer",
        "decimal": "Decimal",
        "datetime": "DateTime",
        "bool": "Boolean",
    }[fdef.kind]


def _required(level: str) -> dict[str, Any]:
    return {
        "Value": level,
        "CanBeChanged": level != "SystemRequired",
        "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
    }


def attributes_of(table: TableDef) -> list[dict[str, Any]]:
    """Every attribute of the table in AttributeMetadata shape (lookups under their attribute name)."""
    lookups = {f"_{lk.attribute}_value": lk for lk in table.lookups}
    out: list[dict[str, Any]] = []
    for name, fdef in table.fields.items():
        attr_name, attr_type = name, _attribute_type(table, name, fdef)
        creatable = updatable = not fdef.read_only and not table.read_only
        if name in lookups:
            attr_name = lookups[name].attribute
            attr_type = "Customer" if attr_name == "parentcustomerid" else "Lookup"
            creatable = updatable = not table.read_only
        elif name.startswith("_") and name.endswith("_value"):
            attr_name, attr_type = name[1:-6], "Lookup"
        if name == table.primary_key:
            creatable, updatable = not table.read_only, False
        if name in _CREATE_ONLY:
            creatable = updatable = False
        level = "SystemRequired" if name == table.primary_key else fdef.required
        row: dict[str, Any] = {
            "@odata.type": f"#Microsoft.Dynamics.CRM.{_METADATA_TYPES.get(attr_type, '')}AttributeMetadata",
            "MetadataId": str(uuid.uuid5(_NS, f"{table.logical}.{attr_name}")),
            "LogicalName": attr_name,
            "SchemaName": _schema_name(attr_name),
            "EntityLogicalName": table.logical,
            "AttributeType": attr_type,
            "AttributeTypeName": {"Value": _TYPE_NAMES.get(attr_type, "VirtualType")},
            "AttributeOf": None,
            "IsCustomAttribute": attr_name.startswith("cr") and "_" in attr_name,
            "IsPrimaryId": name == table.primary_key,
            "IsPrimaryName": attr_name == _primary_name(table),
            "IsValidForCreate": creatable,
            "IsValidForUpdate": updatable,
            "IsValidForRead": True,
            "RequiredLevel": _required(level),
        }
        if attr_type in ("String", "Memo"):
            row["MaxLength"] = fdef.max_length
        out.append(row)
    return out


def _primary_name(table: TableDef) -> str:
    if table.logical in _PRIMARY_NAME:
        return _PRIMARY_NAME[table.logical]
    prefix = table.logical.split("_", 1)[0]
    return f"{prefix}_name" if f"{prefix}_name" in table.fields else next(iter(table.fields))


def entity_of(table: TableDef) -> dict[str, Any]:
    return {
        "MetadataId": str(uuid.uuid5(_NS, table.logical)),
        "LogicalName": table.logical,
        "SchemaName": _schema_name(table.logical),
        "EntitySetName": table.entity_set,
        "LogicalCollectionName": table.entity_set,
        "PrimaryIdAttribute": table.primary_key,
        "PrimaryNameAttribute": _primary_name(table),
        "ObjectTypeCode": _OTC.get(table.logical, 10000 + sum(map(ord, table.logical)) % 10000),
        "IsCustomEntity": table.logical not in _OTC,
        "IsActivity": False,
        "ChangeTrackingEnabled": True,
    }


def _not_found(key: str) -> DvError:
    return DvError(404, "0x80040217", f"Could not find entity with name '{key}'.")


def serve(
    tables: list[TableDef], method: str, key: str | None, action: str | None, query: Any, base: str
) -> dict[str, Any]:
    """The answer body of ``EntityDefinitions[(key)][/Attributes]``; raises ``DvError`` like Dataverse."""
    if method != "GET":
        raise DvError(405, "0x80060888", "The metadata is read-only through this endpoint (simulator).")
    unknown = [k for k in query if k.startswith("$") and k not in ("$select", "$filter")]
    if unknown:
        raise DvError(400, "0x80060888", f"The query parameter {unknown[0]} is not supported")
    by_logical = {t.logical: t for t in tables}
    if key is None:
        if action:
            raise DvError(404, "0x8006088a", f"Resource not found for the segment '{action}'.")
        rows = [entity_of(t) for t in by_logical.values()]
        return {
            "@odata.context": f"{base}/$metadata#EntityDefinitions",
            "value": _query(rows, query, ENTITY_PROPERTIES, "EntityMetadata"),
        }
    match = _KEY.match(key)
    if match is None:
        if re.fullmatch(r"[0-9a-fA-F-]{36}", key.strip()):
            found = [t for t in tables if str(uuid.uuid5(_NS, t.logical)) == key.strip().lower()]
            if not found:
                raise _not_found(key)
            table = found[0]
        else:
            raise DvError(400, "0x80060888", f"The key '{key}' is not valid for EntityDefinitions.")
    else:
        table = by_logical.get(match.group(1)) or _raise(_not_found(match.group(1)))
    if action is None:
        props = _select(query, ENTITY_PROPERTIES, "EntityMetadata")
        row = entity_of(table)
        body = {k: v for k, v in row.items() if props is None or k in props or k == "MetadataId"}
        return {"@odata.context": f"{base}/$metadata#EntityDefinitions/$entity", **body}
    if action != "Attributes":
        raise DvError(404, "0x8006088a", f"Resource not found for the segment '{action}'.")
    rows = _query(attributes_of(table), query, ATTRIBUTE_PROPERTIES, "AttributeMetadata")
    return {"@odata.context": f"{base}/$metadata#EntityDefinitions('{table.logical}')/Attributes", "value": rows}


def _raise(err: DvError) -> Any:
    raise err


def _select(query: Any, props: tuple[str, ...], type_name: str) -> set[str] | None:
    raw = query.get("$select")
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for n in names:
        if n not in props:
            raise DvError(
                400,
                "0x80060888",
                f"Could not find a property named '{n}' on type 'Microsoft.Dynamics.CRM.{type_name}'.",
            )
    return set(parse_select(raw, fields=props) or names)


def _query(rows: list[dict[str, Any]], query: Any, props: tuple[str, ...], type_name: str) -> list[dict[str, Any]]:
    selected = _select(query, props, type_name)
    if "$filter" in query:
        flat_fields = set(props) | {"MaxLength"}
        pred = parse_filter(query["$filter"], fields=flat_fields, dialect="dataverse")
        rows = [r for r in rows if pred({**r, "RequiredLevel": r["RequiredLevel"]})]
    if selected is None:
        return rows
    keep = selected | {"MetadataId", "@odata.type"}
    return [{k: v for k, v in r.items() if k in keep} for r in rows]
