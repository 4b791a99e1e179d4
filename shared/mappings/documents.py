"""Mapping documents: the run-time layer over the shipped ``mappings.yaml`` (pure, no I/O).

A document is stored per mapping (Table Storage, see ``shared.stores.mapping_document_store``) and holds
only what an administrator changed:

```json
{"name": "CUSTOMER", "version": 3, "userDefined": false,
 "base": null,                               // user-defined mappings: their definition (no fields)
 "settings": {"direction": "toDataverse", "tableFilter": "blocked eq ' '"},
 "fieldPatches": {"city~address1_city": {"status": "disabled"}},
 "addedFields": [{"bc": "addressLine2", "dataverse": "address1_line2", "userDefined": true, ...}]}
```

The mapping in force = the shipped mapping (or ``base``) + ``settings`` + each shipped field with its
patch + the added (user-defined) fields. Without a document the shipped mapping is in force unchanged;
``reset`` deletes the document. Every write bumps ``version``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from shared.mappings.config import FieldMap, TableMapping

# Settings of a table mapping that PATCH /api/mappings/{m} accepts (contract names).
SETTING_KEYS = (
    "direction",
    "syncOnlyCoupled",
    "state",
    "tableFilter",
    "integrationTableFilter",
    "conflictPolicy",
    "deletionPolicy",
    "createNew",
    "createNewIfNoMatch",
    "syncAfterCoupling",
    "scheduleMinutes",
)
# What PATCH /api/mappings/{m}/fields/{id} accepts.
FIELD_PATCH_KEYS = (
    "direction",
    "status",
    "constant",
    "transform",
    "optionMap",
    "useForMatch",
    "matchPriority",
    "caseSensitive",
    "clearOnFail",
)


@dataclass(slots=True)
class MappingDocument:
    name: str
    version: int = 0
    user_defined: bool = False
    base: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    field_patches: dict[str, dict[str, Any]] = field(default_factory=dict)
    added_fields: list[dict[str, Any]] = field(default_factory=list)
    row_etag: str | None = None  # the stored row's ETag (optimistic concurrency), set by the store

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "userDefined": self.user_defined,
            "base": self.base,
            "settings": self.settings,
            "fieldPatches": self.field_patches,
            "addedFields": self.added_fields,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], row_etag: str | None = None) -> MappingDocument:
        return cls(
            name=str(data["name"]),
            version=int(data.get("version") or 0),
            user_defined=bool(data.get("userDefined")),
            base=data.get("base"),
            settings=dict(data.get("settings") or {}),
            field_patches={str(k): dict(v) for k, v in (data.get("fieldPatches") or {}).items()},
            added_fields=[dict(f) for f in data.get("addedFields") or []],
            row_etag=row_etag,
        )

    def copy(self) -> MappingDocument:
        return MappingDocument.from_json(json.loads(json.dumps(self.to_json())), self.row_etag)


def field_json(f: FieldMap) -> dict[str, Any]:
    """A field mapping as stored / as the API shows it (camelCase, ``None`` members left out)."""
    out = f.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {"bc": f.bc, "dataverse": f.dataverse, **out}


def mapping_base_json(m: TableMapping) -> dict[str, Any]:
    data = m.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"fields", "field_catalog"})
    if m.lines is not None:  # #21: a document's lines keep their field mappings whole (one-sided constants)
        lines = m.lines.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"fields"})
        data["lines"] = {**lines, "fields": [field_json(f) for f in m.lines.fields]}
    return data


def effective_mapping(shipped: TableMapping | None, doc: MappingDocument | None) -> TableMapping:
    """The mapping in force. Raises ``pydantic.ValidationError`` / ``ValueError`` when the layers do not
    make a valid mapping (callers validate a change this way before storing it)."""
    if shipped is None and (doc is None or doc.base is None):
        raise ValueError("a mapping needs a shipped definition or a stored base")
    doc = doc or MappingDocument(name=shipped.name)  # type: ignore[union-attr]
    if shipped is not None:
        raw = mapping_base_json(shipped)
        fields = _match_flags(raw, [field_json(f) for f in shipped.fields])
    else:
        raw = dict(doc.base or {})
        fields = []
    raw.update(doc.settings)
    patched: list[dict[str, Any]] = []
    for f in fields:
        fid = FieldMap.model_validate(f).id
        patched.append({**f, **doc.field_patches.get(fid, {})})
    patched += [{**f, "userDefined": True} for f in doc.added_fields]
    catalog = [FieldMap.model_validate(f) for f in patched]
    raw["userDefined"] = doc.user_defined
    raw["fields"] = [f for f in catalog if f.status == "enabled"]
    raw["fieldCatalog"] = catalog
    return TableMapping.model_validate(raw)


def _match_flags(raw: dict[str, Any], fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shipped ``matchFields`` on a pair that is also a field mapping become that field mapping's
    ``useForMatch``/``matchPriority`` (so an administrator can change them like BC's page does); the rest
    stay criteria of their own."""
    rest = []
    by_pair = {(f.get("bc"), f.get("dataverse")): f for f in fields}
    for m in raw.get("matchFields") or []:
        f = by_pair.get((m.get("bc"), m.get("dataverse")))
        if f is None:
            rest.append(m)
            continue
        f["useForMatch"] = True
        f["matchPriority"] = m.get("priority", 1)
        if m.get("caseSensitive"):
            f["caseSensitive"] = True
    raw["matchFields"] = rest
    return fields


def mapping_etag(version: int, shipped: TableMapping | None) -> str:
    """The mapping's ETag: the document version plus a hash of the shipped definition (a redeploy that
    changes the shipped file changes the ETag too)."""
    digest = ""
    if shipped is not None:
        raw = json.dumps(mapping_base_json(shipped) | {"f": [field_json(f) for f in shipped.fields]}, sort_keys=True)
        digest = "." + hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f'W/"{version}{digest}"'
