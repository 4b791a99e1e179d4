"""``GET …/api/v2.0/$metadata`` (and ``…/api/{publisher}/{group}/{version}/$metadata``): the EDMX (OData
CSDL 4.0 XML) document BC serves, generated from the simulator's entity schemas (``entities.SCHEMAS``), so a
field added to or tightened in a schema shows up here too.

Shape as BC's: namespace ``Microsoft.NAV``; one ``EntityType`` per entity (singular name, key ``id``),
``Edm.Guid``/``Edm.String`` (``MaxLength``)/``Edm.Decimal``/``Edm.Boolean``/``Edm.DateTimeOffset``
properties, enums as ``EnumType``s (blank member ``_x0020_``); an ``EntityContainer`` ``NAV`` with the
entity sets. Read-only properties carry ``Org.OData.Core.V1.Computed`` (the OData vocabulary's term for
a value only the service sets; see docs/simulators.md).
"""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import quoteattr

from local.bc_sim.entities import SCHEMAS, EntitySchema, api_of

_ENUM_NAMES = {"type": "Type", "blocked": "Blocked"}


def entity_type_name(schema: EntitySchema) -> str:
    """BC's EntityName: the singular of the entity set name (customers -> customer)."""
    explicit = getattr(schema, "entity_name", None)
    if explicit:
        return str(explicit)
    name = schema.name
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") else name


def _enum_name(schema: EntitySchema, prop: str) -> str:
    return f"{entity_type_name(schema)}{prop[:1].upper()}{prop[1:]}"


def edm_type(schema: EntitySchema, prop: str) -> str:
    """The property's EDM type, read from the schema (explicit ``types`` when the schema has them)."""
    explicit = (getattr(schema, "types", None) or {}).get(prop)
    if explicit:
        return str(explicit)
    if prop in schema.enums:
        return f"Microsoft.NAV.{_enum_name(schema, prop)}"
    if prop == "id":
        return "Edm.Guid"
    if prop == "lastModifiedDateTime":
        return "Edm.DateTimeOffset"
    default: Any = schema.defaults.get(prop, "")
    if default == "00000000-0000-0000-0000-000000000000":
        return "Edm.Guid"
    if isinstance(default, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", default):
        return "Edm.Date"
    if isinstance(default, bool):
        return "Edm.Boolean"
    if isinstance(default, int | float):
        return "Edm.Decimal"
    return "Edm.String"


def _properties(schema: EntitySchema) -> list[str]:
    key = schema.key
    return ["id", key, *[p for p in schema.defaults if p not in ("id", key)], "lastModifiedDateTime"]


def edmx(api: str = "v2.0") -> str:
    """The EDMX document of one API route."""
    schemas = [s for key, s in SCHEMAS.items() if api_of(key) == api]
    types: list[str] = []
    enums: list[str] = []
    sets: list[str] = []
    for schema in schemas:
        lines = [f'<EntityType Name="{entity_type_name(schema)}">', '<Key><PropertyRef Name="id" /></Key>']
        for prop in _properties(schema):
            if prop not in schema.fields:
                continue
            t = edm_type(schema, prop)
            attrs = f'Name="{prop}" Type="{t}"'
            if prop == "id":
                attrs += ' Nullable="false"'
            if t == "Edm.String" and prop in schema.max_length:
                attrs += f' MaxLength="{schema.max_length[prop]}"'
            if t == "Edm.Decimal":
                attrs += ' Scale="Variable"'
            if prop in schema.read_only and prop != "id":
                computed = '<Annotation Term="Org.OData.Core.V1.Computed" Bool="true" />'
                lines.append(f"<Property {attrs}>{computed}</Property>")
            else:
                lines.append(f"<Property {attrs} />")
        lines.append("</EntityType>")
        types.append("\n".join(lines))
        for prop, members in schema.enums.items():
            body = "".join(f'<Member Name={quoteattr(m)} Value="{i}" />' for i, m in enumerate(members))
            enums.append(f'<EnumType Name="{_enum_name(schema, prop)}">{body}</EnumType>')
        sets.append(f'<EntitySet Name="{schema.name}" EntityType="Microsoft.NAV.{entity_type_name(schema)}" />')
    if api == "v2.0":
        types.insert(
            0,
            '<EntityType Name="company"><Key><PropertyRef Name="id" /></Key>'
            '<Property Name="id" Type="Edm.Guid" Nullable="false" /><Property Name="systemVersion" Type="Edm.String" />'
            '<Property Name="name" Type="Edm.String" MaxLength="30" />'
            '<Property Name="displayName" Type="Edm.String" MaxLength="250" /></EntityType>',
        )
        sets.insert(0, '<EntitySet Name="companies" EntityType="Microsoft.NAV.company" />')
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">\n'
        "<edmx:DataServices>\n"
        '<Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">\n'
        + "\n".join(types + enums)
        + '\n<EntityContainer Name="NAV">\n'
        + "\n".join(sets)
        + "\n</EntityContainer>\n</Schema>\n</edmx:DataServices>\n</edmx:Edmx>\n"
    )


def known_apis() -> set[str]:
    return {api_of(k) for k in SCHEMAS}
