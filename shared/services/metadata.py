"""Both sides' metadata, read from the services and cached per process for a short time.

- Business Central: the API's ``$metadata`` EDMX (entity sets, properties, EDM types, ``MaxLength``,
  enums, read-only = ``Org.OData.Core.V1.Computed`` or ``Core.V1.Permissions`` Read).
- Dataverse: ``EntityDefinitions(LogicalName='…')`` and its ``/Attributes`` (``AttributeType``,
  ``MaxLength``, ``IsValidForCreate``/``IsValidForUpdate``, ``RequiredLevel``).

The parsers are pure (tested with literals); ``MetadataCatalog`` only fetches and caches.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET  # the document comes from the BC API we call, with a token
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import NotFoundError

BC = "businessCentral"
DV = "dataverse"
_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
_READ_ONLY_TERMS = ("Org.OData.Core.V1.Computed", "Core.V1.Computed")


@dataclass(frozen=True, slots=True)
class FieldMeta:
    name: str
    kind: str  # text number bool guid date datetime enum option lookup other
    type_name: str  # the service's own type name (Edm.String, Microsoft.NAV.contactType, Picklist, ...)
    max_length: int | None = None
    creatable: bool = True
    updatable: bool = True
    required: str | None = None
    members: tuple[str, ...] = ()

    @property
    def writable(self) -> bool:
        return self.creatable or self.updatable


@dataclass(frozen=True, slots=True)
class EntityMeta:
    side: str
    name: str  # BC entity set / Dataverse logical name
    fields: dict[str, FieldMeta] = field(default_factory=dict)
    entity_set: str | None = None
    primary_key: str | None = None
    primary_name: str | None = None


# ----------------------------------------------------------------------------- Business Central
_EDM_KINDS = {
    "Edm.String": "text",
    "Edm.Guid": "guid",
    "Edm.Boolean": "bool",
    "Edm.Date": "date",
    "Edm.DateTimeOffset": "datetime",
    "Edm.TimeOfDay": "other",
    "Edm.Decimal": "number",
    "Edm.Double": "number",
    "Edm.Single": "number",
    "Edm.Int16": "number",
    "Edm.Int32": "number",
    "Edm.Int64": "number",
    "Edm.Byte": "number",
}


def _is_read_only(prop: ET.Element) -> bool:
    for ann in prop.findall(f"{_EDM}Annotation"):
        term = ann.get("Term", "")
        if term.endswith(_READ_ONLY_TERMS) and ann.get("Bool", "true").lower() == "true":
            return True
        if term.endswith("Core.V1.Permissions"):
            text = "".join(ann.itertext()) + (ann.get("EnumMember") or "")
            if text.strip().endswith("/Read"):
                return True
    return False


def parse_edmx(text: str) -> dict[str, EntityMeta]:
    """Entity sets of a BC ``$metadata`` document -> their metadata (keyed by entity set name)."""
    root = ET.fromstring(text)  # noqa: S314 -- the BC API we call with our token; expat limits entity expansion
    types: dict[str, ET.Element] = {}
    enums: dict[str, tuple[str, ...]] = {}
    sets: dict[str, str] = {}
    for schema in root.iter(f"{_EDM}Schema"):
        ns = schema.get("Namespace", "")
        alias = schema.get("Alias")
        for et in schema.findall(f"{_EDM}EntityType"):
            for prefix in filter(None, (ns, alias)):
                types[f"{prefix}.{et.get('Name')}"] = et
        for en in schema.findall(f"{_EDM}EnumType"):
            members = tuple(m.get("Name", "") for m in en.findall(f"{_EDM}Member"))
            for prefix in filter(None, (ns, alias)):
                enums[f"{prefix}.{en.get('Name')}"] = members
        for container in schema.findall(f"{_EDM}EntityContainer"):
            for es in container.findall(f"{_EDM}EntitySet"):
                sets[es.get("Name", "")] = es.get("EntityType", "")
    out: dict[str, EntityMeta] = {}
    for set_name, type_name in sets.items():
        et = types.get(type_name)
        if et is None:
            continue
        fields: dict[str, FieldMeta] = {}
        for prop in et.findall(f"{_EDM}Property"):
            name, t = prop.get("Name", ""), prop.get("Type", "")
            kind = _EDM_KINDS.get(t, "enum" if t in enums else "other")
            read_only = _is_read_only(prop) or name in ("id", "lastModifiedDateTime")
            length = prop.get("MaxLength")
            fields[name] = FieldMeta(
                name,
                kind,
                t,
                int(length) if length and length.isdigit() else None,
                creatable=not read_only,
                updatable=not read_only,
                members=enums.get(t, ()),
            )
        out[set_name] = EntityMeta(BC, set_name, fields, entity_set=set_name, primary_key="id")
    return out


# ----------------------------------------------------------------------------- Dataverse
_DV_KINDS = {
    "String": "text",
    "Memo": "text",
    "EntityName": "text",
    "Integer": "number",
    "BigInt": "number",
    "Decimal": "number",
    "Double": "number",
    "Money": "number",
    "Boolean": "bool",
    "DateTime": "datetime",
    "Uniqueidentifier": "guid",
    "Lookup": "lookup",
    "Customer": "lookup",
    "Owner": "lookup",
    "Picklist": "option",
    "State": "option",
    "Status": "option",
}


def parse_dv_entity(definition: dict[str, Any], attributes: list[dict[str, Any]]) -> EntityMeta:
    logical = str(definition.get("LogicalName"))
    fields: dict[str, FieldMeta] = {}
    for a in attributes:
        if a.get("AttributeOf"):
            continue  # name/yomi companions of another attribute
        t = str(a.get("AttributeType") or "")
        level = a.get("RequiredLevel")
        fields[str(a["LogicalName"])] = FieldMeta(
            str(a["LogicalName"]),
            _DV_KINDS.get(t, "other"),
            t,
            a.get("MaxLength"),
            creatable=bool(a.get("IsValidForCreate")),
            updatable=bool(a.get("IsValidForUpdate")),
            required=(level or {}).get("Value") if isinstance(level, dict) else None,
        )
    return EntityMeta(
        DV,
        logical,
        fields,
        entity_set=definition.get("EntitySetName"),
        primary_key=definition.get("PrimaryIdAttribute"),
        primary_name=definition.get("PrimaryNameAttribute"),
    )


# ----------------------------------------------------------------------------- the cache
class MetadataCatalog:
    """Metadata of both sides, fetched on first use and kept ``ttl`` seconds per process."""

    def __init__(self, bc: Any, dv: Any, *, ttl: float = 60.0) -> None:
        self._bc = bc
        self._dv = dv
        self._ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = asyncio.Lock()

    async def _cached(self, key: tuple[str, str], load: Callable[[], Awaitable[Any]]) -> Any:
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        async with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self._ttl:
                return hit[1]
            value = await load()
            self._cache[key] = (time.monotonic(), value)
            return value

    async def bc_entity(self, entity: str) -> EntityMeta | None:
        """``customers`` (API v2.0) or ``publisher/group/version/entitySet``; None when the API has no such set."""
        api, name = entity.rsplit("/", 1) if "/" in entity else ("v2.0", entity)

        async def load() -> dict[str, EntityMeta] | None:
            try:
                return parse_edmx(await self._bc.get_metadata(api))
            except NotFoundError:
                return None  # no API published at that route

        sets = await self._cached((BC, api), load)
        return sets.get(name) if sets else None

    async def dv_entity(self, logical_name: str) -> EntityMeta | None:
        async def load() -> EntityMeta | None:
            try:
                definition = await self._dv.get_entity_definition(logical_name)
            except NotFoundError:
                return None
            return parse_dv_entity(definition, await self._dv.get_attributes(logical_name))

        return await self._cached((DV, logical_name), load)
